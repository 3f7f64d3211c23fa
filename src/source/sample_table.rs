//! Where each sample of an MP4 track (not fragmented) lies, read in order.
//!
//! The mp4 crate's `read_sample` finds a sample's offset by adding the sizes
//! of the samples before it in its chunk, and its time and composition
//! offset by walking `stts` and `ctts` from the first entry: every sample
//! costs time in proportion to its number, so a file is read in quadratic
//! time. A 64 KiB file of 65,536 one-byte samples in one chunk kept the
//! `mp4` fuzz target busy for seconds per input (fuzzing found it: 26
//! inputs per second); a long recording with a `ctts` entry per sample
//! slows the same way. [`SampleCursor`] gives the same answers, each from
//! the previous sample's, in constant time (`stss` by binary search).

/// A track's sample tables (`stbl`), copied out of the mp4 crate's boxes,
/// whose types it does not export.
#[derive(Debug, Default)]
pub(crate) struct SampleTables {
    /// `stsz`: one size for all samples (when not 0), else one per sample.
    pub constant_size: u32,
    pub sizes: Vec<u32>,
    /// `stsc`: (first chunk, samples per chunk, first sample) per entry;
    /// the mp4 crate works the first sample out.
    pub stsc: Vec<(u32, u32, u32)>,
    /// `stco` or `co64`; `None` when the track has neither.
    pub chunk_offsets: Option<Vec<u64>>,
    /// `stts`: (sample count, delta).
    pub stts: Vec<(u32, u32)>,
    /// `ctts`: (sample count, offset).
    pub ctts: Option<Vec<(u32, i32)>>,
    /// `stss`: the sync samples, ascending; `None`: every sample is one.
    pub stss: Option<Vec<u32>>,
}

/// A sample's place and timing, as `read_sample` would give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SampleInfo {
    pub offset: u64,
    pub size: u32,
    pub start_time: u64,
    pub rendering_offset: i32,
    pub is_sync: bool,
}

/// The previous sample's id, chunk and place, and the positions in `stsc`,
/// `stts` and `ctts` that the next sample starts looking from.
#[derive(Debug, Default)]
pub(crate) struct SampleCursor {
    /// (sample id, stsc entry, chunk id, offset, size) of the last sample.
    prev: Option<(u32, usize, u32, u64, u32)>,
    stsc: usize,
    /// `stts` entry, its first sample id and the time it starts at.
    stts: (usize, u32, u64),
    /// `ctts` entry and its first sample id; `None` once the counts overflow.
    ctts: Option<(usize, u32)>,
}

impl SampleCursor {
    pub fn new() -> Self {
        SampleCursor {
            stts: (0, 1, 0),
            ctts: Some((0, 1)),
            ..SampleCursor::default()
        }
    }

    /// Sample `id` (from 1) of `stbl`. `Ok(None)` where the tables end
    /// (`read_sample`'s `Ok(None)`); `Err` for tables that cannot be read
    /// (where the mp4 crate fails or panics). Constant time when `id` follows
    /// the previous call's.
    pub fn locate(&mut self, stbl: &SampleTables, id: u32) -> Result<Option<SampleInfo>, String> {
        let Some(size) = sample_size(stbl, id) else {
            return Ok(None);
        };
        let Some(offset) = self.offset(stbl, id, size)? else {
            return Ok(None);
        };
        let start_time = self.start_time(stbl, id)?;
        let rendering_offset = self.rendering_offset(stbl, id);
        let is_sync = stbl
            .stss
            .as_ref()
            .is_none_or(|s| s.binary_search(&id).is_ok());
        Ok(Some(SampleInfo {
            offset,
            size,
            start_time,
            rendering_offset,
            is_sync,
        }))
    }

