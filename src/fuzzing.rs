//! Entry points of the coverage-guided fuzz targets (`fuzz/`, AFL++) and of
//! their regression replay (`tests/fuzz_regressions.rs`). Each takes the raw
//! fuzz input and drives the same code a file, a LiveKit server or a user
//! would reach; none may panic, whatever the bytes. Where the code has an
//! invariant to keep (chunking does not change access units; a signature we
//! make verifies), the target asserts it, so breaking it is a crash too.
//! See docs/FUZZING.md.

use crate::codec::{
    annexb_to_length_prefixed, is_keyframe, length_prefixed_to_annexb, nal_type,
    parse_profile_level_id, parse_sps, split_nals, AccessUnitInfo, AccessUnitSplitter, NAL_PPS,
    NAL_SPS, START_CODE,
};
use crate::config::Config;
use crate::error::{ConfigError, Error, LiveKitError, ModerationError};
use crate::frame::{BBox, MaskOrigin};
use crate::livekit::participant::{Participant, ParticipantConfig, ParticipantOutput, PublishSpec};
use crate::livekit::webhook::{self, Action, Replays};
use crate::policy::Policy;
use crate::source::demux::{Mp4Demux, Y4mDemux};
use base64::Engine as _;
use livekit_api::access_token::{AccessToken, TokenVerifier};
use livekit_api::webhooks::WebhookReceiver;
use sha2::{Digest, Sha256};
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use str0m::config::DtlsCert;

/// Groups of an Annex-B stream into access units, pushed whole and in the
/// chunk size the first byte picks; NAL splitting; the length-prefixed
/// round trip MP4 uses; and the first byte's length size applied to the
/// raw bytes as an MP4 sample. Returns the number of access units.
pub fn annexb(data: &[u8]) -> usize {
    let Some((&first, stream)) = data.split_first() else {
        return 0;
    };
    let whole = split_access_units(stream, stream.len().max(1));
    let chunked = split_access_units(stream, usize::from(first % 64) + 1);
    assert_eq!(whole, chunked, "chunking changed the access units");

    let nals: Vec<&[u8]> = split_nals(stream).collect();
    let joined: Vec<u8> = whole.concat();
    assert!(whole.iter().all(|au| au.starts_with(&START_CODE)));
    assert_eq!(
        split_nals(&joined).collect::<Vec<_>>(),
        nals,
        "access units lost or reordered NALs"
    );
    for au in &whole {
        let _ = is_keyframe(au);
    }

    let lp = annexb_to_length_prefixed(stream, |t| t == 0);
    let mut back = Vec::new();
    let kept: Vec<&[u8]> = nals.iter().copied().filter(|n| nal_type(n) != 0).collect();
    match length_prefixed_to_annexb(&lp, 4, &mut back) {
        Ok(()) => assert_eq!(split_nals(&back).collect::<Vec<_>>(), kept),
        Err(e) => panic!("our own length-prefixed output is refused: {e}"),
    }
    let mut out = Vec::new();
    let _ = length_prefixed_to_annexb(stream, [1, 2, 4][usize::from(first % 3)], &mut out);
    whole.len()
}

fn split_access_units(stream: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut s = AccessUnitSplitter::new();
    let mut aus = Vec::new();
    for c in stream.chunks(chunk) {
        s.push(c);
        aus.extend(std::iter::from_fn(|| s.pop()));
    }
    aus.extend(s.finish());
    aus
}

/// The published profile the [`sps`] target checks against when its input
/// is shorter than the three bytes that name one: constrained baseline 3.1.
const SPS_PUBLISH: (u8, u8, u8) = (0x42, 0xe0, 0x1f);

