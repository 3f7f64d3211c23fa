//! One stream's share of the backend: on a GPU its own CUDA stream, the
//! one-image detector inputs the preprocess kernel writes (handed to the
//! batcher as they are when its backends read device tensors, else copied
//! to the host once) and the device frames that have left, for reuse. All
//! of a stream's device work is ordered on that one CUDA stream, so a
//! picture uploaded, preprocessed and censored here needs no event between
//! steps; what leaves for another stream (NVENC, a TensorRT context) is
//! synchronised first.

use super::{grey, Picture};
use crate::censor;
use crate::detect::ResizeFilter;
use crate::detect::{preprocess_frame_with, DetectInput, DeviceInput, Letterbox, LetterboxMode};
use crate::error::Error;
use crate::frame::{CensorMethod, Frame, Mask};
use crate::gpu::{DeviceFrame, DeviceTensor, GpuStream};

/// More spent frames (or idle inputs) than this are freed rather than kept.
const MAX_SPENT: usize = 16;

/// A stream's lane on its backend.
#[derive(Debug, Default)]
pub enum Lane {
    #[default]
    Cpu,
    Cuda(Box<CudaLane>),
}

pub struct CudaLane {
    stream: GpuStream,
    inputs: Vec<DeviceTensor>,
    /// Frames that have left, for the decoder's pool.
    spent: Vec<DeviceFrame>,
    /// Censored device frames stay on the device (an NVENC encoder follows).
    keep: bool,
}

impl std::fmt::Debug for CudaLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaLane")
            .field("inputs", &self.inputs.len())
            .field("spent", &self.spent.len())
            .field("keep", &self.keep)
            .finish()
    }
}

impl CudaLane {
    fn spend(&mut self, f: DeviceFrame) {
        if self.spent.len() < MAX_SPENT {
            self.spent.push(f);
        }
    }

    fn recycle(&mut self, t: DeviceTensor) {
        if self.inputs.len() < MAX_SPENT {
            self.inputs.push(t);
        }
    }

    /// An idle one-image input of `size` in the given data type.
    fn input(&mut self, size: usize, f16: bool) -> Result<DeviceTensor, String> {
        let fits = |t: &DeviceTensor| t.len() == 3 * size * size && t.is_f16() == f16;
        match self.inputs.iter().position(fits) {
            Some(i) => Ok(self.inputs.swap_remove(i)),
            None => self
                .stream
                .alloc_input(1, size, f16)
                .map_err(|e| format!("GPU preprocess: {e}")),
        }
    }

    /// A device frame of this size: a spent one, or a new one.
    fn frame(&mut self, width: usize, height: usize) -> Result<DeviceFrame, Error> {
        let reuse = self
            .spent
            .iter()
            .position(|f| (f.width(), f.height()) == (width, height));
        match reuse {
            Some(i) => Ok(self.spent.swap_remove(i)),
            None => self.stream.alloc_frame(width, height),
        }
    }
}

/// How a picture becomes the detector's input.
#[derive(Clone, Copy, Debug)]
pub struct InputSpec {
    pub mode: LetterboxMode,
    pub resize: ResizeFilter,
    /// Long side of the input tensor.
    pub size: usize,
    /// `Some` when the detector reads device tensors in place.
    pub device: Option<DeviceInput>,
}

