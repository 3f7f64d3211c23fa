//! The one place an encoder is opened: NVENC on a GPU backend when it
//! opens, else openh264; reopened for a new picture size; on NVENC errors
//! the frame is encoded by openh264 instead, and after
//! [`NVENC_MAX_FAILURES`] in a row (or one NVENC cannot recover from) the
//! stream stays on openh264 ([`EncoderHealth`]).

use super::{Backend, Lane, Picture};
use crate::codec::{Encoder, EncoderConfig};
use crate::error::Error;
use crate::gpu::nvenc::{GpuEncoder, Preset};

/// NVENC failures in a row after which a stream stays on openh264.
pub const NVENC_MAX_FAILURES: u32 = 3;

/// Whether a stream may still use NVENC: a small state machine fed with
/// each NVENC result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncoderHealth {
    failures_in_a_row: u32,
    given_up: bool,
}

impl EncoderHealth {
    pub fn nvenc_allowed(&self) -> bool {
        !self.given_up
    }

    pub fn succeeded(&mut self) {
        self.failures_in_a_row = 0;
    }

    /// An NVENC failure; `fatal` when NVENC cannot recover (a surface it
    /// cannot register, a session it cannot open). True when this failure
    /// makes the stream give NVENC up.
    pub fn failed(&mut self, fatal: bool) -> bool {
        if self.given_up {
            return false;
        }
        self.failures_in_a_row += 1;
        self.given_up = fatal || self.failures_in_a_row >= NVENC_MAX_FAILURES;
        self.given_up
    }
}

/// A stream's encoder, opened on the first picture at its size.
pub struct EncoderSlot {
    backend: Backend,
    fps: f32,
    enc: Option<GpuEncoder>,
    /// The CPU encoder a failed NVENC frame is encoded by.
    spare: Option<Box<Encoder>>,
    health: EncoderHealth,
    /// openh264 stood in for NVENC: NVENC's next frame is an IDR.
    force_next: bool,
    /// What encodes and why (for logs, `censor`'s summary, the bench).
    description: String,
    /// Times this stream left NVENC for openh264 for good (0 or 1).
    pub fallbacks: u64,
    /// NVENC errors (each such frame was encoded by openh264 instead).
    pub nvenc_errors: u64,
}

impl EncoderSlot {
    pub(super) fn new(backend: Backend, fps: f32) -> Self {
        EncoderSlot {
            backend,
            fps,
            enc: None,
            spare: None,
            health: EncoderHealth::default(),
            force_next: false,
            description: String::new(),
            fallbacks: 0,
            nvenc_errors: 0,
        }
    }

