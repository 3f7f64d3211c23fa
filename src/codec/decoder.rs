//! H.264 decoding through openh264 into packed I420 frames.

use crate::error::MediaError;
use crate::frame::{chroma_dim, Frame, PixelFormat};
use openh264::decoder::{DecodedYUV, Decoder as OhDecoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;
use openh264::OpenH264API;

/// openh264 decoder in `NoFlush` mode: with the default mode it flushes its
/// reorder buffer after every access unit and drops frames of streams with
/// B-frames (9 of 120 decoded in a measurement); `NoFlush` keeps reordering
/// and hands frames out in display order, and `flush` drains the rest.
pub struct Decoder {
    inner: OhDecoder,
    flush_mode: Flush,
}

impl Decoder {
    pub fn new() -> Result<Self, MediaError> {
        let flush_mode = Flush::NoFlush;
        let config = DecoderConfig::new().flush_after_decode(flush_mode);
        let inner = OhDecoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| MediaError::Decode(format!("cannot create decoder: {e}")))?;
        Ok(Decoder { inner, flush_mode })
    }

    /// Decodes one Annex-B access unit; returns the frames that became ready
    /// (0 or more, in display order).
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Vec<Frame>, MediaError> {
        if access_unit.is_empty() {
            return Ok(Vec::new());
        }
        match self.inner.decode(access_unit) {
            Ok(Some(yuv)) => Ok(vec![to_frame(&yuv)?]),
            Ok(None) => Ok(Vec::new()),
            Err(e) => Err(MediaError::Decode(format!(
                "access unit of {} bytes: {e}",
                access_unit.len()
            ))),
        }
    }

    /// End of stream: the frames still held for reordering.
    pub fn flush(&mut self) -> Result<Vec<Frame>, MediaError> {
        let frames = self
            .inner
            .flush_remaining()
            .map_err(|e| MediaError::Decode(format!("flush: {e}")))?;
        frames.iter().map(to_frame).collect()
    }

    /// The reorder mode in use (always `NoFlush`).
    pub fn flush_mode(&self) -> Flush {
        self.flush_mode
    }
}

/// Copies a strided decoder picture into a packed frame; every row access is
/// checked so a short buffer becomes an error, not a panic.
fn to_frame(yuv: &DecodedYUV<'_>) -> Result<Frame, MediaError> {
    let (w, h) = yuv.dimensions();
    let (sy, su, sv) = yuv.strides();
    if w == 0 || h == 0 {
        return Err(MediaError::Decode(format!(
            "decoder returned a {w}x{h} picture"
        )));
    }
    let mut frame = Frame::new(PixelFormat::I420, w, h);
    let (cw, ch) = (chroma_dim(w), chroma_dim(h));
    let (y, u, v) = frame.planes_mut();
    copy_plane(yuv.y(), sy, y, w, h)?;
    copy_plane(yuv.u(), su, u, cw, ch)?;
    copy_plane(yuv.v(), sv, v, cw, ch)?;
    Ok(frame)
}

fn copy_plane(
    src: &[u8],
    stride: usize,
    dst: &mut [u8],
    w: usize,
    h: usize,
) -> Result<(), MediaError> {
    for (r, row) in dst.chunks_exact_mut(w).take(h).enumerate() {
        let s = src.get(r * stride..r * stride + w).ok_or_else(|| {
            MediaError::Decode(format!(
                "decoded plane too short: row {r} of {h}, stride {stride}, {} bytes",
                src.len()
            ))
        })?;
        row.copy_from_slice(s);
    }
    Ok(())
}
