//! The H.264 decoder of a backend: openh264 into host pictures, or NVDEC
//! into device pictures. Both hand pictures out in display order with the
//! timestamp of the access unit that carried them.

use super::{Backend, Picture};
use crate::codec;
use crate::error::Error;
use crate::gpu::nvdec::NvDecoder;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One decoded picture.
#[derive(Debug)]
pub struct Decoded {
    pub picture: Picture,
    pub pts: i64,
    /// The decoder concealed an error in it: censor it whole.
    pub damaged: bool,
}

pub enum Decoder {
    Cpu {
        inner: Box<codec::Decoder>,
        /// Timestamps of access units not yet out: openh264 reorders into
        /// display order, which is ascending timestamp order.
        pending: BinaryHeap<Reverse<i64>>,
    },
    Nvdec(Box<NvDecoder>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Decoder {
    /// NVDEC on a GPU backend when it opens, else openh264 with a warning
    /// (the fallback policy in [`crate::backend`]).
    pub fn open(backend: &Backend) -> Result<Decoder, Error> {
        if let Backend::Cuda(ctx) = backend {
            match NvDecoder::new(ctx) {
                Ok(d) => return Ok(Decoder::Nvdec(Box::new(d))),
                Err(e) => tracing::warn!("NVDEC unavailable, decoding on the CPU: {e}"),
            }
        }
        Self::cpu()
    }

    pub fn cpu() -> Result<Decoder, Error> {
        Ok(Decoder::Cpu {
            inner: Box::new(codec::Decoder::new()?),
            pending: BinaryHeap::new(),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Decoder::Cpu { .. } => "openh264",
            Decoder::Nvdec(_) => "NVDEC",
        }
    }

    /// Decodes one Annex-B access unit stamped `pts`: the pictures that
    /// became ready. An error means the data could not be decoded; the
    /// caller censors until the next key frame.
    pub fn decode(&mut self, au: &[u8], pts: i64) -> Result<Vec<Decoded>, Error> {
        match self {
            Decoder::Cpu { inner, pending } => {
                if au.is_empty() {
                    return Ok(Vec::new());
                }
                pending.push(Reverse(pts));
                let frames = inner.decode(au);
                if frames.is_err() {
                    // The unit gave nothing and never will.
                    pending.retain(|Reverse(p)| *p != pts);
                }
                Ok(stamp(frames?, pending, pts))
            }
            Decoder::Nvdec(d) => {
                let frames = d.decode(au, pts)?;
                let errors = d.take_errors();
                if !errors.is_empty() {
                    tracing::warn!("NVDEC: {}", errors.join("; "));
                }
                let damaged = !errors.is_empty();
                Ok(frames
                    .into_iter()
                    .map(|f| Decoded {
                        picture: Picture::Device(f.frame),
                        pts: f.timestamp,
                        damaged: f.damaged || damaged,
                    })
                    .collect())
            }
        }
    }

    /// End of stream: the pictures still held for reordering.
    pub fn flush(&mut self) -> Result<Vec<Decoded>, Error> {
        match self {
            Decoder::Cpu { inner, pending } => {
                let last = pending.iter().map(|Reverse(p)| *p).max().unwrap_or(0);
                Ok(stamp(inner.flush()?, pending, last))
            }
            Decoder::Nvdec(d) => Ok(d
                .flush()?
                .into_iter()
                .map(|f| Decoded {
                    picture: Picture::Device(f.frame),
                    pts: f.timestamp,
                    damaged: f.damaged,
                })
                .collect()),
        }
    }

    /// A device picture that will not be used again goes back to NVDEC's
    /// pool.
    pub fn recycle(&mut self, picture: Picture) {
        if let (Decoder::Nvdec(d), Picture::Device(f)) = (self, picture) {
            d.recycle(f);
        }
    }
}

/// Host frames out of openh264, each with the smallest timestamp not yet
/// given out (`fallback` when the decoder gives more than it was given).
fn stamp(
    frames: Vec<crate::frame::Frame>,
    pending: &mut BinaryHeap<Reverse<i64>>,
    fallback: i64,
) -> Vec<Decoded> {
    frames
        .into_iter()
        .map(|f| Decoded {
            pts: pending.pop().map_or(fallback, |Reverse(p)| p),
            picture: Picture::Host(f),
            damaged: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_util::pattern;
    use crate::codec::{Encoder, EncoderConfig};

    #[test]
    fn cpu_decoder_stamps_pictures_with_their_access_units_timestamps() {
        let mut enc = Encoder::new(EncoderConfig::new(64, 48, 30.0)).unwrap();
        let mut dec = Decoder::cpu().unwrap();
        let mut out = Vec::new();
        for i in 0..5u8 {
            let au = enc.encode(&pattern(64, 48, i as usize), i == 0).unwrap();
            out.extend(dec.decode(&au, 1000 + i as i64 * 3000).unwrap());
        }
        out.extend(dec.flush().unwrap());
        let pts: Vec<i64> = out.iter().map(|d| d.pts).collect();
        assert_eq!(pts, vec![1000, 4000, 7000, 10000, 13000]);
        assert!(out
            .iter()
            .all(|d| d.picture.size() == (64, 48) && !d.damaged));
    }
}
