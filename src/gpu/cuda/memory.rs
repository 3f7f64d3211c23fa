//! Device memory: NV12 frames, their pool and detector tensors.

use super::*;

/// Row alignment of device frames (bytes).
pub(super) const PITCH_ALIGN: usize = 256;

/// Device memory from `cuMemAlloc`, freed with `cuMemFree` on drop.
/// Frames use it, not cudarc's `alloc`: that is `cuMemAllocAsync` from the
/// memory pool on current GPUs, which `nvEncRegisterResource` refuses.
pub(super) struct LinearBuffer {
    pub(super) ctx: Arc<CudaContext>,
    ptr: u64,
    len: usize,
}

impl LinearBuffer {
    pub(super) fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<LinearBuffer> {
        debug_assert_eq!(alloc_kind(BufferUse::Frame), AllocKind::Linear);
        ctx.bind_to_thread()
            .map_err(gpu_err("binding the CUDA context"))?;
        // SAFETY: the context is current; a plain allocation of `len` bytes.
        let ptr = unsafe { cudarc::driver::result::malloc_sync(len.max(1)) }
            .map_err(gpu_err("cuMemAlloc of a frame"))?;
        Ok(LinearBuffer {
            ctx: ctx.clone(),
            ptr,
            len,
        })
    }

    pub(super) fn ptr(&self) -> u64 {
        self.ptr
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for LinearBuffer {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: our allocation, freed once; the owner waited for its
        // last use (`DeviceFrame::drop`).
        if let Err(e) = unsafe { cudarc::driver::result::free_sync(self.ptr) } {
            tracing::warn!("cuMemFree of a frame: {e}");
        }
    }
}

/// The fence of one buffer, shared by `&` users (a frame is read through
/// `&DeviceFrame` by the preprocess kernel).
pub(super) type SharedFence = std::sync::Mutex<Fence<CudaEvent>>;

pub(super) fn lock(f: &SharedFence) -> std::sync::MutexGuard<'_, Fence<CudaEvent>> {
    f.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on the host for the last work queued on a buffer.
pub(super) fn settle(f: &SharedFence) -> Result<()> {
    match lock(f).event() {
        Some(e) => e.synchronize().map_err(gpu_err("waiting for a buffer")),
        None => Ok(()),
    }
}

/// A pitched NV12 frame in device memory: Y rows of `pitch` bytes, then
/// the interleaved UV rows at `uv_offset`. Each stream that touches it
/// waits for the last one that did (see [`crate::gpu::fence`]), and the
/// frame waits for its last use before it is freed, so a frame dropped on
/// an error path is never freed under a running kernel.
pub struct DeviceFrame {
    pub(super) buf: LinearBuffer,
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) pitch: usize,
    pub(super) uv_offset: usize,
    pub(super) fence: SharedFence,
    /// Run before the memory is freed (NVENC unregisters it).
    pub(super) on_free: std::sync::Mutex<Vec<FreeHook>>,
}

/// Called with the frame's device address before it is freed.
pub type FreeHook = Box<dyn FnOnce(u64) + Send>;

impl Drop for DeviceFrame {
    fn drop(&mut self) {
        if let Err(e) = settle(&self.fence) {
            tracing::warn!("freeing a device frame: {e}");
        }
        let hooks = std::mem::take(
            &mut *self
                .on_free
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if !hooks.is_empty() {
            let _ = self.buf.ctx.bind_to_thread();
        }
        for hook in hooks {
            hook(self.buf.ptr());
        }
    }
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
    /// frame must outlive every use of it. Raw users order their work with
    /// [`Self::before_use`] / [`Self::after_use`] or [`Self::wait_idle`].
    pub fn device_address(&self, _stream: &GpuStream) -> u64 {
        self.buf.ptr()
    }

    /// Makes `stream` wait for the last work queued on this frame by any
    /// other stream; call before queuing work on it.
    pub fn before_use(&self, stream: &GpuStream) -> Result<()> {
        lock(&self.fence).before(stream)
    }

    /// Marks the work just queued on `stream` as this frame's last use.
    pub fn after_use(&self, stream: &GpuStream) -> Result<()> {
        lock(&self.fence).after(stream)
    }

    /// Waits on the host until the last work queued on this frame is done
    /// (before a consumer outside any stream, such as NVENC, reads it).
    pub fn wait_idle(&self) -> Result<()> {
        settle(&self.fence)
    }

    /// Runs `hook` with the device address once the frame's work is done
    /// and before its memory is freed (an NVENC registration of it must
    /// go first).
    pub fn on_free(&self, hook: FreeHook) {
        self.on_free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(hook);
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
/// Carries a fence like [`DeviceFrame`]: a preprocessed image handed from a
/// stream's CUDA stream to the detector's is waited for on the device.
pub struct DeviceTensor {
    pub(super) data: TensorData,
    pub(super) len: usize,
    pub(super) fence: SharedFence,
}

impl Drop for DeviceTensor {
    fn drop(&mut self) {
        // cudarc frees it on the stream that allocated it: wait for a last
        // use on another stream first.
        if let Err(e) = settle(&self.fence) {
            tracing::warn!("freeing a device tensor: {e}");
        }
    }
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

    /// The raw device address, for handing to an inference engine; order
    /// the engine's work with [`Self::before_use`] / [`Self::after_use`].
    pub fn device_address(&self, stream: &GpuStream) -> u64 {
        match &self.data {
            TensorData::F32(s) => s.device_ptr(&stream.stream).0,
            TensorData::F16(s) => s.device_ptr(&stream.stream).0,
        }
    }

    /// Makes `stream` wait for the last work queued on this tensor by any
    /// other stream.
    pub fn before_use(&self, stream: &GpuStream) -> Result<()> {
        lock(&self.fence).before(stream)
    }

    /// Marks the work just queued on `stream` as this tensor's last use.
    pub fn after_use(&self, stream: &GpuStream) -> Result<()> {
        lock(&self.fence).after(stream)
    }

    /// Waits on the host for the last work queued on this tensor.
    pub fn wait_idle(&self) -> Result<()> {
        settle(&self.fence)
    }
}

impl std::fmt::Debug for DeviceTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = if self.is_f16() { "f16" } else { "f32" };
        write!(f, "DeviceTensor({} {t})", self.len)
    }
}
