//! Writes the seed corpora that need code to make: `rtp` (the committed
//! H.264 seed packetised as single NALs, STAP-A and FU-A, then with a loss
//! and a reordering), `signal` (server messages a session sees) and `sps`
//! (the seed's first access unit, and hand-made parameter sets for what
//! openh264 does not write: High profile, scaling lists, VUI with HRD and
//! reorder depth, picture order type 1, fields, level 1b).
//! Run from `fuzz/` once scripts/fuzz.sh has built it: `../target/ci/seeds`.

use livecensor::codec::{split_nals, AccessUnitSplitter};
use livecensor_fuzz::rtp_record;
use livekit_protocol as proto;
use prost::Message;
use proto::signal_response::Message as Resp;
use std::fs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};

/// Packet payloads (RFC 6184) of one access unit: parameter sets as one
/// STAP-A, NALs longer than `mtu` as FU-A fragments, others single.
fn packetise(au: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let nals: Vec<&[u8]> = split_nals(au).collect();
    let (params, rest): (Vec<&[u8]>, Vec<&[u8]>) =
        nals.iter().partition(|n| matches!(n[0] & 0x1f, 7 | 8));
    let mut out = Vec::new();
    if !params.is_empty() {
        let mut stap = vec![(params[0][0] & 0x60) | 24];
        for n in &params {
            stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
            stap.extend_from_slice(n);
        }
        out.push(stap);
    }
    for n in rest {
        if n.len() <= mtu {
            out.push(n.to_vec());
            continue;
        }
        let (hdr, body) = (n[0], &n[1..]);
        let chunks: Vec<&[u8]> = body.chunks(mtu).collect();
        for (i, c) in chunks.iter().enumerate() {
            let mut fu = vec![(hdr & 0xe0) | 28, hdr & 0x1f];
            if i == 0 {
                fu[1] |= 0x80;
            }
            if i == chunks.len() - 1 {
                fu[1] |= 0x40;
            }
            fu.extend_from_slice(c);
            out.push(fu);
        }
    }
    out
}

/// `(seq, timestamp, marker, payload)` for a stream.
fn packets(stream: &[u8], mtu: usize) -> Vec<(u16, u32, bool, Vec<u8>)> {
    let mut s = AccessUnitSplitter::new();
    s.push(stream);
    let mut seq = 65_530u16; // rolls over inside the seed
    let mut out = Vec::new();
    for (i, au) in s.finish().iter().enumerate() {
        let ps = packetise(au, mtu);
        let n = ps.len();
        for (j, p) in ps.into_iter().enumerate() {
            out.push((seq, 3000 * i as u32, j + 1 == n, p));
            seq = seq.wrapping_add(1);
        }
    }
    out
}

fn rtp_seed(pkts: &[(u16, u32, bool, Vec<u8>)], hold_back: u8, pop_every: usize) -> Vec<u8> {
    let mut out = vec![hold_back];
    for (i, (seq, ts, m, p)) in pkts.iter().enumerate() {
        rtp_record(&mut out, *seq, *ts, *m, 5, p);
        if (i + 1) % pop_every == 0 {
            out.push(0x80);
        }
    }
    out.push(0x80);
    out
}

fn frame(resp: Resp) -> Vec<u8> {
    let b = proto::SignalResponse {
        message: Some(resp),
    }
    .encode_to_vec();
    let mut out = (b.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    out
}

fn broadcaster() -> proto::ParticipantInfo {
    proto::ParticipantInfo {
        sid: "PA_1".into(),
        identity: "broadcaster".into(),
        state: proto::participant_info::State::Active as i32,
        is_publisher: true,
        tracks: vec![
            proto::TrackInfo {
                sid: "TR_audio".into(),
                r#type: proto::TrackType::Audio as i32,
                ..Default::default()
            },
            proto::TrackInfo {
                sid: "TR_video".into(),
                r#type: proto::TrackType::Video as i32,
                mime_type: "video/H264".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn join() -> Resp {
    Resp::Join(proto::JoinResponse {
        room: Some(proto::Room {
            name: "demo-raw".into(),
            ..Default::default()
        }),
        participant: Some(proto::ParticipantInfo {
            identity: "me".into(),
            ..Default::default()
        }),
        other_participants: vec![broadcaster()],
        ping_interval: 5,
        ping_timeout: 15,
        ..Default::default()
    })
}

fn sfu_offer() -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], 7882));
    let mut sfu = RtcConfig::new()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .build(Instant::now());
    if let Ok(c) = Candidate::host(addr, "udp") {
        sfu.add_local_candidate(c);
    }
    let mut api = sfu.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    match api.apply() {
        Some((offer, _)) => offer.to_sdp_string(),
        None => String::new(),
    }
}

/// An H.264 bit writer (Exp-Golomb), for the `sps` seeds.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    n: u32,
}