impl Lane {
    pub(super) fn cuda(stream: GpuStream) -> Result<Lane, Error> {
        Ok(Lane::Cuda(Box::new(CudaLane {
            stream,
            inputs: Vec::new(),
            spent: Vec::new(),
            keep: false,
        })))
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Lane::Cuda(_))
    }

    /// Whether censored device pictures stay on the device (for NVENC)
    /// instead of one copy to the host.
    pub fn set_keep_on_device(&mut self, keep: bool) {
        if let Lane::Cuda(g) = self {
            g.keep = keep;
        }
    }

    /// Whether a picture can be worked on here (a device picture needs a
    /// CUDA lane; without one it is censored whole).
    pub fn can_read(&self, p: &Picture) -> bool {
        !p.is_device() || self.is_gpu()
    }

    /// The detector input of a picture, or of a `(x, y, w, h)` window of it
    /// (a second look): on the host, or by the preprocess kernel; a device
    /// input stays on the device when the detector reads it there, else it
    /// is copied to the host once.
    pub fn prepare(
        &mut self,
        picture: &Picture,
        window: Option<(usize, usize, usize, usize)>,
        spec: InputSpec,
    ) -> Result<(DetectInput, Letterbox), String> {
        let InputSpec {
            mode,
            resize,
            size,
            device,
        } = spec;
        match picture {
            Picture::Host(f) => {
                let cropped;
                let f = match window {
                    Some((x, y, w, h)) => {
                        cropped = f.crop(x, y, w, h).ok_or("window outside the frame")?;
                        &cropped
                    }
                    None => f,
                };
                let lb = Letterbox::with_mode(mode, f.width, f.height, size);
                let mut tensor = vec![0f32; lb.len()];
                let lb = preprocess_frame_with(f, mode, resize, size, &mut tensor);
                Ok((DetectInput::Host(tensor), lb))
            }
            Picture::Device(f) => {
                let Lane::Cuda(gpu) = self else {
                    return Err("device frame without a CUDA stream".into());
                };
                let mut input = gpu.input(size, device.is_some_and(|d| d.f16))?;
                let window = window.unwrap_or((0, 0, f.width(), f.height()));
                let prepared = gpu
                    .stream
                    .preprocess_nv12_window(f, window, &mut input, mode, resize, size, 0)
                    .and_then(|lb| match device {
                        // The batcher's context reads it on its own stream.
                        Some(_) => gpu.stream.synchronize().map(|()| lb),
                        None => Ok(lb),
                    });
                let lb = match prepared {
                    Ok(lb) if device.is_some() => return Ok((DetectInput::Device(input), lb)),
                    Ok(lb) => lb,
                    Err(e) => {
                        gpu.recycle(input);
                        return Err(format!("GPU preprocess: {e}"));
                    }
                };
                let host = gpu.stream.download_tensor(&input);
                gpu.recycle(input);
                let mut t = host.map_err(|e| format!("GPU preprocess: {e}"))?;
                t.truncate(lb.len());
                Ok((DetectInput::Host(t), lb))
            }
        }
    }

    /// A detector input back from the service (a device one is reused).
    pub fn recycle(&mut self, input: DetectInput) {
        if let (Lane::Cuda(g), DetectInput::Device(t)) = (self, input) {
            g.recycle(t);
        }
    }

    /// `masks` applied: on the host, or by the censor kernel (the picture
    /// then stays on the device when an NVENC encoder follows, else one copy
    /// to the host). `Err` carries the uncensored-or-grey host picture for
    /// the caller to censor whole, and why.
    pub fn censor(
        &mut self,
        picture: Picture,
        masks: &[Mask],
        method: &CensorMethod,
    ) -> Result<Picture, (Frame, String)> {
        match picture {
            Picture::Host(mut f) => {
                censor::apply(&mut f, masks, method);
                Ok(Picture::Host(f))
            }
            Picture::Device(mut f) => {
                let (w, h) = (f.width(), f.height());
                let Lane::Cuda(gpu) = self else {
                    return Err((grey(w, h), "device frame without a CUDA stream".into()));
                };
                let censored = gpu.stream.censor_nv12(&mut f, masks, method);
                if gpu.keep && censored.is_ok() {
                    return Ok(Picture::Device(f));
                }
                let host = gpu.stream.download(&f);
                gpu.spend(f);
                match (censored, host) {
                    (Ok(()), Ok(host)) => Ok(Picture::Host(host)),
                    (Err(e), Ok(host)) => Err((host, format!("GPU censor: {e}"))),
                    (_, Err(e)) => Err((grey(w, h), format!("GPU download: {e}"))),
                }
            }
        }
    }

    /// The picture on the host (a grey frame of its size if it cannot be
    /// copied); a device frame goes back to the pool.
    pub fn to_host(&mut self, picture: Picture) -> Frame {
        match picture {
            Picture::Host(f) => f,
            Picture::Device(f) => {
                let (w, h) = (f.width(), f.height());
                let Lane::Cuda(gpu) = self else {
                    return grey(w, h);
                };
                let host = gpu.stream.download(&f);
                gpu.spend(f);
                host.unwrap_or_else(|_| grey(w, h))
            }
        }
    }

    /// A host picture in device memory on this lane's stream, in a reused
    /// frame (NVENC reads only device memory; a Y4M frame on the GPU path).
    pub fn upload(&mut self, host: &Frame) -> Result<DeviceFrame, Error> {
        let Lane::Cuda(gpu) = self else {
            return Err(Error::Gpu("no CUDA stream on the CPU backend".into()));
        };
        let mut f = gpu.frame(host.width, host.height)?;
        if let Err(e) = gpu.stream.upload(host, &mut f) {
            gpu.spend(f);
            return Err(e);
        }
        Ok(f)
    }

    /// A copy of the picture on the host, the picture left as it is
    /// (`None` if it cannot be copied).
    pub fn copy_to_host(&mut self, picture: &Picture) -> Option<Frame> {
        match (picture, self) {
            (Picture::Host(f), _) => Some(f.clone()),
            (Picture::Device(f), Lane::Cuda(g)) => g.stream.download(f).ok(),
            (Picture::Device(_), Lane::Cpu) => None,
        }
    }

    /// A device frame the caller is done with.
    pub fn spend(&mut self, picture: Picture) {
        if let (Lane::Cuda(g), Picture::Device(f)) = (self, picture) {
            g.spend(f);
        }
    }

    /// The CUDA stream, for an encoder on this lane.
    pub fn stream(&self) -> Option<&GpuStream> {
        match self {
            Lane::Cuda(g) => Some(&g.stream),
            Lane::Cpu => None,
        }
    }

    /// Device frames that have left, for the decoder to reuse instead of
    /// allocating one per frame.
    pub fn take_spent(&mut self) -> Vec<Picture> {
        match self {
            Lane::Cuda(g) => std::mem::take(&mut g.spent)
                .into_iter()
                .map(Picture::Device)
                .collect(),
            Lane::Cpu => Vec::new(),
        }
    }
}
