//! Without feature `cuda`: the same names as the CUDA backend. Nothing can
//! be constructed (`GpuContext::new` returns `Error::NotCompiled`), so the
//! methods are unreachable and callers need no `cfg`.

use std::convert::Infallible;

use super::{GpuDevice, GpuProbe};
use crate::detect::preprocess::{Letterbox, LetterboxMode, ResizeFilter};
use crate::error::{Error, Result};
use crate::frame::{CensorMethod, Detection, Frame, Mask};

fn not_compiled() -> Error {
    Error::NotCompiled("the CUDA backend", "cuda")
}

/// What this build offers: nothing, and it says so.
pub fn probe() -> GpuProbe {
    GpuProbe {
        compiled: false,
        problem: Some(not_compiled().to_string()),
        ..GpuProbe::default()
    }
}

/// Options for [`GpuContext::with_options`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuOptions {
    pub fast_math: bool,
}

#[derive(Debug)]
pub struct GpuContext {
    never: Infallible,
}

impl GpuContext {
    pub fn new(ordinal: usize) -> Result<GpuContext> {
        GpuContext::with_options(ordinal, GpuOptions::default())
    }

    pub fn with_options(_ordinal: usize, _options: GpuOptions) -> Result<GpuContext> {
        Err(not_compiled())
    }

    pub fn device(&self) -> &GpuDevice {
        match self.never {}
    }

    pub fn kernel_origin(&self) -> &str {
        match self.never {}
    }

    pub fn stream(&self) -> Result<GpuStream> {
        match self.never {}
    }
}

#[derive(Debug)]
pub struct DeviceFrame {
    never: Infallible,
}

impl DeviceFrame {
    pub fn width(&self) -> usize {
        match self.never {}
    }

    pub fn height(&self) -> usize {
        match self.never {}
    }

    pub fn pitch(&self) -> usize {
        match self.never {}
    }

    pub fn before_use(&self, _stream: &GpuStream) -> Result<()> {
        match self.never {}
    }

    pub fn after_use(&self, _stream: &GpuStream) -> Result<()> {
        match self.never {}
    }

    pub fn wait_idle(&self) -> Result<()> {
        match self.never {}
    }
}

pub struct FramePool {
    never: Infallible,
}

impl FramePool {
    pub fn get(&mut self, _stream: &GpuStream) -> Result<DeviceFrame> {
        match self.never {}
    }

    pub fn put(&mut self, _frame: DeviceFrame) {
        match self.never {}
    }

    pub fn idle(&self) -> usize {
        match self.never {}
    }
}

#[derive(Debug)]
pub struct DeviceTensor {
    never: Infallible,
}

impl DeviceTensor {
    pub fn len(&self) -> usize {
        match self.never {}
    }

    pub fn is_empty(&self) -> bool {
        match self.never {}
    }

    pub fn is_f16(&self) -> bool {
        match self.never {}
    }

    pub fn before_use(&self, _stream: &GpuStream) -> Result<()> {
        match self.never {}
    }

    pub fn after_use(&self, _stream: &GpuStream) -> Result<()> {
        match self.never {}
    }

    pub fn wait_idle(&self) -> Result<()> {
        match self.never {}
    }
}

pub struct GpuTimer {
    never: Infallible,
}

impl GpuTimer {
    pub fn elapsed_ms(&self) -> Result<f32> {
        match self.never {}
    }
}

pub struct GpuStream {
    never: Infallible,
}

impl GpuStream {
    pub fn synchronize(&self) -> Result<()> {
        match self.never {}
    }

    pub fn start_timer(&self) -> Result<GpuTimer> {
        match self.never {}
    }

    pub fn stop(&self, _timer: &GpuTimer) -> Result<()> {
        match self.never {}
    }

    pub fn alloc_frame(&self, _width: usize, _height: usize) -> Result<DeviceFrame> {
        match self.never {}
    }

    pub fn upload(&self, _frame: &Frame, _dst: &mut DeviceFrame) -> Result<()> {
        match self.never {}
    }

    pub fn download(&self, _src: &DeviceFrame) -> Result<Frame> {
        match self.never {}
    }

    pub fn alloc_input(&self, _batch: usize, _size: usize, _f16: bool) -> Result<DeviceTensor> {
        match self.never {}
    }

    pub fn alloc_tensor(&self, _len: usize, _f16: bool) -> Result<DeviceTensor> {
        match self.never {}
    }

    pub fn upload_tensor(&self, _values: &[f32], _dst: &mut DeviceTensor) -> Result<()> {
        match self.never {}
    }

    pub fn upload_tensor_at(
        &self,
        _values: &[f32],
        _dst: &mut DeviceTensor,
        _offset: usize,
    ) -> Result<()> {
        match self.never {}
    }

    pub fn copy_tensor(
        &self,
        _src: &DeviceTensor,
        _dst: &mut DeviceTensor,
        _offset: usize,
    ) -> Result<()> {
        match self.never {}
    }

    pub fn download_tensor(&self, _src: &DeviceTensor) -> Result<Vec<f32>> {
        match self.never {}
    }

    pub fn preprocess_nv12(
        &mut self,
        _frame: &DeviceFrame,
        _input: &mut DeviceTensor,
        _mode: LetterboxMode,
        _filter: ResizeFilter,
        _size: usize,
        _slot: usize,
    ) -> Result<Letterbox> {
        match self.never {}
    }

    #[allow(clippy::too_many_arguments)]
    pub fn preprocess_nv12_window(
        &mut self,
        _frame: &DeviceFrame,
        _window: (usize, usize, usize, usize),
        _input: &mut DeviceTensor,
        _mode: LetterboxMode,
        _filter: ResizeFilter,
        _size: usize,
        _slot: usize,
    ) -> Result<Letterbox> {
        match self.never {}
    }

    pub fn censor_nv12(
        &mut self,
        _frame: &mut DeviceFrame,
        _masks: &[Mask],
        _method: &CensorMethod,
    ) -> Result<()> {
        match self.never {}
    }

    pub fn decode_yolo(
        &mut self,
        _output: &DeviceTensor,
        _anchors: usize,
        _letterboxes: &[Letterbox],
        _thresholds: &[f32],
    ) -> Result<Vec<Vec<Detection>>> {
        match self.never {}
    }
}
