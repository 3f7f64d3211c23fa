//! The TensorRT backend proper, over the shim: the process-wide library,
//! engines (a deserialised plan on one CUDA device), one [`TrtDetector`] per
//! execution context (its own profile, CUDA stream and device buffers), and
//! [`build_engine`].

use std::ffi::{c_char, c_void, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DriverError};

use super::check_same_device;
use super::ffi::{self, ErrBuf, MAX_DIMS};
use super::{
    bad_plan, calibration_images, check_plan_version, input_dims, profile_dims, read_plan,
    write_plan, BuildOptions, BuildReport, EngineLayout, IoTensor, PlanMeta, ProfileShape,
    TrtDataType, TrtProbe, TrtVersion, PLAN_FORMAT,
};
use crate::detect::classes::CLASSES;
use crate::detect::postprocess::{decode_batch, nms, output_anchors, OUTPUT_ROWS};
use crate::detect::preprocess::preprocess_rgb;
use crate::detect::{DetectBackend, DetectInput, DeviceInput};
use crate::detect::{DetectorConfig, Letterbox};
use crate::error::DetectError;
use crate::frame::Detection;
use crate::gpu::{DeviceTensor, GpuContext, GpuStream};

fn trt(msg: impl Into<String>) -> DetectError {
    DetectError::TensorRt(msg.into())
}

fn cuda_err(what: &'static str) -> impl Fn(DriverError) -> DetectError {
    move |e| trt(format!("CUDA {what}: {e}"))
}

fn c_string(what: &str, bytes: &[u8]) -> Result<CString, DetectError> {
    CString::new(bytes).map_err(|_| trt(format!("{what} contains a NUL byte")))
}

/// TensorRT messages go to `tracing` (target `tensorrt`); errors also come
/// back in the failing call's own message.
unsafe extern "C" fn log_message(_user: *mut c_void, severity: i32, msg: *const c_char) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: TensorRT passes a NUL-terminated message.
        let m = unsafe { ffi::string(msg) };
        match severity {
            0 | 1 => tracing::error!(target: "tensorrt", "{m}"),
            2 => tracing::warn!(target: "tensorrt", "{m}"),
            3 => tracing::debug!(target: "tensorrt", "{m}"),
            _ => tracing::trace!(target: "tensorrt", "{m}"),
        }
    });
}

/// The shim's library handle. It is never closed: TensorRT objects and the
/// logger live inside it and the process may hold engines until exit.
struct LibHandle(*mut ffi::Lib);

// SAFETY: after `lc_trt_open` the handle is only read (factory pointers,
// version); its logger locks internally.
unsafe impl Send for LibHandle {}
// SAFETY: as above.
unsafe impl Sync for LibHandle {}

/// libnvinfer, loaded once per process (a failed load is retried next time).
#[derive(Clone)]
pub struct TrtLibrary {
    handle: Arc<LibHandle>,
    version: TrtVersion,
    path: String,
}

static LIBRARY: Mutex<Option<TrtLibrary>> = Mutex::new(None);

impl TrtLibrary {
    pub fn load() -> Result<TrtLibrary, DetectError> {
        let mut slot = LIBRARY.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = slot.as_ref() {
            return Ok(l.clone());
        }
        let mut err = ErrBuf::default();
        // SAFETY: null path = the shim's soname list; the callback is a
        // plain function that never unwinds.
        let p = unsafe {
            ffi::lc_trt_open(
                std::ptr::null(),
                Some(log_message),
                std::ptr::null_mut(),
                err.ptr(),
                err.capacity(),
            )
        };
        if p.is_null() {
            return Err(trt(err.message("loading libnvinfer failed")));
        }
        // SAFETY: `p` is a live handle.
        let (version, path) = unsafe {
            (
                TrtVersion::from_encoded(i64::from(ffi::lc_trt_lib_version(p))),
                ffi::string(ffi::lc_trt_lib_path(p)),
            )
        };
        let lib = TrtLibrary {
            handle: Arc::new(LibHandle(p)),
            version,
            path,
        };
        *slot = Some(lib.clone());
        Ok(lib)
    }

    pub fn version(&self) -> TrtVersion {
        self.version
    }

    /// The name it was loaded by, e.g. "libnvinfer.so.11".
    pub fn path(&self) -> &str {
        &self.path
    }

    fn ptr(&self) -> *mut ffi::Lib {
        self.handle.0
    }
}

/// The TensorRT version of the headers the shim was compiled against.
pub fn header_version() -> Option<TrtVersion> {
    // SAFETY: returns a constant.
    Some(TrtVersion::from_encoded(i64::from(unsafe {
        ffi::lc_trt_header_version()
    })))
}

/// What this build and machine offer (for `doctor`).
pub fn probe() -> TrtProbe {
    TrtProbe {
        feature: true,
        shim: Some(env!("LIVECENSOR_TRT_HEADERS").to_string()),
        stub_reason: None,
        library: TrtLibrary::load()
            .map(|l| format!("{} (TensorRT {})", l.path, l.version))
            .map_err(|e| e.to_string()),
    }
}

