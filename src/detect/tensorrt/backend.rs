//! The detector service's side of [`TrtDetector`]: batches of device (or
//! host) inputs decoded on the device, and the [`DetectBackend`] impl.

use super::detector::{DeviceSide, TrtDetector};
use super::library::trt;
use crate::detect::classes::CLASSES;
use crate::detect::postprocess::{decode_batch, nms};
use crate::detect::Letterbox;
use crate::detect::{DetectBackend, DetectInput, DeviceInput};
use crate::error::DetectError;
use crate::frame::Detection;

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
