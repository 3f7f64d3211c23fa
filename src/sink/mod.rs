//! Writing video files: H.264 encoding (openh264) into Annex-B or MP4, or raw
//! I420 into Y4M. The container follows the file extension.

use crate::codec::{
    annexb_to_length_prefixed, is_keyframe, nal_type, split_nals, Encoder, EncoderConfig, NAL_AUD,
    NAL_PPS, NAL_SPS,
};
use crate::error::{Error, MediaError};
use crate::frame::{Frame, PixelFormat};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the writer produces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputInfo {
    pub width: usize,
    pub height: usize,
    pub fps: f64,
    /// Units of the `pts` given to `write` per second (MP4 keeps them).
    pub timescale: u32,
    /// `None`: ~0.1 bit per pixel per frame.
    pub bitrate_bps: Option<u32>,
}

/// Cost of one `write`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WriteStats {
    /// Time spent in the H.264 encoder (zero for Y4M).
    pub encode_time: Duration,
    /// Bytes of encoded (or raw) picture data.
    pub bytes: usize,
    pub keyframe: bool,
}

/// Output container, from the file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputContainer {
    AnnexB,
    Mp4,
    Y4m,
}

impl OutputContainer {
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "h264" | "264" => Some(OutputContainer::AnnexB),
            "mp4" | "m4v" | "mov" => Some(OutputContainer::Mp4),
            "y4m" => Some(OutputContainer::Y4m),
            _ => None,
        }
    }
}

/// An MP4 sample held until the next timestamp gives its duration.
struct HeldSample {
    bytes: Vec<u8>,
    pts: i64,
    is_sync: bool,
}

struct Mp4Sink {
    writer: mp4::Mp4Writer<BufWriter<File>>,
    timescale: u32,
    /// avcC parameter sets once the first access unit has given them.
    params: Option<(Vec<u8>, Vec<u8>)>,
    /// Other parameter sets have been seen (a size change, or passthrough
    /// switching between the input's and our encoder's): from then on every
    /// sample keeps its own in-band, and the sample entry becomes `avc3`.
    in_band: bool,
    held: Option<HeldSample>,
    /// Presentation offset of the first frame (MP4 decode time starts at 0).
    first_pts: Option<i64>,
    last_duration: u32,
}

enum Sink {
    AnnexB(BufWriter<File>),
    Mp4(Box<Mp4Sink>),
    Y4m(BufWriter<File>),
}

/// Encodes and writes frames; call `finish` to complete the file (an MP4
/// without `finish` is unreadable).
pub struct VideoWriter {
    path: PathBuf,
    info: OutputInfo,
    encoder: Option<Encoder>,
    sink: Sink,
    force_keyframe: bool,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn mp4_err(path: &Path) -> impl Fn(mp4::Error) -> Error + '_ {
    move |e| match e {
        mp4::Error::IoError(e) => Error::io(path, e),
        e => MediaError::Malformed {
            path: path.into(),
            container: "MP4",
            reason: format!("writing: {e}"),
        }
        .into(),
    }
}

/// `fps` as a Y4M ratio, exact for integer and NTSC (x/1001) rates.
fn fps_ratio(fps: f64) -> (u64, u64) {
    for den in [1u64, 1001, 1000] {
        let num = fps * den as f64;
        if (num - num.round()).abs() < 1e-3 && num.round() >= 1.0 {
            return (num.round() as u64, den);
        }
    }
    ((fps * 1000.0).round().max(1.0) as u64, 1000)
}

