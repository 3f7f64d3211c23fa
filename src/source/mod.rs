//! Reading video files: container detection, demuxing (Annex-B H.264, MP4,
//! Y4M) and decoding into I420 frames with presentation times.
//!
//! Corrupt data never stops a stream: an access unit the decoder rejects
//! becomes a grey frame marked `corrupt` (the pipeline censors it whole), and
//! frames stay marked until the next IDR. Only a stream with no decodable
//! frame at all is an error.

pub(crate) mod demux;
pub mod device;
pub mod file;
mod sample_table;

use crate::codec::{is_keyframe, Decoder};
use crate::error::{Error, MediaError};
use crate::frame::{Frame, PixelFormat};
pub(crate) use demux::sample_entry_offset;
use demux::{AnnexBDemux, Mp4Demux, Packet, Y4mDemux};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Frame rate assumed when neither the container nor the caller gives one.
const DEFAULT_FPS: f64 = 30.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    AnnexB,
    Mp4,
    Y4m,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Size of the first frame (a stream may change size later).
    pub width: usize,
    pub height: usize,
    pub fps: f64,
    /// Units of `DecodedFrame::pts` per second.
    pub timescale: u32,
    pub frame_count: Option<u64>,
    pub container: Container,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DecodedFrame {
    pub index: u64,
    /// Presentation time in `VideoInfo::timescale` units.
    pub pts: i64,
    pub frame: Frame,
    /// Decoded from damaged data (or standing in for it): censor the whole frame.
    pub corrupt: bool,
    /// The access unit this picture, and only this one, came of (what
    /// passthrough forwards); `None` when that is not known for sure.
    pub au: Option<Arc<[u8]>>,
}

/// Container by extension, else by the first bytes.
pub fn detect_container(path: &Path, head: &[u8]) -> Option<Container> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("h264" | "264" | "avc" | "h26l") => return Some(Container::AnnexB),
        Some("mp4" | "m4v" | "mov") => return Some(Container::Mp4),
        Some("y4m") => return Some(Container::Y4m),
        _ => {}
    }
    if head.starts_with(b"YUV4MPEG2 ") {
        Some(Container::Y4m)
    } else if head
        .get(4..8)
        .is_some_and(|b| matches!(b, b"ftyp" | b"moov" | b"mdat" | b"free" | b"wide" | b"skip"))
    {
        Some(Container::Mp4)
    } else if head.starts_with(&[0, 0, 1]) || head.starts_with(&[0, 0, 0, 1]) {
        Some(Container::AnnexB)
    } else {
        None
    }
}

/// A frame not yet handed out; `None` stands for a grey frame whose size is
/// known only once the first picture has been decoded.
struct Pending {
    pts: i64,
    frame: Option<Frame>,
    corrupt: bool,
    au: Option<Arc<[u8]>>,
}

/// One per reader, inside a boxed stream: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Demux {
    AnnexB(AnnexBDemux),
    Mp4(Mp4Demux),
}

impl Demux {
    fn next_packet(&mut self) -> Option<Result<Packet, Error>> {
        match self {
            Demux::AnnexB(d) => d.next_packet(),
            Demux::Mp4(d) => d.next_packet(),
        }
    }
}

/// Decodes an H.264 packet stream, restoring display-order timestamps.
struct H264Stream {
    path: PathBuf,
    demux: Demux,
    decoder: Decoder,
    /// Timestamps of fed slices; openh264 outputs in display order, so each
    /// output frame takes the smallest.
    pts_heap: BinaryHeap<Reverse<i64>>,
    last_pts: i64,
    frame_step: i64,
    ready: VecDeque<Pending>,
    last_size: Option<(usize, usize)>,
    corrupt_until_idr: bool,
    packets: u64,
    decoded: u64,
    finished: bool,
    /// A fatal (I/O) error, handed out after the frames decoded before it.
    error: Option<Error>,
}

impl H264Stream {
    fn take_pts(&mut self) -> i64 {
        let pts = match self.pts_heap.pop() {
            Some(Reverse(p)) => p,
            None => self.last_pts + self.frame_step,
        };
        self.last_pts = pts;
        pts
    }

    fn grey(&self) -> Option<Frame> {
        self.last_size.map(|(w, h)| grey_frame(w, h))
    }

