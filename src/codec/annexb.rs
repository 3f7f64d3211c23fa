//! Annex-B byte-stream helpers: NAL splitting, NAL types, access-unit grouping
//! and conversion to/from the length-prefixed form MP4 uses.

use std::collections::VecDeque;

/// NAL unit types this crate cares about.
pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

/// The 4-byte start code written in front of every NAL we emit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Position of the next `00 00 01` at or after `from`.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    let tail = data.get(from..)?;
    tail.windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|p| p + from)
}

/// Drops the trailing zero bytes that belong to the next start code (or to
/// `trailing_zero_8bits`): a NAL never ends in a zero byte.
fn trim_trailing_zeros(nal: &[u8]) -> &[u8] {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    &nal[..end]
}

/// The NAL units of an Annex-B buffer, without start codes. Bytes before the
/// first start code are ignored; empty NALs are skipped.
pub fn split_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut next = find_start_code(data, 0).map(|p| p + 3);
    std::iter::from_fn(move || loop {
        let start = next?;
        let end = find_start_code(data, start);
        next = end.map(|e| e + 3);
        let nal = trim_trailing_zeros(&data[start..end.unwrap_or(data.len())]);
        if !nal.is_empty() {
            return Some(nal);
        }
    })
}

/// `nal_unit_type` of a NAL (without start code); 0 for an empty slice.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Whether a NAL carries slice data of the primary picture.
pub fn is_vcl(nal: &[u8]) -> bool {
    matches!(nal_type(nal), 1..=5)
}

/// An access unit that contains an IDR slice (decodable on its own).
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    split_nals(access_unit).any(|n| nal_type(n) == NAL_IDR)
}

/// A slice NAL whose `first_mb_in_slice` is 0, i.e. the first slice of a
/// picture: ue(v) 0 is the single bit `1`, the top bit of the byte after the
/// header.
fn starts_picture(nal: &[u8]) -> bool {
    nal.get(1).is_some_and(|b| b & 0x80 != 0)
}

/// Groups an Annex-B byte stream, pushed in arbitrary chunks, into access
/// units (each re-emitted with 4-byte start codes). A new access unit starts
/// at an AUD, at SPS/PPS/SEI (types 6-9, 14-18) after a slice, or at a slice
/// with `first_mb_in_slice == 0`.
#[derive(Debug, Default)]
pub struct AccessUnitSplitter {
    buf: Vec<u8>,
    /// Where the start-code search resumes.
    scan: usize,
    /// Start of the NAL being collected (after its start code).
    nal_start: Option<usize>,
    current: Vec<u8>,
    current_has_vcl: bool,
    ready: VecDeque<Vec<u8>>,
}

impl AccessUnitSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends stream bytes; complete access units become available via `pop`.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some(sc) = find_start_code(&self.buf, self.scan) {
            if let Some(s) = self.nal_start {
                let nal = trim_trailing_zeros(&self.buf[s..sc]).to_vec();
                self.handle_nal(&nal);
            }
            self.nal_start = Some(sc + 3);
            self.scan = sc + 3;
        }
        // A start code may straddle the chunk boundary: rescan the last 2 bytes.
        self.scan = self.scan.max(self.buf.len().saturating_sub(2));
        let keep_from = self.nal_start.unwrap_or(self.scan);
        self.buf.drain(..keep_from);
        self.scan -= keep_from;
        self.nal_start = self.nal_start.map(|s| s - keep_from);
    }

    /// The next complete access unit.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        self.ready.pop_front()
    }

    /// End of stream: the last NAL is complete; returns what remains.
    pub fn finish(&mut self) -> Vec<Vec<u8>> {
        if let Some(s) = self.nal_start.take() {
            let nal = trim_trailing_zeros(&self.buf[s.min(self.buf.len())..]).to_vec();
            self.handle_nal(&nal);
        }
        self.buf.clear();
        self.scan = 0;
        self.end_access_unit();
        self.ready.drain(..).collect()
    }

    /// Bytes held for the NAL in progress (lets readers cap runaway input).
    pub fn buffered_len(&self) -> usize {
        self.buf.len() + self.current.len()
    }

    fn end_access_unit(&mut self) {
        if !self.current.is_empty() {
            self.ready.push_back(std::mem::take(&mut self.current));
        }
        self.current_has_vcl = false;
    }

    fn handle_nal(&mut self, nal: &[u8]) {
        if nal.is_empty() {
            return;
        }
        let t = nal_type(nal);
        let boundary = match t {
            NAL_AUD => true,
            6..=8 | 14..=18 => self.current_has_vcl,
            1..=5 => self.current_has_vcl && starts_picture(nal),
            _ => false,
        };
        if boundary {
            self.end_access_unit();
        }
        self.current.extend_from_slice(&START_CODE);
        self.current.extend_from_slice(nal);
        if (1..=5).contains(&t) {
            self.current_has_vcl = true;
        }
    }
}