struct EngineHandle {
    ptr: *mut ffi::Engine,
    /// Contexts are created one at a time.
    create: Mutex<()>,
    cuda: Arc<CudaContext>,
    _library: TrtLibrary,
}

// SAFETY: an ICudaEngine's getters are thread-safe; context creation is
// serialised by `create`.
unsafe impl Send for EngineHandle {}
// SAFETY: as above.
unsafe impl Sync for EngineHandle {}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        let _ = self.cuda.bind_to_thread();
        // SAFETY: every context made from it holds an Arc to this handle,
        // so none is left.
        unsafe { ffi::lc_trt_engine_free(self.ptr) };
    }
}

/// A deserialised plan on one CUDA device.
pub struct TrtEngine {
    handle: Arc<EngineHandle>,
    layout: EngineLayout,
    meta: Option<PlanMeta>,
    path: PathBuf,
}

impl TrtEngine {
    /// Reads and checks the plan (and its sidecar) before TensorRT or the
    /// GPU is touched, then deserialises it on device `device`.
    pub fn load(path: &Path, device: usize) -> Result<TrtEngine, DetectError> {
        let (bytes, meta) = read_plan(path)?;
        let library = TrtLibrary::load()?;
        check_plan_version(path, meta.as_ref(), library.version)?;
        let cuda = crate::gpu::open_context(device).map_err(|e| trt(e.to_string()))?;
        cuda.bind_to_thread()
            .map_err(cuda_err("binding the context"))?;
        let mut err = ErrBuf::default();
        // SAFETY: `bytes` outlives the call; the library is loaded.
        let ptr = unsafe {
            ffi::lc_trt_engine_new(
                library.ptr(),
                bytes.as_ptr().cast(),
                bytes.len(),
                err.ptr(),
                err.capacity(),
            )
        };
        if ptr.is_null() {
            return Err(bad_plan(path, err.message("deserializing failed")));
        }
        let handle = Arc::new(EngineHandle {
            ptr,
            create: Mutex::new(()),
            cuda,
            _library: library,
        });
        let io = io_tensors(ptr);
        let input = io
            .iter()
            .find(|t| t.input)
            .map(|t| t.name.clone())
            .ok_or_else(|| bad_plan(path, "the engine has no input"))?;
        let profiles = profile_shapes(ptr, &input)?;
        let layout = EngineLayout::new(&io, profiles).map_err(|r| bad_plan(path, r))?;
        Ok(TrtEngine {
            handle,
            layout,
            meta,
            path: path.to_path_buf(),
        })
    }

    pub fn layout(&self) -> &EngineLayout {
        &self.layout
    }

    pub fn meta(&self) -> Option<&PlanMeta> {
        self.meta.as_ref()
    }

    /// One detector per execution context, context `i` on profile `i`,
    /// each able to run batches of 1 to `max_batch`. With `gpu` (the
    /// kernels loaded on this device) each also reads device inputs in
    /// place and decodes its output on the device.
    pub fn detectors(
        &self,
        contexts: usize,
        cfg: &DetectorConfig,
        max_batch: usize,
        gpu: Option<&GpuContext>,
    ) -> Result<Vec<TrtDetector>, DetectError> {
        self.layout
            .check_contexts(contexts, max_batch, cfg.input_size)
            .map_err(|r| bad_plan(&self.path, r))?;
        let engine_device = self.handle.cuda.ordinal();
        check_same_device(engine_device, gpu.map(|g| g.device().ordinal))?;
        (0..contexts)
            .map(|i| TrtDetector::new(self, i, max_batch, cfg, gpu))
            .collect()
    }
}

fn dims_of(values: &[i64; MAX_DIMS], nb: i32) -> Vec<i64> {
    values[..nb.clamp(0, MAX_DIMS as i32) as usize].to_vec()
}

fn io_tensors(e: *const ffi::Engine) -> Vec<IoTensor> {
    // SAFETY: a live engine.
    let n = unsafe { ffi::lc_trt_engine_nb_io(e) };
    (0..n)
        .filter_map(|i| {
            let (mut name, mut input, mut dtype) = (std::ptr::null(), 0, 0);
            let (mut dims, mut nb) = ([0i64; MAX_DIMS], 0);
            // SAFETY: out-pointers to locals; `dims` holds MAX_DIMS.
            let r = unsafe {
                ffi::lc_trt_engine_io(
                    e,
                    i,
                    &mut name,
                    &mut input,
                    &mut dtype,
                    dims.as_mut_ptr(),
                    &mut nb,
                )
            };
            (r == 0).then(|| IoTensor {
                // SAFETY: the engine owns the name.
                name: unsafe { ffi::string(name) },
                input: input != 0,
                dtype: TrtDataType::from_code(dtype),
                dims: dims_of(&dims, nb),
            })
        })
        .collect()
}