    /// `au`: the access unit just decoded and its timestamp; it goes with
    /// the picture when that is its only one (the picture took its
    /// timestamp, so no earlier unit was still waiting for a picture).
    fn push_decoded(&mut self, frames: Vec<Frame>, au: Option<(Arc<[u8]>, i64)>) {
        let only = frames.len() == 1;
        for frame in frames {
            let pts = self.take_pts();
            self.last_size = Some((frame.width, frame.height));
            self.decoded += 1;
            let corrupt = self.corrupt_until_idr;
            let au = match &au {
                Some((data, p)) if only && *p == pts => Some(data.clone()),
                _ => None,
            };
            self.ready.push_back(Pending {
                pts,
                frame: Some(frame),
                corrupt,
                au,
            });
        }
    }

    fn push_corrupt(&mut self, why: &str) {
        tracing::warn!(path = %self.path.display(), "corrupt access unit: {why}");
        self.corrupt_until_idr = true;
        let pts = self.take_pts();
        let frame = self.grey();
        self.ready.push_back(Pending {
            pts,
            frame,
            corrupt: true,
            au: None,
        });
    }

    /// Feeds one packet, or finishes the stream at its end or at a fatal
    /// (I/O) error, which is kept for after the remaining frames.
    fn pump(&mut self) {
        match self.demux.next_packet() {
            Some(Ok(Packet { data, pts })) => {
                self.packets += 1;
                if let Some(p) = pts {
                    self.pts_heap.push(Reverse(p));
                }
                match data {
                    Ok(au) => {
                        if is_keyframe(&au) {
                            self.corrupt_until_idr = false;
                        }
                        match self.decoder.decode(&au) {
                            Ok(frames) => {
                                let au = pts.map(|p| (Arc::<[u8]>::from(au), p));
                                self.push_decoded(frames, au)
                            }
                            Err(e) => self.push_corrupt(&e.to_string()),
                        }
                    }
                    Err(why) => self.push_corrupt(&why),
                }
            }
            Some(Err(e)) => {
                self.error = Some(e);
                self.finish_stream();
            }
            None => self.finish_stream(),
        }
    }

    fn finish_stream(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        match self.decoder.flush() {
            Ok(frames) => self.push_decoded(frames, None),
            Err(e) => tracing::warn!(path = %self.path.display(), "flush: {e}"),
        }
        // Slices the decoder swallowed without a picture still count as frames.
        while !self.pts_heap.is_empty() {
            self.push_corrupt("no picture came out for this access unit");
        }
    }

    /// The next frame, decoding until one is ready; then the fatal error if any.
    fn next(&mut self) -> Option<Result<Pending, Error>> {
        while self.ready.is_empty() && !self.finished {
            self.pump();
        }
        match self.ready.pop_front() {
            Some(p) => Some(Ok(p)),
            None => self.error.take().map(Err),
        }
    }
}

/// Mid-grey stand-in for a picture that could not be decoded (it is
/// censored whole anyway; grey keeps the encoder's work small).
pub(crate) fn grey_frame(width: usize, height: usize) -> Frame {
    let mut f = Frame::new(PixelFormat::I420, width, height);
    f.data.fill(128);
    f
}

enum Kind {
    H264(Box<H264Stream>),
    Y4m(Box<Y4mDemux>),
}

/// Reads and decodes one video file; see the module docs for error handling.
pub struct VideoReader {
    path: PathBuf,
    info: VideoInfo,
    kind: Kind,
    next_index: u64,
    done: bool,
}

/// The container of `path`, from its extension or first bytes; an empty
/// file or an unknown format is an error naming the file.
fn sniff(path: &Path) -> Result<Container, Error> {
    let mut head = [0u8; 16];
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    if n == 0 {
        return Err(MediaError::Empty { path: path.into() }.into());
    }
    detect_container(path, &head[..n]).ok_or_else(|| {
        MediaError::Unsupported {
            path: path.into(),
            reason: "unknown container (expected H.264 Annex-B, MP4/MOV or Y4M)".into(),
        }
        .into()
    })
}