/// Annex-B -> length-prefixed (4-byte big-endian lengths), optionally dropping
/// some NAL types (MP4 keeps SPS/PPS in the sample entry).
pub fn annexb_to_length_prefixed(data: &[u8], skip: impl Fn(u8) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    for nal in split_nals(data).filter(|n| !skip(nal_type(n))) {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// Length-prefixed (1, 2 or 4-byte lengths) -> Annex-B. Fails on a length
/// that runs past the end of the sample.
pub fn length_prefixed_to_annexb(
    data: &[u8],
    length_size: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if !matches!(length_size, 1 | 2 | 4) {
        return Err(format!("NAL length size {length_size} is not 1, 2 or 4"));
    }
    let mut pos = 0;
    while pos < data.len() {
        let len_bytes = data
            .get(pos..pos + length_size)
            .ok_or_else(|| format!("NAL length field cut at byte {pos}"))?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        pos += length_size;
        let nal = data
            .get(pos..pos.saturating_add(len))
            .ok_or_else(|| format!("NAL of {len} bytes at byte {pos} runs past the sample end"))?;
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
        pos += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nal(t: u8, first_mb_zero: bool, len: usize) -> Vec<u8> {
        let mut v = vec![0x60 | t, if first_mb_zero { 0x88 } else { 0x48 }];
        v.extend((0..len).map(|i| (i % 200 + 3) as u8));
        v
    }

    fn stream(nals: &[Vec<u8>]) -> Vec<u8> {
        let mut s = Vec::new();
        for (i, n) in nals.iter().enumerate() {
            if i % 2 == 0 {
                s.extend_from_slice(&START_CODE);
            } else {
                s.extend_from_slice(&[0, 0, 1]);
            }
            s.extend_from_slice(n);
        }
        s
    }

    #[test]
    fn split_nals_handles_3_and_4_byte_start_codes() {
        let nals = vec![nal(7, true, 5), nal(8, true, 3), nal(5, true, 40)];
        let s = stream(&nals);
        let got: Vec<&[u8]> = split_nals(&s).collect();
        assert_eq!(got.len(), 3);
        for (g, n) in got.iter().zip(&nals) {
            assert_eq!(*g, n.as_slice());
        }
        assert_eq!(nal_type(got[2]), NAL_IDR);
        assert!(is_keyframe(&s));
        assert!(!is_keyframe(&stream(&[nal(1, true, 4)])));
        assert_eq!(split_nals(&[1, 2, 3]).count(), 0);
        assert_eq!(nal_type(&[]), 0);
    }

    #[test]
    fn splitter_groups_parameter_sets_with_following_slice() {
        let nals = vec![
            nal(7, true, 5),
            nal(8, true, 3),
            nal(5, true, 20),
            nal(5, false, 20), // second slice of the same picture
            nal(1, true, 10),
            nal(6, true, 4), // SEI opens the next AU
            nal(1, true, 10),
            nal(9, true, 1), // AUD opens the next AU
            nal(1, true, 10),
        ];
        let s = stream(&nals);
        let mut sp = AccessUnitSplitter::new();
        sp.push(&s);
        let mut aus = Vec::new();
        while let Some(au) = sp.pop() {
            aus.push(au);
        }
        aus.extend(sp.finish());
        let types: Vec<Vec<u8>> = aus
            .iter()
            .map(|au| split_nals(au).map(nal_type).collect())
            .collect();
        assert_eq!(
            types,
            vec![vec![7, 8, 5, 5], vec![1], vec![6, 1], vec![9, 1]]
        );
    }

    #[test]
    fn length_prefix_round_trip_and_bad_lengths() {
        let nals = vec![nal(7, true, 5), nal(8, true, 3), nal(5, true, 40)];
        let s = stream(&nals);
        let lp = annexb_to_length_prefixed(&s, |t| t == NAL_SPS);
        let mut back = Vec::new();
        length_prefixed_to_annexb(&lp, 4, &mut back).unwrap();
        let got: Vec<&[u8]> = split_nals(&back).collect();
        assert_eq!(got, vec![nals[1].as_slice(), nals[2].as_slice()]);
        let mut out = Vec::new();
        assert!(length_prefixed_to_annexb(&[0, 0, 0, 9, 1], 4, &mut out).is_err());
        assert!(length_prefixed_to_annexb(&[0, 0], 4, &mut out).is_err());
        assert!(length_prefixed_to_annexb(&[1, 2], 3, &mut out).is_err());
    }

    proptest! {
        /// However the stream is chunked, the splitter yields the same NALs
        /// in the same order.
        #[test]
        fn splitter_is_chunking_invariant(
            spec in prop::collection::vec((prop::sample::select(vec![1u8, 5, 6, 7, 8, 9]), any::<bool>(), 0usize..50), 1..30),
            cuts in prop::collection::vec(1usize..17, 1..40),
        ) {
            let nals: Vec<Vec<u8>> = spec.iter().map(|&(t, f, l)| nal(t, f, l)).collect();
            let s = stream(&nals);
            let mut sp = AccessUnitSplitter::new();
            let mut pos = 0;
            let mut aus = Vec::new();
            for c in cuts.iter().cycle() {
                if pos >= s.len() { break; }
                let end = (pos + c).min(s.len());
                sp.push(&s[pos..end]);
                pos = end;
                while let Some(au) = sp.pop() { aus.push(au); }
            }
            aus.extend(sp.finish());
            let got: Vec<Vec<u8>> = aus.iter().flat_map(|au| split_nals(au).map(|n| n.to_vec()).collect::<Vec<_>>()).collect();
            prop_assert_eq!(got, nals);
            for au in &aus {
                prop_assert!(split_nals(au).filter(|n| is_vcl(n)).take(1).count() <= 1
                    || split_nals(au).filter(|n| is_vcl(n)).skip(1).all(|n| !starts_picture(n)));
            }
        }
    }
}
