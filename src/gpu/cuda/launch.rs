//! Kernel launches: preprocess, censor, box decode.

use super::*;

/// Initial room for decoded candidates; grows when a frame has more.
pub(super) const INITIAL_CANDIDATES: usize = 1024;

impl GpuStream {
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
        // The frame may come from another stream (NVDEC's, a Y4M upload's):
        // wait for it on the device; the input may still be read by the
        // detector's stream.
        frame.before_use(self)?;
        input.before_use(self)?;
        let queued = self.preprocess_queued(frame, window, input, mode, filter, size, slot);
        let fenced = frame.after_use(self).and(input.after_use(self));
        let lb = queued?;
        fenced.map(|()| lb)
    }

    #[allow(clippy::too_many_arguments)]
    fn preprocess_queued(
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
        let base = frame.buf.ptr();
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
    /// The frame's fence records the kernels, so the frame is not freed or
    /// reused under them even if the caller drops it on an error path.
    pub fn censor_nv12(
        &mut self,
        frame: &mut DeviceFrame,
        masks: &[Mask],
        method: &CensorMethod,
    ) -> Result<()> {
        frame.before_use(self)?;
        let queued = self.censor_queued(frame, masks, method);
        let fenced = frame.after_use(self);
        queued.and(fenced)
    }

    fn censor_queued(
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
        ensure(&self.stream, &mut self.blur_pre, plan.scratch_u16)?;
        ensure(&self.stream, &mut self.blur_seg, plan.scratch_seg)?;
        ensure(&self.stream, &mut self.means, plan.scratch_u8)?;
        let (Some(mbuf), Some(sa), Some(sb), Some(pre), Some(seg), Some(means)) = (
            self.masks.as_mut(),
            self.scratch_a.as_mut(),
            self.scratch_b.as_mut(),
            self.blur_pre.as_mut(),
            self.blur_seg.as_mut(),
            self.means.as_mut(),
        ) else {
            return Err(Error::Gpu("scratch buffers missing".into()));
        };
        self.stream
            .memcpy_htod(&plan.masks, mbuf)
            .map_err(gpu_err("uploading masks"))?;
        let (cw, ch) = (frame.width.div_ceil(2), frame.height.div_ceil(2));
        let pitch = to_i32(frame.pitch, "pitch")?;
        let base = frame.buf.ptr();
        let (masks_p, _g1) = mbuf.device_ptr(&self.stream);
        let (a, _g2) = sa.device_ptr_mut(&self.stream);
        let (bb, _g3) = sb.device_ptr_mut(&self.stream);
        let (means_p, _g4) = means.device_ptr_mut(&self.stream);
        let (pre_p, _g5) = pre.device_ptr_mut(&self.stream);
        let (seg_p, _g6) = seg.device_ptr_mut(&self.stream);
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
                Kernel::BlurLoad => {
                    b.arg(&ptr).arg(&pitch).arg(&step).arg(&w).arg(&h);
                    b.arg(&masks_p).arg(&l.mask).arg(&a);
                }
                Kernel::BlurScan => {
                    b.arg(&w).arg(&h).arg(&masks_p).arg(&l.mask).arg(&l.pass);
                    b.arg(&a).arg(&bb).arg(&pre_p).arg(&seg_p);
                }
                Kernel::BlurCarry => {
                    b.arg(&w).arg(&h).arg(&masks_p).arg(&l.mask).arg(&l.pass);
                    b.arg(&seg_p);
                }
                Kernel::BlurBox => {
                    b.arg(&ptr).arg(&pitch).arg(&step).arg(&w).arg(&h);
                    b.arg(&masks_p).arg(&l.mask).arg(&l.pass);
                    b.arg(&a).arg(&bb).arg(&pre_p).arg(&seg_p);
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
        // Written by the engine, maybe on another stream; the candidate
        // count is read back below, so the decode itself ends here.
        output.before_use(self)?;
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