impl VideoWriter {
    pub fn create(path: &Path, info: &OutputInfo) -> Result<VideoWriter, Error> {
        let container =
            OutputContainer::from_path(path).ok_or_else(|| MediaError::Unsupported {
                path: path.into(),
                reason: "unknown output extension (use .h264/.264, .mp4/.m4v/.mov or .y4m)".into(),
            })?;
        if info.width == 0 || info.height == 0 {
            return Err(MediaError::BadDimensions {
                width: info.width,
                height: info.height,
                reason: "empty picture".into(),
            }
            .into());
        }
        let fps = if info.fps.is_finite() && info.fps > 0.0 {
            info.fps
        } else {
            30.0
        };
        let info = OutputInfo {
            fps,
            timescale: if info.timescale == 0 {
                90_000
            } else {
                info.timescale
            },
            ..*info
        };
        let encoder = if container == OutputContainer::Y4m {
            None
        } else {
            let mut cfg = EncoderConfig::new(info.width, info.height, fps as f32);
            if let Some(b) = info.bitrate_bps {
                cfg.bitrate_bps = b;
            }
            Some(Encoder::new(cfg)?)
        };
        let file = BufWriter::new(File::create(path).map_err(io_err(path))?);
        let sink = match container {
            OutputContainer::AnnexB => Sink::AnnexB(file),
            OutputContainer::Y4m => {
                let mut file = file;
                let (n, d) = fps_ratio(fps);
                writeln!(
                    file,
                    "YUV4MPEG2 W{} H{} F{n}:{d} Ip A1:1 C420jpeg",
                    info.width, info.height
                )
                .map_err(io_err(path))?;
                Sink::Y4m(file)
            }
            OutputContainer::Mp4 => {
                let brand = |s: &[u8; 4]| mp4::FourCC { value: *s };
                let config = mp4::Mp4Config {
                    major_brand: brand(b"isom"),
                    minor_version: 512,
                    compatible_brands: vec![
                        brand(b"isom"),
                        brand(b"iso2"),
                        brand(b"avc1"),
                        brand(b"mp41"),
                    ],
                    timescale: 1000,
                };
                let writer = mp4::Mp4Writer::write_start(file, &config).map_err(mp4_err(path))?;
                Sink::Mp4(Box::new(Mp4Sink {
                    writer,
                    timescale: info.timescale,
                    params: None,
                    in_band: false,
                    held: None,
                    first_pts: None,
                    last_duration: ((info.timescale as f64 / fps).round() as u32).max(1),
                }))
            }
        };
        Ok(VideoWriter {
            path: path.into(),
            info,
            encoder,
            sink,
            force_keyframe: false,
        })
    }

    pub fn info(&self) -> &OutputInfo {
        &self.info
    }

    /// The next encoded frame will be an IDR.
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Writes one frame shown at `pts` (in `OutputInfo::timescale` units).
    pub fn write(&mut self, frame: &Frame, pts: i64) -> Result<WriteStats, Error> {
        let path = self.path.as_path();
        if let Sink::Y4m(file) = &mut self.sink {
            if (frame.width, frame.height) != (self.info.width, self.info.height) {
                return Err(MediaError::BadDimensions {
                    width: frame.width,
                    height: frame.height,
                    reason: format!(
                        "{}: Y4M output is fixed at {}x{}",
                        path.display(),
                        self.info.width,
                        self.info.height
                    ),
                }
                .into());
            }
            let converted;
            let frame = if frame.format == PixelFormat::I420 {
                frame
            } else {
                converted = frame.converted(PixelFormat::I420);
                &converted
            };
            file.write_all(b"FRAME\n").map_err(io_err(path))?;
            file.write_all(&frame.data).map_err(io_err(path))?;
            return Ok(WriteStats {
                encode_time: Duration::ZERO,
                bytes: frame.data.len(),
                keyframe: true,
            });
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return Err(MediaError::Encode(format!(
                "{}: no encoder for this output",
                path.display()
            ))
            .into());
        };
        let t0 = Instant::now();
        let au = encoder.encode(frame, self.force_keyframe)?;
        let encode_time = t0.elapsed();
        self.force_keyframe = false;
        let mut stats = self.write_encoded(&au, frame.width, frame.height, pts)?;
        stats.encode_time = encode_time;
        Ok(stats)
    }

