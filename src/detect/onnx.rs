//! CPU inference of NudeNet 320n through ONNX Runtime (`ort`, loaded at run
//! time from `libonnxruntime.so`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use serde::Deserialize;

use super::backend::DetectorBackend;
use super::postprocess::{decode_batch, output_anchors};
use super::preprocess::{preprocess_frame_with, Letterbox, LetterboxMode, ResizeFilter, STRIDE};
use crate::error::DetectError;
use crate::frame::{Detection, Frame};

/// The model's input and output tensor names.
const INPUT: &str = "images";
const OUTPUT: &str = "output0";

/// File name of the runtime library that `scripts/setup.sh` puts next to the model.
const LIBRARY_FILE: &str = "libonnxruntime.so";

/// The lowest candidate score a session keeps: below it nearly every
/// anchor is a candidate and NMS (quadratic) would cost more than the
/// inference.
const MIN_CANDIDATE: f32 = 0.02;

/// Detector settings (the `[detector]` table of the config file).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// `onnx` (ONNX Runtime, CPU) or `tensorrt` (the plan in `engine`).
    pub backend: DetectorBackend,
    /// The ONNX model.
    pub model: PathBuf,
    /// The TensorRT plan (`livecensor engine build`), for `backend = "tensorrt"`.
    pub engine: PathBuf,
    /// `libonnxruntime.so`; when absent: `ORT_DYLIB_PATH`, else the file next
    /// to the model.
    pub ort_library: Option<PathBuf>,
    /// Intra-op threads of the session.
    pub threads: usize,
    /// Long side of the model input.
    pub input_size: usize,
    /// How frames are fitted to the input in the pipeline: `rect` (padded
    /// to the next multiple of 32 only; ~40% less inference for 16:9) or
    /// `square` (NudeNet's own). `audit` always uses `square`.
    pub letterbox: LetterboxMode,
    /// How the pipeline resamples frames to the input: `triangle`
    /// (antialiased; more recall on small and moving regions) or `linear`
    /// (NudeNet's own 2x2 taps). `audit` always uses `linear`.
    pub resize: ResizeFilter,
    /// Second looks at weak candidates (`[detector.zoom]`).
    pub zoom: super::ZoomConfig,
    /// Candidate threshold on the best class score.
    pub min_score: f32,
    /// NMS IoU above which the lower-scored box is dropped.
    pub nms_iou: f32,
    /// NMS keeps only scores above this.
    pub nms_score: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            backend: DetectorBackend::default(),
            model: PathBuf::from("models/320n.onnx"),
            engine: PathBuf::from("models/320n.plan"),
            ort_library: None,
            threads: 1,
            input_size: 320,
            letterbox: LetterboxMode::default(),
            resize: ResizeFilter::default(),
            zoom: super::ZoomConfig::default(),
            min_score: 0.2,
            nms_iou: 0.45,
            nms_score: 0.25,
        }
    }
}

impl DetectorConfig {
    /// The runtime library this config resolves to.
    pub fn library_path(&self) -> PathBuf {
        if let Some(p) = &self.ort_library {
            return p.clone();
        }
        match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => self
                .model
                .parent()
                .unwrap_or(Path::new("."))
                .join(LIBRARY_FILE),
        }
    }
}

/// The runtime library `cfg` resolves to (for `doctor` and error messages):
/// `ort_library`, else `ORT_DYLIB_PATH`, else `libonnxruntime.so` next to
/// the model.
pub fn resolve_ort_library(cfg: &DetectorConfig) -> PathBuf {
    cfg.library_path()
}

/// ort allows one environment per process and loads one library; every
/// Detector shares it. A failed load is not cached, so it can be retried.
static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

fn environment(library: &Path) -> Result<Environment, DetectError> {
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    let env = ort::init_from(library)
        .map_err(|e| DetectError::Runtime(e.to_string()))?
        .with_name("livecensor")
        .build()
        .map_err(|e| DetectError::Runtime(e.to_string()))?;
    *slot = Some(env.clone());
    Ok(env)
}