impl Bits {
    fn bit(&mut self, b: bool) {
        if self.n % 8 == 0 {
            self.bytes.push(0);
        }
        if b {
            *self.bytes.last_mut().unwrap_or(&mut 0) |= 0x80 >> (self.n % 8);
        }
        self.n += 1;
    }

    fn u(&mut self, n: u32, v: u32) {
        for k in (0..n).rev() {
            self.bit(v >> k & 1 == 1);
        }
    }

    fn ue(&mut self, v: u32) {
        let x = v + 1;
        let len = 32 - x.leading_zeros();
        self.u(len - 1, 0);
        self.u(len, x);
    }

    fn se(&mut self, v: i32) {
        self.ue(if v > 0 {
            2 * v as u32 - 1
        } else {
            2 * v.unsigned_abs()
        });
    }

    /// `rbsp_trailing_bits`, then the NAL with a start code and emulation
    /// prevention.
    fn nal(mut self, header: u8) -> Vec<u8> {
        self.bit(true);
        let mut out = vec![0, 0, 0, 1, header];
        let mut zeros = 0;
        for b in self.bytes {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            out.push(b);
            zeros = if b == 0 { zeros + 1 } else { 0 };
        }
        out
    }
}

/// SPS fields up to `pic_order_cnt_type` for `profile`; High-family
/// profiles get 4:2:0, 8 bits and the scaling lists whose flags are set in
/// `lists` (each list starts at the default and changes its first deltas).
fn sps_head(b: &mut Bits, profile: u32, constraints: u32, level: u32, lists: u8) {
    b.u(8, profile);
    b.u(8, constraints);
    b.u(8, level);
    b.ue(0); // seq_parameter_set_id
    if profile == 100 {
        b.ue(1); // chroma_format_idc 4:2:0
        b.ue(0); // bit_depth_luma - 8
        b.ue(0); // bit_depth_chroma - 8
        b.bit(false); // qpprime_y_zero_transform_bypass
        b.bit(lists != 0); // seq_scaling_matrix_present
        if lists != 0 {
            for k in 0..8 {
                let present = lists >> k & 1 == 1;
                b.bit(present);
                if present {
                    // Two deltas, then one that makes nextScale 0 (the rest repeat).
                    b.se(3);
                    b.se(-2);
                    b.se(-9);
                }
            }
        }
    }
    b.ue(0); // log2_max_frame_num - 4
}

/// One SPS, PPS and the start of an IDR slice (`first_mb_in_slice` 0),
/// after the published `profile-level-id` bytes the `sps` target reads first.
fn sps_seed(publish: [u8; 3], sps: Bits) -> Vec<u8> {
    let mut pps = Bits::default();
    pps.ue(0);
    pps.ue(0);
    pps.u(4, 0);
    pps.ue(0);
    pps.ue(0);
    pps.bit(false);
    pps.u(2, 0);
    pps.ue(0);
    pps.ue(0);
    pps.ue(0);
    pps.u(3, 0b100);
    let mut slice = Bits::default();
    slice.ue(0); // first_mb_in_slice
    slice.ue(7); // I slice
    slice.ue(0);
    slice.u(4, 0);
    slice.ue(0); // idr_pic_id
    let mut out = publish.to_vec();
    out.extend(sps.nal(0x67));
    out.extend(pps.nal(0x68));
    out.extend(slice.nal(0x65));
    out
}