fn profile_shapes(e: *const ffi::Engine, input: &str) -> Result<Vec<ProfileShape>, DetectError> {
    let name = c_string("tensor name", input.as_bytes())?;
    // SAFETY: a live engine.
    let n = unsafe { ffi::lc_trt_engine_nb_profiles(e) };
    let mut v = Vec::new();
    for p in 0..n {
        let (mut min, mut opt, mut max, mut nb) =
            ([0i64; MAX_DIMS], [0i64; MAX_DIMS], [0i64; MAX_DIMS], 0);
        // SAFETY: out-arrays of MAX_DIMS.
        let r = unsafe {
            ffi::lc_trt_engine_profile_shape(
                e,
                name.as_ptr(),
                p,
                min.as_mut_ptr(),
                opt.as_mut_ptr(),
                max.as_mut_ptr(),
                &mut nb,
            )
        };
        if r != 0 {
            return Err(trt(format!("profile {p} has no shape for input {input}")));
        }
        v.push(ProfileShape {
            min: dims_of(&min, nb),
            opt: dims_of(&opt, nb),
            max: dims_of(&max, nb),
        });
    }
    Ok(v)
}

enum DeviceBuf {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
}

impl DeviceBuf {
    fn alloc(
        stream: &Arc<CudaStream>,
        dtype: TrtDataType,
        len: usize,
    ) -> Result<Self, DetectError> {
        let len = len.max(1);
        Ok(match dtype {
            TrtDataType::Half => DeviceBuf::F16(
                stream
                    .alloc_zeros::<u16>(len)
                    .map_err(cuda_err("allocating a tensor"))?,
            ),
            _ => DeviceBuf::F32(
                stream
                    .alloc_zeros::<f32>(len)
                    .map_err(cuda_err("allocating a tensor"))?,
            ),
        })
    }

    fn address(&self, stream: &Arc<CudaStream>) -> *mut c_void {
        let a = match self {
            DeviceBuf::F32(s) => s.device_ptr(stream).0,
            DeviceBuf::F16(s) => s.device_ptr(stream).0,
        };
        a as *mut c_void
    }
}

/// The device-input side of a detector: the batch assembled from the
/// streams' device tensors, inference and the decode kernel queued on one
/// CUDA stream; only the surviving candidates are copied to the host.
struct DeviceSide {
    stream: GpuStream,
    input: DeviceTensor,
    output: DeviceTensor,
}

/// One execution context of an engine, bound to its own optimisation
/// profile and CUDA stream, with device input/output buffers for its
/// largest batch: a [`DetectBackend`] for the shared detector service.
pub struct TrtDetector {
    context: *mut ffi::Context,
    input: DeviceBuf,
    output: DeviceBuf,
    stream: Arc<CudaStream>,
    engine: Arc<EngineHandle>,
    input_name: CString,
    output_name: CString,
    layout: EngineLayout,
    profile: usize,
    max_batch: usize,
    anchors: usize,
    /// The batch the context's input shape is set to (0: none yet).
    shape_batch: usize,
    /// Whether the context's tensor addresses are this detector's buffers
    /// (the device-pointer entry rebinds them).
    own_addresses: bool,
    min_score: f32,
    nms_iou: f32,
    nms_score: f32,
    host_half: Vec<u16>,
    host_out: Vec<f32>,
    device: Option<DeviceSide>,
}

// SAFETY: the execution context is used by one thread at a time (`&mut
// self`); TensorRT allows a context to move between threads.
unsafe impl Send for TrtDetector {}

impl Drop for TrtDetector {
    fn drop(&mut self) {
        let _ = self.engine.cuda.bind_to_thread();
        let _ = self.stream.synchronize();
        // SAFETY: a live context of a live engine (held by `self.engine`).
        unsafe { ffi::lc_trt_context_free(self.context) };
    }
}