/// What passthrough reads of an input access unit: its parameter sets and
/// whether it holds an IDR (`AccessUnitInfo::of`), each SPS parsed
/// (`parse_sps`, profile, level, picture order, VUI reorder depth, size) and
/// checked against a published profile (`SpsInfo::fits`, the passthrough
/// compatibility check). Input: `profile_idc`, constraint byte and
/// `level_idc` of the published profile, then the access unit (Annex-B).
/// An SPS must fit its own `profile-level-id`, which must parse back to its
/// fields. Returns the number of SPS that parse.
pub fn sps(data: &[u8]) -> usize {
    let (publish, au) = match data {
        [p, c, l, rest @ ..] => ((*p, *c, *l), rest),
        _ => (SPS_PUBLISH, data),
    };
    let _ = parse_profile_level_id(&String::from_utf8_lossy(&data[..data.len().min(6)]));
    let info = AccessUnitInfo::of(au);
    assert_eq!(info.idr, is_keyframe(au), "IDR disagrees with is_keyframe");
    let of_type = |t| {
        split_nals(au)
            .filter(|n| nal_type(n) == t)
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>()
    };
    assert_eq!(info.sps, of_type(NAL_SPS), "SPS lost or reordered");
    assert_eq!(info.pps, of_type(NAL_PPS), "PPS lost or reordered");
    let mut parsed = 0;
    for nal in &info.sps {
        let Some(s) = parse_sps(nal) else {
            continue;
        };
        parsed += 1;
        let own = parse_profile_level_id(&s.profile_level_id());
        assert_eq!(own, Some((s.profile_idc, s.constraints, s.level_idc)));
        if let Some(own) = own {
            assert_eq!(s.fits(own), Ok(()), "an SPS does not fit its own profile");
        }
        let _ = s.fits(publish);
        let _ = s.decode_order_output();
    }
    parsed
}

/// An MP4 file in memory, read as `censor` reads one: header, then samples
/// until the end or the first error. Returns the number of samples.
pub fn mp4(data: &[u8]) -> Result<usize, Error> {
    let path = Path::new("fuzz.mp4");
    let mut d = Mp4Demux::from_reader(path, Cursor::new(data), data.len() as u64)?;
    let mut n = 0;
    while let Some(p) = d.next_packet() {
        let p = p?;
        if let Ok(au) = &p.data {
            let _ = is_keyframe(au);
        }
        n += 1;
    }
    Ok(n)
}

/// A Y4M file in memory, read to the end or the first error. Returns the
/// number of pictures.
pub fn y4m(data: &[u8]) -> Result<usize, Error> {
    let path = Path::new("fuzz.y4m");
    let mut d = Y4mDemux::from_reader(path, Cursor::new(data), data.len() as u64)?;
    let mut n = 0;
    while let Some(f) = d.next_picture() {
        let f = f?;
        assert_eq!((f.width, f.height), (d.width, d.height));
        n += 1;
    }
    Ok(n)
}

/// The API key and secret the webhook target signs with.
pub const WEBHOOK_KEY: &str = "fuzzkey";
pub const WEBHOOK_SECRET: &str = "fuzzsecret";
/// The fuzz target's clock: events are fresh around this unix time.
pub const WEBHOOK_NOW: i64 = 1_700_000_000;

/// A LiveKit webhook `Authorization` for `body`, as the server signs it.
pub fn sign_livekit_webhook(body: &str) -> Option<String> {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes()));
    AccessToken::with_api_key(WEBHOOK_KEY, WEBHOOK_SECRET)
        .with_sha256(&hash)
        .to_jwt()
        .ok()
}

/// Input: a mode byte, a header line, then the body. Mode bit 0 set: the
/// header line is the `Authorization` (forged tokens); clear: the body is
/// signed properly, so the event JSON is parsed and decided. The same bytes
/// also go through the moderation webhook's signature check (header line as
/// its signature header), and a signature made for the body must verify.
/// Returns what the LiveKit endpoint decided, delivered twice.
pub fn webhook(data: &[u8]) -> [Result<Option<Action>, String>; 2] {
    let (mode, rest) = data.split_first().map_or((0, data), |(m, r)| (*m, r));
    let text = String::from_utf8_lossy(rest);
    let (line, body) = text.split_once('\n').unwrap_or(("", &text));
    let auth = if mode & 1 == 0 {
        sign_livekit_webhook(body)
    } else {
        Some(line.to_string())
    };
    let receiver = WebhookReceiver::new(TokenVerifier::with_api_key(WEBHOOK_KEY, WEBHOOK_SECRET));
    let replays = std::sync::Mutex::new(Replays::default());
    let now = WEBHOOK_NOW + i64::from(mode >> 1) - 64;
    let once = || {
        webhook::accept(&receiver, &replays, body, auth.as_deref(), now)
            .map_err(|(code, msg)| format!("{code}: {msg}"))
    };
    let results = [once(), once()];

    let secret = WEBHOOK_SECRET.as_bytes();
    let tolerance = Duration::from_secs(300);
    let ts = WEBHOOK_NOW as u64;
    let _ = crate::moderation::webhook::verify(secret, line, body.as_bytes(), ts, tolerance);
    let signed = crate::moderation::webhook::sign(secret, ts, body.as_bytes());
    let ok: Result<(), ModerationError> =
        crate::moderation::webhook::verify(secret, &signed, body.as_bytes(), ts, tolerance);
    assert!(ok.is_ok(), "our own signature does not verify: {ok:?}");
    results
}

