//! What passthrough needs to know of an H.264 sequence parameter set: the
//! profile and level (does the input fit what we publish), whether pictures
//! can leave in an order other than decode order (B-frames: forwarding the
//! input's own access units could not switch cleanly), and the size.

use super::annexb::{nal_type, split_nals, NAL_IDR, NAL_PPS, NAL_SPS};

/// The fields of an SPS passthrough decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    /// `constraint_set0_flag` .. `constraint_set5_flag` and the reserved
    /// bits, as the byte after `profile_idc`.
    pub constraints: u8,
    pub level_idc: u8,
    pub pic_order_cnt_type: u32,
    /// From the VUI's bitstream restriction, when present.
    pub max_num_reorder_frames: Option<u32>,
    pub width: usize,
    pub height: usize,
}

impl SpsInfo {
    /// Whether every picture is output in decode order: constrained
    /// baseline and baseline have no B slices, picture order type 2 follows
    /// decode order, and a stream may say it reorders nothing.
    pub fn decode_order_output(&self) -> bool {
        self.profile_idc == 66
            || self.pic_order_cnt_type == 2
            || self.max_num_reorder_frames == Some(0)
    }

    /// The `profile-level-id` (RFC 6184) of this SPS, e.g. `42e01f`.
    pub fn profile_level_id(&self) -> String {
        format!(
            "{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraints, self.level_idc
        )
    }

    /// Whether a receiver negotiated for `publish` (`profile_idc`, the
    /// constraint byte, `level_idc`) decodes this stream, and `Err` why
    /// not: constrained baseline published takes only constrained baseline;
    /// baseline takes what obeys baseline (`constraint_set0`), main what
    /// obeys main (`constraint_set1`: constrained baseline too), high what
    /// main takes; another profile the same with at least its flags; and
    /// never a higher level.
    pub fn fits(&self, publish: (u8, u8, u8)) -> Result<(), String> {
        let (profile, constraints, level) = publish;
        let profile_level_id = format!("{profile:02x}{constraints:02x}{level:02x}");
        // The flag bits that define profiles (set0..set5); the rest is reserved.
        let flags = constraints & 0xfc;
        let published_cb = profile == 66 && flags & 0x40 != 0;
        let (set0, set1) = (self.constraints & 0x80 != 0, self.constraints & 0x40 != 0);
        let obeys_main = self.profile_idc == 77 || set1;
        let same_profile = if published_cb {
            self.constrained_baseline()
        } else {
            match profile {
                66 => self.profile_idc == 66 || set0,
                77 => obeys_main,
                100 => obeys_main || self.profile_idc == 100,
                _ => self.profile_idc == profile && (self.constraints & flags) == flags,
            }
        };
        if !same_profile {
            return Err(format!(
                "input profile {} does not fit the published {}",
                self.profile_level_id(),
                profile_level_id
            ));
        }
        if level_idc_rank(self.level_idc, self.constraints) > level_idc_rank(level, constraints) {
            return Err(format!(
                "input level {} is above the published {}",
                self.profile_level_id(),
                profile_level_id
            ));
        }
        Ok(())
    }

    /// Constrained baseline: baseline with `constraint_set1`, or main or
    /// extended with both `constraint_set0` and `constraint_set1`.
    fn constrained_baseline(&self) -> bool {
        let (s0, s1) = (self.constraints & 0x80 != 0, self.constraints & 0x40 != 0);
        match self.profile_idc {
            66 => s1,
            77 | 88 => s0 && s1,
            _ => false,
        }
    }
}

/// `(profile_idc, constraint byte, level_idc)` of a hex `profile-level-id`.
pub fn parse_profile_level_id(s: &str) -> Option<(u8, u8, u8)> {
    if s.len() != 6 {
        return None;
    }
    let byte = |k: usize| u8::from_str_radix(s.get(k..k + 2)?, 16).ok();
    Some((byte(0)?, byte(2)?, byte(4)?))
}

/// Levels ordered; level 1b (level_idc 11 with `constraint_set3` in
/// baseline-like profiles) sits between 1 and 1.1.
fn level_idc_rank(level: u8, constraints: u8) -> u32 {
    if level == 11 && constraints & 0x10 != 0 {
        return 10 * 10 + 5;
    }
    u32::from(level) * 10
}

/// The parameter sets and slice kind of one access unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessUnitInfo {
    /// It holds an IDR slice.
    pub idr: bool,
    /// Its SPS NALs (without start codes).
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
}

