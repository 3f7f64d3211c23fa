//! [`TrtDetector`]: one execution context of an engine, bound to its own
//! optimisation profile and CUDA stream; inference from host tensors and
//! from device pointers.

use std::ffi::{c_void, CString};
use std::sync::Arc;

use cudarc::driver::CudaStream;

use super::bindings::DeviceBuf;
use super::engine::{EngineHandle, TrtEngine};
use super::ffi::{self, ErrBuf};
use super::library::{c_string, cuda_err, trt};
use super::{EngineLayout, TrtDataType};
use crate::detect::postprocess::{decode_batch, output_anchors, OUTPUT_ROWS};
use crate::detect::{DetectorConfig, Letterbox};
use crate::error::DetectError;
use crate::frame::Detection;
use crate::gpu::{DeviceTensor, GpuContext, GpuStream};

/// The device-input side of a detector: the batch assembled from the
/// streams' device tensors, inference and the decode kernel queued on one
/// CUDA stream; only the surviving candidates are copied to the host.
pub(super) struct DeviceSide {
    pub(super) stream: GpuStream,
    pub(super) input: DeviceTensor,
    pub(super) output: DeviceTensor,
}

/// One execution context of an engine, bound to its own optimisation
/// profile and CUDA stream, with device input/output buffers for its
/// largest batch: a [`DetectBackend`](crate::detect::DetectBackend) for
/// the shared detector service.
pub struct TrtDetector {
    pub(super) context: *mut ffi::Context,
    pub(super) input: DeviceBuf,
    pub(super) output: DeviceBuf,
    pub(super) stream: Arc<CudaStream>,
    pub(super) engine: Arc<EngineHandle>,
    pub(super) input_name: CString,
    pub(super) output_name: CString,
    pub(super) layout: EngineLayout,
    pub(super) profile: usize,
    pub(super) max_batch: usize,
    pub(super) anchors: usize,
    /// The batch the context's input shape is set to (0: none yet).
    pub(super) shape_batch: usize,
    /// Whether the context's tensor addresses are this detector's buffers
    /// (the device-pointer entry rebinds them).
    pub(super) own_addresses: bool,
    pub(super) min_score: f32,
    pub(super) nms_iou: f32,
    pub(super) nms_score: f32,
    pub(super) host_half: Vec<u16>,
    pub(super) host_out: Vec<f32>,
    pub(super) device: Option<DeviceSide>,
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
    pub(super) fn new(
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
    /// Plans take the square input only.
    pub(super) fn check_square(&self, letterboxes: &[Letterbox]) -> Result<(), DetectError> {
        let s = self.layout.input_size;
        match letterboxes.iter().find(|lb| lb.dims() != (s, s)) {
            Some(lb) => Err(trt(format!(
                "the engine takes {s}x{s} inputs, not {}x{} (a square letterbox)",
                lb.cols, lb.rows
            ))),
            None => Ok(()),
        }
    }

    pub(super) fn check_batch(&self, batch: usize) -> Result<(), DetectError> {
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
