//! The CUDA implementation (feature `cuda`): cudarc with the driver loaded
//! at run time, so the binary builds and starts on machines without CUDA;
//! every missing piece is an `Error::Gpu` with the reason, never a panic.

use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
    DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::nvrtc::Nvrtc;
use super::plan::{
    candidates_to_detections, decode_dims, preprocess_dims, Candidate, CensorPlan, ImageInfo,
    Kernel, KernelMask, LaunchDims, Plane,
};
use super::{GpuDevice, GpuProbe};
use crate::detect::preprocess::{Letterbox, LetterboxMode, ResizeFilter};
use crate::error::{Error, Result};
use crate::frame::{CensorMethod, Detection, Frame, Mask, PixelFormat};

/// A kernel module as `build.rs` lists it.
#[derive(Clone, Copy, Debug)]
pub struct KernelModule {
    /// File stem, e.g. "censor".
    pub name: &'static str,
    /// File name, e.g. "censor.cu".
    pub file: &'static str,
    /// `common.cuh` followed by the file.
    pub source: &'static str,
    /// Prebuilt by nvcc at build time, when it was available.
    pub fatbin: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

// SAFETY: plain #[repr(C)] structs of i32/f32, identical to the C structs;
// all-zero bits are a valid value of each.
unsafe impl DeviceRepr for KernelMask {}
unsafe impl DeviceRepr for ImageInfo {}
unsafe impl DeviceRepr for Candidate {}
unsafe impl cudarc::driver::ValidAsZeroBits for KernelMask {}
unsafe impl cudarc::driver::ValidAsZeroBits for ImageInfo {}
unsafe impl cudarc::driver::ValidAsZeroBits for Candidate {}

/// Row alignment of device frames (bytes).
const PITCH_ALIGN: usize = 256;
/// Initial room for decoded candidates; grows when a frame has more.
const INITIAL_CANDIDATES: usize = 1024;

fn gpu_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Gpu(format!("{what}: {e}"))
}

/// Folders searched for `libnvrtc.so*` before the loader's path: the
/// set-up script's `models/nvrtc/` next to the working directory and next
/// to the executable.
fn nvrtc_dirs() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("models/nvrtc")];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
    {
        v.push(dir.join("models/nvrtc"));
        v.push(dir.join("../../models/nvrtc"));
    }
    v
}

/// Runs `f`, turning a cudarc panic (it panics when a library or symbol is
/// missing) into an ordinary error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Gpu(format!("{what}: {msg}")))
        }
    }
}

fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

const NO_DRIVER: &str =
    "the NVIDIA driver library (libcuda.so.1) is not installed or not on the loader path";

