//! Container readers that hand out H.264 access units (Annex-B) with their
//! presentation time, or raw Y4M pictures.

use crate::codec::{is_vcl, length_prefixed_to_annexb, split_nals, AccessUnitSplitter, START_CODE};
use crate::error::{Error, MediaError};
use crate::frame::{Frame, PixelFormat};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::sample_table::{SampleCursor, SampleTables};

/// Annex-B input is read in chunks of this size.
const READ_CHUNK: usize = 1 << 20;
/// A NAL larger than this means the input is not H.264.
const MAX_NAL_BUFFER: usize = 256 << 20;

/// One access unit to decode. `data` is `Err` for a sample the container
/// could not turn into Annex-B (it still stands for one frame).
pub(crate) struct Packet {
    pub data: Result<Vec<u8>, String>,
    /// Presentation time; `None` for access units without a slice.
    pub pts: Option<i64>,
}

/// A raw Annex-B H.264 file: no timing, frames are `90000 / fps` apart.
pub(crate) struct AnnexBDemux {
    path: PathBuf,
    file: File,
    splitter: AccessUnitSplitter,
    queue: VecDeque<Vec<u8>>,
    eof: bool,
    fed: u64,
    fps: f64,
    chunk: Vec<u8>,
}

impl AnnexBDemux {
    pub const TIMESCALE: u32 = 90_000;

    pub fn new(path: &Path, fps: f64) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(AnnexBDemux {
            path: path.to_owned(),
            file,
            splitter: AccessUnitSplitter::new(),
            queue: VecDeque::new(),
            eof: false,
            fed: 0,
            fps,
            chunk: vec![0; READ_CHUNK],
        })
    }

    pub fn next_packet(&mut self) -> Option<Result<Packet, Error>> {
        while self.queue.is_empty() && !self.eof {
            if let Err(e) = self.fill() {
                self.eof = true;
                return Some(Err(e));
            }
        }
        let au = self.queue.pop_front()?;
        let pts = if split_nals(&au).any(is_vcl) {
            let pts = (self.fed as f64 * Self::TIMESCALE as f64 / self.fps).round() as i64;
            self.fed += 1;
            Some(pts)
        } else {
            None
        };
        Some(Ok(Packet { data: Ok(au), pts }))
    }

    fn fill(&mut self) -> Result<(), Error> {
        let n = loop {
            match self.file.read(&mut self.chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => break r.map_err(|e| Error::io(&self.path, e))?,
            }
        };
        if n == 0 {
            self.eof = true;
            self.queue.extend(self.splitter.finish());
            return Ok(());
        }
        self.splitter.push(&self.chunk[..n]);
        while let Some(au) = self.splitter.pop() {
            self.queue.push_back(au);
        }
        if self.splitter.buffered_len() > MAX_NAL_BUFFER {
            return Err(MediaError::Malformed {
                path: self.path.clone(),
                container: "H.264 Annex-B",
                reason: format!("no NAL boundary within {} MiB", MAX_NAL_BUFFER >> 20),
            }
            .into());
        }
        Ok(())
    }
}

/// Backward seeks allowed while the mp4 crate reads the header. It seeks
/// back only when a box's content overran its size; a box of size 0 makes
/// it seek back to the same header forever (found by fuzzing).
const MAX_HEADER_BACK_SEEKS: u32 = 1024;

/// Counts the mp4 crate's backward seeks while it reads the header and fails
/// the read once there are too many: a malformed file is refused instead of
/// hanging the reader. Disarmed once the header is read (samples may be
/// stored in any order).
pub(crate) struct HeaderGuard<R> {
    inner: R,
    pos: u64,
    back_seeks: u32,
    /// Shared with the demuxer, which clears it after the header: the mp4
    /// reader does not give its reader back.
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for HeaderGuard<R> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let pos = self.inner.seek(to)?;
        if self.armed.load(std::sync::atomic::Ordering::Relaxed) && pos < self.pos {
            self.back_seeks += 1;
            if self.back_seeks > MAX_HEADER_BACK_SEEKS {
                return Err(std::io::Error::other(format!(
                    "the header seeks back more than {MAX_HEADER_BACK_SEEKS} times \
                     (a box of size 0?)"
                )));
            }
        }
        self.pos = pos;
        Ok(pos)
    }
}

