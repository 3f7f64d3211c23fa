//! The NudeNet 320n detector: class list, letterbox preprocessing, output
//! decoding with NMS, CPU inference through ONNX Runtime, GPU inference
//! through TensorRT (feature `tensorrt`), and [`backends`], which builds
//! whichever the configuration names.

pub mod backend;
pub mod classes;
pub mod onnx;
pub mod postprocess;
pub mod preprocess;
pub mod tensorrt;
pub mod zoom;

pub use backend::{backends, DetectBackend, DetectInput, DetectorBackend, DeviceInput};
pub use classes::{class_index, CLASSES, DEFAULT_CENSORED};
pub use onnx::{resolve_ort_library, Detector, DetectorConfig};
pub use postprocess::{decode, nms, OUTPUT_ROWS};
pub use preprocess::{
    preprocess_frame, preprocess_frame_as, preprocess_frame_with, preprocess_rgb, Letterbox,
    LetterboxMode, ResizeFilter, STRIDE,
};
pub use zoom::ZoomConfig;

/// `<crate>/models` when present (the real crate), else the shared checkout's.
#[cfg(test)]
pub(crate) fn models_dir() -> std::path::PathBuf {
    let own = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if own.join("320n.onnx").is_file() {
        own
    } else {
        std::path::PathBuf::from("/work/main/models")
    }
}

/// A photo from `models/photos` as packed RGB24.
#[cfg(test)]
pub(crate) fn load_photo(name: &str) -> (Vec<u8>, usize, usize) {
    let path = models_dir().join("photos").join(name);
    let img = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    (img.into_raw(), w, h)
}
