//! Writes the seed corpora that need code to make: `rtp` (the committed
//! H.264 seed packetised as single NALs, STAP-A and FU-A, then with a loss
//! and a reordering) and `signal` (server messages a session sees).
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

fn main() -> std::io::Result<()> {
    let clip = fs::read("corpus/annexb/clip3")?;
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
