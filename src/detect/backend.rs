//! Which detector runs the batches (`[detector] backend`, `--detector`,
//! `LIVECENSOR_DETECTOR`), and the one place that builds the detector
//! service's backends from the configuration.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use super::onnx::{Detector, DetectorConfig};
use super::tensorrt::TrtEngine;
use super::{Letterbox, LetterboxMode};
use crate::error::DetectError;
use crate::frame::Detection;
use crate::gpu::{DeviceTensor, GpuContext};

/// The detector backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum DetectorBackend {
    /// ONNX Runtime on the CPU (`detector.model`).
    #[default]
    #[serde(rename = "onnx")]
    Onnx,
    /// A TensorRT plan (`detector.engine`) on GPU 0; needs feature
    /// `tensorrt`, TensorRT and a GPU.
    #[serde(rename = "tensorrt")]
    TensorRt,
}

impl FromStr for DetectorBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "onnx" | "ort" | "onnxruntime" => Ok(DetectorBackend::Onnx),
            "tensorrt" | "trt" => Ok(DetectorBackend::TensorRt),
            other => Err(format!("unknown detector {other:?} (onnx or tensorrt)")),
        }
    }
}

impl fmt::Display for DetectorBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DetectorBackend::Onnx => "onnx",
            DetectorBackend::TensorRt => "tensorrt",
        })
    }
}

/// The detector service's backends: `contexts` of them, each one execution
/// context taking batches of 1 to `max_batch`. ONNX Runtime: one session
/// each. TensorRT: one engine, context `i` on optimisation profile `i`
/// with its own CUDA stream. Missing pieces are errors that say what to do,
/// never a fallback to another detector.
pub fn backends(
    cfg: &DetectorConfig,
    contexts: usize,
    max_batch: usize,
) -> Result<Vec<Box<dyn DetectBackend>>, DetectError> {
    backends_on(cfg, contexts, max_batch, 0)
}

/// [`backends`] with TensorRT (and its CUDA kernels) on CUDA device
/// `device`: pass `[gpu] device` so the detector runs on the GPU the
/// pipeline's frames are on (device pointers do not cross devices).
pub fn backends_on(
    cfg: &DetectorConfig,
    contexts: usize,
    max_batch: usize,
    device: usize,
) -> Result<Vec<Box<dyn DetectBackend>>, DetectError> {
    let contexts = contexts.max(1);
    match cfg.backend {
        DetectorBackend::Onnx => (0..contexts)
            .map(|_| Detector::new(cfg).map(|d| Box::new(d) as Box<dyn DetectBackend>))
            .collect(),
        DetectorBackend::TensorRt => {
            let engine = TrtEngine::load(&cfg.engine, device)?;
            // With the kernels, the GPU pipeline's device inputs are read in
            // place and outputs decoded on the device; without them the
            // detector still runs, on host tensors.
            let gpu = GpuContext::new(device)
                .inspect_err(|e| {
                    tracing::warn!("TensorRT without the CUDA kernels (host tensors only): {e}")
                })
                .ok();
            Ok(engine
                .detectors(contexts, cfg, max_batch.max(1), gpu.as_ref())?
                .into_iter()
                .map(|d| Box::new(d) as Box<dyn DetectBackend>)
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for (s, b) in [
            ("onnx", DetectorBackend::Onnx),
            ("ORT", DetectorBackend::Onnx),
            (" tensorrt ", DetectorBackend::TensorRt),
            ("trt", DetectorBackend::TensorRt),
        ] {
            assert_eq!(s.parse::<DetectorBackend>(), Ok(b));
        }
        let e = "cuda".parse::<DetectorBackend>().unwrap_err();
        assert!(e.contains("onnx or tensorrt"), "{e}");
        assert_eq!(DetectorBackend::TensorRt.to_string(), "tensorrt");
        assert_eq!(DetectorBackend::default(), DetectorBackend::Onnx);
    }

    #[test]
    fn tensorrt_backends_without_tensorrt_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DetectorConfig {
            backend: DetectorBackend::TensorRt,
            engine: dir.path().join("absent.plan"),
            ..DetectorConfig::default()
        };
        let e = backends(&cfg, 2, 8).err().expect("no plan").to_string();
        if cfg!(livecensor_trt_shim) {
            assert!(
                e.contains("absent.plan") && e.contains("engine build"),
                "{e}"
            );
        } else {
            assert!(e.starts_with("TensorRT backend not built"), "{e}");
        }
    }
}

/// One frame's detector input as it enters the service.
pub enum DetectInput {
    /// `[3, rows, cols]` f32 on the host.
    Host(Vec<f32>),
    /// `[1, 3, size, size]` in device memory, in the data type the backends
    /// read ([`DetectService::device_input`]), written by the stream's
    /// preprocess kernel and complete (its stream synchronised) before it is
    /// submitted. It goes back to its stream in [`Completion::spent`].
    Device(DeviceTensor),
}

impl DetectInput {
    pub(crate) fn host(&self) -> Option<&[f32]> {
        match self {
            DetectInput::Host(t) => Some(t),
            DetectInput::Device(_) => None,
        }
    }

    /// The input again when it is a device tensor (which goes back to its
    /// stream for reuse); `None` for a host one.
    pub fn device_only(self) -> Option<DetectInput> {
        match self {
            DetectInput::Device(_) => Some(self),
            DetectInput::Host(_) => None,
        }
    }
}

impl std::fmt::Debug for DetectInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetectInput::Host(t) => write!(f, "Host({} values)", t.len()),
            DetectInput::Device(t) => write!(f, "Device({t:?})"),
        }
    }
}

/// The device tensors a backend reads in place ([`DetectBackend::detect_inputs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInput {
    /// IEEE half rather than f32 values.
    pub f16: bool,
}

/// Anything that turns a batch of prepared tensors into detections.
pub trait DetectBackend: Send {
    /// Long side of the input tensor.
    fn input_size(&self) -> usize;
    /// The letterbox the backend takes: square unless it accepts any
    /// input of whole strides up to `input_size` (ONNX Runtime does).
    fn letterbox_mode(&self) -> LetterboxMode {
        LetterboxMode::Square
    }
    /// Runs one batch (`batch` images laid out NCHW one after another, all
    /// of the letterboxes' one shape).
    fn detect(
        &mut self,
        tensors: &[f32],
        batch: usize,
        letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError>;

    /// `Some` when [`DetectBackend::detect_inputs`] reads device tensors in
    /// place (TensorRT with the CUDA kernels): the GPU pipeline then hands
    /// its preprocessed tensors over without a copy to the host.
    fn device_input(&self) -> Option<DeviceInput> {
        None
    }

    /// Runs one batch of which at least one input is on the device, all of
    /// one shape (the backend's square). Only backends that report
    /// [`DetectBackend::device_input`] are given one.
    fn detect_inputs(
        &mut self,
        inputs: &[&DetectInput],
        letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        let _ = (inputs, letterboxes);
        Err(DetectError::Runtime(
            "this detector takes host tensors only".into(),
        ))
    }
}
