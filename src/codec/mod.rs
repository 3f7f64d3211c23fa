//! openh264 decoder/encoder wrappers and Annex-B helpers.

mod annexb;
mod decoder;
mod encoder;
mod sps;
#[cfg(test)]
pub(crate) mod test_util;

pub use annexb::{
    annexb_to_length_prefixed, is_keyframe, is_vcl, length_prefixed_to_annexb, nal_type,
    split_nals, AccessUnitSplitter, NAL_AUD, NAL_IDR, NAL_PPS, NAL_SEI, NAL_SLICE, NAL_SPS,
    START_CODE,
};
pub use decoder::Decoder;
pub use encoder::{default_bitrate, Encoder, EncoderConfig};
pub use sps::{parse_profile_level_id, parse_sps, AccessUnitInfo, SpsInfo};

#[cfg(test)]
mod tests {
    use super::test_util::{crop, pattern, psnr};
    use super::*;
    use crate::error::MediaError;
    use openh264::decoder::Flush;

    fn decode_all(dec: &mut Decoder, aus: &[Vec<u8>]) -> Vec<crate::frame::Frame> {
        let mut out = Vec::new();
        for au in aus {
            out.extend(dec.decode(au).unwrap());
        }
        out.extend(dec.flush().unwrap());
        out
    }