/// Signalling messages as the LiveKit server sends them (each a 2-byte
/// big-endian length and the protobuf bytes) into a participant that
/// subscribes, publishes and relays audio; its output is drained after
/// each. Stops at the first error, as the session does. Returns the number
/// of messages handled.
pub fn signal(data: &[u8]) -> Result<usize, LiveKitError> {
    let t0 = Instant::now();
    let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = ParticipantConfig {
        subscribe: true,
        from_identity: None,
        publish: Some(PublishSpec {
            cid: "fuzz-video".into(),
            name: "censored".into(),
            width: 640,
            height: 360,
        }),
        audio: true,
    };
    let mut p = Participant::with_certs(t0, cfg, addr(40000), addr(40001), signal_certs())?;
    let mut rest = data;
    let mut n = 0;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let end = rest.len().min(2 + len);
        let msg = &rest[2..end];
        rest = &rest[end..];
        let now = t0 + Duration::from_millis(10 * n as u64);
        p.handle_signal(now, msg)?;
        p.handle_timeout(now)?;
        for _ in 0..1000 {
            if let ParticipantOutput::Timeout(_) = p.poll_output()? {
                break;
            }
        }
        n += 1;
    }
    Ok(n)
}

/// The two DTLS certificates the [`signal`] target's participants use, made
/// once per process: generating them took most of each input's time, and
/// no signalling path depends on which certificate a peer has.
fn signal_certs() -> [Option<DtlsCert>; 2] {
    static CERTS: OnceLock<[Option<DtlsCert>; 2]> = OnceLock::new();
    CERTS
        .get_or_init(|| {
            let dtls = str0m::crypto::from_feature_flags().dtls_provider;
            [dtls.generate_certificate(), dtls.generate_certificate()]
        })
        .clone()
}

/// A config file, loaded as `censor`/`serve` load one (no environment),
/// and the same text as a standalone policy and as a rules file. A config that validates must
/// yield every part the pipeline asks it for.
pub fn toml(data: &[u8]) -> Result<(), ConfigError> {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.toml");
    if let Ok(p) = Policy::from_toml(&text, path) {
        use_policy(&p);
    }
    let _ = crate::moderation::rules::RulesFile::parse(&text);
    let mut cfg = Config::parse(&text, path)?;
    cfg.apply_env(|_| None)?;
    cfg.resolve_paths(Path::new("/fuzz"));
    cfg.validate()?;
    let parts = (|| {
        cfg.rules()?;
        cfg.mode()?;
        cfg.scheduler_config()?;
        let _ = cfg.batcher_config();
        cfg.pipeline_detector()?;
        cfg.policy()
    })();
    match parts {
        Ok(p) => {
            use_policy(&p);
            Ok(())
        }
        Err(e) => panic!("a validated config fails later: {e}"),
    }
}

fn use_policy(p: &Policy) {
    let b = BBox {
        x0: 10.0,
        y0: 10.0,
        x1: 50.0,
        y1: 60.0,
    };
    for class in 0..=u8::MAX {
        let _ = p.mask(&b, class, MaskOrigin::Detected);
        let _ = p.censors_class(class);
    }
    let _ = p.lowered(0.1).score_floor();
    let _ = p.class_names();
}
