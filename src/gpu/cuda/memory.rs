//! Device memory: NV12 frames, their pool and detector tensors.

use super::*;

/// Row alignment of device frames (bytes).
pub(super) const PITCH_ALIGN: usize = 256;

/// A pitched NV12 frame in device memory: Y rows of `pitch` bytes, then
/// the interleaved UV rows at `uv_offset`.
pub struct DeviceFrame {
    pub(super) data: CudaSlice<u8>,
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) pitch: usize,
    pub(super) uv_offset: usize,
}

impl std::fmt::Debug for DeviceFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("pitch", &self.pitch)
            .finish_non_exhaustive()
    }
}

impl DeviceFrame {
    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn pitch(&self) -> usize {
        self.pitch
    }

    /// Byte offset of the interleaved UV plane.
    pub fn uv_offset(&self) -> usize {
        self.uv_offset
    }

    /// The raw device address (for NVENC registration and raw copies); the
    /// frame must outlive every use of it.
    pub fn device_address(&self, stream: &GpuStream) -> u64 {
        self.data.device_ptr(&stream.stream).0
    }

    /// Byte layout for a `width x height` NV12 frame: (pitch, uv_offset, total).
    pub fn layout(width: usize, height: usize) -> (usize, usize, usize) {
        let pitch = width.max(1).next_multiple_of(PITCH_ALIGN);
        let uv_offset = pitch * height;
        (pitch, uv_offset, uv_offset + pitch * height.div_ceil(2))
    }
}

/// Reuses device frames of one size so steady-state streaming allocates
/// nothing.
pub struct FramePool {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) free: Vec<DeviceFrame>,
}

impl FramePool {
    pub fn new(width: usize, height: usize) -> FramePool {
        FramePool {
            width,
            height,
            free: Vec::new(),
        }
    }

    /// A frame of the pool's size (contents undefined).
    pub fn get(&mut self, stream: &GpuStream) -> Result<DeviceFrame> {
        match self.free.pop() {
            Some(f) => Ok(f),
            None => stream.alloc_frame(self.width, self.height),
        }
    }

    /// Returns a frame; frames of another size are dropped.
    pub fn put(&mut self, frame: DeviceFrame) {
        if frame.width == self.width && frame.height == self.height {
            self.free.push(frame);
        }
    }

    pub fn idle(&self) -> usize {
        self.free.len()
    }
}

/// A detector tensor `[batch, 3, size, size]` (input) or any f32 tensor
/// (output) in device memory.
pub struct DeviceTensor {
    pub(super) data: TensorData,
    pub(super) len: usize,
}

pub(super) enum TensorData {
    F32(CudaSlice<f32>),
    /// IEEE half bits.
    F16(CudaSlice<u16>),
}

impl DeviceTensor {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_f16(&self) -> bool {
        matches!(self.data, TensorData::F16(_))
    }

    /// The raw device address, for handing to an inference engine.
    pub fn device_address(&self, stream: &GpuStream) -> u64 {
        match &self.data {
            TensorData::F32(s) => s.device_ptr(&stream.stream).0,
            TensorData::F16(s) => s.device_ptr(&stream.stream).0,
        }
    }
}

impl std::fmt::Debug for DeviceTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = if self.is_f16() { "f16" } else { "f32" };
        write!(f, "DeviceTensor({} {t})", self.len)
    }
}
