//! One CUDA stream: ordering, synchronisation and timing.

use super::*;

/// Start/stop events around GPU work on one stream.
pub struct GpuTimer {
    pub(super) start: CudaEvent,
    pub(super) stop: CudaEvent,
}

impl GpuTimer {
    /// Milliseconds between the two events (waits for the stop event).
    pub fn elapsed_ms(&self) -> Result<f32> {
        self.start
            .elapsed_ms(&self.stop)
            .map_err(gpu_err("event timing"))
    }
}

/// One CUDA stream and its scratch buffers; all launches on it run in
/// order. Frames and tensors handed between streams are ordered by their
/// fences (cudarc's event tracking is off).
pub struct GpuStream {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    pub(super) kernels: Arc<Kernels>,
    pub(super) masks: Option<CudaSlice<KernelMask>>,
    pub(super) scratch_a: Option<CudaSlice<u16>>,
    pub(super) scratch_b: Option<CudaSlice<u16>>,
    /// The blur's prefix sums (as large as A) and segment totals.
    pub(super) blur_pre: Option<CudaSlice<u32>>,
    pub(super) blur_seg: Option<CudaSlice<u32>>,
    pub(super) means: Option<CudaSlice<u8>>,
    /// Thresholds and per-image info for decoding, and the counter.
    pub(super) small: Option<DecodeBuffers>,
    pub(super) candidates: Option<CudaSlice<Candidate>>,
}

pub(super) struct DecodeBuffers {
    pub(super) thresholds: CudaSlice<f32>,
    pub(super) images: CudaSlice<ImageInfo>,
    pub(super) count: CudaSlice<i32>,
}

impl GpuStream {
    /// Makes this stream's CUDA context current on the calling thread
    /// (needed before NVDEC / NVENC calls).
    pub fn bind_context(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(gpu_err("binding the CUDA context"))
    }

    /// A new stream on the same context, with its own scratch buffers.
    pub fn sibling(&self) -> Result<GpuStream> {
        GpuStream::open(&self.ctx, &self.kernels)
    }

    /// A fresh stream on `ctx`; scratch buffers are allocated on first use.
    pub(super) fn open(ctx: &Arc<CudaContext>, kernels: &Arc<Kernels>) -> Result<GpuStream> {
        let stream = ctx.new_stream().map_err(gpu_err("creating a stream"))?;
        Ok(GpuStream {
            ctx: ctx.clone(),
            stream,
            kernels: kernels.clone(),
            masks: None,
            scratch_a: None,
            scratch_b: None,
            blur_pre: None,
            blur_seg: None,
            means: None,
            small: None,
            candidates: None,
        })
    }

    /// The raw `CUcontext` (for NVENC's session).
    pub fn raw_context(&self) -> *mut std::ffi::c_void {
        self.ctx.cu_ctx() as *mut std::ffi::c_void
    }

    /// The raw `CUstream`.
    pub fn raw_stream(&self) -> *mut std::ffi::c_void {
        self.stream.cu_stream() as *mut std::ffi::c_void
    }

    /// Waits for everything queued on this stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(gpu_err("stream synchronize"))
    }

    /// A timer whose start event is recorded now; call [`GpuStream::stop`]
    /// after the work to time.
    pub fn start_timer(&self) -> Result<GpuTimer> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self
            .ctx
            .new_event(flags)
            .map_err(gpu_err("creating an event"))?;
        let stop = self
            .ctx
            .new_event(flags)
            .map_err(gpu_err("creating an event"))?;
        start
            .record(&self.stream)
            .map_err(gpu_err("recording an event"))?;
        Ok(GpuTimer { start, stop })
    }

    /// Records the timer's stop event after the work queued so far.
    pub fn stop(&self, timer: &GpuTimer) -> Result<()> {
        timer
            .stop
            .record(&self.stream)
            .map_err(gpu_err("recording an event"))
    }
}

/// The fences of frames and tensors record and wait on real events.
impl StreamSync for GpuStream {
    type Event = CudaEvent;

    fn stream_id(&self) -> usize {
        self.stream.cu_stream() as usize
    }

    fn new_event(&self) -> Result<CudaEvent> {
        // Blocking: a host wait on a fence (a frame freed, NVENC) sleeps
        // instead of spinning a core.
        self.ctx
            .new_event(Some(
                cudarc::driver::sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC,
            ))
            .map_err(gpu_err("creating an event"))
    }

    fn record(&self, event: &CudaEvent) -> Result<()> {
        event
            .record(&self.stream)
            .map_err(gpu_err("recording an event"))
    }

    fn wait(&self, event: &CudaEvent) -> Result<()> {
        self.stream
            .wait(event)
            .map_err(gpu_err("cuStreamWaitEvent"))
    }
}