impl TrtDetector {
    fn new(
        engine: &TrtEngine,
        profile: usize,
        max_batch: usize,
        cfg: &DetectorConfig,
        gpu: Option<&GpuContext>,
    ) -> Result<TrtDetector, DetectError> {
        let h = &engine.handle;
        h.cuda
            .bind_to_thread()
            .map_err(cuda_err("binding the context"))?;
        let stream = h.cuda.new_stream().map_err(cuda_err("creating a stream"))?;
        let layout = engine.layout.clone();
        let size = layout.input_size;
        // Everything that can fail before the context exists, so that from
        // its creation on `Drop` frees it on every error path.
        let input = DeviceBuf::alloc(&stream, layout.input_dtype, max_batch * 3 * size * size)?;
        let output = DeviceBuf::alloc(&stream, layout.output_dtype, 1)?;
        let input_name = c_string("tensor name", layout.input.as_bytes())?;
        let output_name = c_string("tensor name", layout.output.as_bytes())?;
        let mut err = ErrBuf::default();
        let context = {
            let _one_at_a_time = h.create.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: a live engine; the stream outlives the call.
            unsafe {
                ffi::lc_trt_context_new(
                    h.ptr,
                    profile as i32,
                    stream.cu_stream() as *mut c_void,
                    err.ptr(),
                    err.capacity(),
                )
            }
        };
        if context.is_null() {
            return Err(trt(err.message("createExecutionContext failed")));
        }
        let mut det = TrtDetector {
            context,
            input,
            output,
            stream,
            engine: h.clone(),
            input_name,
            output_name,
            layout,
            profile,
            max_batch,
            anchors: 0,
            shape_batch: 0,
            own_addresses: false,
            min_score: cfg.min_score,
            nms_iou: cfg.nms_iou,
            nms_score: cfg.nms_score,
            host_half: Vec::new(),
            host_out: Vec::new(),
            device: None,
        };
        det.anchors = det.set_batch(max_batch)?;
        det.output = DeviceBuf::alloc(
            &det.stream,
            det.layout.output_dtype,
            max_batch * OUTPUT_ROWS * det.anchors,
        )?;
        det.bind_own()?;
        det.stream
            .synchronize()
            .map_err(cuda_err("selecting the profile"))?;
        if let Some(ctx) = gpu {
            let half = |t: TrtDataType| t == TrtDataType::Half;
            let gpu_err = |e: crate::error::Error| trt(format!("device input side: {e}"));
            let stream = ctx.stream().map_err(gpu_err)?;
            let input = stream
                .alloc_input(max_batch, size, half(det.layout.input_dtype))
                .map_err(gpu_err)?;
            let output = stream
                .alloc_tensor(det.output_len(max_batch), half(det.layout.output_dtype))
                .map_err(gpu_err)?;
            det.device = Some(DeviceSide {
                stream,
                input,
                output,
            });
        }
        Ok(det)
    }

    /// Side of the square input.
    pub fn input_size(&self) -> usize {
        self.layout.input_size
    }

    /// Largest batch this context's buffers and profile take.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The optimisation profile (= context index) it runs on.
    pub fn profile(&self) -> usize {
        self.profile
    }

    /// Output anchors per image (2100 for the 320n model at 320).
    pub fn anchors(&self) -> usize {
        self.anchors
    }

    pub fn layout(&self) -> &EngineLayout {
        &self.layout
    }

    /// Output values of a batch of `batch` images.
    pub fn output_len(&self, batch: usize) -> usize {
        batch * OUTPUT_ROWS * self.anchors
    }

    /// This context's own CUDA stream (a `CUstream`).
    pub fn raw_stream(&self) -> *mut c_void {
        self.stream.cu_stream() as *mut c_void
    }

    fn call(&mut self, what: &str, f: impl FnOnce(&mut ErrBuf) -> i32) -> Result<(), DetectError> {
        let mut err = ErrBuf::default();
        if f(&mut err) != 0 {
            return Err(trt(err.message(what)));
        }
        Ok(())
    }

    /// Sets the input shape for `batch` images; returns the anchors.
    fn set_batch(&mut self, batch: usize) -> Result<usize, DetectError> {
        let dims = input_dims(batch, self.layout.input_size);
        if self.shape_batch != batch {
            let (c, name) = (self.context, self.input_name.as_ptr());
            // SAFETY: a live context; `dims` holds 4 values.
            self.call("setInputShape failed", |e| unsafe {
                ffi::lc_trt_context_set_input_shape(
                    c,
                    name,
                    4,
                    dims.as_ptr(),
                    e.ptr(),
                    e.capacity(),
                )
            })?;
            self.shape_batch = batch;
        }
        let (mut out, mut nb) = ([0i64; MAX_DIMS], 0);
        // SAFETY: a live context; `out` holds MAX_DIMS.
        let r = unsafe {
            ffi::lc_trt_context_tensor_shape(
                self.context,
                self.output_name.as_ptr(),
                out.as_mut_ptr(),
                &mut nb,
            )
        };
        let shape = dims_of(&out, nb);
        let anchors = match shape.as_slice() {
            [_, _, a] if r == 0 && *a > 0 => *a as usize,
            _ => return Err(DetectError::BadOutput { shape }),
        };
        output_anchors(&shape, batch, batch * OUTPUT_ROWS * anchors)?;
        if self.anchors != 0 && anchors != self.anchors {
            return Err(DetectError::BadOutput { shape });
        }
        Ok(anchors)
    }

    fn set_addresses(
        &mut self,
        input: *mut c_void,
        output: *mut c_void,
    ) -> Result<(), DetectError> {
        for (name, ptr) in [
            (self.input_name.as_ptr(), input),
            (self.output_name.as_ptr(), output),
        ] {
            let c = self.context;
            // SAFETY: a live context; the caller vouches for the pointers.
            self.call("setTensorAddress failed", |e| unsafe {
                ffi::lc_trt_context_set_address(c, name, ptr, e.ptr(), e.capacity())
            })?;
        }
        Ok(())
    }

    fn bind_own(&mut self) -> Result<(), DetectError> {
        let (i, o) = (
            self.input.address(&self.stream),
            self.output.address(&self.stream),
        );
        self.set_addresses(i, o)?;
        self.own_addresses = true;
        Ok(())
    }

