//! Copies between host and device and inside the device.

use super::*;

impl GpuStream {
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
        dst.before_use(self)?;
        let base = dst.buf.ptr();
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
        dst.after_use(self)
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
        let buf = LinearBuffer::new(&self.ctx, total)?;
        // SAFETY: `total` bytes of our fresh allocation, on this stream.
        unsafe {
            cudarc::driver::result::memset_d8_async(buf.ptr(), 0, total, self.stream.cu_stream())
        }
        .map_err(gpu_err("clearing a frame"))?;
        let frame = DeviceFrame {
            buf,
            width,
            height,
            pitch,
            uv_offset,
            fence: SharedFence::default(),
            on_free: Default::default(),
        };
        frame.after_use(self)?;
        Ok(frame)
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
        let mut staged = vec![0u8; dst.buf.len()];
        let (y, uv, _) = nv12.planes();
        for (row, src) in y.chunks_exact(w).enumerate() {
            staged[row * p..row * p + w].copy_from_slice(src);
        }
        let uv_row = 2 * w.div_ceil(2);
        for (row, src) in uv.chunks_exact(uv_row).enumerate() {
            let o = dst.uv_offset + row * p;
            staged[o..o + uv_row].copy_from_slice(src);
        }
        dst.before_use(self)?;
        // SAFETY: `staged` has exactly the frame's bytes. It is pageable,
        // so the call returns once the driver has staged it (the Vec may
        // go); the device copy itself finishes later, which the fence
        // records for any other stream that reads the frame.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(
                dst.buf.ptr(),
                &staged,
                self.stream.cu_stream(),
            )
        }
        .map_err(gpu_err("uploading a frame"))?;
        dst.after_use(self)
    }

    /// Copies a device frame back into a packed host NV12 frame (waits).
    pub fn download(&self, src: &DeviceFrame) -> Result<Frame> {
        src.before_use(self)?;
        let mut staged = vec![0u8; src.buf.len()];
        // SAFETY: `staged` has exactly the frame's bytes and lives past the
        // synchronize below.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(
                &mut staged,
                src.buf.ptr(),
                self.stream.cu_stream(),
            )
        }
        .map_err(gpu_err("downloading a frame"))?;
        src.after_use(self)?;
        self.synchronize()?;
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
        let t = DeviceTensor {
            data,
            len,
            fence: SharedFence::default(),
        };
        t.after_use(self)?;
        Ok(t)
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
        dst.before_use(self)?;
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
        dst.after_use(self)?;
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
        src.before_use(self)?;
        dst.before_use(self)?;
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
        .map_err(gpu_err("copying a tensor"))?;
        src.after_use(self)?;
        dst.after_use(self)
    }

    /// Copies an f32 tensor back (waits); f16 tensors come back as f32.
    pub fn download_tensor(&self, src: &DeviceTensor) -> Result<Vec<f32>> {
        src.before_use(self)?;
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
        src.after_use(self)?;
        v.truncate(src.len);
        Ok(v)
    }
}