/// A usable frame-rate hint (finite, positive) or none.
fn usable_fps(hint: Option<f64>) -> Option<f64> {
    hint.filter(|f| f.is_finite() && *f > 0.0)
}

impl VideoInfo {
    /// A Y4M file's: its own size, frame count and rate (else `hint`).
    fn of_y4m(d: &Y4mDemux, hint: Option<f64>) -> VideoInfo {
        VideoInfo {
            width: d.width,
            height: d.height,
            fps: d.fps.or(hint).unwrap_or(DEFAULT_FPS),
            timescale: AnnexBDemux::TIMESCALE,
            frame_count: d.frame_count,
            container: Container::Y4m,
        }
    }
}

impl VideoReader {
    pub fn open(path: &Path, fps_hint: Option<f64>) -> Result<VideoReader, Error> {
        let hint = usable_fps(fps_hint);
        let container = sniff(path)?;
        match container {
            Container::Y4m => {
                let d = Y4mDemux::new(path)?;
                let info = VideoInfo::of_y4m(&d, hint);
                Ok(VideoReader {
                    path: path.into(),
                    info,
                    kind: Kind::Y4m(Box::new(d)),
                    next_index: 0,
                    done: false,
                })
            }
            Container::AnnexB => {
                let fps = hint.unwrap_or(DEFAULT_FPS);
                let demux = Demux::AnnexB(AnnexBDemux::new(path, fps)?);
                Self::open_h264(path, demux, fps, AnnexBDemux::TIMESCALE, None, container)
            }
            Container::Mp4 => {
                let d = Mp4Demux::new(path)?;
                let fps = d.fps.or(hint).unwrap_or(DEFAULT_FPS);
                let (timescale, count) = (d.timescale, Some(d.sample_count() as u64));
                if count == Some(0) {
                    return Err(MediaError::Empty { path: path.into() }.into());
                }
                tracing::debug!(path = %path.display(), "avc1 {}x{}", d.width, d.height);
                Self::open_h264(path, Demux::Mp4(d), fps, timescale, count, container)
            }
        }
    }

    /// Decodes up to the first picture, which gives the stream's size.
    fn open_h264(
        path: &Path,
        demux: Demux,
        fps: f64,
        timescale: u32,
        frame_count: Option<u64>,
        container: Container,
    ) -> Result<VideoReader, Error> {
        let mut s = H264Stream {
            path: path.into(),
            demux,
            decoder: Decoder::new()?,
            pts_heap: BinaryHeap::new(),
            last_pts: 0,
            frame_step: ((timescale as f64 / fps).round() as i64).max(1),
            ready: VecDeque::new(),
            last_size: None,
            corrupt_until_idr: false,
            packets: 0,
            decoded: 0,
            finished: false,
            error: None,
        };
        while s.decoded == 0 && !s.finished {
            s.pump();
        }
        let Some((width, height)) = s.last_size else {
            if let Some(e) = s.error.take() {
                return Err(e);
            }
            let err = if s.packets == 0 {
                MediaError::Empty { path: path.into() }
            } else {
                MediaError::Malformed {
                    path: path.into(),
                    container: if container == Container::Mp4 {
                        "MP4"
                    } else {
                        "H.264 Annex-B"
                    },
                    reason: format!("no decodable H.264 picture in {} access units", s.packets),
                }
            };
            return Err(err.into());
        };
        let info = VideoInfo {
            width,
            height,
            fps,
            timescale,
            frame_count,
            container,
        };
        Ok(VideoReader {
            path: path.into(),
            info,
            kind: Kind::H264(Box::new(s)),
            next_index: 0,
            done: false,
        })
    }

    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// The next frame in display order; `None` at the end. After an `Err`
    /// the stream ends.
    pub fn next_frame(&mut self) -> Option<Result<DecodedFrame, Error>> {
        if self.done {
            return None;
        }
        let next = match &mut self.kind {
            Kind::H264(s) => s.next().map(|r| {
                r.map(|p| {
                    let frame = p
                        .frame
                        .unwrap_or_else(|| grey_frame(self.info.width, self.info.height));
                    (p.pts, frame, p.corrupt, p.au)
                })
            }),
            Kind::Y4m(d) => d.next_picture().map(|r| {
                r.map(|f| {
                    let pts = (self.next_index as f64 * self.info.timescale as f64 / self.info.fps)
                        .round() as i64;
                    (pts, f, false, None)
                })
            }),
        };
        let item = match next {
            None if self.next_index == 0 => Some(Err(MediaError::Empty {
                path: self.path.clone(),
            }
            .into())),
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok((pts, frame, corrupt, au))) => {
                let index = self.next_index;
                self.next_index += 1;
                return Some(Ok(DecodedFrame {
                    index,
                    pts,
                    frame,
                    corrupt,
                    au,
                }));
            }
        };
        self.done = true;
        item
    }
}