    fn enqueue(&mut self, stream: *mut c_void) -> Result<(), DetectError> {
        let c = self.context;
        // SAFETY: a live context with shapes and addresses set.
        self.call("enqueueV3 failed", |e| unsafe {
            ffi::lc_trt_context_enqueue(c, stream, e.ptr(), e.capacity())
        })
    }

    /// Plans take the square input only.
    fn check_square(&self, letterboxes: &[Letterbox]) -> Result<(), DetectError> {
        let s = self.layout.input_size;
        match letterboxes.iter().find(|lb| lb.dims() != (s, s)) {
            Some(lb) => Err(trt(format!(
                "the engine takes {s}x{s} inputs, not {}x{} (a square letterbox)",
                lb.cols, lb.rows
            ))),
            None => Ok(()),
        }
    }

    fn check_batch(&self, batch: usize) -> Result<(), DetectError> {
        if batch == 0 || batch > self.max_batch {
            return Err(trt(format!(
                "batch of {batch}: context {} takes 1..={}",
                self.profile, self.max_batch
            )));
        }
        Ok(())
    }

    /// The device-pointer entry for the GPU pipeline: queues inference of
    /// `batch` images from `input` into `output` on `stream` and returns the
    /// output's anchors per image; nothing is copied and nothing waits.
    ///
    /// # Safety
    /// `input` / `output` are device allocations of this engine's CUDA
    /// context, in the engine's input / output data type
    /// ([`EngineLayout`]), holding at least `batch * 3 * size^2` and
    /// [`TrtDetector::output_len`]`(batch)` values, valid until the work
    /// queued on `stream` completes. Work queued earlier on this detector's
    /// other stream must be complete (it is, after any `detect` returns).
    pub unsafe fn enqueue_device(
        &mut self,
        input: u64,
        output: u64,
        batch: usize,
        stream: *mut c_void,
    ) -> Result<usize, DetectError> {
        self.check_batch(batch)?;
        self.engine
            .cuda
            .bind_to_thread()
            .map_err(cuda_err("binding the context"))?;
        let anchors = self.set_batch(batch)?;
        self.set_addresses(input as *mut c_void, output as *mut c_void)?;
        self.own_addresses = false;
        self.enqueue(stream)?;
        Ok(anchors)
    }

    /// [`TrtDetector::enqueue_device`] on the GPU pipeline's own types:
    /// `input` from `GpuStream::preprocess_nv12`, `output` for
    /// `GpuStream::decode_yolo`, queued on `stream`. Checks the data types
    /// and sizes; the caller synchronises.
    pub fn infer_device(
        &mut self,
        stream: &GpuStream,
        input: &DeviceTensor,
        output: &mut DeviceTensor,
        batch: usize,
    ) -> Result<usize, DetectError> {
        let s = self.layout.input_size;
        let want = |t: TrtDataType| t == TrtDataType::Half;
        if input.is_f16() != want(self.layout.input_dtype)
            || output.is_f16() != want(self.layout.output_dtype)
        {
            return Err(trt(format!(
                "the engine takes {} input and gives {} output",
                self.layout.input_dtype, self.layout.output_dtype
            )));
        }
        if input.len() < batch * 3 * s * s || output.len() < self.output_len(batch) {
            return Err(trt(format!(
                "batch of {batch} needs {} input and {} output values, the tensors hold {} and {}",
                batch * 3 * s * s,
                self.output_len(batch),
                input.len(),
                output.len()
            )));
        }
        // The input may have been written on another stream (a stream's
        // preprocess): the engine's stream waits for it on the device.
        let gpu = |e: crate::error::Error| trt(e.to_string());
        input.before_use(stream).map_err(gpu)?;
        output.before_use(stream).map_err(gpu)?;
        // SAFETY: both tensors are device memory of the same device (the
        // primary context both wrappers retain), in the engine's data types
        // (checked), large enough (checked), and borrowed for this call;
        // their fences record the work below for any later stream.
        let queued = unsafe {
            self.enqueue_device(
                input.device_address(stream),
                output.device_address(stream),
                batch,
                stream.raw_stream(),
            )
        };
        input.after_use(stream).map_err(gpu)?;
        output.after_use(stream).map_err(gpu)?;
        queued
    }