impl AccessUnitInfo {
    pub fn of(au: &[u8]) -> AccessUnitInfo {
        let mut info = AccessUnitInfo::default();
        for nal in split_nals(au) {
            match nal_type(nal) {
                NAL_IDR => info.idr = true,
                NAL_SPS => info.sps.push(nal.to_vec()),
                NAL_PPS => info.pps.push(nal.to_vec()),
                _ => {}
            }
        }
        info
    }
}

/// The RBSP of a NAL: header byte dropped, emulation prevention removed.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.iter().skip(1) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    fn skip_scaling_list(&mut self, size: usize) -> Option<()> {
        let (mut last, mut next) = (8i64, 8i64);
        for _ in 0..size {
            if next != 0 {
                next = (last + self.se()? + 256) % 256;
            }
            if next != 0 {
                last = next;
            }
        }
        Some(())
    }
}

/// Parses an SPS NAL (with its header byte); `None` when it is not one or is
/// cut short.
pub fn parse_sps(nal: &[u8]) -> Option<SpsInfo> {
    if nal_type(nal) != NAL_SPS {
        return None;
    }
    let data = rbsp(nal);
    let mut r = Bits {
        data: &data,
        pos: 0,
    };
    let profile_idc = r.bits(8)? as u8;
    let constraints = r.bits(8)? as u8;
    let level_idc = r.bits(8)? as u8;
    r.ue()?;
    let mut chroma_format_idc = 1;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bit()?;
        }
        r.ue()?;
        r.ue()?;
        r.bit()?;
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for k in 0..lists {
                if r.bit()? == 1 {
                    r.skip_scaling_list(if k < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?;
    let pic_order_cnt_type = r.ue()?;
    match pic_order_cnt_type {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?;
    r.bit()?;
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?;
    let height_mbs = height_units * (2 - u64::from(frame_mbs_only));
    let (mut width, mut height) = (width_mbs * 16, height_mbs * 16);
    if r.bit()? == 1 {
        let (l, rt, t, b) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (cx, cy) = match chroma_format_idc {
            0 | 3 => (1, 2 - u64::from(frame_mbs_only)),
            2 => (2, 2 - u64::from(frame_mbs_only)),
            _ => (2, 2 * (2 - u64::from(frame_mbs_only))),
        };
        width = width.saturating_sub(cx * (u64::from(l) + u64::from(rt)));
        height = height.saturating_sub(cy * (u64::from(t) + u64::from(b)));
    }
    let max_num_reorder_frames = if r.bit()? == 1 {
        vui_reorder(&mut r)
    } else {
        None
    };
    Some(SpsInfo {
        profile_idc,
        constraints,
        level_idc,
        pic_order_cnt_type,
        max_num_reorder_frames,
        width: width as usize,
        height: height as usize,
    })
}

/// The VUI's `max_num_reorder_frames`, if its bitstream restriction is
/// there (and the VUI reads to it).
fn vui_reorder(r: &mut Bits) -> Option<u32> {
    if r.bit()? == 1 && r.bits(8)? == 255 {
        r.bits(32)?;
    }
    if r.bit()? == 1 {
        r.bit()?;
    }
    if r.bit()? == 1 {
        r.bits(4)?;
        if r.bit()? == 1 {
            r.bits(24)?;
        }
    }
    if r.bit()? == 1 {
        r.ue()?;
        r.ue()?;
    }
    if r.bit()? == 1 {
        r.bits(32)?;
        r.bits(32)?;
        r.bit()?;
    }
    let nal_hrd = r.bit()? == 1;
    if nal_hrd {
        skip_hrd(r)?;
    }
    let vcl_hrd = r.bit()? == 1;
    if vcl_hrd {
        skip_hrd(r)?;
    }
    if nal_hrd || vcl_hrd {
        r.bit()?;
    }
    r.bit()?;
    if r.bit()? == 1 {
        r.bit()?;
        r.ue()?;
        r.ue()?;
        r.ue()?;
        r.ue()?;
        let reorder = r.ue()?;
        r.ue()?;
        return Some(reorder);
    }
    None
}

fn skip_hrd(r: &mut Bits) -> Option<()> {
    let count = r.ue()? + 1;
    if count > 32 {
        return None;
    }
    r.bits(8)?;
    for _ in 0..count {
        r.ue()?;
        r.ue()?;
        r.bit()?;
    }
    r.bits(20)?;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_util::pattern;
    use crate::codec::{Encoder, EncoderConfig};

    #[test]
    fn reads_openh264_parameter_sets() {
        let mut enc = Encoder::new(EncoderConfig::new(322, 242, 30.0)).unwrap();
        let au = enc.encode(&pattern(322, 242, 0), true).unwrap();
        let info = AccessUnitInfo::of(&au);
        assert!(info.idr);
        assert_eq!((info.sps.len(), info.pps.len()), (1, 1));
        let sps = parse_sps(&info.sps[0]).unwrap();
        assert_eq!((sps.width, sps.height), (322, 242));
        assert!(sps.decode_order_output(), "{sps:?}");
        let plid = |s: &str| parse_profile_level_id(s).unwrap();
        assert!(sps.fits(plid(&sps.profile_level_id())).is_ok());
        assert!(sps.fits(plid("42001f")).is_ok(), "{sps:?}");
        // A high profile receiver decodes constrained baseline; level 1.0
        // is too small for 322x242.
        assert!(sps.fits(plid("640c1f")).is_ok(), "{sps:?}");
        assert!(sps.fits(plid("42e00a")).is_err(), "{sps:?}");
        let later = enc.encode(&pattern(322, 242, 1), false).unwrap();
        assert_eq!(AccessUnitInfo::of(&later), AccessUnitInfo::default());
    }

    #[test]
    fn levels_and_profiles_are_compared() {
        let sps = SpsInfo {
            profile_idc: 66,
            constraints: 0xc0,
            level_idc: 31,
            pic_order_cnt_type: 2,
            max_num_reorder_frames: None,
            width: 1280,
            height: 720,
        };
        let plid = |s: &str| parse_profile_level_id(s).unwrap();
        assert!(sps.fits(plid("42e01f")).is_ok());
        assert!(sps.fits(plid("42001f")).is_ok());
        assert!(sps.fits(plid("42e034")).is_ok());
        assert!(sps.fits(plid("42e01e")).unwrap_err().contains("level"));
        // Constrained baseline obeys main: a main receiver decodes it.
        assert!(sps.fits(plid("4d001f")).is_ok());
        assert!(parse_profile_level_id("zz").is_none());
        let high = SpsInfo {
            profile_idc: 100,
            constraints: 0,
            pic_order_cnt_type: 0,
            ..sps
        };
        assert!(!high.decode_order_output());
        assert!(high.fits(plid("42e01f")).is_err());
        assert!(high.fits(plid("42001f")).is_err());
        assert!(SpsInfo {
            max_num_reorder_frames: Some(0),
            ..high
        }
        .decode_order_output());
    }

    /// The fit rule over profiles (RFC 6184 / H.264 A.2): constrained
    /// baseline, baseline, main and high, and levels.
    #[test]
    fn the_fit_rule_over_profiles_and_levels() {
        let plid = |s: &str| parse_profile_level_id(s).unwrap();
        let input = |s: &str| {
            let (profile_idc, constraints, level_idc) = plid(s);
            SpsInfo {
                profile_idc,
                constraints,
                level_idc,
                pic_order_cnt_type: 2,
                max_num_reorder_frames: None,
                width: 640,
                height: 360,
            }
        };
        // (input, published, fits)
        let table = [
            // Constrained baseline input: every one of these decodes it.
            ("42e01f", "42e01f", true),
            ("42e01f", "42001f", true),
            ("42c01f", "42e01f", true),
            ("42e01f", "4d001f", true),
            ("42e01f", "64001f", true),
            // Main with set0 and set1 is constrained baseline too.
            ("4dc01f", "42e01f", true),
            // Plain baseline may use FMO/ASO: not constrained baseline, not main.
            ("42001f", "42001f", true),
            ("42001f", "42e01f", false),
            ("42001f", "4d001f", false),
            ("42001f", "64001f", false),
            // Main: only main (or high) receivers.
            ("4d001f", "42001f", false),
            ("4d001f", "42e01f", false),
            ("4d001f", "4d001f", true),
            ("4d401f", "4d001f", true),
            ("4d001f", "64001f", true),
            // High: only high.
            ("64001f", "4d001f", false),
            ("64001f", "64001f", true),
            // Levels: not above the published one; 1b sits below 1.1.
            ("42e020", "42e01f", false),
            ("42e01e", "42e01f", true),
            ("42f00b", "42e00b", true),
            ("42e00b", "42f00b", false),
        ];
        for (i, p, want) in table {
            let got = input(i).fits(plid(p));
            assert_eq!(got.is_ok(), want, "input {i} published {p}: {got:?}");
            if let Err(why) = got {
                assert!(why.contains(i) && why.contains(p), "{why}");
            }
        }
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert!(parse_sps(&[]).is_none());
        assert!(parse_sps(&[0x67]).is_none());
        assert!(parse_sps(&[0x67, 100, 0, 31, 0]).is_none());
        for n in 0..64u8 {
            let junk: Vec<u8> = std::iter::once(0x67)
                .chain((0..n).map(|k| k.wrapping_mul(37).wrapping_add(n)))
                .collect();
            let _ = parse_sps(&junk);
        }
    }
}