impl Iterator for VideoReader {
    type Item = Result<DecodedFrame, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_util::{pattern, psnr};
    use crate::codec::{Encoder, EncoderConfig};
    use std::io::Write;

    fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    fn encode_aus(w: usize, h: usize, n: usize, keyframe_interval: u32) -> Vec<Vec<u8>> {
        let mut cfg = EncoderConfig::new(w, h, 30.0);
        cfg.keyframe_interval = keyframe_interval;
        let mut enc = Encoder::new(cfg).unwrap();
        (0..n)
            .map(|i| enc.encode(&pattern(w, h, i), false).unwrap())
            .collect()
    }

    fn open_err(path: &Path) -> Error {
        match VideoReader::open(path, None) {
            Err(e) => e,
            Ok(mut r) => match r.next_frame() {
                Some(Err(e)) => e,
                other => panic!(
                    "{} opened and gave {:?}",
                    path.display(),
                    other.map(|r| r.is_ok())
                ),
            },
        }
    }

    #[test]
    fn corrupt_access_unit_yields_a_marked_frame_and_the_stream_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut aus = encode_aus(160, 120, 30, 10);
        assert!(is_keyframe(&aus[10]) && is_keyframe(&aus[20]));
        // Garble the slice data of frame 5 (keep the start code and NAL header).
        let au = &mut aus[5];
        for (k, b) in au.iter_mut().enumerate().skip(6) {
            *b = (k as u8).wrapping_mul(37) | 0x11;
        }
        let path = write_file(dir.path(), "c.h264", &aus.concat());
        let frames: Vec<DecodedFrame> = VideoReader::open(&path, Some(30.0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(frames.len(), 30);
        let corrupt: Vec<usize> = frames
            .iter()
            .filter(|f| f.corrupt)
            .map(|f| f.index as usize)
            .collect();
        // Marked from the damaged frame up to the next IDR (frame 10).
        assert_eq!(corrupt, vec![5, 6, 7, 8, 9]);
        assert!(frames[5].frame.data.iter().all(|&b| b == 128));
        assert_eq!((frames[5].frame.width, frames[5].frame.height), (160, 120));
        for f in frames.iter().filter(|f| !f.corrupt) {
            assert!(psnr(&pattern(160, 120, f.index as usize), &f.frame) > 30.0);
        }
        let pts: Vec<i64> = frames.iter().map(|f| f.pts).collect();
        assert_eq!(pts, (0..30).map(|i| i * 3000).collect::<Vec<_>>());
    }

    #[test]
    fn mp4_with_b_frames_decodes_in_display_order_with_sorted_pts() {
        use crate::codec::{annexb_to_length_prefixed, nal_type, split_nals, NAL_PPS, NAL_SPS};
        let (aus, expected) = crate::codec::test_util::bframe_stream();
        let find = |t: u8| {
            split_nals(&aus[0].0)
                .find(|n| nal_type(n) == t)
                .unwrap()
                .to_vec()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.mp4");
        let config = mp4::Mp4Config {
            major_brand: "isom".parse().unwrap(),
            minor_version: 512,
            compatible_brands: vec!["isom".parse().unwrap(), "avc1".parse().unwrap()],
            timescale: 1000,
        };
        let mut w =
            mp4::Mp4Writer::write_start(std::fs::File::create(&path).unwrap(), &config).unwrap();
        w.add_track(&mp4::TrackConfig {
            track_type: mp4::TrackType::Video,
            timescale: 1000,
            language: "und".into(),
            media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                width: 16,
                height: 16,
                seq_param_set: find(NAL_SPS),
                pic_param_set: find(NAL_PPS),
            }),
        })
        .unwrap();
        // dts = 40 * decode index; pts = 40 * (display index + 1).
        for (i, (au, disp)) in aus.iter().enumerate() {
            let sample = mp4::Mp4Sample {
                start_time: 0,
                duration: 40,
                rendering_offset: 40 * (*disp as i32 + 1 - i as i32),
                is_sync: i == 0,
                bytes: bytes::Bytes::from(annexb_to_length_prefixed(au, |t| {
                    t == NAL_SPS || t == NAL_PPS
                })),
            };
            w.write_sample(1, &sample).unwrap();
        }
        w.write_end().unwrap();
        drop(w);
        let rd = VideoReader::open(&path, None).unwrap();
        assert_eq!(
            (rd.info().width, rd.info().height, rd.info().frame_count),
            (16, 16, Some(7))
        );
        assert!((rd.info().fps - 25.0).abs() < 1e-9);
        let frames: Vec<DecodedFrame> = rd.map(|r| r.unwrap()).collect();
        let luma: Vec<u8> = frames.iter().map(|f| f.frame.y()[0]).collect();
        assert_eq!(luma, expected);
        let pts: Vec<i64> = frames.iter().map(|f| f.pts).collect();
        assert_eq!(pts, (1..=7).map(|i| 40 * i).collect::<Vec<_>>());
        assert!(frames.iter().all(|f| !f.corrupt));
    }