    #[test]
    fn encode_decode_round_trip_keeps_count_size_and_quality() {
        let (w, h) = (320, 240);
        let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).unwrap();
        let inputs: Vec<_> = (0..20).map(|i| pattern(w, h, i)).collect();
        let aus: Vec<Vec<u8>> = inputs
            .iter()
            .map(|f| enc.encode(f, false).unwrap())
            .collect();
        assert!(is_keyframe(&aus[0]));
        let types: Vec<u8> = split_nals(&aus[0]).map(nal_type).collect();
        assert_eq!(types, vec![NAL_SPS, NAL_PPS, NAL_IDR]);
        assert!(!is_keyframe(&aus[1]));
        let mut dec = Decoder::new().unwrap();
        assert_eq!(dec.flush_mode(), Flush::NoFlush);
        // Without B-frames every access unit gives its picture at once (no
        // reorder delay for live input).
        let mut out = Vec::new();
        for au in &aus {
            let frames = dec.decode(au).unwrap();
            assert_eq!(frames.len(), 1);
            out.extend(frames);
        }
        assert!(dec.flush().unwrap().is_empty());
        assert_eq!(out.len(), inputs.len());
        for (a, b) in inputs.iter().zip(&out) {
            assert_eq!((b.width, b.height), (w, h));
            let p = psnr(a, b);
            assert!(p > 30.0, "psnr {p}");
        }
    }

    #[test]
    fn keyframes_on_request_and_at_the_interval() {
        let mut cfg = EncoderConfig::new(64, 48, 30.0);
        cfg.keyframe_interval = 10;
        let mut enc = Encoder::new(cfg).unwrap();
        let keys: Vec<bool> = (0..21)
            .map(|i| is_keyframe(&enc.encode(&pattern(64, 48, i), i == 4).unwrap()))
            .collect();
        let idx: Vec<usize> = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect();
        assert!(idx.contains(&0) && idx.contains(&4), "{idx:?}");
        assert!(!keys[1] && !keys[5], "{idx:?}");
    }

    #[test]
    fn odd_size_is_padded_to_even_without_losing_pixels() {
        let (w, h) = (321, 241);
        let mut enc = Encoder::new(EncoderConfig::new(w, h, 25.0)).unwrap();
        let inputs: Vec<_> = (0..5).map(|i| pattern(w, h, i)).collect();
        let aus: Vec<Vec<u8>> = inputs
            .iter()
            .map(|f| enc.encode(f, false).unwrap())
            .collect();
        let out = decode_all(&mut Decoder::new().unwrap(), &aus);
        assert_eq!(out.len(), 5);
        for (a, b) in inputs.iter().zip(&out) {
            assert_eq!((b.width, b.height), (322, 242));
            let p = psnr(a, &crop(b, w, h));
            assert!(p > 30.0, "psnr {p}");
        }
    }

    #[test]
    fn size_change_recreates_the_encoder_with_an_idr() {
        let mut enc = Encoder::new(EncoderConfig::new(160, 120, 30.0)).unwrap();
        let mut aus = Vec::new();
        for i in 0..4 {
            aus.push(enc.encode(&pattern(160, 120, i), false).unwrap());
        }
        for i in 0..4 {
            aus.push(enc.encode(&pattern(96, 64, i), false).unwrap());
        }
        assert!(is_keyframe(&aus[4]));
        assert_eq!(enc.config().width, 96);
        let out = decode_all(&mut Decoder::new().unwrap(), &aus);
        let sizes: Vec<(usize, usize)> = out.iter().map(|f| (f.width, f.height)).collect();
        assert_eq!(
            sizes,
            [[(160, 120)].repeat(4), [(96, 64)].repeat(4)].concat()
        );
    }

    #[test]
    fn one_decoder_follows_a_mid_stream_resolution_change() {
        // A live broadcaster's encoder restarting at another size: new SPS
        // and IDR on the same decoder, no reset in between.
        let stream = |w: usize, h: usize, n: usize| -> Vec<Vec<u8>> {
            let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).unwrap();
            (0..n)
                .map(|i| enc.encode(&pattern(w, h, i), false).unwrap())
                .collect()
        };
        let mut dec = Decoder::new().unwrap();
        let mut sizes = Vec::new();
        for (w, h) in [(320, 180), (640, 360), (320, 180)] {
            let aus = stream(w, h, 5);
            assert!(is_keyframe(&aus[0]));
            for (i, au) in aus.iter().enumerate() {
                let frames = dec.decode(au).unwrap();
                assert_eq!(frames.len(), 1, "{w}x{h} frame {i}");
                let f = &frames[0];
                assert!(psnr(&pattern(w, h, i), f) > 30.0, "{w}x{h} frame {i}");
                sizes.push((f.width, f.height));
            }
        }
        let want: Vec<_> = [(320, 180), (640, 360), (320, 180)]
            .iter()
            .flat_map(|s| [*s; 5])
            .collect();
        assert_eq!(sizes, want);
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert!(matches!(
            Encoder::new(EncoderConfig::new(1, 100, 30.0)),
            Err(MediaError::BadDimensions { .. })
        ));
        assert!(matches!(
            Encoder::new(EncoderConfig::new(4000, 100, 30.0)),
            Err(MediaError::BadDimensions { .. })
        ));
        let mut enc = Encoder::new(EncoderConfig::new(64, 48, 30.0)).unwrap();
        let mut f = pattern(64, 48, 0);
        f.data.pop();
        assert!(matches!(
            enc.encode(&f, false),
            Err(MediaError::BadDimensions { .. })
        ));
    }

    #[test]
    fn b_frames_decode_in_display_order() {
        let (aus, expected) = super::test_util::bframe_stream();
        let mut dec = Decoder::new().unwrap();
        let mut out = Vec::new();
        for (au, _) in &aus {
            out.extend(dec.decode(au).unwrap());
        }
        out.extend(dec.flush().unwrap());
        let luma: Vec<u8> = out.iter().map(|f| f.y()[0]).collect();
        assert_eq!(luma, expected);
        for f in &out {
            assert_eq!((f.width, f.height), (16, 16));
            assert!(f.y().iter().all(|&v| v == f.y()[0]));
        }
    }

    #[test]
    fn garbage_never_panics_the_decoder() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut dec = Decoder::new().unwrap();
        for _ in 0..200 {
            let n = rng.random_range(0..400);
            let mut au: Vec<u8> = START_CODE.to_vec();
            au.extend((0..n).map(|_| rng.random::<u8>()));
            let _ = dec.decode(&au);
        }
        let _ = dec.flush();
        // After garbage, a clean stream decodes again from its IDR.
        let mut enc = Encoder::new(EncoderConfig::new(64, 48, 30.0)).unwrap();
        let aus: Vec<Vec<u8>> = (0..3)
            .map(|i| enc.encode(&pattern(64, 48, i), false).unwrap())
            .collect();
        let mut dec = Decoder::new().unwrap();
        assert_eq!(decode_all(&mut dec, &aus).len(), 3);
    }

    /// Speed at 1280x720 (run with `--release -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn bench_720p() {
        use std::time::Instant;
        let (w, h, n) = (1280, 720, 150);
        // Moving pattern plus texture, so the encoder has real work.
        let frames: Vec<_> = (0..n)
            .map(|i| {
                let mut f = pattern(w, h, i);
                let mut s = 0x9e37_79b9u32 ^ (i as u32 / 10);
                for (k, v) in f.data.iter_mut().take(w * h).enumerate() {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let x = (k % w + i * 2) % w;
                    *v = v.saturating_add(((s >> 28) as u8) + ((x / 7) % 9) as u8);
                }
                f
            })
            .collect();
        let median = crate::stats::median;
        let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).unwrap();
        let (mut aus, mut te) = (Vec::new(), Vec::new());
        for f in &frames {
            let t = Instant::now();
            aus.push(enc.encode(f, false).unwrap());
            te.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let bytes: usize = aus.iter().map(Vec::len).sum();
        let mut dec = Decoder::new().unwrap();
        let (mut out, mut td) = (Vec::new(), Vec::new());
        for au in &aus {
            let t = Instant::now();
            out.extend(dec.decode(au).unwrap());
            td.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        assert_eq!(out.len(), n);
        let (enc_ms, dec_ms) = (median(te), median(td));
        let q = frames
            .iter()
            .zip(&out)
            .map(|(a, b)| psnr(a, b))
            .sum::<f64>()
            / n as f64;
        let kbps = bytes as f64 * 8.0 * 30.0 / n as f64 / 1000.0;
        eprintln!("720p median: encode {enc_ms:.2} ms/frame, decode {dec_ms:.2} ms/frame, {kbps:.0} kbps, PSNR {q:.1} dB");
    }
}