/// What this machine offers the CUDA backend (for `doctor`); never panics.
pub fn probe() -> GpuProbe {
    let mut p = GpuProbe {
        compiled: true,
        fatbin_embedded: !KERNEL_MODULES.is_empty()
            && KERNEL_MODULES.iter().all(|m| m.fatbin.is_some()),
        ..GpuProbe::default()
    };
    match Nvrtc::load(&nvrtc_dirs()) {
        Ok(n) => {
            let v = n
                .version()
                .map(|(a, b)| format!("{a}.{b}"))
                .unwrap_or_else(|e| e);
            p.nvrtc = Some(format!("{} ({v})", n.path().display()));
        }
        Err(e) => {
            if !p.fatbin_embedded {
                p.problem = Some(e);
            }
        }
    }
    if !driver_present() {
        p.problem = Some(NO_DRIVER.into());
        return p;
    }
    p.driver_present = true;
    let found = guarded("CUDA driver", || {
        use cudarc::driver::result;
        result::init().map_err(gpu_err("cuInit"))?;
        let mut version = 0;
        // SAFETY: a valid out-pointer; the driver is initialised.
        let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
        let version = (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(version);
        let count = result::device::get_count().map_err(gpu_err("cuDeviceGetCount"))?;
        let mut devices = Vec::new();
        for i in 0..count.max(0) {
            let dev = result::device::get(i).map_err(gpu_err("cuDeviceGet"))?;
            let name = result::device::get_name(dev).map_err(gpu_err("cuDeviceGetName"))?;
            use cudarc::driver::sys::CUdevice_attribute as A;
            // SAFETY: a valid device handle from cuDeviceGet.
            let (major, minor, mem) = unsafe {
                (
                    result::device::get_attribute(
                        dev,
                        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    )
                    .map_err(gpu_err("compute capability"))?,
                    result::device::get_attribute(
                        dev,
                        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    )
                    .map_err(gpu_err("compute capability"))?,
                    result::device::total_mem(dev).map_err(gpu_err("cuDeviceTotalMem"))?,
                )
            };
            devices.push(GpuDevice {
                ordinal: i as usize,
                name,
                compute_capability: (major, minor),
                memory_bytes: mem,
            });
        }
        Ok((version, devices))
    });
    match found {
        Ok((version, devices)) => {
            p.driver_version = version;
            if devices.is_empty() && p.problem.is_none() {
                p.problem = Some("the driver reports no CUDA device".into());
            }
            p.devices = devices;
        }
        Err(e) => p.problem = Some(e.to_string()),
    }
    p
}

/// The primary context of device `ordinal`, with cudarc's event tracking
/// off; an error (never a panic) without a driver or that device. Shared by
/// [`GpuContext`] and the TensorRT detector.
pub(crate) fn open_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    if !driver_present() {
        return Err(Error::Gpu(NO_DRIVER.into()));
    }
    guarded("CUDA initialisation", || {
        let count = CudaContext::device_count().map_err(gpu_err("cuDeviceGetCount"))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::Gpu(format!(
                "CUDA device {ordinal} requested, the driver reports {count}"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(gpu_err("creating the CUDA context"))?;
        // Kernels and TensorRT get raw device pointers, so cudarc's
        // per-buffer event tracking would be incomplete anyway: work is
        // ordered by stream, and sharing a buffer across streams needs an
        // explicit synchronisation by the caller.
        // SAFETY: called before any stream or buffer exists.
        unsafe { ctx.disable_event_tracking() };
        Ok(ctx)
    })
}

/// Options for [`GpuContext::with_options`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuOptions {
    /// Compile NVRTC kernels with `--use_fast_math` (breaks bit parity with
    /// the CPU references; off by default). Ignored for an embedded fatbin.
    pub fast_math: bool,
}

/// One CUDA device with the livecensor kernels loaded.
pub struct GpuContext {
    ctx: Arc<CudaContext>,
    kernels: Arc<Kernels>,
    device: GpuDevice,
    origin: String,
}

/// The loaded functions, indexed like [`Kernel::ALL`].
struct Kernels {
    funcs: Vec<CudaFunction>,
    _modules: Vec<Arc<CudaModule>>,
}

impl Kernels {
    fn get(&self, k: Kernel) -> &CudaFunction {
        let i = Kernel::ALL.iter().position(|&x| x == k).unwrap_or(0);
        &self.funcs[i]
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("device", &self.device)
            .field("kernels", &self.origin)
            .finish()
    }
}

impl GpuContext {
    /// Opens device `ordinal` and loads the kernels (embedded fatbin, else
    /// NVRTC for the device's architecture).
    pub fn new(ordinal: usize) -> Result<GpuContext> {
        GpuContext::with_options(ordinal, GpuOptions::default())
    }

    pub fn with_options(ordinal: usize, options: GpuOptions) -> Result<GpuContext> {
        let ctx = open_context(ordinal)?;
        guarded("CUDA initialisation", || {
            let device = GpuDevice {
                ordinal,
                name: ctx.name().map_err(gpu_err("device name"))?,
                compute_capability: ctx
                    .compute_capability()
                    .map_err(gpu_err("compute capability"))?,
                memory_bytes: ctx.total_mem().map_err(gpu_err("device memory"))?,
            };
            let (modules, origin) = load_modules(&ctx, device.compute_capability, options)?;
            let mut funcs = Vec::with_capacity(Kernel::ALL.len());
            for k in Kernel::ALL {
                let stem = k.source_file().trim_end_matches(".cu");
                let module = KERNEL_MODULES
                    .iter()
                    .position(|m| m.name == stem)
                    .and_then(|i| modules.get(i))
                    .ok_or_else(|| Error::Gpu(format!("no kernel module {stem}")))?;
                funcs.push(module.load_function(k.name()).map_err(gpu_err(k.name()))?);
            }
            Ok(GpuContext {
                ctx,
                kernels: Arc::new(Kernels {
                    funcs,
                    _modules: modules,
                }),
                device,
                origin,
            })
        })
    }

    pub fn device(&self) -> &GpuDevice {
        &self.device
    }

    /// Where the kernels came from, e.g. "embedded fatbin" or
    /// "NVRTC 13.5 (sm_90)".
    pub fn kernel_origin(&self) -> &str {
        &self.origin
    }

    /// A new CUDA stream with its own scratch buffers; use one per worker.
    pub fn stream(&self) -> Result<GpuStream> {
        GpuStream::open(&self.ctx, &self.kernels)
    }
}

fn load_modules(
    ctx: &Arc<CudaContext>,
    (major, minor): (i32, i32),
    options: GpuOptions,
) -> Result<(Vec<Arc<CudaModule>>, String)> {
    let mut nvrtc: Option<Nvrtc> = None;
    let mut modules = Vec::new();
    let mut origins = Vec::new();
    for m in KERNEL_MODULES {
        if let Some(fb) = m.fatbin {
            match ctx.load_module(Ptx::from_binary(fb.to_vec())) {
                Ok(module) => {
                    modules.push(module);
                    origins.push("embedded fatbin".to_string());
                    continue;
                }
                Err(e) => {
                    tracing::warn!("{}: embedded fatbin rejected ({e}); trying NVRTC", m.file)
                }
            }
        }
        if nvrtc.is_none() {
            nvrtc = Some(Nvrtc::load(&nvrtc_dirs()).map_err(|e| {
                Error::Gpu(format!("kernels must be compiled at run time but {e}"))
            })?);
        }
        let Some(n) = nvrtc.as_ref() else {
            continue;
        };
        let version = n.version().map_err(Error::Gpu)?;
        let sm = format!("--gpu-architecture=sm_{major}{minor}");
        let mut opts = vec![sm.as_str(), "--fmad=false"];
        if options.fast_math {
            opts.push("--use_fast_math");
        }
        // CUBIN for this exact device; if this NVRTC does not know the
        // architecture, compute_80 PTX for the driver to JIT.
        let (image, how) = match n.compile(m.source, m.file, &opts) {
            Ok(c) => match c.cubin {
                Some(cubin) => (cubin, format!("sm_{major}{minor}")),
                None => (c.ptx, "PTX".to_string()),
            },
            Err(first) => {
                opts[0] = "--gpu-architecture=compute_80";
                let c = n
                    .compile(m.source, m.file, &opts)
                    .map_err(|e| Error::Gpu(format!("NVRTC: {first}\nthen: {e}")))?;
                (c.ptx, "compute_80 PTX".to_string())
            }
        };
        let module = ctx
            .load_module(Ptx::from_binary(image))
            .map_err(gpu_err(m.file))?;
        modules.push(module);
        origins.push(format!("NVRTC {}.{} ({how})", version.0, version.1));
    }
    origins.dedup();
    Ok((modules, origins.join(", ")))
}

/// A pitched NV12 frame in device memory: Y rows of `pitch` bytes, then
/// the interleaved UV rows at `uv_offset`.
pub struct DeviceFrame {
    data: CudaSlice<u8>,
    width: usize,
    height: usize,
    pitch: usize,
    uv_offset: usize,
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
    width: usize,
    height: usize,
    free: Vec<DeviceFrame>,
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
    data: TensorData,
    len: usize,
}

enum TensorData {
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

/// Start/stop events around GPU work on one stream.
pub struct GpuTimer {
    start: CudaEvent,
    stop: CudaEvent,
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
/// order. Frames and tensors used on two streams need the caller to
/// synchronise (event tracking is off).
pub struct GpuStream {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Arc<Kernels>,
    masks: Option<CudaSlice<KernelMask>>,
    scratch_a: Option<CudaSlice<u16>>,
    scratch_b: Option<CudaSlice<u16>>,
    means: Option<CudaSlice<u8>>,
    /// Thresholds and per-image info for decoding, and the counter.
    small: Option<DecodeBuffers>,
    candidates: Option<CudaSlice<Candidate>>,
}

struct DecodeBuffers {
    thresholds: CudaSlice<f32>,
    images: CudaSlice<ImageInfo>,
    count: CudaSlice<i32>,
}

/// `slot` is a buffer with at least `need` elements, reallocating if not.
fn ensure<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    slot: &mut Option<CudaSlice<T>>,
    need: usize,
) -> Result<()> {
    if slot.as_ref().is_none_or(|s| s.len() < need.max(1)) {
        *slot = Some(
            stream
                .alloc_zeros::<T>(need.max(1))
                .map_err(gpu_err("allocating scratch"))?,
        );
    }
    Ok(())
}

fn cfg(d: &LaunchDims) -> LaunchConfig {
    LaunchConfig {
        grid_dim: d.grid,
        block_dim: d.block,
        shared_mem_bytes: 0,
    }
}

/// End of `len` values written from `offset` into a tensor of `capacity`.
fn slot_end(len: usize, offset: usize, capacity: usize) -> Result<usize> {
    offset
        .checked_add(len)
        .filter(|&e| e <= capacity)
        .ok_or_else(|| {
            Error::Gpu(format!(
                "{len} values at {offset} do not fit a tensor of {capacity}"
            ))
        })
}

fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Gpu(format!("{what} {v} is too large for the kernels")))
}

