//! `livecensor engine build`: ONNX to a TensorRT plan (profiles, FP16,
//! INT8 calibration) and its sidecar.

use std::ffi::c_void;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use super::engine::dims_of;
use super::ffi::{self, ErrBuf, MAX_DIMS};
use super::library::{c_string, cuda_err, trt, TrtLibrary};
use super::{
    calibration_images, input_dims, profile_dims, write_plan, BuildOptions, BuildReport, PlanMeta,
    PLAN_FORMAT,
};
use crate::detect::preprocess::preprocess_rgb;
use crate::error::DetectError;

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
                library.version()
            )
        } else {
            format!(
                "--fp16: TensorRT {} builds strongly typed networks and has no FP16 flag: convert \
                 the ONNX model to fp16 and build it without --fp16",
                library.version()
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
        tensorrt: library.version(),
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