fn sps_seeds(clip: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all("corpus/sps")?;
    let mut s = AccessUnitSplitter::new();
    s.push(clip);
    let first = s.finish().into_iter().next().unwrap_or_default();
    // Its parameter sets and the start of its IDR slice (the slice data
    // would only dilute the mutations).
    let mut seed = vec![0x42, 0xe0, 0x1f];
    for nal in split_nals(&first) {
        seed.extend_from_slice(&[0, 0, 0, 1]);
        seed.extend_from_slice(&nal[..nal.len().min(16)]);
    }
    fs::write("corpus/sps/clip", seed)?;

    // High 4.0, 1920x1080 (cropped from 1088), scaling lists, a VUI with
    // aspect ratio, colour, timing, NAL HRD and a reorder depth of 2.
    let mut b = Bits::default();
    sps_head(&mut b, 100, 0, 40, 0b1000_0101);
    b.ue(0); // pic_order_cnt_type
    b.ue(2); // log2_max_pic_order_cnt_lsb - 4
    b.ue(4); // max_num_ref_frames
    b.bit(false);
    b.ue(119);
    b.ue(67);
    b.bit(true); // frame_mbs_only
    b.bit(true);
    b.bit(true); // cropping
    for v in [0, 0, 0, 4] {
        b.ue(v);
    }
    b.bit(true); // vui
    b.bit(true); // aspect_ratio_info
    b.u(8, 255);
    b.u(32, 1 << 16 | 1);
    b.bit(false); // overscan
    b.bit(true); // video_signal_type
    b.u(4, 0b1010);
    b.bit(true);
    b.u(24, 0x01_01_01);
    b.bit(true); // chroma_loc
    b.ue(0);
    b.ue(0);
    b.bit(true); // timing
    b.u(32, 1);
    b.u(32, 60);
    b.bit(true);
    b.bit(true); // nal_hrd
    b.ue(0); // cpb_cnt - 1
    b.u(8, 0x44);
    b.ue(9999);
    b.ue(29999);
    b.bit(false);
    b.u(20, 0x5ad6b);
    b.bit(false); // vcl_hrd
    b.bit(false); // low_delay
    b.bit(false); // pic_struct
    b.bit(true); // bitstream_restriction
    b.bit(true);
    for v in [2, 1, 16, 16, 2, 4] {
        b.ue(v);
    }
    fs::write("corpus/sps/high-vui", sps_seed([0x64, 0x00, 0x28], b))?;

    // Main 3.0, picture order type 1, fields (not frame_mbs_only), a VUI
    // that says nothing is reordered.
    let mut b = Bits::default();
    sps_head(&mut b, 77, 0x40, 30, 0);
    b.ue(1);
    b.bit(false); // delta_pic_order_always_zero
    b.se(-1);
    b.se(2);
    b.ue(3);
    for v in [2, -1, 4] {
        b.se(v);
    }
    b.ue(2);
    b.bit(false);
    b.ue(44);
    b.ue(17); // 36 field MB rows
    b.bit(false); // frame_mbs_only
    b.bit(true); // mb_adaptive_frame_field
    b.bit(true);
    b.bit(false);
    b.bit(true); // vui
    for _ in 0..5 {
        b.bit(false);
    }
    b.bit(false); // nal_hrd
    b.bit(false); // vcl_hrd
    b.bit(false); // pic_struct
    b.bit(true);
    b.bit(false);
    for v in [2, 1, 16, 16, 0, 1] {
        b.ue(v);
    }
    fs::write(
        "corpus/sps/main-poc1-fields",
        sps_seed([0x4d, 0x40, 0x1f], b),
    )?;

    // Constrained baseline level 1b (level_idc 11 with constraint_set3),
    // picture order type 2, no VUI.
    let mut b = Bits::default();
    sps_head(&mut b, 66, 0xd0, 11, 0);
    b.ue(2);
    b.ue(1);
    b.bit(false);
    b.ue(10);
    b.ue(8);
    b.bit(true);
    b.bit(true);
    b.bit(false);
    b.bit(false);
    fs::write("corpus/sps/baseline-1b", sps_seed([0x42, 0xc0, 0x0b], b))?;
    Ok(())
}

fn main() -> std::io::Result<()> {
    let clip = fs::read("corpus/annexb/clip3")?;
    sps_seeds(&clip[1..])?;
    let pkts = packets(&clip[1..], 300);
    fs::create_dir_all("corpus/rtp")?;
    fs::write("corpus/rtp/inorder", rtp_seed(&pkts, 0, 1))?;
    let mut lost = pkts.clone();
    lost.remove(lost.len() / 2);
    fs::write("corpus/rtp/lost", rtp_seed(&lost, 3, 2))?;
    let mut reordered = pkts.clone();
    let k = reordered.len() / 3;
    reordered.swap(k, k + 1);
    reordered.swap(2 * k, 2 * k + 2);
    fs::write("corpus/rtp/reordered", rtp_seed(&reordered, 10, 4))?;

    fs::create_dir_all("corpus/signal")?;
    let offer = Resp::Offer(proto::SessionDescription {
        r#type: "offer".into(),
        sdp: sfu_offer(),
        id: 7,
        mid_to_track_id: Default::default(),
    });
    let trickle = Resp::Trickle(proto::TrickleRequest {
        candidate_init: livecensor::livekit::signal::candidate_init(
            "candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host",
        ),
        target: 1,
        ..Default::default()
    });
    let published = Resp::TrackPublished(proto::TrackPublishedResponse {
        cid: "fuzz-video".into(),
        track: Some(proto::TrackInfo {
            sid: "TR_ours".into(),
            r#type: proto::TrackType::Video as i32,
            ..Default::default()
        }),
    });
    let mut gone = broadcaster();
    gone.state = proto::participant_info::State::Disconnected as i32;
    let update = Resp::Update(proto::ParticipantUpdate {
        participants: vec![gone],
    });
    let leave = Resp::Leave(proto::LeaveRequest::default());
    let mut session = frame(join());
    for m in [offer.clone(), trickle.clone(), published, update, leave] {
        session.extend(frame(m));
    }
    fs::write("corpus/signal/session", session)?;
    let mut short = frame(join());
    short.extend(frame(offer));
    fs::write("corpus/signal/join_offer", short)?;
    let mut t = frame(join());
    t.extend(frame(trickle));
    t.extend(frame(Resp::Pong(1)));
    fs::write("corpus/signal/join_trickle", t)?;
    Ok(())
}
