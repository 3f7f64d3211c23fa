//! The H.264 format our published track was negotiated with, read from the
//! publisher's SDP answer: passthrough forwards a broadcaster's own access
//! units only when they fit the `profile-level-id` the SFU accepted for the
//! payload type we send with (viewers were negotiated for that).

use crate::codec::parse_profile_level_id;

/// `(profile_idc, constraint byte, level_idc)` of payload type `pt` in the
/// media section of `mid` of `sdp`; `Err` says why it cannot be read (no
/// such section, `pt` is not H.264 there, no `profile-level-id`).
pub fn h264_profile_level_id(sdp: &str, mid: &str, pt: u8) -> Result<(u8, u8, u8), String> {
    let section = media_section(sdp, mid).ok_or_else(|| format!("no media section {mid}"))?;
    let rtpmap = format!("a=rtpmap:{pt} ");
    let h264 = section.iter().any(|l| {
        l.strip_prefix(&rtpmap)
            .is_some_and(|c| c.to_ascii_uppercase().starts_with("H264/"))
    });
    if !h264 {
        return Err(format!("payload type {pt} is not H.264 in section {mid}"));
    }
    let fmtp = format!("a=fmtp:{pt} ");
    let value = section
        .iter()
        .filter_map(|l| l.strip_prefix(&fmtp))
        .flat_map(|params| params.split(';'))
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("profile-level-id"))
        .map(|(_, v)| v.trim())
        .ok_or_else(|| format!("no profile-level-id for H.264 payload type {pt}"))?;
    parse_profile_level_id(value).ok_or_else(|| format!("unreadable profile-level-id {value:?}"))
}

/// The lines of the media section (`m=` up to the next) holding `a=mid:mid`.
fn media_section<'a>(sdp: &'a str, mid: &str) -> Option<Vec<&'a str>> {
    let want = format!("a=mid:{mid}");
    let mut sections: Vec<Vec<&str>> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        if let Some(s) = sections.last_mut() {
            s.push(line);
        }
    }
    sections.into_iter().find(|s| s.iter().any(|l| *l == want))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:1\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 127 125 108\r\n\
a=mid:0\r\n\
a=rtpmap:127 H264/90000\r\n\
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:125 H264/90000\r\n\
a=fmtp:125 level-asymmetry-allowed=1; packetization-mode=1; Profile-Level-Id=42E01F\r\n\
a=rtpmap:108 h264/90000\r\n\
a=fmtp:108 packetization-mode=0\r\n\
a=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn reads_the_profile_level_id_of_the_payload_type_sent_with() {
        assert_eq!(
            h264_profile_level_id(ANSWER, "0", 127),
            Ok((0x42, 0x00, 0x1f))
        );
        // Case and spaces around the parameters do not matter.
        assert_eq!(
            h264_profile_level_id(ANSWER, "0", 125),
            Ok((0x42, 0xe0, 0x1f))
        );
    }

    #[test]
    fn what_cannot_be_read_says_why() {
        let missing = h264_profile_level_id(ANSWER, "0", 108).unwrap_err();
        assert!(missing.contains("no profile-level-id"), "{missing}");
        let vp8 = h264_profile_level_id(ANSWER, "0", 96).unwrap_err();
        assert!(vp8.contains("not H.264"), "{vp8}");
        // The audio section's payload types are not the video's.
        assert!(h264_profile_level_id(ANSWER, "1", 127).is_err());
        assert!(h264_profile_level_id(ANSWER, "7", 127)
            .unwrap_err()
            .contains("no media section"));
        let bad = ANSWER.replace("profile-level-id=42001f", "profile-level-id=42zz1f");
        assert!(h264_profile_level_id(&bad, "0", 127)
            .unwrap_err()
            .contains("unreadable"));
        assert!(h264_profile_level_id("", "0", 127).is_err());
    }
}