    /// Host tensors in, detections out: upload, enqueue, download, then the
    /// same decode and NMS as the ONNX Runtime detector.
    pub fn detect(
        &mut self,
        tensors: &[f32],
        batch: usize,
        letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        if batch == 0 {
            return Ok(Vec::new());
        }
        let s = self.layout.input_size;
        let n_in = batch * 3 * s * s;
        self.check_square(letterboxes)?;
        if tensors.len() != n_in || letterboxes.len() != batch {
            return Err(trt(format!(
                "batch of {batch} needs {n_in} input floats and {batch} letterboxes, got {} and {}",
                tensors.len(),
                letterboxes.len()
            )));
        }
        self.check_batch(batch)?;
        self.engine
            .cuda
            .bind_to_thread()
            .map_err(cuda_err("binding the context"))?;
        match &mut self.input {
            DeviceBuf::F32(buf) => self
                .stream
                .memcpy_htod(tensors, &mut buf.slice_mut(0..n_in))
                .map_err(cuda_err("uploading the batch"))?,
            DeviceBuf::F16(buf) => {
                self.host_half.clear();
                self.host_half
                    .extend(tensors.iter().map(|&v| half::f16::from_f32(v).to_bits()));
                self.stream
                    .memcpy_htod(&self.host_half[..], &mut buf.slice_mut(0..n_in))
                    .map_err(cuda_err("uploading the batch"))?
            }
        }
        if !self.own_addresses {
            self.bind_own()?;
        }
        let anchors = self.set_batch(batch)?;
        self.enqueue(self.stream.cu_stream() as *mut c_void)?;
        let n_out = batch * OUTPUT_ROWS * anchors;
        self.host_out.resize(n_out, 0.0);
        match &self.output {
            DeviceBuf::F32(buf) => self
                .stream
                .memcpy_dtoh(&buf.slice(0..n_out), &mut self.host_out[..])
                .map_err(cuda_err("downloading the output"))?,
            DeviceBuf::F16(buf) => {
                self.host_half.resize(n_out, 0);
                self.stream
                    .memcpy_dtoh(&buf.slice(0..n_out), &mut self.host_half[..])
                    .map_err(cuda_err("downloading the output"))?;
            }
        }
        self.stream
            .synchronize()
            .map_err(cuda_err("waiting for inference"))?;
        if let DeviceBuf::F16(_) = self.output {
            for (o, &h) in self.host_out.iter_mut().zip(&self.host_half) {
                *o = half::f16::from_bits(h).to_f32();
            }
        }
        let shape = [batch as i64, OUTPUT_ROWS as i64, anchors as i64];
        let anchors = output_anchors(&shape, batch, self.host_out.len())?;
        Ok(decode_batch(
            &self.host_out,
            anchors,
            letterboxes,
            self.min_score,
            self.nms_iou,
            self.nms_score,
        ))
    }
}

impl TrtDetector {
    /// The data type [`TrtDetector::detect_inputs`] reads device inputs
    /// in; `None` without the device side (no CUDA kernels).
    pub fn device_input(&self) -> Option<DeviceInput> {
        self.device.as_ref().map(|d| DeviceInput {
            f16: d.input.is_f16(),
        })
    }

    /// A batch of device (and host) inputs: each is copied into its slot
    /// on the device, inferred, and the output decoded by the kernel with
    /// the detector's candidate threshold for every class, then NMS on the
    /// host: the same detections as [`TrtDetector::detect`].
    pub fn detect_inputs(
        &mut self,
        inputs: &[&DetectInput],
        letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        let batch = inputs.len();
        if batch == 0 {
            return Ok(Vec::new());
        }
        let s = self.layout.input_size;
        let one = 3 * s * s;
        self.check_square(letterboxes)?;
        if letterboxes.len() != batch {
            return Err(trt(format!(
                "{batch} inputs and {} letterboxes",
                letterboxes.len()
            )));
        }
        self.check_batch(batch)?;
        let mut dev = self.device.take().ok_or_else(|| {
            trt("this detector has no device side (the CUDA kernels did not load)")
        })?;
        let out = self.run_device(&mut dev, inputs, letterboxes, one);
        self.device = Some(dev);
        out
    }

    fn run_device(
        &mut self,
        dev: &mut DeviceSide,
        inputs: &[&DetectInput],
        letterboxes: &[Letterbox],
        one: usize,
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        let gpu = |e: crate::error::Error| trt(e.to_string());
        let batch = inputs.len();
        dev.stream.bind_context().map_err(gpu)?;
        for (i, input) in inputs.iter().enumerate() {
            match input {
                DetectInput::Device(t) if t.len() == one => {
                    dev.stream.copy_tensor(t, &mut dev.input, i * one)
                }
                DetectInput::Host(v) if v.len() == one => {
                    dev.stream.upload_tensor_at(v, &mut dev.input, i * one)
                }
                other => {
                    return Err(trt(format!(
                        "image {i} of the batch is {other:?}, the engine takes {one} values"
                    )))
                }
            }
            .map_err(gpu)?;
        }
        let anchors = self.infer_device(&dev.stream, &dev.input, &mut dev.output, batch)?;
        if dev.output.is_f16() {
            let mut host = dev.stream.download_tensor(&dev.output).map_err(gpu)?;
            host.truncate(self.output_len(batch));
            return Ok(decode_batch(
                &host,
                anchors,
                letterboxes,
                self.min_score,
                self.nms_iou,
                self.nms_score,
            ));
        }
        let thresholds = [self.min_score; CLASSES.len()];
        let candidates = dev
            .stream
            .decode_yolo(&dev.output, anchors, letterboxes, &thresholds)
            .map_err(gpu)?;
        Ok(candidates
            .into_iter()
            .map(|d| nms(d, self.nms_iou, self.nms_score))
            .collect())
    }
}

