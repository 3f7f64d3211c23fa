//! H.264 encoding through openh264 (Constrained Baseline: no B-frames, so every
//! input frame yields exactly one access unit, in order).

use crate::error::MediaError;
use crate::frame::{Frame, PixelFormat};
use openh264::encoder::{
    BitRate, Complexity, Encoder as OhEncoder, EncoderConfig as OhConfig, FrameRate,
    IntraFramePeriod, RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use openh264::{OpenH264API, Timestamp};

/// openh264's size limit (either orientation).
const MAX_LONG_SIDE: usize = 3840;
const MAX_SHORT_SIDE: usize = 2160;

/// Encoder settings. `new` fills the defaults: ~0.1 bit per pixel per frame
/// (2.76 Mbps at 720p30), a keyframe every 2 s, 1 thread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncoderConfig {
    pub width: usize,
    pub height: usize,
    pub fps: f32,
    pub bitrate_bps: u32,
    pub keyframe_interval: u32,
    pub threads: u16,
}

impl EncoderConfig {
    pub fn new(width: usize, height: usize, fps: f32) -> Self {
        let fps = if fps.is_finite() && fps > 0.0 {
            fps
        } else {
            30.0
        };
        EncoderConfig {
            width,
            height,
            fps,
            bitrate_bps: default_bitrate(width, height, fps),
            keyframe_interval: (2.0 * fps).round().max(1.0) as u32,
            threads: 1,
        }
    }
}

/// 0.1 bit/pixel/frame, at least 100 kbps.
pub fn default_bitrate(width: usize, height: usize, fps: f32) -> u32 {
    let bps = 0.1 * width as f64 * height as f64 * fps as f64;
    bps.clamp(100_000.0, u32::MAX as f64) as u32
}

fn check_dimensions(width: usize, height: usize) -> Result<(), MediaError> {
    let (long, short) = (width.max(height), width.min(height));
    if short < 2 || long > MAX_LONG_SIDE || short > MAX_SHORT_SIDE {
        return Err(MediaError::BadDimensions {
            width,
            height,
            reason: format!(
                "the H.264 encoder takes 2x2 up to {MAX_LONG_SIDE}x{MAX_SHORT_SIDE} (either orientation)"
            ),
        });
    }
    Ok(())
}

/// openh264 encoder. Odd sizes are padded to even by repeating the last
/// column/row (openh264 would otherwise drop them: 4:2:0 H.264 cannot signal
/// an odd size), so a 321x241 frame decodes as 322x242 with no pixel lost.
pub struct Encoder {
    config: EncoderConfig,
    inner: OhEncoder,
    frames: u64,
    /// Scratch for padding odd-sized frames.
    padded: Frame,
}

impl Encoder {
    pub fn new(config: EncoderConfig) -> Result<Self, MediaError> {
        check_dimensions(config.width, config.height)?;
        if !(config.fps.is_finite() && config.fps > 0.0) {
            return Err(MediaError::Encode(format!("bad frame rate {}", config.fps)));
        }
        let oh = OhConfig::new()
            .bitrate(BitRate::from_bps(config.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(config.fps))
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(false)
            .usage_type(UsageType::CameraVideoRealTime)
            .complexity(Complexity::Low)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                config.keyframe_interval.max(1),
            ))
            .num_threads(config.threads.max(1));
        let inner = OhEncoder::with_api_config(OpenH264API::from_source(), oh)
            .map_err(|e| MediaError::Encode(format!("cannot create encoder: {e}")))?;
        Ok(Encoder {
            config,
            inner,
            frames: 0,
            padded: Frame::new(PixelFormat::I420, 0, 0),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Encodes one frame into one Annex-B access unit (SPS/PPS precede every
    /// IDR). A frame of another size re-creates the encoder, which starts
    /// with an IDR.
    pub fn encode(&mut self, frame: &Frame, force_keyframe: bool) -> Result<Vec<u8>, MediaError> {
        if frame.data.len() != Frame::expected_len(frame.width, frame.height) {
            return Err(MediaError::BadDimensions {
                width: frame.width,
                height: frame.height,
                reason: format!(
                    "frame holds {} bytes, expected {}",
                    frame.data.len(),
                    Frame::expected_len(frame.width, frame.height)
                ),
            });
        }
        if (frame.width, frame.height) != (self.config.width, self.config.height) {
            let config = EncoderConfig {
                width: frame.width,
                height: frame.height,
                ..self.config
            };
            *self = Encoder::new(config)?;
        }
        let converted;
        let frame = if frame.format == PixelFormat::I420 {
            frame
        } else {
            converted = frame.converted(PixelFormat::I420);
            &converted
        };
        if force_keyframe && self.frames > 0 {
            self.inner.force_intra_frame();
        }
        let ts =
            Timestamp::from_millis((self.frames as f64 * 1000.0 / self.config.fps as f64) as u64);
        let even = frame.width % 2 == 0 && frame.height % 2 == 0;
        let source = if even {
            I420View::new(frame)
        } else {
            pad_to_even(frame, &mut self.padded);
            I420View::new(&self.padded)
        };
        let au = self
            .inner
            .encode_at(&source, ts)
            .map_err(|e| MediaError::Encode(format!("frame {}: {e}", self.frames)))?
            .to_vec();
        if au.is_empty() {
            return Err(MediaError::Encode(format!(
                "frame {}: no output",
                self.frames
            )));
        }
        self.frames += 1;
        Ok(au)
    }
}

/// Copies `src` into `dst` with an even size, repeating the last column/row.
/// 4:2:0 chroma planes already cover the rounded-up size and copy as they are.
fn pad_to_even(src: &Frame, dst: &mut Frame) {
    let (w, h) = (src.width, src.height);
    let (pw, ph) = (w + w % 2, h + h % 2);
    if (dst.width, dst.height) != (pw, ph) {
        *dst = Frame::new(PixelFormat::I420, pw, ph);
    }
    let (sy, su, sv) = src.planes();
    let (dy, du, dv) = dst.planes_mut();
    for (r, row) in dy.chunks_exact_mut(pw).enumerate() {
        let sr = r.min(h - 1);
        let s = &sy[sr * w..sr * w + w];
        row[..w].copy_from_slice(s);
        if pw > w {
            row[w] = s[w - 1];
        }
    }
    du.copy_from_slice(su);
    dv.copy_from_slice(sv);
}

/// Borrowed packed I420 planes in the shape openh264 reads.
struct I420View<'a> {
    width: usize,
    height: usize,
    planes: (&'a [u8], &'a [u8], &'a [u8]),
}

impl<'a> I420View<'a> {
    fn new(frame: &'a Frame) -> Self {
        I420View {
            width: frame.width,
            height: frame.height,
            planes: frame.planes(),
        }
    }
}

impl YUVSource for I420View<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let c = self.width.div_ceil(2);
        (self.width, c, c)
    }

    fn y(&self) -> &[u8] {
        self.planes.0
    }

    fn u(&self) -> &[u8] {
        self.planes.1
    }

    fn v(&self) -> &[u8] {
        self.planes.2
    }
}