    /// Writes one access unit encoded elsewhere (NVENC) for a `width x
    /// height` picture shown at `pts`. The first one must carry SPS/PPS.
    /// A Y4M output holds pictures, not H.264: an error.
    pub fn write_encoded(
        &mut self,
        au: &[u8],
        width: usize,
        height: usize,
        pts: i64,
    ) -> Result<WriteStats, Error> {
        let path = self.path.as_path();
        let keyframe = is_keyframe(au);
        match &mut self.sink {
            Sink::AnnexB(file) => file.write_all(au).map_err(io_err(path))?,
            Sink::Mp4(m) => m.push(path, width, height, au, pts, keyframe)?,
            Sink::Y4m(_) => {
                return Err(MediaError::Encode(format!(
                    "{}: a Y4M output takes pictures, not encoded H.264",
                    path.display()
                ))
                .into())
            }
        }
        Ok(WriteStats {
            encode_time: Duration::ZERO,
            bytes: au.len(),
            keyframe,
        })
    }

    /// Whether the output holds H.264 (so `write_encoded` can be used).
    pub fn takes_encoded(&self) -> bool {
        !matches!(self.sink, Sink::Y4m(_))
    }

    /// Flushes and completes the file.
    pub fn finish(self) -> Result<(), Error> {
        let path = self.path.as_path();
        match self.sink {
            Sink::AnnexB(mut f) | Sink::Y4m(mut f) => f.flush().map_err(io_err(path)),
            Sink::Mp4(mut m) => {
                if let Some(held) = m.held.take() {
                    let d = m.last_duration;
                    m.write_sample(path, held, d)?;
                }
                m.writer.write_end().map_err(mp4_err(path))?;
                m.writer.into_writer().flush().map_err(io_err(path))?;
                if m.in_band {
                    mark_avc3(path)?;
                }
                Ok(())
            }
        }
    }
}

/// Renames the sample entry `avc1` to `avc3` in a finished MP4: parameter
/// sets may then change in-band, as they do where passthrough switches
/// between the input's and ours.
fn mark_avc3(path: &Path) -> Result<(), Error> {
    use std::io::{Seek, SeekFrom};
    let io = io_err(path);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(&io)?;
    if let Some(at) = crate::source::sample_entry_offset(&mut file, b"avc1").map_err(&io)? {
        file.seek(SeekFrom::Start(at)).map_err(&io)?;
        file.write_all(b"avc3").map_err(&io)?;
        file.flush().map_err(&io)?;
    }
    Ok(())
}