impl DetectBackend for TrtDetector {
    fn input_size(&self) -> usize {
        TrtDetector::input_size(self)
    }

    fn device_input(&self) -> Option<DeviceInput> {
        TrtDetector::device_input(self)
    }

    fn detect_inputs(
        &mut self,
        inputs: &[&DetectInput],
        letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        TrtDetector::detect_inputs(self, inputs, letterboxes)
    }

    fn detect(
        &mut self,
        tensors: &[f32],
        batch: usize,
        letterboxes: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        TrtDetector::detect(self, tensors, batch, letterboxes)
    }
}

struct BuilderGuard(*mut ffi::Builder);

impl Drop for BuilderGuard {
    fn drop(&mut self) {
        // SAFETY: a live builder, freed once.
        unsafe { ffi::lc_trt_builder_free(self.0) };
    }
}

struct BlobGuard(*mut ffi::Blob);

impl Drop for BlobGuard {
    fn drop(&mut self) {
        // SAFETY: a live blob, freed once.
        unsafe { ffi::lc_trt_blob_free(self.0) };
    }
}

/// INT8 calibration batches, preprocessed exactly as live frames are.
struct Calibration {
    images: Vec<PathBuf>,
    batches: usize,
    done: usize,
    batch: usize,
    size: usize,
    host: Vec<f32>,
    device: CudaSlice<f32>,
    stream: Arc<CudaStream>,
    error: Option<String>,
}

impl Calibration {
    /// The next batch on the device, or None after the last.
    fn next(&mut self) -> Result<Option<*mut c_void>, String> {
        if self.done >= self.batches {
            return Ok(None);
        }
        let plane = 3 * self.size * self.size;
        for slot in 0..self.batch {
            let path = &self.images[(self.done * self.batch + slot) % self.images.len()];
            let img = image::open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .to_rgb8();
            let (w, h) = (img.width() as usize, img.height() as usize);
            preprocess_rgb(
                img.as_raw(),
                w,
                h,
                self.size,
                &mut self.host[slot * plane..(slot + 1) * plane],
            );
        }
        self.stream
            .memcpy_htod(&self.host[..], &mut self.device)
            .map_err(|e| format!("uploading a calibration batch: {e}"))?;
        self.stream
            .synchronize()
            .map_err(|e| format!("uploading a calibration batch: {e}"))?;
        self.done += 1;
        Ok(Some(self.device.device_ptr(&self.stream).0 as *mut c_void))
    }
}

unsafe extern "C" fn calibration_batch(user: *mut c_void, out: *mut *mut c_void) -> i32 {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `user` is the `Calibration` build_engine passed, alive
        // and not otherwise borrowed during the build.
        let c = unsafe { &mut *user.cast::<Calibration>() };
        match c.next() {
            Ok(Some(ptr)) => {
                // SAFETY: the shim passes a valid out-pointer.
                unsafe { *out = ptr };
                1
            }
            Ok(None) => 0,
            Err(e) => {
                c.error = Some(e);
                -1
            }
        }
    }));
    r.unwrap_or(-1)
}