/// One sample's bytes (length-prefixed NALs) and timing.
struct Sample {
    /// Decode time, in the track's timescale.
    start_time: u64,
    rendering_offset: i32,
    is_sync: bool,
    bytes: Vec<u8>,
}

/// One reader used by the mp4 crate (which keeps the one it reads the
/// header with) and by the demuxer's own sample reads.
pub(crate) struct Shared<R>(Arc<Mutex<R>>);

impl<R> Shared<R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, R> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.lock().read(buf)
    }
}

impl<R: Seek> Seek for Shared<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.lock().seek(to)
    }
}

/// The first H.264 (`avc1`) track of an MP4/MOV file (or of any reader:
/// the fuzz targets read from memory).
pub(crate) struct Mp4Demux<R = BufReader<File>> {
    path: PathBuf,
    reader: mp4::Mp4Reader<HeaderGuard<Shared<Avc3AsAvc1<R>>>>,
    /// The same reader, for samples of a track that is not fragmented.
    file: Shared<Avc3AsAvc1<R>>,
    /// Where the next sample is (the mp4 crate's `read_sample` is
    /// quadratic in the sample count; fragmented tracks still use it).
    cursor: SampleCursor,
    /// The track's tables; `None` for a fragmented track.
    tables: Option<SampleTables>,
    file_size: u64,
    track_id: u32,
    /// u64: the id after the last, `u32::MAX`, must not overflow.
    next_sample: u64,
    sample_count: u32,
    length_size: usize,
    /// SPS and PPS from `avcC`, Annex-B, put in front of sync samples.
    parameter_sets: Vec<u8>,
    pub timescale: u32,
    pub fps: Option<f64>,
    pub width: usize,
    pub height: usize,
}

fn malformed_mp4(path: &Path, reason: impl Into<String>) -> Error {
    MediaError::Malformed {
        path: path.to_owned(),
        container: "MP4",
        reason: reason.into(),
    }
    .into()
}

/// Where the first video sample entry of type `fourcc` (`avc1`, `avc3`)
/// sits in an MP4 file: in the top-level `moov`, after its `stsd`.
pub(crate) fn sample_entry_offset<F: Read + Seek>(
    file: &mut F,
    fourcc: &[u8; 4],
) -> std::io::Result<Option<u64>> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut pos = 0u64;
    while pos + 8 <= len {
        file.seek(SeekFrom::Start(pos))?;
        let mut head = [0u8; 16];
        file.read_exact(&mut head[..8])?;
        let size = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
            1 => {
                file.read_exact(&mut head[8..16])?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&head[8..16]);
                u64::from_be_bytes(b)
            }
            0 => len - pos,
            n => u64::from(n),
        };
        if &head[4..8] == b"moov" {
            let n = usize::try_from(size.min(len - pos)).unwrap_or(0);
            let mut moov = vec![0u8; n];
            file.seek(SeekFrom::Start(pos))?;
            file.read_exact(&mut moov)?;
            let at = moov.windows(4).position(|w| w == b"stsd").and_then(|s| {
                moov[s..]
                    .windows(4)
                    .position(|w| w == fourcc)
                    .map(|p| pos + (s + p) as u64)
            });
            return Ok(at);
        }
        if size < 8 {
            break;
        }
        pos += size;
    }
    Ok(None)
}

/// A file read as if its `avc3` sample entry were `avc1` (the mp4 crate
/// knows only `avc1`): the parameter sets in `avcC` still apply, and the
/// ones in-band, which `avc3` allows to change, stay in the samples.
pub(crate) struct Avc3AsAvc1<R> {
    inner: R,
    pos: u64,
    at: Option<u64>,
}