    /// After an error: the encoder is opened again, with an IDR, on the
    /// next frame.
    pub fn reset(&mut self) {
        self.enc = None;
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn is_nvenc(&self) -> bool {
        self.enc.as_ref().is_some_and(GpuEncoder::is_nvenc)
    }

    /// Opens (or reopens for a new size) the encoder for `size`; true when
    /// it was (re)opened, so the next frame must be an IDR. The lane keeps
    /// censored pictures on the device exactly when NVENC encodes them.
    pub fn prepare(&mut self, size: (usize, usize), lane: &mut Lane) -> Result<bool, Error> {
        let fits = self.enc.as_ref().is_some_and(|e| {
            let c = e.config();
            (c.width, c.height) == size
        });
        if fits {
            return Ok(false);
        }
        self.enc = None;
        let config = EncoderConfig::new(size.0, size.1, self.fps);
        let stream = match (&self.backend, self.health.nvenc_allowed()) {
            (Backend::Cuda(_), true) => lane.stream(),
            _ => None,
        };
        let (enc, why) = match stream {
            Some(s) => GpuEncoder::new(Some(s), config, Preset::P1)?,
            None => (
                GpuEncoder::Cpu(Box::new(Encoder::new(config)?)),
                match (&self.backend, self.health.nvenc_allowed()) {
                    (Backend::Cpu, _) => "CPU openh264".to_string(),
                    (_, false) => "CPU openh264 (NVENC given up after errors)".to_string(),
                    (_, true) => "CPU openh264 (no CUDA stream)".to_string(),
                },
            ),
        };
        if self.backend.is_gpu() && why != self.description {
            tracing::info!("encoder for {}x{}: {why}", size.0, size.1);
        }
        self.description = why;
        lane.set_keep_on_device(enc.is_nvenc());
        self.enc = Some(enc);
        Ok(true)
    }

    /// Encodes one censored picture (call [`Self::prepare`] for its size
    /// first). A host picture with openh264: as it is; a device one after
    /// one copy; with NVENC a host picture (one censored whole) is uploaded
    /// first. An NVENC failure encodes the frame with openh264 instead.
    pub fn encode(
        &mut self,
        lane: &mut Lane,
        picture: Picture,
        force_keyframe: bool,
    ) -> Result<Vec<u8>, Error> {
        let Some(enc) = self.enc.as_mut() else {
            return Err(Error::Gpu("encoder not prepared".into()));
        };
        let force_keyframe = force_keyframe || std::mem::take(&mut self.force_next);
        match enc {
            GpuEncoder::Cpu(e) => {
                let host = lane.to_host(picture);
                Ok(e.encode(&host, force_keyframe)?)
            }
            GpuEncoder::Nvenc(_) => {
                let (frame, host) = match picture {
                    Picture::Device(f) => (Ok(f), None),
                    Picture::Host(h) => (lane.upload(&h), Some(h)),
                };
                let result = match (&frame, lane.stream()) {
                    (Ok(f), Some(s)) => enc.encode(s, f, force_keyframe),
                    (Err(e), _) => Err(Error::Gpu(format!("upload for NVENC: {e}"))),
                    (_, None) => Err(Error::Gpu("NVENC without a CUDA stream".into())),
                };
                match result {
                    Ok(au) => {
                        if let Ok(f) = frame {
                            lane.spend(Picture::Device(f));
                        }
                        self.health.succeeded();
                        Ok(au)
                    }
                    Err(e) => {
                        let picture = match (frame, host) {
                            (_, Some(h)) => Picture::Host(h),
                            (Ok(f), None) => Picture::Device(f),
                            (Err(_), None) => {
                                return Err(Error::Gpu(format!("NVENC: {e}")));
                            }
                        };
                        self.nvenc_failed(&e);
                        self.encode_spare(lane, picture)
                    }
                }
            }
        }
    }

    fn nvenc_failed(&mut self, e: &Error) {
        self.nvenc_errors += 1;
        let fatal = crate::gpu::nvenc::is_nvenc_broken(e);
        if self.health.failed(fatal) {
            self.fallbacks += 1;
            tracing::warn!("NVENC failed ({e}); this stream encodes with openh264 from now on");
            // Reopened as openh264 on the next frame.
            self.enc = None;
        } else {
            tracing::warn!("NVENC failed ({e}); frame encoded by openh264, NVENC retried");
        }
    }

    /// A frame NVENC could not encode, by openh264 as an IDR (the viewer's
    /// decoder has no reference from this encoder).
    fn encode_spare(&mut self, lane: &mut Lane, picture: Picture) -> Result<Vec<u8>, Error> {
        let host = lane.to_host(picture);
        let size = (host.width, host.height);
        let spare = match self.spare.take() {
            Some(s) if (s.config().width, s.config().height) == size => s,
            _ => Box::new(Encoder::new(EncoderConfig::new(size.0, size.1, self.fps))?),
        };
        let mut spare = spare;
        let au = spare.encode(&host, true);
        self.spare = Some(spare);
        // NVENC's next frame must not reference what openh264 sent.
        if let Some(GpuEncoder::Nvenc(_)) = self.enc {
            self.force_next = true;
        }
        Ok(au?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvenc_is_given_up_after_three_failures_in_a_row() {
        let mut h = EncoderHealth::default();
        assert!(!h.failed(false));
        assert!(!h.failed(false));
        assert!(h.nvenc_allowed());
        assert!(h.failed(false));
        assert!(!h.nvenc_allowed());
        // Once given up, further failures change nothing.
        assert!(!h.failed(false));
        assert!(!h.nvenc_allowed());
    }

    #[test]
    fn a_success_resets_the_count_and_a_fatal_failure_gives_up_at_once() {
        let mut h = EncoderHealth::default();
        h.failed(false);
        h.failed(false);
        h.succeeded();
        assert!(!h.failed(false));
        assert!(h.nvenc_allowed());
        assert!(h.failed(true));
        assert!(!h.nvenc_allowed());
    }

    #[test]
    fn the_cpu_backend_opens_openh264_and_reopens_for_a_new_size() {
        let mut slot = Backend::Cpu.encoder(30.0);
        let mut lane = Lane::Cpu;
        assert!(slot.prepare((64, 48), &mut lane).unwrap());
        assert!(!slot.prepare((64, 48), &mut lane).unwrap());
        assert_eq!(slot.description(), "CPU openh264");
        assert!(!slot.is_nvenc());
        let f = crate::codec::test_util::pattern(64, 48, 0);
        let au = slot.encode(&mut lane, Picture::Host(f), true).unwrap();
        assert!(crate::codec::is_keyframe(&au));
        assert!(slot.prepare((96, 64), &mut lane).unwrap());
    }
}