impl Mp4Sink {
    fn push(
        &mut self,
        path: &Path,
        width: usize,
        height: usize,
        au: &[u8],
        pts: i64,
        keyframe: bool,
    ) -> Result<(), Error> {
        let sps = split_nals(au)
            .find(|n| nal_type(n) == NAL_SPS)
            .map(<[u8]>::to_vec);
        let pps = split_nals(au)
            .find(|n| nal_type(n) == NAL_PPS)
            .map(<[u8]>::to_vec);
        if self.params.is_none() {
            let (Some(sps), Some(pps)) = (sps.clone(), pps.clone()) else {
                return Err(MediaError::Encode(format!(
                    "{}: first access unit has no SPS/PPS",
                    path.display()
                ))
                .into());
            };
            // The encoder pads odd sizes to even.
            let (w, h) = (width.next_multiple_of(2), height.next_multiple_of(2));
            let track = mp4::TrackConfig {
                track_type: mp4::TrackType::Video,
                timescale: self.timescale,
                language: "und".into(),
                media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                    width: u16::try_from(w).unwrap_or(u16::MAX),
                    height: u16::try_from(h).unwrap_or(u16::MAX),
                    seq_param_set: sps.clone(),
                    pic_param_set: pps.clone(),
                }),
            };
            self.writer.add_track(&track).map_err(mp4_err(path))?;
            self.params = Some((sps, pps));
        }
        // Parameter sets equal to avcC's stay out of the samples until
        // another set appears; after that each switch must carry its own,
        // since a decoder keeps the last set it saw for an id.
        let same = match &self.params {
            Some((s, p)) => {
                sps.as_ref().is_none_or(|x| x == s) && pps.as_ref().is_none_or(|x| x == p)
            }
            None => false,
        };
        self.in_band |= !same;
        let strip = !self.in_band;
        let bytes = annexb_to_length_prefixed(au, |t| {
            t == NAL_AUD || (strip && (t == NAL_SPS || t == NAL_PPS))
        });
        if let Some(held) = self.held.take() {
            let d = pts.saturating_sub(held.pts).clamp(1, u32::MAX as i64) as u32;
            self.last_duration = d;
            self.write_sample(path, held, d)?;
        }
        self.held = Some(HeldSample {
            bytes,
            pts,
            is_sync: keyframe,
        });
        Ok(())
    }

    fn write_sample(&mut self, path: &Path, held: HeldSample, duration: u32) -> Result<(), Error> {
        let first = *self.first_pts.get_or_insert(held.pts);
        let sample = mp4::Mp4Sample {
            start_time: 0,
            duration,
            rendering_offset: first.clamp(0, i32::MAX as i64) as i32,
            is_sync: held.is_sync,
            bytes: bytes::Bytes::from(held.bytes),
        };
        self.writer.write_sample(1, &sample).map_err(mp4_err(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_util::{crop, pattern, psnr};
    use crate::source::{Container, DecodedFrame, VideoReader};

    fn out_info(width: usize, height: usize, fps: f64, timescale: u32) -> OutputInfo {
        OutputInfo {
            width,
            height,
            fps,
            timescale,
            bitrate_bps: None,
        }
    }

    /// Writes `pattern` frames at the given pts and reads the file back.
    fn round_trip(
        name: &str,
        w: usize,
        h: usize,
        fps: f64,
        timescale: u32,
        pts: &[i64],
    ) -> (Vec<Frame>, Vec<DecodedFrame>, VideoReader) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let mut wr = VideoWriter::create(&path, &out_info(w, h, fps, timescale)).unwrap();
        let inputs: Vec<Frame> = (0..pts.len()).map(|i| pattern(w, h, i)).collect();
        for (f, &p) in inputs.iter().zip(pts) {
            let st = wr.write(f, p).unwrap();
            assert!(st.bytes > 0);
        }
        wr.finish().unwrap();
        let mut rd = VideoReader::open(&path, Some(fps)).unwrap();
        let out: Vec<DecodedFrame> = rd.by_ref().map(|r| r.unwrap()).collect();
        (inputs, out, rd)
    }

    #[test]
    fn annexb_round_trip() {
        let pts: Vec<i64> = (0..30).map(|i| i * 3000).collect();
        let (inputs, out, rd) = round_trip("a.h264", 320, 240, 30.0, 90_000, &pts);
        assert_eq!(rd.info().container, Container::AnnexB);
        assert_eq!(
            (rd.info().width, rd.info().height, rd.info().timescale),
            (320, 240, 90_000)
        );
        assert_eq!(out.len(), 30);
        for (i, (a, d)) in inputs.iter().zip(&out).enumerate() {
            assert_eq!((d.index, d.pts, d.corrupt), (i as u64, pts[i], false));
            assert!(psnr(a, &d.frame) > 30.0);
        }
    }

    #[test]
    fn mp4_round_trip_keeps_constant_rate_timing() {
        let pts: Vec<i64> = (0..25).map(|i| i * 3600).collect();
        let (inputs, out, rd) = round_trip("a.mp4", 320, 240, 25.0, 90_000, &pts);
        let info = rd.info();
        assert_eq!(info.container, Container::Mp4);
        assert_eq!(
            (info.width, info.height, info.timescale, info.frame_count),
            (320, 240, 90_000, Some(25))
        );
        assert!((info.fps - 25.0).abs() < 1e-6, "{}", info.fps);
        assert_eq!(out.iter().map(|d| d.pts).collect::<Vec<_>>(), pts);
        for (a, d) in inputs.iter().zip(&out) {
            assert!(psnr(a, &d.frame) > 30.0 && !d.corrupt);
        }
    }

    /// Access units encoded elsewhere (as NVENC's would be) reach the file
    /// exactly like the writer's own: same frames back, same timing.
    /// Passthrough switches between two encoders' parameter sets: once
    /// they change, every sample keeps its own in-band (a decoder keeps the
    /// last set it saw for an id, so stripping the first set when it comes
    /// back would decode with the other one), the sample entry is `avc3`,
    /// and the file reads back to the Annex-B stream's pictures.
    #[test]
    fn switching_parameter_sets_stay_in_band_under_avc3() {
        use crate::codec::{Decoder, Encoder, EncoderConfig};
        let mut a = Encoder::new(EncoderConfig::new(64, 48, 30.0)).unwrap();
        let mut b = Encoder::new(EncoderConfig::new(96, 64, 30.0)).unwrap();
        let mut aus = Vec::new();
        for round in 0..3 {
            let (enc, w, h) = if round % 2 == 0 {
                (&mut a, 64, 48)
            } else {
                (&mut b, 96, 64)
            };
            for i in 0..3 {
                aus.push((enc.encode(&pattern(w, h, i), i == 0).unwrap(), w, h));
            }
        }
        let mut dec = Decoder::new().unwrap();
        let want: Vec<Frame> = aus
            .iter()
            .flat_map(|(au, _, _)| dec.decode(au).unwrap())
            .collect();
        assert_eq!(want.len(), 9);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.mp4");
        let mut wr = VideoWriter::create(&path, &out_info(64, 48, 30.0, 90_000)).unwrap();
        for (i, (au, w, h)) in aus.iter().enumerate() {
            wr.write_encoded(au, *w, *h, i as i64 * 3000).unwrap();
        }
        wr.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.windows(4).any(|w| w == b"avc3"));
        let got: Vec<Frame> = VideoReader::open(&path, Some(30.0))
            .unwrap()
            .map(|r| r.unwrap().frame)
            .collect();
        assert_eq!(got.len(), 9);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g == w, "frame {k}");
        }
    }

    #[test]
    fn pre_encoded_access_units_round_trip() {
        use crate::codec::{Encoder, EncoderConfig};
        let (w, h) = (160, 120);
        for name in ["e.mp4", "e.h264"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(name);
            let mut wr = VideoWriter::create(&path, &out_info(w, h, 30.0, 90_000)).unwrap();
            assert!(wr.takes_encoded());
            let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).unwrap();
            let inputs: Vec<Frame> = (0..12).map(|i| pattern(w, h, i)).collect();
            for (i, f) in inputs.iter().enumerate() {
                let au = enc.encode(f, false).unwrap();
                let st = wr.write_encoded(&au, w, h, i as i64 * 3000).unwrap();
                assert_eq!((st.bytes, st.keyframe), (au.len(), i == 0));
            }
            wr.finish().unwrap();
            let rd = VideoReader::open(&path, Some(30.0)).unwrap();
            assert_eq!((rd.info().width, rd.info().height), (w, h));
            let out: Vec<DecodedFrame> = rd.map(|r| r.unwrap()).collect();
            assert_eq!(out.len(), 12, "{name}");
            for (i, (a, d)) in inputs.iter().zip(&out).enumerate() {
                assert_eq!(d.pts, i as i64 * 3000, "{name}");
                assert!(psnr(a, &d.frame) > 30.0, "{name} frame {i}");
            }
        }
        // Y4M holds pictures: refused, and says so.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.y4m");
        let mut wr = VideoWriter::create(&path, &out_info(w, h, 30.0, 90_000)).unwrap();
        assert!(!wr.takes_encoded());
        let e = wr.write_encoded(&[0, 0, 0, 1, 0x65], w, h, 0).unwrap_err();
        assert!(e.to_string().contains("Y4M"), "{e}");
        // An MP4 whose first access unit has no SPS/PPS cannot be started.
        let path = dir.path().join("bad.mp4");
        let mut wr = VideoWriter::create(&path, &out_info(w, h, 30.0, 90_000)).unwrap();
        let e = wr
            .write_encoded(&[0, 0, 0, 1, 0x41, 0x9a], w, h, 0)
            .unwrap_err();
        assert!(e.to_string().contains("SPS/PPS"), "{e}");
    }

    #[test]
    fn mp4_round_trip_keeps_variable_rate_timing() {
        let pts = [
            1000i64, 1033, 1100, 1101, 1250, 1300, 1301, 1500, 1533, 1566,
        ];
        let (_, out, rd) = round_trip("vfr.mp4", 128, 96, 30.0, 1000, &pts);
        assert_eq!(rd.info().timescale, 1000);
        assert_eq!(out.iter().map(|d| d.pts).collect::<Vec<_>>(), pts);
    }

    #[test]
    fn y4m_round_trip_is_exact_even_for_odd_sizes() {
        for (w, h) in [(64, 48), (321, 241)] {
            let pts: Vec<i64> = (0..4).map(|i| i * 3000).collect();
            let (inputs, out, rd) = round_trip("a.y4m", w, h, 30.0, 90_000, &pts);
            assert_eq!(rd.info().container, Container::Y4m);
            assert_eq!(rd.info().frame_count, Some(4));
            assert_eq!(out.iter().map(|d| d.pts).collect::<Vec<_>>(), pts);
            let frames: Vec<Frame> = out.into_iter().map(|d| d.frame).collect();
            assert_eq!(frames, inputs);
        }
    }

    #[test]
    fn odd_size_h264_decodes_padded_to_even() {
        let pts: Vec<i64> = (0..5).map(|i| i * 3000).collect();
        for name in ["odd.h264", "odd.mp4"] {
            let (inputs, out, rd) = round_trip(name, 321, 241, 30.0, 90_000, &pts);
            assert_eq!((rd.info().width, rd.info().height), (322, 242));
            assert_eq!(out.len(), 5);
            for (a, d) in inputs.iter().zip(&out) {
                assert!(psnr(a, &crop(&d.frame, 321, 241)) > 30.0);
            }
        }
    }

    #[test]
    fn keyframe_request_and_size_limits() {
        let dir = tempfile::tempdir().unwrap();
        let mut wr =
            VideoWriter::create(&dir.path().join("k.h264"), &out_info(64, 48, 30.0, 90_000))
                .unwrap();
        assert!(wr.write(&pattern(64, 48, 0), 0).unwrap().keyframe);
        assert!(!wr.write(&pattern(64, 48, 1), 1).unwrap().keyframe);
        wr.request_keyframe();
        assert!(wr.write(&pattern(64, 48, 2), 2).unwrap().keyframe);
        assert!(!wr.write(&pattern(64, 48, 3), 3).unwrap().keyframe);
        wr.finish().unwrap();

        let mut y = VideoWriter::create(&dir.path().join("k.y4m"), &out_info(64, 48, 30.0, 90_000))
            .unwrap();
        assert!(matches!(
            y.write(&pattern(32, 48, 0), 0),
            Err(Error::Media(MediaError::BadDimensions { .. }))
        ));
    }

    #[test]
    fn unknown_output_extension_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.avi");
        match VideoWriter::create(&path, &out_info(64, 48, 30.0, 90_000)) {
            Err(Error::Media(MediaError::Unsupported { path: p, .. })) => assert_eq!(p, path),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("accepted .avi"),
        }
        assert!(!path.exists());
    }

    #[test]
    fn y4m_rate_ratios() {
        assert_eq!(fps_ratio(25.0), (25, 1));
        assert_eq!(fps_ratio(30000.0 / 1001.0), (30000, 1001));
        assert_eq!(fps_ratio(12.5), (12500, 1000));
    }
}
