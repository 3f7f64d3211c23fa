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

/// `<crate>/models` (`scripts/setup.sh` fills it): photos and the ONNX
/// Runtime library of the tests. Never an absolute path: any checkout works.
#[cfg(test)]
pub(crate) fn models_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The model the tests load: `LIVECENSOR_MODEL` when set (another model or
/// checkout), else `<crate>/models/320n.onnx`.
#[cfg(test)]
pub(crate) fn test_model() -> std::path::PathBuf {
    match std::env::var_os("LIVECENSOR_MODEL") {
        Some(p) if !p.is_empty() => p.into(),
        _ => models_dir().join("320n.onnx"),
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