fn bad_dims(width: usize, height: usize, reason: &str) -> Error {
    crate::error::MediaError::BadDimensions {
        width,
        height,
        reason: reason.into(),
    }
    .into()
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
    fn open(ctx: &Arc<CudaContext>, kernels: &Arc<Kernels>) -> Result<GpuStream> {
        let stream = ctx.new_stream().map_err(gpu_err("creating a stream"))?;
        Ok(GpuStream {
            ctx: ctx.clone(),
            stream,
            kernels: kernels.clone(),
            masks: None,
            scratch_a: None,
            scratch_b: None,
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

    /// Queues a device-to-device copy of a pitched NV12 picture (Y rows at
    /// `src`, UV rows at `src + src_uv_offset`, `src_pitch` bytes apart)
    /// into `dst`, whose size it must have.
    ///
    /// # Safety
    /// `src` must be a device allocation of this context holding at least
    /// `src_uv_offset + src_pitch * ceil(height / 2)` bytes that stays
    /// valid and unchanged until the copy completes (synchronize).
    pub unsafe fn copy_nv12_from_device(
        &self,
        src: u64,
        src_pitch: usize,
        src_uv_offset: usize,
        dst: &mut DeviceFrame,
    ) -> Result<()> {
        use cudarc::driver::sys;
        let (w, h, p) = (dst.width, dst.height, dst.pitch);
        if src_pitch < w {
            return Err(Error::Gpu(format!(
                "source pitch {src_pitch} is less than the width {w}"
            )));
        }
        let base = dst.data.device_ptr_mut(&self.stream).0;
        let planes = [
            (src, base, w, h),
            (
                src + src_uv_offset as u64,
                base + dst.uv_offset as u64,
                2 * w.div_ceil(2),
                h.div_ceil(2),
            ),
        ];
        for (s, d, row, rows) in planes {
            let copy = sys::CUDA_MEMCPY2D {
                srcXInBytes: 0,
                srcY: 0,
                srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                srcHost: std::ptr::null(),
                srcDevice: s,
                srcArray: std::ptr::null_mut(),
                srcPitch: src_pitch,
                dstXInBytes: 0,
                dstY: 0,
                dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                dstHost: std::ptr::null_mut(),
                dstDevice: d,
                dstArray: std::ptr::null_mut(),
                dstPitch: p,
                WidthInBytes: row,
                Height: rows,
            };
            // SAFETY: both ranges are device memory of this context (the
            // caller vouches for the source; the destination is `dst`,
            // whose layout is `p`-pitched with `rows` rows per plane).
            let r = unsafe { sys::cuMemcpy2DAsync_v2(&copy, self.stream.cu_stream()) };
            if r != sys::CUresult::CUDA_SUCCESS {
                return Err(Error::Gpu(format!("cuMemcpy2DAsync: {r:?}")));
            }
        }
        Ok(())
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

    /// A device NV12 frame (zeroed).
    pub fn alloc_frame(&self, width: usize, height: usize) -> Result<DeviceFrame> {
        if width == 0 || height == 0 {
            return Err(bad_dims(width, height, "empty frame"));
        }
        to_i32(width, "frame width")?;
        to_i32(height, "frame height")?;
        let (pitch, uv_offset, total) = DeviceFrame::layout(width, height);
        to_i32(pitch, "frame pitch")?;
        let data = self
            .stream
            .alloc_zeros::<u8>(total)
            .map_err(gpu_err("allocating a frame"))?;
        Ok(DeviceFrame {
            data,
            width,
            height,
            pitch,
            uv_offset,
        })
    }

    /// Copies a host frame (I420 or NV12) into a device frame of its size.
    pub fn upload(&self, frame: &Frame, dst: &mut DeviceFrame) -> Result<()> {
        if frame.width != dst.width || frame.height != dst.height {
            return Err(bad_dims(
                frame.width,
                frame.height,
                "device frame has another size",
            ));
        }
        if frame.data.len() != Frame::expected_len(frame.width, frame.height) {
            return Err(bad_dims(
                frame.width,
                frame.height,
                "frame buffer size mismatch",
            ));
        }
        let nv12 = frame.converted(PixelFormat::Nv12);
        let (w, p) = (dst.width, dst.pitch);
        let mut staged = vec![0u8; dst.data.len()];
        let (y, uv, _) = nv12.planes();
        for (row, src) in y.chunks_exact(w).enumerate() {
            staged[row * p..row * p + w].copy_from_slice(src);
        }
        let uv_row = 2 * w.div_ceil(2);
        for (row, src) in uv.chunks_exact(uv_row).enumerate() {
            let o = dst.uv_offset + row * p;
            staged[o..o + uv_row].copy_from_slice(src);
        }
        self.stream
            .memcpy_htod(&staged, &mut dst.data)
            .map_err(gpu_err("uploading a frame"))
    }

    /// Copies a device frame back into a packed host NV12 frame (waits).
    pub fn download(&self, src: &DeviceFrame) -> Result<Frame> {
        let staged = self
            .stream
            .clone_dtoh(&src.data)
            .map_err(gpu_err("downloading a frame"))?;
        let (w, h, p) = (src.width, src.height, src.pitch);
        let mut out = Frame::new(PixelFormat::Nv12, w, h);
        let uv_row = 2 * w.div_ceil(2);
        let (y, uv, _) = out.planes_mut();
        for (row, dst) in y.chunks_exact_mut(w).enumerate() {
            dst.copy_from_slice(&staged[row * p..row * p + w]);
        }
        for (row, dst) in uv.chunks_exact_mut(uv_row).enumerate() {
            let o = src.uv_offset + row * p;
            dst.copy_from_slice(&staged[o..o + uv_row]);
        }
        Ok(out)
    }

    /// A zeroed detector input `[batch, 3, size, size]`, f32 or f16.
    pub fn alloc_input(&self, batch: usize, size: usize, f16: bool) -> Result<DeviceTensor> {
        let len = batch
            .checked_mul(3 * size * size)
            .ok_or_else(|| Error::Gpu("input tensor too large".into()))?;
        self.alloc_tensor(len, f16)
    }

    /// A zeroed tensor of `len` elements (e.g. the detector output).
    pub fn alloc_tensor(&self, len: usize, f16: bool) -> Result<DeviceTensor> {
        let data = if f16 {
            TensorData::F16(
                self.stream
                    .alloc_zeros::<u16>(len.max(1))
                    .map_err(gpu_err("allocating a tensor"))?,
            )
        } else {
            TensorData::F32(
                self.stream
                    .alloc_zeros::<f32>(len.max(1))
                    .map_err(gpu_err("allocating a tensor"))?,
            )
        };
        Ok(DeviceTensor { data, len })
    }

    /// Copies host f32 values into a tensor (tests, CPU-side outputs).
    pub fn upload_tensor(&self, values: &[f32], dst: &mut DeviceTensor) -> Result<()> {
        self.upload_tensor_at(values, dst, 0)
    }

    /// Copies host f32 values into `dst` from value `offset`, converted to
    /// its data type (a host image in a batch slot); waits.
    pub fn upload_tensor_at(
        &self,
        values: &[f32],
        dst: &mut DeviceTensor,
        offset: usize,
    ) -> Result<()> {
        let end = slot_end(values.len(), offset, dst.len)?;
        match &mut dst.data {
            TensorData::F32(d) => self
                .stream
                .memcpy_htod(values, &mut d.slice_mut(offset..end))
                .map_err(gpu_err("uploading a tensor"))?,
            TensorData::F16(d) => {
                let bits: Vec<u16> = values
                    .iter()
                    .map(|&v| half::f16::from_f32(v).to_bits())
                    .collect();
                self.stream
                    .memcpy_htod(&bits[..], &mut d.slice_mut(offset..end))
                    .map_err(gpu_err("uploading a tensor"))?;
            }
        }
        // The source is pageable host memory that must outlive the copy.
        self.synchronize()
    }

    /// Queues a copy of all of `src` into `dst` from value `offset`, both
    /// of one data type (a stream's preprocessed image into a batch slot).
    pub fn copy_tensor(
        &self,
        src: &DeviceTensor,
        dst: &mut DeviceTensor,
        offset: usize,
    ) -> Result<()> {
        let end = slot_end(src.len, offset, dst.len)?;
        match (&src.data, &mut dst.data) {
            (TensorData::F32(s), TensorData::F32(d)) => self
                .stream
                .memcpy_dtod(&s.slice(..src.len), &mut d.slice_mut(offset..end)),
            (TensorData::F16(s), TensorData::F16(d)) => self
                .stream
                .memcpy_dtod(&s.slice(..src.len), &mut d.slice_mut(offset..end)),
            _ => {
                return Err(Error::Gpu(
                    "copying between an f32 and an f16 tensor".into(),
                ))
            }
        }
        .map_err(gpu_err("copying a tensor"))
    }

    /// Copies an f32 tensor back (waits); f16 tensors come back as f32.
    pub fn download_tensor(&self, src: &DeviceTensor) -> Result<Vec<f32>> {
        let mut v = match &src.data {
            TensorData::F32(s) => self
                .stream
                .clone_dtoh(s)
                .map_err(gpu_err("downloading a tensor"))?,
            TensorData::F16(s) => self
                .stream
                .clone_dtoh(s)
                .map_err(gpu_err("downloading a tensor"))?
                .into_iter()
                .map(half_to_f32)
                .collect(),
        };
        v.truncate(src.len);
        Ok(v)
    }

    /// Letterboxes `frame` into slot `slot` of `input` (`[batch, 3, rows,
    /// cols]` of the letterbox `mode` gives for `size`, f32 or f16),
    /// exactly like `detect::preprocess::preprocess_frame_with`.
    pub fn preprocess_nv12(
        &mut self,
        frame: &DeviceFrame,
        input: &mut DeviceTensor,
        mode: LetterboxMode,
        filter: ResizeFilter,
        size: usize,
        slot: usize,
    ) -> Result<Letterbox> {
        let all = (0, 0, frame.width, frame.height);
        self.preprocess_nv12_window(frame, all, input, mode, filter, size, slot)
    }

    /// [`Self::preprocess_nv12`] of the `(x, y, w, h)` window of `frame`
    /// (a second look's crop; the corner rounded down to even, the window
    /// clipped to the frame), exactly like `preprocess_frame_with` of
    /// `Frame::crop`. The letterbox maps to window pixels.
    #[allow(clippy::too_many_arguments)]
    pub fn preprocess_nv12_window(
        &mut self,
        frame: &DeviceFrame,
        window: (usize, usize, usize, usize),
        input: &mut DeviceTensor,
        mode: LetterboxMode,
        filter: ResizeFilter,
        size: usize,
        slot: usize,
    ) -> Result<Letterbox> {
        let (x, y) = (window.0 & !1, window.1 & !1);
        let ww = window.2.min(frame.width.saturating_sub(x));
        let wh = window.3.min(frame.height.saturating_sub(y));
        if ww == 0 || wh == 0 {
            return Err(Error::Gpu(format!(
                "window {window:?} lies outside the {}x{} frame",
                frame.width, frame.height
            )));
        }
        let lb = Letterbox::with_mode(mode, ww, wh, size);
        let plane = lb.len();
        if plane == 0 || (slot + 1).checked_mul(plane).is_none_or(|n| n > input.len) {
            return Err(Error::Gpu(format!(
                "input slot {slot} of {}x{} does not fit a tensor of {} values",
                lb.cols, lb.rows, input.len
            )));
        }
        let dims = preprocess_dims(lb.rows, lb.cols);
        let (w, h, p) = (
            to_i32(ww, "width")?,
            to_i32(wh, "height")?,
            to_i32(frame.pitch, "pitch")?,
        );
        let (rows, cols, slot_i) = (
            to_i32(lb.rows, "input rows")?,
            to_i32(lb.cols, "input columns")?,
            to_i32(slot, "slot")?,
        );
        let filter_code = filter.code();
        let (base, _g) = frame.data.device_ptr(&self.stream);
        // The window's corner in each plane (chroma rows are half as many,
        // U and V interleaved: x bytes from the row start for even x).
        let yp = base + (y * frame.pitch + x) as u64;
        let uvp = base + (frame.uv_offset + (y / 2) * frame.pitch + x) as u64;
        let (kernel, out) = match &mut input.data {
            TensorData::F32(s) => (Kernel::PreprocessNv12, s.device_ptr_mut(&self.stream).0),
            TensorData::F16(s) => (Kernel::PreprocessNv12F16, s.device_ptr_mut(&self.stream).0),
        };
        let mut b = self.stream.launch_builder(self.kernels.get(kernel));
        b.arg(&yp)
            .arg(&p)
            .arg(&uvp)
            .arg(&p)
            .arg(&w)
            .arg(&h)
            .arg(&rows)
            .arg(&cols)
            .arg(&lb.scale)
            .arg(&filter_code)
            .arg(&out)
            .arg(&slot_i);
        // SAFETY: argument list matches the kernel; the slot bound was
        // checked above and the kernel stays inside the frame's planes.
        unsafe { b.launch(cfg(&dims)) }.map_err(gpu_err(kernel.name()))?;
        Ok(lb)
    }

    /// Censors `masks` on the frame in place, exactly like
    /// `censor::apply` on the host (same order, same pixels).
    pub fn censor_nv12(
        &mut self,
        frame: &mut DeviceFrame,
        masks: &[Mask],
        method: &CensorMethod,
    ) -> Result<()> {
        let plan = CensorPlan::new(frame.width, frame.height, masks, method);
        if plan.launches.is_empty() {
            return Ok(());
        }
        ensure(&self.stream, &mut self.masks, plan.masks.len())?;
        ensure(&self.stream, &mut self.scratch_a, plan.scratch_u16)?;
        ensure(&self.stream, &mut self.scratch_b, plan.scratch_u16)?;
        ensure(&self.stream, &mut self.means, plan.scratch_u8)?;
        let (Some(mbuf), Some(sa), Some(sb), Some(means)) = (
            self.masks.as_mut(),
            self.scratch_a.as_mut(),
            self.scratch_b.as_mut(),
            self.means.as_mut(),
        ) else {
            return Err(Error::Gpu("scratch buffers missing".into()));
        };
        self.stream
            .memcpy_htod(&plan.masks, mbuf)
            .map_err(gpu_err("uploading masks"))?;
        let (cw, ch) = (frame.width.div_ceil(2), frame.height.div_ceil(2));
        let pitch = to_i32(frame.pitch, "pitch")?;
        let (base, _g0) = frame.data.device_ptr_mut(&self.stream);
        let (masks_p, _g1) = mbuf.device_ptr(&self.stream);
        let (a, _g2) = sa.device_ptr_mut(&self.stream);
        let (bb, _g3) = sb.device_ptr_mut(&self.stream);
        let (means_p, _g4) = means.device_ptr_mut(&self.stream);
        for l in &plan.launches {
            if l.dims.is_empty() {
                continue;
            }
            let (off, step) = l.plane.offset_step();
            let (ptr, w, h) = match l.plane {
                Plane::Y => (base, frame.width, frame.height),
                Plane::U | Plane::V => (base + (frame.uv_offset + off) as u64, cw, ch),
            };
            let (w, h) = (to_i32(w, "width")?, to_i32(h, "height")?);
            let func = self.kernels.get(l.kernel);
            let mut b = self.stream.launch_builder(func);
            match l.kernel {
                Kernel::BlurH => {
                    b.arg(&ptr).arg(&pitch).arg(&step).arg(&w).arg(&h);
                    b.arg(&masks_p).arg(&l.mask).arg(&l.pass).arg(&a).arg(&bb);
                }
                Kernel::BlurV => {
                    b.arg(&ptr).arg(&pitch).arg(&step).arg(&w).arg(&h);
                    b.arg(&masks_p).arg(&l.mask).arg(&a).arg(&bb);
                }
                Kernel::PixelateMeans | Kernel::PixelateApply => {
                    b.arg(&ptr).arg(&pitch).arg(&step);
                    b.arg(&masks_p).arg(&l.mask).arg(&means_p);
                }
                Kernel::Fill => {
                    b.arg(&ptr)
                        .arg(&pitch)
                        .arg(&step)
                        .arg(&masks_p)
                        .arg(&l.mask);
                }
                other => {
                    return Err(Error::Gpu(format!(
                        "{} is not a censor kernel",
                        other.name()
                    )));
                }
            }
            // SAFETY: arguments match the kernel; masks, clips and scratch
            // sizes come from the plan, which keeps every access inside the
            // plane and the buffers sized above.
            unsafe { b.launch(cfg(&l.dims)) }.map_err(gpu_err(l.kernel.name()))?;
        }
        Ok(())
    }

    /// Decodes a detector output `[batch, 4 + classes, anchors]` on the
    /// device; returns per image the detections `detect::postprocess::decode`
    /// would return (before NMS), with per-class `thresholds`.
    pub fn decode_yolo(
        &mut self,
        output: &DeviceTensor,
        anchors: usize,
        letterboxes: &[Letterbox],
        thresholds: &[f32],
    ) -> Result<Vec<Vec<Detection>>> {
        let batch = letterboxes.len();
        let classes = thresholds.len();
        let need = batch
            .checked_mul((4 + classes) * anchors)
            .ok_or_else(|| Error::Gpu("output too large".into()))?;
        let TensorData::F32(out) = &output.data else {
            return Err(Error::Gpu("decode_yolo needs an f32 output".into()));
        };
        if classes == 0 {
            return Err(Error::Gpu(
                "decode_yolo needs one threshold per class".into(),
            ));
        }
        if batch == 0 || anchors == 0 {
            return Ok(vec![Vec::new(); batch]);
        }
        if need > output.len {
            return Err(Error::Gpu(format!(
                "output holds {} values, {batch} x {} x {anchors} expected",
                output.len,
                4 + classes
            )));
        }
        let infos: Vec<ImageInfo> = letterboxes.iter().map(ImageInfo::from).collect();
        let fresh = self
            .small
            .as_ref()
            .is_none_or(|s| s.thresholds.len() < classes.max(1) || s.images.len() < batch);
        if fresh {
            let alloc = |e| gpu_err("allocating decode buffers")(e);
            self.small = Some(DecodeBuffers {
                thresholds: self
                    .stream
                    .alloc_zeros::<f32>(classes.max(1))
                    .map_err(alloc)?,
                images: self.stream.alloc_zeros::<ImageInfo>(batch).map_err(alloc)?,
                count: self.stream.alloc_zeros::<i32>(1).map_err(alloc)?,
            });
        }
        let mut capacity = INITIAL_CANDIDATES;
        let (anchors_i, classes_i, batch_i) = (
            to_i32(anchors, "anchors")?,
            to_i32(classes, "classes")?,
            to_i32(batch, "batch")?,
        );
        loop {
            ensure(&self.stream, &mut self.candidates, capacity)?;
            let (Some(small), Some(cands)) = (self.small.as_mut(), self.candidates.as_mut()) else {
                return Err(Error::Gpu("decode buffers missing".into()));
            };
            capacity = cands.len();
            self.stream
                .memcpy_htod(thresholds, &mut small.thresholds)
                .map_err(gpu_err("uploading thresholds"))?;
            self.stream
                .memcpy_htod(&infos, &mut small.images)
                .map_err(gpu_err("uploading letterboxes"))?;
            self.stream
                .memset_zeros(&mut small.count)
                .map_err(gpu_err("clearing the counter"))?;
            let cap_i = to_i32(capacity, "capacity")?;
            {
                let mut b = self
                    .stream
                    .launch_builder(self.kernels.get(Kernel::DecodeYolo));
                b.arg(out)
                    .arg(&anchors_i)
                    .arg(&classes_i)
                    .arg(&small.thresholds)
                    .arg(&small.images)
                    .arg(&batch_i)
                    .arg(&mut *cands)
                    .arg(&cap_i)
                    .arg(&mut small.count);
                // SAFETY: arguments match; the output size was checked and
                // the kernel never writes past `capacity` candidates.
                unsafe { b.launch(cfg(&decode_dims(anchors, batch))) }
                    .map_err(gpu_err("decode_yolo_f32"))?;
            }
            let count = self
                .stream
                .clone_dtoh(&small.count)
                .map_err(gpu_err("reading the candidate count"))?
                .first()
                .copied()
                .unwrap_or(0)
                .max(0) as usize;
            if count > capacity {
                capacity = count.next_power_of_two();
                continue;
            }
            let found = self
                .stream
                .clone_dtoh(&cands.slice(..count))
                .map_err(gpu_err("reading candidates"))?;
            return Ok(candidates_to_detections(&found, batch));
        }
    }
}

/// IEEE half bits -> f32 (exact).
fn half_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_listing_names_every_kernel_file() {
        for k in Kernel::ALL {
            let m = KERNEL_MODULES.iter().find(|m| m.file == k.source_file());
            let m = m.unwrap_or_else(|| panic!("{} missing", k.source_file()));
            assert!(m.source.contains(k.name()), "{}", k.name());
            assert!(m.source.contains("struct LcMask"), "common.cuh prepended");
        }
    }

    #[test]
    fn frame_layout_is_pitched_and_aligned() {
        assert_eq!(
            DeviceFrame::layout(1280, 720),
            (1280, 1280 * 720, 1280 * 1080)
        );
        let (p, uv, total) = DeviceFrame::layout(65, 47);
        assert_eq!((p, uv, total), (256, 256 * 47, 256 * 47 + 256 * 24));
    }

    #[test]
    fn half_decoding() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(half_to_f32(0x7bff), 65504.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert!(half_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn no_driver_means_an_error() {
        if driver_present() {
            return;
        }
        match GpuContext::new(0) {
            Err(Error::Gpu(msg)) => assert!(msg.contains("libcuda"), "{msg}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a context without a driver"),
        }
        let p = probe();
        assert!(!p.driver_present && !p.usable());
        assert!(p.problem.is_some_and(|m| m.contains("libcuda")));
    }
}
