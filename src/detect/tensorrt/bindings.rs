//! A detector's I/O: device buffers, the context's input shape and tensor
//! addresses, and enqueueing inference on a stream.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use super::detector::TrtDetector;
use super::engine::dims_of;
use super::ffi::{self, ErrBuf, MAX_DIMS};
use super::library::{cuda_err, trt};
use super::{input_dims, TrtDataType};
use crate::detect::postprocess::{output_anchors, OUTPUT_ROWS};
use crate::error::DetectError;

pub(super) enum DeviceBuf {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
}

impl DeviceBuf {
    pub(super) fn alloc(
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

    pub(super) fn address(&self, stream: &Arc<CudaStream>) -> *mut c_void {
        let a = match self {
            DeviceBuf::F32(s) => s.device_ptr(stream).0,
            DeviceBuf::F16(s) => s.device_ptr(stream).0,
        };
        a as *mut c_void
    }
}

impl TrtDetector {
    pub(super) fn call(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut ErrBuf) -> i32,
    ) -> Result<(), DetectError> {
        let mut err = ErrBuf::default();
        if f(&mut err) != 0 {
            return Err(trt(err.message(what)));
        }
        Ok(())
    }

    /// Sets the input shape for `batch` images; returns the anchors.
    pub(super) fn set_batch(&mut self, batch: usize) -> Result<usize, DetectError> {
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

    pub(super) fn set_addresses(
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

    pub(super) fn bind_own(&mut self) -> Result<(), DetectError> {
        let (i, o) = (
            self.input.address(&self.stream),
            self.output.address(&self.stream),
        );
        self.set_addresses(i, o)?;
        self.own_addresses = true;
        Ok(())
    }

    pub(super) fn enqueue(&mut self, stream: *mut c_void) -> Result<(), DetectError> {
        let c = self.context;
        // SAFETY: a live context with shapes and addresses set.
        self.call("enqueueV3 failed", |e| unsafe {
            ffi::lc_trt_context_enqueue(c, stream, e.ptr(), e.capacity())
        })
    }
}
