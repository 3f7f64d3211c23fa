//! Where a stream's pictures live and run: the host or a CUDA device, chosen
//! once ([`Backend::open`]) and dispatched here, candle-style, so the
//! pipeline core names no CUDA type. A [`Picture`] is a frame's storage
//! (host memory or device memory); a [`Lane`] is one stream's share of the
//! backend (its CUDA stream, its reusable device buffers) and runs the
//! per-picture work: the detector input, the censor, the copies; the
//! [`Decoder`] and the [`EncoderSlot`] are the codecs of either side.
//!
//! The fallback policy is here, the same for `censor`, `bench` and `serve`
//! ([`FALLBACKS`]; docs/GPU.md; `doctor` prints it).

mod decoder;
mod encoder;
mod lane;

pub use decoder::{Decoded, Decoder};
pub use encoder::{EncoderHealth, EncoderSlot, NVENC_MAX_FAILURES};
pub use lane::{InputSpec, Lane};

use crate::config::GpuSection;
use crate::error::Error;
use crate::frame::{Frame, PixelFormat};
use crate::gpu::{DeviceFrame, GpuContext};
use std::sync::Arc;

/// What happens when part of the GPU path is missing or fails, for every
/// command alike: (situation, what livecensor does).
pub const FALLBACKS: [(&str, &str); 7] = [
    (
        "[gpu] enabled (--gpu) and no usable GPU",
        "refused: the command exits with the reason (no driver, no device, built without `cuda`)",
    ),
    (
        "--detector tensorrt and no plan or no TensorRT",
        "refused: the command exits with the reason",
    ),
    (
        "NVDEC does not open",
        "openh264 decodes, pictures on the host (warning)",
    ),
    (
        "NVENC does not open (H100, H200, A100 have none)",
        "openh264 encodes after one copy to the host (logged)",
    ),
    (
        "NVENC fails on a frame",
        "that frame is encoded by openh264 as an IDR, NVENC retried with an IDR (warning, counted)",
    ),
    (
        "NVENC fails 3 frames in a row, or cannot register a frame",
        "the stream encodes with openh264 from then on (warning, `encoder_fallbacks` metric)",
    ),
    (
        "a kernel or a copy fails on a frame",
        "that frame is censored whole (fail-closed), the next one tries again",
    ),
];

/// A frame's pixels: host memory (openh264, Y4M) or device memory (NVDEC,
/// or uploaded for NVENC).
#[derive(Debug)]
pub enum Picture {
    Host(Frame),
    Device(DeviceFrame),
}

impl Picture {
    pub fn size(&self) -> (usize, usize) {
        match self {
            Picture::Host(f) => (f.width, f.height),
            Picture::Device(f) => (f.width(), f.height()),
        }
    }

    pub fn is_device(&self) -> bool {
        matches!(self, Picture::Device(_))
    }

    /// The host frame, when the picture is on the host.
    pub fn as_host(&self) -> Option<&Frame> {
        match self {
            Picture::Host(f) => Some(f),
            Picture::Device(_) => None,
        }
    }
}

/// The machine a job's streams run on.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// openh264, the Rust kernels, ONNX Runtime or TensorRT on host tensors.
    #[default]
    Cpu,
    /// NVDEC, the CUDA kernels, NVENC where the GPU has one.
    Cuda(Arc<GpuContext>),
}

impl Backend {
    /// The backend `[gpu]` asks for; a GPU asked for and not usable is
    /// refused, never silently replaced by the CPU.
    pub fn open(gpu: &GpuSection) -> Result<Backend, Error> {
        if !gpu.enabled {
            return Ok(Backend::Cpu);
        }
        let ctx = GpuContext::new(gpu.device).map_err(|e| {
            Error::Gpu(format!(
                "[gpu] enabled (--gpu) but device {} is not usable: {e}; drop --gpu to run on the CPU",
                gpu.device
            ))
        })?;
        Ok(Backend::Cuda(Arc::new(ctx)))
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Backend::Cuda(_))
    }

    /// A stream's lane on this backend.
    pub fn lane(&self) -> Result<Lane, Error> {
        match self {
            Backend::Cpu => Ok(Lane::Cpu),
            Backend::Cuda(ctx) => Lane::cuda(ctx.stream()?),
        }
    }

    /// NVDEC on a GPU when it opens, else openh264 (with a warning).
    pub fn decoder(&self) -> Result<Decoder, Error> {
        Decoder::open(self)
    }

    /// An encoder slot (opened on the first frame, at its size).
    pub fn encoder(&self, fps: f32) -> EncoderSlot {
        EncoderSlot::new(self.clone(), fps)
    }
}

/// A mid-grey picture: what stands in for a frame that cannot be read.
pub fn grey(width: usize, height: usize) -> Frame {
    let mut f = Frame::new(PixelFormat::Nv12, width, height);
    f.data.fill(128);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_asked_for_and_not_usable_is_refused_with_the_way_out() {
        if crate::gpu::probe().usable() {
            return;
        }
        let e = Backend::open(&GpuSection {
            enabled: true,
            device: 0,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("[gpu] enabled"), "{e}");
        assert!(e.contains("drop --gpu"), "{e}");
        assert!(matches!(
            Backend::open(&GpuSection::default()),
            Ok(Backend::Cpu)
        ));
    }

    #[test]
    fn the_cpu_backend_decodes_with_openh264_on_a_cpu_lane() {
        let b = Backend::Cpu;
        assert_eq!(b.decoder().unwrap().name(), "openh264");
        let lane = b.lane().unwrap();
        assert!(!lane.is_gpu());
        // A device picture cannot be read on a CPU lane: it is censored whole.
        assert!(lane.can_read(&Picture::Host(grey(4, 4))));
    }
}