    fn offset(&mut self, stbl: &SampleTables, id: u32, size: u32) -> Result<Option<u64>, String> {
        let entries = &stbl.stsc;
        if entries.is_empty() {
            return Err("no stsc entries".into());
        }
        if entries.get(self.stsc).is_none_or(|e| e.2 > id) {
            self.stsc = 0;
        }
        while entries.get(self.stsc + 1).is_some_and(|e| e.2 <= id) {
            self.stsc += 1;
        }
        let (first_chunk, per_chunk, first_sample) = entries[self.stsc];
        if id < first_sample {
            return Err("sample not found".into());
        }
        if per_chunk == 0 {
            return Err("stsc entry with 0 samples per chunk".into());
        }
        let nth = id - first_sample;
        let chunk = (nth / per_chunk)
            .checked_add(first_chunk)
            .ok_or("stsc chunk number overflows")?;
        let Some(chunk_offset) = chunk_offset(stbl, chunk)? else {
            return Ok(None);
        };
        let in_chunk = nth % per_chunk;
        let offset = match self.prev {
            _ if in_chunk == 0 => chunk_offset,
            Some((p, stsc, c, off, sz))
                if p.checked_add(1) == Some(id) && stsc == self.stsc && c == chunk =>
            {
                off.checked_add(u64::from(sz))
                    .ok_or("sample offset overflows")?
            }
            // Not the next sample: add the sizes before it, as the mp4 crate does.
            _ => {
                let mut off = chunk_offset;
                for i in id - in_chunk..id {
                    let s = sample_size(stbl, i).ok_or("sample size missing")?;
                    off = off
                        .checked_add(u64::from(s))
                        .ok_or("sample offset overflows")?;
                }
                off
            }
        };
        self.prev = Some((id, self.stsc, chunk, offset, size));
        Ok(Some(offset))
    }

    fn start_time(&mut self, stbl: &SampleTables, id: u32) -> Result<u64, String> {
        let entries = &stbl.stts;
        if self.stts.1 > id {
            self.stts = (0, 1, 0);
        }
        let (mut k, mut first, mut elapsed) = self.stts;
        let overflow = || format!("stts overflows before sample {id}");
        while let Some(&(count, delta)) = entries.get(k) {
            let next = first.checked_add(count).ok_or_else(overflow)?;
            if id < next {
                self.stts = (k, first, elapsed);
                let into = u64::from(id - first) * u64::from(delta);
                return elapsed.checked_add(into).ok_or_else(overflow);
            }
            let span = u64::from(count) * u64::from(delta);
            elapsed = elapsed.checked_add(span).ok_or_else(overflow)?;
            first = next;
            k += 1;
        }
        Err(format!("sample {id} has no time in stts"))
    }

    fn rendering_offset(&mut self, stbl: &SampleTables, id: u32) -> i32 {
        let Some(ctts) = &stbl.ctts else {
            return 0;
        };
        if self.ctts.is_some_and(|(_, first)| first > id) {
            self.ctts = Some((0, 1));
        }
        let Some((mut k, mut first)) = self.ctts else {
            return 0;
        };
        while let Some(&(count, offset)) = ctts.get(k) {
            let Some(next) = first.checked_add(count) else {
                self.ctts = None;
                return 0;
            };
            if id < next {
                self.ctts = Some((k, first));
                return offset;
            }
            first = next;
            k += 1;
        }
        self.ctts = Some((k, first));
        0
    }
}

fn sample_size(stbl: &SampleTables, id: u32) -> Option<u32> {
    if stbl.constant_size > 0 {
        return Some(stbl.constant_size);
    }
    stbl.sizes
        .get(usize::try_from(id.checked_sub(1)?).ok()?)
        .copied()
}

/// `Ok(None)` past the last chunk.
fn chunk_offset(stbl: &SampleTables, chunk: u32) -> Result<Option<u64>, String> {
    let Some(k) = chunk.checked_sub(1) else {
        return Err("stsc refers to chunk 0".into());
    };
    match &stbl.chunk_offsets {
        Some(offsets) => Ok(offsets.get(k as usize).copied()),
        None => Err("must have either stco or co64 boxes".into()),
    }
}