    #[test]
    fn mp4_sample_with_a_bad_length_prefix_is_a_corrupt_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.mp4");
        let info = crate::sink::OutputInfo {
            width: 96,
            height: 64,
            fps: 25.0,
            timescale: 90_000,
            bitrate_bps: None,
        };
        let mut w = crate::sink::VideoWriter::create(&path, &info).unwrap();
        for i in 0..12 {
            w.write(&pattern(96, 64, i), i as i64 * 3600).unwrap();
        }
        w.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let sample = {
            let f = std::fs::File::open(&path).unwrap();
            let mut r = mp4::Mp4Reader::read_header(std::io::BufReader::new(f), bytes.len() as u64)
                .unwrap();
            r.read_sample(1, 6).unwrap().unwrap().bytes.to_vec()
        };
        let at = bytes
            .windows(sample.len())
            .position(|w| w == sample.as_slice())
            .unwrap();
        bytes[at..at + 4].copy_from_slice(&[0xff; 4]);
        std::fs::write(&path, &bytes).unwrap();
        let frames: Vec<DecodedFrame> = VideoReader::open(&path, None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(frames.len(), 12);
        let corrupt: Vec<u64> = frames
            .iter()
            .filter(|f| f.corrupt)
            .map(|f| f.index)
            .collect();
        assert_eq!(corrupt, (5..12).collect::<Vec<_>>());
        assert!(frames[5].frame.data.iter().all(|&b| b == 128));
        let pts: Vec<i64> = frames.iter().map(|f| f.pts).collect();
        assert_eq!(pts, (0..12).map(|i| i * 3600).collect::<Vec<_>>());
    }