impl<R: Read> Read for Avc3AsAvc1<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(at) = self.at {
            for k in 0..4u64 {
                let p = at + k;
                if p >= self.pos && p < self.pos + n as u64 {
                    buf[(p - self.pos) as usize] = b"avc1"[k as usize];
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Avc3AsAvc1<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

impl Mp4Demux {
    pub fn new(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Self::from_reader(path, BufReader::new(file), file_size)
    }
}

impl<R: Read + Seek> Mp4Demux<R> {
    /// `path` only names the input in errors; `file_size` is the reader's length.
    pub fn from_reader(path: &Path, mut reader: R, file_size: u64) -> Result<Self, Error> {
        let at = sample_entry_offset(&mut reader, b"avc3").map_err(|e| Error::io(path, e))?;
        let pos = reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(path, e))?;
        let shared = Arc::new(Mutex::new(Avc3AsAvc1 {
            inner: reader,
            pos,
            at,
        }));
        let file = Shared(shared.clone());
        let reader = Shared(shared);
        // The mp4 crate has panicking paths on malformed input: contain them.
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let reader = HeaderGuard {
            inner: reader,
            pos: 0,
            back_seeks: 0,
            armed: armed.clone(),
        };
        let reader = catch_unwind(AssertUnwindSafe(|| {
            mp4::Mp4Reader::read_header(reader, file_size)
        }))
        .map_err(|_| malformed_mp4(path, "the MP4 parser gave up on this file"))?
        .map_err(|e| malformed_mp4(path, e.to_string()))?;
        armed.store(false, std::sync::atomic::Ordering::Relaxed);

        let mut ids: Vec<u32> = reader.tracks().keys().copied().collect();
        ids.sort_unstable();
        let avc = ids.iter().find_map(|id| {
            let t = reader.tracks().get(id)?;
            t.trak.mdia.minf.stbl.stsd.avc1.as_ref().map(|a| (t, a))
        });
        let Some((track, avc1)) = avc else {
            let found: Vec<String> = ids
                .iter()
                .filter_map(|id| reader.tracks().get(id))
                .map(|t| {
                    t.box_type()
                        .map_or_else(|_| "unknown".to_string(), |b| b.to_string())
                })
                .collect();
            let found = if found.is_empty() {
                "no tracks".to_string()
            } else {
                found.join(", ")
            };
            return Err(MediaError::Unsupported {
                path: path.to_owned(),
                reason: format!("no H.264 video track (found: {found})"),
            }
            .into());
        };
        let mut parameter_sets = Vec::new();
        for nal in avc1
            .avcc
            .sequence_parameter_sets
            .iter()
            .chain(&avc1.avcc.picture_parameter_sets)
        {
            parameter_sets.extend_from_slice(&START_CODE);
            parameter_sets.extend_from_slice(&nal.bytes);
        }
        let timescale = track.timescale();
        if timescale == 0 {
            return Err(malformed_mp4(path, "video track timescale is 0"));
        }
        let sample_count = track.sample_count();
        let tables = track.trafs.is_empty().then(|| {
            let stbl = &track.trak.mdia.minf.stbl;
            let offsets = match (&stbl.stco, &stbl.co64) {
                (Some(stco), _) => Some(stco.entries.iter().map(|&o| u64::from(o)).collect()),
                (None, Some(co64)) => Some(co64.entries.clone()),
                (None, None) => None,
            };
            SampleTables {
                constant_size: stbl.stsz.sample_size,
                sizes: stbl.stsz.sample_sizes.clone(),
                stsc: (stbl.stsc.entries.iter())
                    .map(|e| (e.first_chunk, e.samples_per_chunk, e.first_sample))
                    .collect(),
                chunk_offsets: offsets,
                stts: (stbl.stts.entries.iter())
                    .map(|e| (e.sample_count, e.sample_delta))
                    .collect(),
                ctts: (stbl.ctts.as_ref()).map(|c| {
                    c.entries
                        .iter()
                        .map(|e| (e.sample_count, e.sample_offset))
                        .collect()
                }),
                stss: stbl.stss.as_ref().map(|s| s.entries.clone()),
            }
        });
        let duration = track.trak.mdia.mdhd.duration;
        let fps = (duration > 0 && sample_count > 0)
            .then(|| sample_count as f64 * timescale as f64 / duration as f64);
        Ok(Mp4Demux {
            path: path.to_owned(),
            track_id: track.track_id(),
            next_sample: 1,
            sample_count,
            length_size: (avc1.avcc.length_size_minus_one & 3) as usize + 1,
            parameter_sets,
            timescale,
            fps,
            width: avc1.width as usize,
            height: avc1.height as usize,
            file_size,
            reader,
            file,
            cursor: SampleCursor::new(),
            tables,
        })
    }

    pub fn sample_count(&self) -> u32 {
        self.sample_count
    }

    fn sample_size(&self, sample_id: u32) -> Option<u64> {
        let stsz = &self
            .reader
            .tracks()
            .get(&self.track_id)?
            .trak
            .mdia
            .minf
            .stbl
            .stsz;
        if stsz.sample_size != 0 {
            return Some(stsz.sample_size as u64);
        }
        stsz.sample_sizes
            .get(sample_id.checked_sub(1)? as usize)
            .map(|&s| s as u64)
    }

    /// Sample `id`: located by the cursor (in constant time when read in
    /// order) and read here, unless the track is fragmented; those samples
    /// are the mp4 crate's to find.
    fn read_sample(&mut self, id: u32) -> Result<Option<Sample>, String> {
        let Some(tables) = &self.tables else {
            return match self.reader.read_sample(self.track_id, id) {
                Ok(s) => Ok(s.map(|s| Sample {
                    start_time: s.start_time,
                    rendering_offset: s.rendering_offset,
                    is_sync: s.is_sync,
                    bytes: s.bytes.to_vec(),
                })),
                Err(e) => Err(e.to_string()),
            };
        };
        let Some(s) = self.cursor.locate(tables, id)? else {
            return Ok(None);
        };
        let mut bytes = vec![0; s.size as usize];
        self.file
            .seek(SeekFrom::Start(s.offset))
            .and_then(|_| self.file.read_exact(&mut bytes))
            .map_err(|e| e.to_string())?;
        Ok(Some(Sample {
            start_time: s.start_time,
            rendering_offset: s.rendering_offset,
            is_sync: s.is_sync,
            bytes,
        }))
    }

    pub fn next_packet(&mut self) -> Option<Result<Packet, Error>> {
        if self.next_sample > u64::from(self.sample_count) {
            return None;
        }
        let id = self.next_sample as u32;
        self.next_sample += 1;
        // A size beyond the file would make the parser allocate it first.
        if self.sample_size(id).is_none_or(|s| s > self.file_size) {
            return Some(Err(malformed_mp4(
                &self.path,
                format!("sample {id} has no valid size"),
            )));
        }
        let read = catch_unwind(AssertUnwindSafe(|| self.read_sample(id)));
        let sample = match read {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => {
                self.next_sample = u64::from(self.sample_count) + 1;
                return Some(Err(malformed_mp4(&self.path, format!("sample {id}: {e}"))));
            }
            Err(_) => {
                self.next_sample = u64::from(self.sample_count) + 1;
                return Some(Err(malformed_mp4(
                    &self.path,
                    format!("sample {id}: parser failure"),
                )));
            }
        };
        let pts = (sample.start_time as i64).saturating_add(i64::from(sample.rendering_offset));
        let mut au = Vec::with_capacity(sample.bytes.len() + self.parameter_sets.len() + 16);
        if id == 1 || sample.is_sync {
            au.extend_from_slice(&self.parameter_sets);
        }
        let data = length_prefixed_to_annexb(&sample.bytes, self.length_size, &mut au)
            .map(|()| au)
            .map_err(|e| format!("sample {id}: {e}"));
        Some(Ok(Packet {
            data,
            pts: Some(pts),
        }))
    }
}

/// An 8-bit 4:2:0 YUV4MPEG2 file (or any reader).
pub(crate) struct Y4mDemux<R: Read = BufReader<File>> {
    path: PathBuf,
    decoder: y4m::Decoder<R>,
    pub width: usize,
    pub height: usize,
    pub fps: Option<f64>,
    pub frame_count: Option<u64>,
}

impl Y4mDemux {
    pub fn new(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Self::from_reader(path, BufReader::new(file), file_size)
    }
}

/// Largest Y4M picture side we accept. The y4m crate multiplies width and
/// height unchecked: sides of 2^33 wrap its frame size to 0 in a release
/// build and would reach our plane arithmetic.
const MAX_Y4M_SIDE: u64 = 16_384;

/// Refuses a header line whose `W` or `H` is over [`MAX_Y4M_SIDE`], before
/// the y4m crate sees it; other header errors are the y4m crate's to report.
fn check_y4m_size(head: &[u8]) -> Result<(), String> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
    for field in line.split(|&b| b == b' ').skip(1) {
        let (name, digits) = match field.split_first() {
            Some((&n @ (b'W' | b'H'), d)) => (n, d),
            _ => continue,
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            continue;
        }
        let side = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        if side > MAX_Y4M_SIDE {
            let what = if name == b'W' { "width" } else { "height" };
            return Err(format!("picture {what} {side} is over {MAX_Y4M_SIDE}"));
        }
    }
    Ok(())
}

impl<R: BufRead> Y4mDemux<R> {
    /// `path` only names the input in errors; `file_size` is the reader's length.
    pub fn from_reader(path: &Path, mut reader: R, file_size: u64) -> Result<Self, Error> {
        let head = reader.fill_buf().map_err(|e| Error::io(path, e))?;
        check_y4m_size(head).map_err(|reason| MediaError::Malformed {
            path: path.to_owned(),
            container: "Y4M",
            reason: format!("header: {reason}"),
        })?;
        let limits = y4m::Limits { bytes: 512 << 20 };
        let decoder =
            y4m::Decoder::new_with_limits(reader, limits).map_err(|e| MediaError::Malformed {
                path: path.to_owned(),
                container: "Y4M",
                reason: format!("header: {e}"),
            })?;
        use y4m::Colorspace as C;
        let cs = decoder.get_colorspace();
        if !matches!(cs, C::C420 | C::C420jpeg | C::C420paldv | C::C420mpeg2) {
            return Err(MediaError::Unsupported {
                path: path.to_owned(),
                reason: format!("Y4M colourspace {cs:?}: only 8-bit 4:2:0 is supported"),
            }
            .into());
        }
        let (width, height) = (decoder.get_width(), decoder.get_height());
        if width == 0 || height == 0 {
            return Err(MediaError::Malformed {
                path: path.to_owned(),
                container: "Y4M",
                reason: format!("picture size {width}x{height}"),
            }
            .into());
        }
        let rate = decoder.get_framerate();
        let fps = (rate.num > 0 && rate.den > 0).then(|| rate.num as f64 / rate.den as f64);
        // "YUV4MPEG2 " + params + "\n".
        let header_len = 11 + decoder.get_raw_params().len() as u64;
        let per_frame = 6 + Frame::expected_len(width, height) as u64;
        let body = file_size.saturating_sub(header_len);
        let frame_count = (body % per_frame == 0).then_some(body / per_frame);
        Ok(Y4mDemux {
            path: path.to_owned(),
            decoder,
            width,
            height,
            fps,
            frame_count,
        })
    }

