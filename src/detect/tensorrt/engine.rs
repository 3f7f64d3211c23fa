//! An engine: a deserialised plan on one CUDA device, the layout its I/O
//! tensors and profiles give, and the detectors (execution contexts) it
//! hands out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cudarc::driver::CudaContext;

use super::check_same_device;
use super::detector::TrtDetector;
use super::ffi::{self, ErrBuf, MAX_DIMS};
use super::library::{c_string, cuda_err, trt, TrtLibrary};
use super::{
    bad_plan, check_plan_version, read_plan, EngineLayout, IoTensor, PlanMeta, ProfileShape,
    TrtDataType,
};
use crate::detect::DetectorConfig;
use crate::error::DetectError;
use crate::gpu::GpuContext;

pub(super) struct EngineHandle {
    pub(super) ptr: *mut ffi::Engine,
    /// Contexts are created one at a time.
    pub(super) create: Mutex<()>,
    pub(super) cuda: Arc<CudaContext>,
    pub(super) _library: TrtLibrary,
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
    pub(super) handle: Arc<EngineHandle>,
    pub(super) layout: EngineLayout,
    pub(super) meta: Option<PlanMeta>,
    pub(super) path: PathBuf,
}

impl TrtEngine {
    /// Reads and checks the plan (and its sidecar) before TensorRT or the
    /// GPU is touched, then deserialises it on device `device`.
    pub fn load(path: &Path, device: usize) -> Result<TrtEngine, DetectError> {
        let (bytes, meta) = read_plan(path)?;
        let library = TrtLibrary::load()?;
        check_plan_version(path, meta.as_ref(), library.version())?;
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

pub(super) fn dims_of(values: &[i64; MAX_DIMS], nb: i32) -> Vec<i64> {
    values[..nb.clamp(0, MAX_DIMS as i32) as usize].to_vec()
}

pub(super) fn io_tensors(e: *const ffi::Engine) -> Vec<IoTensor> {
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

pub(super) fn profile_shapes(
    e: *const ffi::Engine,
    input: &str,
) -> Result<Vec<ProfileShape>, DetectError> {
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