    #[test]
    fn resolution_change_mid_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_aus(160, 120, 5, 60).concat();
        bytes.extend(encode_aus(96, 64, 5, 60).concat());
        let path = write_file(dir.path(), "r.264", &bytes);
        let rd = VideoReader::open(&path, None).unwrap();
        assert_eq!(
            (rd.info().width, rd.info().height, rd.info().fps),
            (160, 120, 30.0)
        );
        let sizes: Vec<(usize, usize)> = rd
            .map(|r| r.unwrap())
            .map(|d| (d.frame.width, d.frame.height))
            .collect();
        assert_eq!(
            sizes,
            [[(160, 120)].repeat(5), [(96, 64)].repeat(5)].concat()
        );
    }

    #[test]
    fn container_is_sniffed_without_extension() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "noext", &encode_aus(64, 48, 3, 60).concat());
        let rd = VideoReader::open(&path, Some(25.0)).unwrap();
        assert_eq!(
            (rd.info().container, rd.info().fps),
            (Container::AnnexB, 25.0)
        );
        let pts: Vec<i64> = rd.map(|r| r.unwrap().pts).collect();
        assert_eq!(pts, vec![0, 3600, 7200]);
        assert_eq!(
            detect_container(Path::new("x"), b"YUV4MPEG2 W2"),
            Some(Container::Y4m)
        );
        assert_eq!(
            detect_container(Path::new("x"), b"\0\0\0\x20ftypisom"),
            Some(Container::Mp4)
        );
        assert_eq!(
            detect_container(Path::new("x.MP4"), b""),
            Some(Container::Mp4)
        );
        assert_eq!(detect_container(Path::new("x"), b"RIFF...."), None);
    }

    #[test]
    fn empty_random_and_truncated_inputs_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write_file(dir.path(), "e.mp4", b"");
        assert!(matches!(
            open_err(&empty),
            Error::Media(MediaError::Empty { .. })
        ));

        use rand::{RngCore, SeedableRng};
        let mut noise = vec![0u8; 200_000];
        rand::rngs::SmallRng::seed_from_u64(1).fill_bytes(&mut noise);
        let bin = write_file(dir.path(), "n.bin", &noise);
        assert!(matches!(
            open_err(&bin),
            Error::Media(MediaError::Unsupported { .. })
        ));
        for name in ["n.h264", "n.mp4", "n.y4m"] {
            let p = write_file(dir.path(), name, &noise);
            let e = open_err(&p);
            assert!(
                matches!(
                    e,
                    Error::Media(MediaError::Malformed { .. } | MediaError::Empty { .. })
                ),
                "{name}: {e}"
            );
            assert!(e.to_string().contains(name), "{e}");
        }

        // An MP4 cut in half (the writer puts moov at the end).
        let full = dir.path().join("full.mp4");
        let info = crate::sink::OutputInfo {
            width: 64,
            height: 48,
            fps: 30.0,
            timescale: 90_000,
            bitrate_bps: None,
        };
        let mut w = crate::sink::VideoWriter::create(&full, &info).unwrap();
        for i in 0..20 {
            w.write(&pattern(64, 48, i), i as i64 * 3000).unwrap();
        }
        w.finish().unwrap();
        let bytes = std::fs::read(&full).unwrap();
        let half = write_file(dir.path(), "half.mp4", &bytes[..bytes.len() / 2]);
        let e = open_err(&half);
        assert!(
            matches!(e, Error::Media(MediaError::Malformed { .. })),
            "{e}"
        );
        // A Y4M header with no frames.
        let y = write_file(dir.path(), "h.y4m", b"YUV4MPEG2 W16 H16 F25:1 C420jpeg\n");
        assert!(matches!(
            open_err(&y),
            Error::Media(MediaError::Empty { .. })
        ));
        let y = write_file(dir.path(), "h422.y4m", b"YUV4MPEG2 W16 H16 F25:1 C422\n");
        let e = open_err(&y);
        assert!(
            matches!(e, Error::Media(MediaError::Unsupported { .. })),
            "{e}"
        );
    }

    #[test]
    fn mp4_without_h264_track_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audio.mp4");
        let file = std::fs::File::create(&path).unwrap();
        let config = mp4::Mp4Config {
            major_brand: "isom".parse().unwrap(),
            minor_version: 512,
            compatible_brands: vec!["isom".parse().unwrap()],
            timescale: 1000,
        };
        let mut w = mp4::Mp4Writer::write_start(file, &config).unwrap();
        w.add_track(&mp4::TrackConfig {
            track_type: mp4::TrackType::Audio,
            timescale: 48_000,
            language: "und".into(),
            media_conf: mp4::MediaConfig::AacConfig(mp4::AacConfig::default()),
        })
        .unwrap();
        let sample = mp4::Mp4Sample {
            start_time: 0,
            duration: 1024,
            rendering_offset: 0,
            is_sync: true,
            bytes: bytes::Bytes::from_static(&[0x21, 0x10, 0x04]),
        };
        w.write_sample(1, &sample).unwrap();
        w.write_end().unwrap();
        drop(w);
        match VideoReader::open(&path, None) {
            Err(Error::Media(MediaError::Unsupported { reason, .. })) => {
                assert!(
                    reason.contains("no H.264 video track (found: mp4a)"),
                    "{reason}"
                )
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened an audio-only MP4"),
        }
    }
}