/// One ONNX Runtime session of the detector; use one per worker thread.
pub struct Detector {
    session: Session,
    input_size: usize,
    letterbox: LetterboxMode,
    min_score: f32,
    nms_iou: f32,
    nms_score: f32,
    /// Input scratch for `detect_frame`.
    scratch: Vec<f32>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("input_size", &self.input_size)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// Loads the runtime (once per process) and the model. Missing files are
    /// reported before ort is touched, since ort panics on some load failures.
    /// The first library loaded in a process is the one used by all sessions.
    pub fn new(cfg: &DetectorConfig) -> Result<Detector, DetectError> {
        if !cfg.model.is_file() {
            return Err(DetectError::ModelMissing {
                path: cfg.model.clone(),
            });
        }
        let library = cfg.library_path();
        if !library.is_file() {
            return Err(DetectError::RuntimeMissing { path: library });
        }
        if cfg.input_size == 0 || cfg.input_size % 32 != 0 {
            return Err(DetectError::Runtime(format!(
                "input_size {} must be a positive multiple of 32",
                cfg.input_size
            )));
        }
        let env = environment(&library)?;
        // The rect letterbox lowers the bar (see `RECT_SCORE_MARGIN`).
        let margin = cfg.letterbox.score_margin();
        let rt = |e: ort::Error<_>| DetectError::Runtime(e.to_string());
        let session = Session::builder(&env)
            .map_err(|e| DetectError::Runtime(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(rt)?
            .with_intra_threads(cfg.threads.max(1))
            .map_err(rt)?
            .with_inter_threads(1)
            .map_err(rt)?
            // Idle pool threads must not spin: decode and encode share the cores.
            .with_intra_op_spinning(false)
            .map_err(rt)?
            .commit_from_file(&cfg.model)
            .map_err(|e| DetectError::Runtime(format!("{}: {e}", cfg.model.display())))?;
        Ok(Detector {
            session,
            input_size: cfg.input_size,
            letterbox: cfg.letterbox,
            min_score: (cfg.min_score - margin).max(MIN_CANDIDATE),
            nms_iou: cfg.nms_iou,
            nms_score: (cfg.nms_score - margin).max(MIN_CANDIDATE),
            scratch: Vec::new(),
        })
    }

    /// Long side of the input that `tensors` slots are preprocessed to.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// The letterbox the pipeline preprocesses frames with for this session.
    pub fn letterbox_mode(&self) -> LetterboxMode {
        self.letterbox
    }

    /// Runs one batch: `tensors` holds `batch` NCHW slots, all of the
    /// letterboxes' one input shape (`3 * rows * cols` floats each);
    /// `letterboxes[i]` maps slot `i` back to its frame. Returns each
    /// image's detections after decode and NMS.
    pub fn detect(
        &mut self,
        tensors: &[f32],
        batch: usize,
        letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        if batch == 0 {
            return Ok(Vec::new());
        }
        let (rows, cols) = batch_dims(letterboxes, self.input_size)?;
        if tensors.len() != batch * 3 * rows * cols || letterboxes.len() != batch {
            return Err(DetectError::Runtime(format!(
                "batch of {batch} {cols}x{rows} inputs needs {} floats and {batch} letterboxes, got {} and {}",
                batch * 3 * rows * cols,
                tensors.len(),
                letterboxes.len()
            )));
        }
        let input = TensorRef::from_array_view(([batch, 3, rows, cols], tensors))
            .map_err(|e| DetectError::Runtime(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![INPUT => input])
            .map_err(|e| DetectError::Runtime(e.to_string()))?;
        let Some(value) = outputs.get(OUTPUT) else {
            return Err(DetectError::BadOutput { shape: Vec::new() });
        };
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| DetectError::Runtime(e.to_string()))?;
        let anchors = output_anchors(shape, batch, data.len())?;
        Ok(decode_batch(
            data,
            anchors,
            letterboxes,
            self.min_score,
            self.nms_iou,
            self.nms_score,
        ))
    }

    /// Preprocesses (square, NudeNet's letterbox: this is the audit's
    /// reference) and detects one frame.
    pub fn detect_frame(&mut self, frame: &Frame) -> Result<Vec<Detection>, DetectError> {
        self.detect_frame_with(frame, LetterboxMode::Square, ResizeFilter::Linear)
    }

    /// [`Detector::detect_frame`] with another letterbox and filter (what
    /// the pipeline feeds the detector).
    pub fn detect_frame_with(
        &mut self,
        frame: &Frame,
        mode: LetterboxMode,
        filter: ResizeFilter,
    ) -> Result<Vec<Detection>, DetectError> {
        let s = self.input_size;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(3 * s * s, 0.0);
        let lb = preprocess_frame_with(frame, mode, filter, s, &mut buf);
        buf.truncate(lb.len());
        let result = self.detect(&buf, 1, &[lb]);
        self.scratch = buf;
        Ok(result?.into_iter().next().unwrap_or_default())
    }
}

/// The one input shape `(rows, cols)` of a batch: every letterbox must
/// share it, sides multiples of [`STRIDE`] and at most `size`.
fn batch_dims(letterboxes: &[Letterbox], size: usize) -> Result<(usize, usize), DetectError> {
    let Some(first) = letterboxes.first() else {
        return Ok((size, size));
    };
    let dims = first.dims();
    let ok = |(r, c): (usize, usize)| {
        r > 0 && c > 0 && r <= size && c <= size && r % STRIDE == 0 && c % STRIDE == 0
    };
    if !ok(dims) || letterboxes.iter().any(|lb| lb.dims() != dims) {
        let all: Vec<_> = letterboxes.iter().map(|lb| lb.dims()).collect();
        return Err(DetectError::Runtime(format!(
            "batch input shapes {all:?} (rows, cols) are not one shape of multiples of {STRIDE} within {size}"
        )));
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::classes::class_index;
    use crate::detect::preprocess::preprocess_rgb;
    use crate::detect::{load_photo, models_dir, test_model};
    use crate::frame::{BBox, PixelFormat};
    use std::time::Instant;

    fn config(threads: usize) -> DetectorConfig {
        let dir = models_dir();
        DetectorConfig {
            model: test_model(),
            ort_library: Some(dir.join(LIBRARY_FILE)),
            threads,
            ..DetectorConfig::default()
        }
    }

    fn detect_rgb(det: &mut Detector, name: &str) -> Vec<Detection> {
        let (rgb, w, h) = load_photo(name);
        let s = det.input_size();
        let mut t = vec![0.0; 3 * s * s];
        let lb = preprocess_rgb(&rgb, w, h, s, &mut t);
        let mut r = det.detect(&t, 1, &[lb]).expect("detect");
        r.pop().expect("one image")
    }

    fn face(dets: &[Detection]) -> Detection {
        let face = class_index("FACE_FEMALE");
        *dets
            .iter()
            .find(|d| Some(d.class) == face)
            .unwrap_or_else(|| panic!("no FACE_FEMALE in {dets:?}"))
    }

    #[test]
    fn detector_is_send() {
        fn send<T: Send>() {}
        send::<Detector>();
    }

    #[test]
    fn config_defaults_and_serde() {
        let c: DetectorConfig = toml::from_str("threads = 1\nmodel = \"m/x.onnx\"").expect("toml");
        assert_eq!(c.threads, 1);
        assert_eq!(c.input_size, 320);
        assert_eq!((c.min_score, c.nms_iou, c.nms_score), (0.2, 0.45, 0.25));
        let c = DetectorConfig {
            ort_library: Some("/x/lib.so".into()),
            ..c
        };
        assert_eq!(resolve_ort_library(&c), PathBuf::from("/x/lib.so"));
        assert!(toml::from_str::<DetectorConfig>("thread = 1").is_err());
    }

    #[test]
    fn astronaut_face_matches_reference() {
        let mut det = Detector::new(&config(2)).expect("detector");
        let dets = detect_rgb(&mut det, "astronaut.png");
        let f = face(&dets);
        println!("astronaut: {dets:?}");
        assert!((f.score - 0.81).abs() < 0.05, "{f:?}");
        let want = BBox::from_xywh(173.0, 82.0, 100.0, 97.0);
        for (got, want) in [
            (f.bbox.x0, want.x0),
            (f.bbox.y0, want.y0),
            (f.bbox.width(), want.width()),
            (f.bbox.height(), want.height()),
        ] {
            assert!((got - want).abs() <= 6.0, "{f:?}");
        }
        // The same photo through both YUV layouts.
        let (rgb, w, h) = load_photo("astronaut.png");
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let frame = Frame::from_rgb(format, w, h, &rgb);
            let g = face(&det.detect_frame(&frame).expect("detect_frame"));
            assert!((g.score - f.score).abs() < 0.1, "{format:?} {g:?}");
            assert!(g.bbox.iou(&f.bbox) > 0.8, "{format:?} {g:?} vs {f:?}");
        }
    }

    #[test]
    fn batch_equals_one_at_a_time() {
        let mut det = Detector::new(&config(2)).expect("detector");
        let names = ["astronaut.png", "coffee.png", "chelsea.png"];
        let s = det.input_size();
        let mut t = vec![0.0; 3 * 3 * s * s];
        let mut lbs = Vec::new();
        for (slot, name) in t.chunks_exact_mut(3 * s * s).zip(names) {
            let (rgb, w, h) = load_photo(name);
            lbs.push(preprocess_rgb(&rgb, w, h, s, slot));
        }
        let batched = det.detect(&t, 3, &lbs).expect("batch");
        assert_eq!(batched.len(), 3);
        for (b, name) in batched.iter().zip(names) {
            let single = detect_rgb(&mut det, name);
            assert_eq!(b.len(), single.len(), "{name}: {b:?} vs {single:?}");
            for (x, y) in b.iter().zip(&single) {
                assert_eq!(x.class, y.class, "{name}");
                assert!((x.score - y.score).abs() < 1e-3, "{name}");
                assert!(x.bbox.iou(&y.bbox) > 0.99, "{name}");
            }
        }
        assert!(!batched[0].is_empty());
        // Coffee: NudeNet's known false positive on the cup.
        let butt = class_index("BUTTOCKS_EXPOSED");
        assert!(
            batched[1].iter().any(|d| Some(d.class) == butt),
            "{:?}",
            batched[1]
        );
    }

    /// The astronaut photo pasted into a grey 16:9 (and 9:16) frame: the
    /// rectangular input finds what the square one finds, and a batch of
    /// two shapes is refused rather than misread.
    #[test]
    fn rect_letterbox_finds_what_square_finds() {
        let mut det = Detector::new(&config(1)).expect("detector");
        let (rgb, pw, ph) = load_photo("astronaut.png");
        for (w, h, x0, y0) in [(1280, 720, 600, 150), (720, 1280, 100, 600)] {
            let mut canvas = vec![90u8; w * h * 3];
            for y in 0..ph {
                let dst = ((y0 + y) * w + x0) * 3;
                canvas[dst..dst + pw * 3].copy_from_slice(&rgb[y * pw * 3..(y + 1) * pw * 3]);
            }
            let frame = Frame::from_rgb(PixelFormat::I420, w, h, &canvas);
            let square = det.detect_frame(&frame).expect("square");
            let lb = Letterbox::rect(w, h, 320);
            let mut t = vec![0.0; lb.len()];
            crate::detect::preprocess_frame_as(&frame, LetterboxMode::Rect, 320, &mut t);
            let rect = det.detect(&t, 1, &[lb]).expect("rect").remove(0);
            assert!(square.iter().any(|d| d.score > 0.5), "{w}x{h}: {square:?}");
            for d in square.iter().filter(|d| d.score >= 0.3) {
                let hit = rect.iter().any(|r| {
                    r.class == d.class
                        && r.bbox.iou(&d.bbox) > 0.7
                        && (r.score - d.score).abs() < 0.1
                });
                assert!(hit, "{w}x{h}: {d:?} not in {rect:?}");
            }
            let mixed = [lb, Letterbox::new(w, h, 320)];
            let r = det.detect(&vec![0.0; lb.len() + mixed[1].len()], 2, &mixed);
            assert!(
                matches!(r, Err(DetectError::Runtime(ref m)) if m.contains("one shape")),
                "{r:?}"
            );
        }
    }

    #[test]
    fn wrong_input_lengths_are_errors() {
        let mut det = Detector::new(&config(1)).expect("detector");
        let lb = Letterbox::new(10, 10, 320);
        let r = det.detect(&[0.0; 10], 1, &[lb]);
        assert!(matches!(r, Err(DetectError::Runtime(_))), "{r:?}");
        let t = vec![0.0; 3 * 320 * 320];
        let r = det.detect(&t, 1, &[]);
        assert!(matches!(r, Err(DetectError::Runtime(_))), "{r:?}");
        assert!(det.detect(&[], 0, &[]).expect("empty batch").is_empty());
        // A black frame finds nothing (and runs through detect_frame).
        let black = Frame::new(PixelFormat::I420, 64, 48);
        assert!(det.detect_frame(&black).expect("black").is_empty());
    }

    #[test]
    fn missing_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = DetectorConfig {
            model: dir.path().join("nope.onnx"),
            ..config(1)
        };
        let e = Detector::new(&cfg).expect_err("missing model");
        assert!(matches!(e, DetectError::ModelMissing { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.onnx"), "{e}");

        let lib = dir.path().join("libnothere.so");
        let cfg = DetectorConfig {
            ort_library: Some(lib.clone()),
            ..config(1)
        };
        let e = Detector::new(&cfg).expect_err("missing library");
        assert!(
            matches!(&e, DetectError::RuntimeMissing { path } if *path == lib),
            "{e:?}"
        );
        assert!(e.to_string().contains("libnothere.so"), "{e}");

        // Default library location: next to the model.
        std::fs::copy(test_model(), dir.path().join("m.onnx")).expect("copy");
        let cfg = DetectorConfig {
            model: dir.path().join("m.onnx"),
            ort_library: None,
            ..config(1)
        };
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            let e = Detector::new(&cfg).expect_err("no library next to model");
            assert!(e
                .to_string()
                .contains(&dir.path().join(LIBRARY_FILE).display().to_string()));
        }
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.onnx");
        std::fs::write(&junk, b"not a model").expect("write");
        let cfg = DetectorConfig {
            model: junk.clone(),
            ..config(1)
        };
        let e = Detector::new(&cfg).expect_err("corrupt model");
        assert!(matches!(e, DetectError::Runtime(_)), "{e:?}");
        assert!(e.to_string().contains("junk.onnx"), "{e}");
        // A library that is not a shared object: an error, unless another test
        // already loaded the real runtime (the first library wins).
        let lib = dir.path().join("libonnxruntime.so");
        std::fs::write(&lib, b"junk").expect("write");
        let cfg = DetectorConfig {
            ort_library: Some(lib),
            ..config(1)
        };
        if let Err(e) = Detector::new(&cfg) {
            assert!(matches!(e, DetectError::Runtime(_)), "{e:?}");
        }
    }

    #[test]
    fn several_detectors_share_one_runtime() {
        let mut a = Detector::new(&config(1)).expect("a");
        let mut b = Detector::new(&config(2)).expect("b");
        let (fa, fb) = (
            face(&detect_rgb(&mut a, "astronaut.png")),
            face(&detect_rgb(&mut b, "astronaut.png")),
        );
        assert!((fa.score - fb.score).abs() < 1e-3);
        let handle = std::thread::spawn(move || detect_rgb(&mut a, "astronaut.png").len());
        assert!(handle.join().expect("thread") > 0);
    }

    /// On-CPU nanoseconds of the calling thread (Linux schedstat): with
    /// other processes competing for the cores, wall time overstates cost.
    fn thread_cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Times `n` calls: wall median and min, and this thread's CPU time per call.
    fn time_it(n: usize, mut f: impl FnMut()) -> String {
        let cpu0 = thread_cpu_ns();
        let mut v: Vec<f64> = (0..n)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let cpu = (thread_cpu_ns() - cpu0) as f64 / n as f64 / 1e6;
        v.sort_by(f64::total_cmp);
        format!(
            "wall median {:.3} ms, min {:.3} ms; calling thread on-CPU {cpu:.3} ms/call",
            crate::stats::percentile(&v, 50.0),
            crate::stats::percentile(&v, 0.0)
        )
    }

    /// `cargo test --release --lib timings -- --ignored --nocapture`
    #[test]
    #[ignore = "timing report; run in release with --nocapture"]
    fn timings() {
        let (rgb, w, h) = load_photo("astronaut.png");
        // A 1280x720 frame: the photo tiled.
        let (fw, fh) = (1280, 720);
        let mut big = vec![0u8; fw * fh * 3];
        for y in 0..fh {
            for x in 0..fw {
                let s = ((y % h) * w + x % w) * 3;
                big[(y * fw + x) * 3..(y * fw + x) * 3 + 3].copy_from_slice(&rgb[s..s + 3]);
            }
        }
        let mut t = vec![0.0; 3 * 320 * 320];
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let frame = Frame::from_rgb(format, fw, fh, &big);
            let r = time_it(300, || {
                crate::detect::preprocess_frame(&frame, 320, &mut t);
            });
            println!("preprocess_frame {format:?} 1280x720 -> 320: {r}");
        }
        let lb = preprocess_rgb(&rgb, w, h, 320, &mut t);
        for threads in [1, 2] {
            let mut det = Detector::new(&config(threads)).expect("detector");
            for _ in 0..10 {
                det.detect(&t, 1, &[lb]).expect("warm-up");
            }
            let r = time_it(100, || {
                assert!(det.detect(&t, 1, &[lb]).is_ok());
            });
            println!("detect 1x3x320x320, {threads} intra thread(s): {r}");
        }
    }
}
