//! Without the shim (no feature `tensorrt`, or no TensorRT headers at build
//! time): the same names as the real backend. Nothing can be constructed
//! (every constructor returns [`DetectError::TrtNotBuilt`]), so the methods
//! are unreachable and callers need no `cfg`.

use std::convert::Infallible;
use std::ffi::c_void;
use std::path::Path;

use super::{
    find_nvinfer, BuildOptions, BuildReport, EngineLayout, PlanMeta, TrtProbe, TrtVersion,
};
use crate::detect::{DetectBackend, DetectInput, DeviceInput};
use crate::detect::{DetectorConfig, Letterbox};
use crate::error::DetectError;
use crate::frame::Detection;
use crate::gpu::{DeviceTensor, GpuContext, GpuStream};

/// Why this binary has no TensorRT backend, and how to get one.
fn not_built() -> DetectError {
    let reason = if !cfg!(feature = "tensorrt") {
        "livecensor was built without feature `tensorrt` (rebuild with `--features tensorrt`)"
            .to_string()
    } else {
        format!(
            "livecensor was built with feature `tensorrt` but without its shim: {}",
            option_env!("LIVECENSOR_TRT_STUB_REASON").unwrap_or(
                "no TensorRT headers (set TENSORRT_INCLUDE_DIR or run `bash scripts/tensorrt-headers.sh`, then rebuild)"
            )
        )
    };
    DetectError::TrtNotBuilt { reason }
}

pub struct TrtLibrary {
    never: Infallible,
}

impl TrtLibrary {
    pub fn load() -> Result<TrtLibrary, DetectError> {
        Err(not_built())
    }

    pub fn version(&self) -> TrtVersion {
        match self.never {}
    }

    pub fn path(&self) -> &str {
        match self.never {}
    }
}

/// No shim, no headers it was compiled against.
pub fn header_version() -> Option<TrtVersion> {
    None
}

/// What this build and machine offer: a stub, and whether libnvinfer is
/// there anyway.
pub fn probe() -> TrtProbe {
    TrtProbe {
        feature: cfg!(feature = "tensorrt"),
        shim: None,
        stub_reason: Some(not_built().to_string()),
        library: find_nvinfer(),
    }
}

pub struct TrtEngine {
    never: Infallible,
}

impl TrtEngine {
    pub fn load(_path: &Path, _device: usize) -> Result<TrtEngine, DetectError> {
        Err(not_built())
    }

    pub fn layout(&self) -> &EngineLayout {
        match self.never {}
    }

    pub fn meta(&self) -> Option<&PlanMeta> {
        match self.never {}
    }

    pub fn detectors(
        &self,
        _contexts: usize,
        _cfg: &DetectorConfig,
        _max_batch: usize,
        _gpu: Option<&GpuContext>,
    ) -> Result<Vec<TrtDetector>, DetectError> {
        match self.never {}
    }
}

pub struct TrtDetector {
    never: Infallible,
}

impl TrtDetector {
    pub fn input_size(&self) -> usize {
        match self.never {}
    }

    pub fn max_batch(&self) -> usize {
        match self.never {}
    }

    pub fn profile(&self) -> usize {
        match self.never {}
    }

    pub fn anchors(&self) -> usize {
        match self.never {}
    }

    pub fn layout(&self) -> &EngineLayout {
        match self.never {}
    }

    pub fn output_len(&self, _batch: usize) -> usize {
        match self.never {}
    }

    pub fn raw_stream(&self) -> *mut c_void {
        match self.never {}
    }

    /// # Safety
    /// As the real backend's: unreachable here.
    pub unsafe fn enqueue_device(
        &mut self,
        _input: u64,
        _output: u64,
        _batch: usize,
        _stream: *mut c_void,
    ) -> Result<usize, DetectError> {
        match self.never {}
    }

    pub fn infer_device(
        &mut self,
        _stream: &GpuStream,
        _input: &DeviceTensor,
        _output: &mut DeviceTensor,
        _batch: usize,
    ) -> Result<usize, DetectError> {
        match self.never {}
    }

    pub fn detect(
        &mut self,
        _tensors: &[f32],
        _batch: usize,
        _letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        match self.never {}
    }

    pub fn device_input(&self) -> Option<DeviceInput> {
        match self.never {}
    }

    pub fn detect_inputs(
        &mut self,
        _inputs: &[&DetectInput],
        _letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        match self.never {}
    }
}

impl DetectBackend for TrtDetector {
    fn input_size(&self) -> usize {
        match self.never {}
    }

    fn detect(
        &mut self,
        _tensors: &[f32],
        _batch: usize,
        _letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        match self.never {}
    }
}

/// Says the backend is not built (before looking at the options: that is
/// the one thing to fix first).
pub fn build_engine(_opts: &BuildOptions) -> Result<BuildReport, DetectError> {
    Err(not_built())
}