/// `livecensor engine build`: parses the ONNX model, adds one optimisation
/// profile per execution context (batch 1 to `max_batch`), builds, and
/// writes the plan and its sidecar. Needs TensorRT and a GPU.
pub fn build_engine(opts: &BuildOptions) -> Result<BuildReport, DetectError> {
    opts.validate()?;
    let t0 = Instant::now();
    let library = TrtLibrary::load()?;
    // SAFETY: returns a constant.
    if (opts.int8 || opts.fp16) && unsafe { ffi::lc_trt_calibration_supported() } == 0 {
        return Err(DetectError::BadBuildOptions(if opts.int8 {
            format!(
                "--int8: TensorRT {} removed implicit INT8 calibration: quantize the ONNX model \
                 (explicit Q/DQ nodes, e.g. NVIDIA ModelOpt) and build it without --int8",
                library.version
            )
        } else {
            format!(
                "--fp16: TensorRT {} builds strongly typed networks and has no FP16 flag: convert \
                 the ONNX model to fp16 and build it without --fp16",
                library.version
            )
        }));
    }
    let cuda = crate::gpu::open_context(opts.device).map_err(|e| trt(e.to_string()))?;
    cuda.bind_to_thread()
        .map_err(cuda_err("binding the context"))?;
    let gpu = cuda.name().unwrap_or_else(|_| "unknown GPU".into());
    let onnx = c_string("ONNX path", opts.onnx.as_os_str().as_bytes())?;
    let mut err = ErrBuf::default();
    // SAFETY: a loaded library and a NUL-terminated path.
    let b =
        unsafe { ffi::lc_trt_builder_new(library.ptr(), onnx.as_ptr(), err.ptr(), err.capacity()) };
    if b.is_null() {
        return Err(trt(err.message("parsing the ONNX model failed")));
    }
    let b = BuilderGuard(b);
    // SAFETY: a live builder.
    let (n_in, n_out) = unsafe {
        (
            ffi::lc_trt_builder_nb_inputs(b.0),
            ffi::lc_trt_builder_nb_outputs(b.0),
        )
    };
    if n_in != 1 || n_out != 1 {
        return Err(trt(format!(
            "{}: {n_in} inputs and {n_out} outputs; the detector needs one of each",
            opts.onnx.display()
        )));
    }
    let (mut name, mut dims, mut nb, mut dtype) = (std::ptr::null(), [0i64; MAX_DIMS], 0, 0);
    // SAFETY: out-pointers to locals; `dims` holds MAX_DIMS.
    let r = unsafe {
        ffi::lc_trt_builder_tensor(b.0, 0, 0, &mut name, dims.as_mut_ptr(), &mut nb, &mut dtype)
    };
    if r != 0 {
        return Err(trt("reading the network input failed"));
    }
    // SAFETY: the network owns the name.
    let input = unsafe { ffi::string(name) };
    let input_c = c_string("tensor name", input.as_bytes())?;
    let profile = profile_dims(&dims_of(&dims, nb), opts.max_batch, opts.input_size)
        .map_err(|e| trt(format!("{}: {e}", opts.onnx.display())))?;
    for _ in 0..opts.contexts {
        // SAFETY: a live builder; each dims array holds 4 values.
        let r = unsafe {
            ffi::lc_trt_builder_add_profile(
                b.0,
                input_c.as_ptr(),
                4,
                profile.min.as_ptr(),
                profile.opt.as_ptr(),
                profile.max.as_ptr(),
                err.ptr(),
                err.capacity(),
            )
        };
        if r < 0 {
            return Err(trt(err.message("adding a profile failed")));
        }
    }
    let workspace = (opts.workspace_mib as u64) << 20;
    // SAFETY: a live builder.
    if unsafe {
        ffi::lc_trt_builder_configure(
            b.0,
            i32::from(opts.fp16),
            workspace,
            err.ptr(),
            err.capacity(),
        )
    } != 0
    {
        return Err(trt(err.message("configuring the builder failed")));
    }
    let mut calibration = None;
    if let (true, Some(dir)) = (opts.int8, &opts.calib) {
        let images = calibration_images(dir)?;
        let stream = cuda.new_stream().map_err(cuda_err("creating a stream"))?;
        let len = opts.calib_batch * 3 * opts.input_size * opts.input_size;
        calibration = Some(Box::new(Calibration {
            batches: (images.len() / opts.calib_batch).max(1),
            images,
            done: 0,
            batch: opts.calib_batch,
            size: opts.input_size,
            host: vec![0.0; len],
            device: stream
                .alloc_zeros::<f32>(len)
                .map_err(cuda_err("allocating the calibration batch"))?,
            stream,
            error: None,
        }));
    }
    if let Some(c) = calibration.as_mut() {
        let cal_dims = input_dims(opts.calib_batch, opts.input_size);
        let user: *mut Calibration = &mut **c;
        // SAFETY: `user` stays alive (boxed, not moved) until the builder
        // is freed below; the callback never unwinds.
        if unsafe {
            ffi::lc_trt_builder_set_calibrator(
                b.0,
                input_c.as_ptr(),
                4,
                cal_dims.as_ptr(),
                calibration_batch,
                user.cast(),
                err.ptr(),
                err.capacity(),
            )
        } != 0
        {
            return Err(trt(err.message("setting up INT8 calibration failed")));
        }
    }
    // SAFETY: a live, configured builder.
    let blob = unsafe { ffi::lc_trt_builder_build(b.0, err.ptr(), err.capacity()) };
    let calib_error = calibration.as_ref().and_then(|c| c.error.clone());
    if blob.is_null() {
        let msg = err.message("building the engine failed");
        return Err(trt(match calib_error {
            Some(c) => format!("{msg} ({c})"),
            None => msg,
        }));
    }
    let blob = BlobGuard(blob);
    // SAFETY: the blob owns `size` bytes at `data` until freed.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            ffi::lc_trt_blob_data(blob.0).cast::<u8>(),
            ffi::lc_trt_blob_size(blob.0),
        )
    };
    let onnx_bytes =
        std::fs::read(&opts.onnx).map_err(|e| trt(format!("{}: {e}", opts.onnx.display())))?;
    let meta = PlanMeta {
        format: PLAN_FORMAT,
        tensorrt: library.version,
        plan_bytes: 0,
        plan_sha256: String::new(),
        onnx: opts
            .onnx
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        onnx_sha256: super::sha256_hex(&onnx_bytes),
        input,
        input_size: opts.input_size,
        max_batch: opts.max_batch,
        profiles: opts.contexts,
        precision: opts.precision().into(),
        gpu,
    };
    let (sidecar, meta) = write_plan(&opts.output, bytes, meta)?;
    drop(blob);
    drop(b);
    drop(calibration);
    Ok(BuildReport {
        plan: opts.output.clone(),
        sidecar,
        meta,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