    pub fn next_picture(&mut self) -> Option<Result<Frame, Error>> {
        match self.decoder.read_frame() {
            Ok(f) => {
                let mut frame = Frame::new(PixelFormat::I420, self.width, self.height);
                let (y, u, v) = frame.planes_mut();
                let (sy, su, sv) = (f.get_y_plane(), f.get_u_plane(), f.get_v_plane());
                if (sy.len(), su.len(), sv.len()) != (y.len(), u.len(), v.len()) {
                    return Some(Err(MediaError::Malformed {
                        path: self.path.clone(),
                        container: "Y4M",
                        reason: "frame planes do not match the header size".into(),
                    }
                    .into()));
                }
                y.copy_from_slice(sy);
                u.copy_from_slice(su);
                v.copy_from_slice(sv);
                Some(Ok(frame))
            }
            Err(y4m::Error::EOF) => None,
            Err(e) => Some(Err(MediaError::Malformed {
                path: self.path.clone(),
                container: "Y4M",
                reason: format!("frame: {e}"),
            }
            .into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn y4m(text: &str) -> Result<Y4mDemux<Cursor<&[u8]>>, Error> {
        Y4mDemux::from_reader(Path::new("x.y4m"), Cursor::new(text.as_bytes()), 0)
    }

    #[test]
    fn y4m_sides_over_the_limit_are_refused_before_the_y4m_crate_multiplies_them() {
        for (header, what) in [
            (
                "YUV4MPEG2 W8589934592 H8589934592 C420jpeg\n",
                "width 8589934592",
            ),
            ("YUV4MPEG2 W64 H16385 C420jpeg\n", "height 16385"),
            (
                "YUV4MPEG2 W99999999999999999999999 H8\n",
                "width 18446744073709551615",
            ),
        ] {
            let e = y4m(header).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("x.y4m") && e.contains(what), "{header}: {e}");
        }
        assert!(y4m("YUV4MPEG2 W16384 H8 C420jpeg\n").is_ok());
        let e = y4m("YUV4MPEG2 Wx H8\n").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("header")));
    }

    fn mp4_seed(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/mp4")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The cursor reads every sample as the mp4 crate's `read_sample` does:
    /// the seed clip (one chunk) and `tables.mp4` (12 samples over 6 chunks
    /// stored in reverse order, 3 `stsc`, 2 `stts`, 3 `ctts` entries, `stss`).
    #[test]
    fn mp4_samples_are_read_as_the_mp4_crate_reads_them() {
        for (name, count) in [("clip3.mp4", 3), ("tables.mp4", 12)] {
            let bytes = mp4_seed(name);
            let size = bytes.len() as u64;
            let mut d = Mp4Demux::from_reader(Path::new(name), Cursor::new(&bytes), size).unwrap();
            let mut crate_reader = mp4::Mp4Reader::read_header(Cursor::new(&bytes), size).unwrap();
            let mut pts = Vec::new();
            for id in 1..=count {
                let ours = d.read_sample(id).unwrap().unwrap();
                let theirs = crate_reader.read_sample(d.track_id, id).unwrap().unwrap();
                assert_eq!(ours.bytes, theirs.bytes.to_vec(), "{name} sample {id}");
                assert_eq!(ours.start_time, theirs.start_time, "{name} sample {id}");
                assert_eq!(ours.rendering_offset, theirs.rendering_offset);
                assert_eq!(ours.is_sync, theirs.is_sync, "{name} sample {id}");
                pts.push(ours.start_time as i64 + i64::from(ours.rendering_offset));
            }
            assert!(d.read_sample(count + 1).unwrap().is_none());
            assert!(crate_reader
                .read_sample(d.track_id, count + 1)
                .unwrap()
                .is_none());
            if name == "tables.mp4" {
                // stts 5 x 512 then 1024; ctts +1024, 0, 0, then +512.
                assert_eq!(
                    &pts[..6],
                    &[1024, 512, 1024, 1536 + 512, 2048 + 512, 2560 + 512]
                );
            }
        }
        // Out of order: the sizes before it in its chunk are added up.
        let bytes = mp4_seed("tables.mp4");
        let mut d =
            Mp4Demux::from_reader(Path::new("t"), Cursor::new(&bytes), bytes.len() as u64).unwrap();
        let mut crate_reader =
            mp4::Mp4Reader::read_header(Cursor::new(&bytes), bytes.len() as u64).unwrap();
        for id in [6, 3, 12, 1, 7, 6] {
            let ours = d.read_sample(id).unwrap().unwrap();
            let theirs = crate_reader.read_sample(d.track_id, id).unwrap().unwrap();
            assert_eq!(ours.bytes, theirs.bytes.to_vec(), "sample {id}");
            assert_eq!(ours.start_time, theirs.start_time, "sample {id}");
            assert_eq!(
                ours.rendering_offset, theirs.rendering_offset,
                "sample {id}"
            );
        }
    }
}
