//! Replays the fuzz targets' committed inputs (docs/FUZZING.md) through the
//! same entry points AFL++ drives: the seed corpora (`fuzz/corpus/TARGET`,
//! valid inputs, so each must be accepted) and every crash or hang the
//! fuzzers found (`fuzz/regressions/TARGET`, each named and given its
//! expected outcome below). A panic here is a regression. The `rtp` target
//! needs str0m's fuzz exports and replays in the fuzz crate instead.

use livecensor::fuzzing;
use livecensor::livekit::webhook::Action;
use livecensor::policy::Policy;
use std::path::{Path, PathBuf};

fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).ok()?;
            Some((name, bytes))
        })
        .collect()
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let c = inputs("corpus", target);
    assert!(!c.is_empty(), "no seed corpus for {target}");
    c
}

/// Every regression file must be listed with its expectation, so a new
/// finding is not replayed unchecked.
fn regressions(target: &str, known: &[&str]) -> Vec<(String, Vec<u8>)> {
    let r = inputs("regressions", target);
    for (name, _) in &r {
        assert!(
            known.contains(&name.as_str()),
            "fuzz/regressions/{target}/{name} has no expectation in this test"
        );
    }
    assert_eq!(r.len(), known.len(), "{target}: listed regressions missing");
    r
}

#[test]
fn annexb_seeds_split_into_access_units() {
    for (name, bytes) in corpus("annexb") {
        let aus = fuzzing::annexb(&bytes);
        assert!(aus >= 2, "{name}: {aus} access units");
    }
    for (_, bytes) in regressions("annexb", &[]) {
        fuzzing::annexb(&bytes);
    }
}

#[test]
fn sps_seeds_parse_and_fit_their_profile() {
    for (name, bytes) in corpus("sps") {
        assert_eq!(fuzzing::sps(&bytes), 1, "{name}: its SPS does not parse");
    }
    for (_, bytes) in regressions("sps", &[]) {
        fuzzing::sps(&bytes);
    }
}

#[test]
fn mp4_seeds_demux_and_findings_are_refused_or_read() {
    for (name, bytes) in corpus("mp4") {
        let n = fuzzing::mp4(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = if name == "tables.mp4" { 12 } else { 3 };
        assert_eq!(n, want, "{name}");
    }
    let found = regressions("mp4", &["box-size-zero-loops", "one-chunk-65536-samples"]);
    for (name, bytes) in found {
        if name == "one-chunk-65536-samples" {
            // 65,536 one-byte samples in one chunk: the mp4 crate's
            // read_sample added up the sizes before each sample in its
            // chunk (quadratic: seconds for a 64 KiB file). Every sample is
            // read (each is too short to be a NAL, which the packet says).
            assert_eq!(fuzzing::mp4(&bytes).ok(), Some(65_536), "{name}");
            continue;
        }
        // box-size-zero-loops: a box of size 0 inside `mdia` made the mp4
        // crate seek back to the same header forever (a hang).
        let e = fuzzing::mp4(&bytes).expect_err(&name).to_string();
        assert!(
            e.contains("fuzz.mp4") && e.contains("seeks back"),
            "{name}: {e}"
        );
    }
}

#[test]
fn y4m_seeds_read_and_findings_are_refused() {
    for (name, bytes) in corpus("y4m") {
        let n = fuzzing::y4m(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(n >= 1, "{name}");
    }
    // side-wraps-frame-size: W and H of 2^33 made the y4m crate's frame
    // size wrap to 0 (release) or overflow (checked builds).
    for (name, bytes) in regressions("y4m", &["side-wraps-frame-size"]) {
        let e = fuzzing::y4m(&bytes).expect_err(&name).to_string();
        assert!(
            e.contains("fuzz.y4m") && e.contains("is over 16384"),
            "{name}: {e}"
        );
    }
}

#[test]
fn webhook_seeds_decide_once_and_findings_are_rejected() {
    for (name, bytes) in corpus("webhook") {
        let [first, second] = fuzzing::webhook(&bytes);
        if name == "moderation" {
            // A forged Authorization line: 401 both times.
            assert!(
                first.as_ref().is_err_and(|e| e.starts_with("401")),
                "{first:?}"
            );
            assert!(second.is_err());
            continue;
        }
        let first = first.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(first.is_some(), "{name}: a first delivery acts");
        if name == "lk0" {
            assert_eq!(
                first,
                Some(Action::Start {
                    room: "demo".into()
                })
            );
            assert_eq!(second, Ok(None), "same id again: a duplicate");
        }
    }
    // created-at-overflows: `createdAt` of i64::MIN overflowed the age.
    for (name, bytes) in regressions("webhook", &["created-at-overflows"]) {
        let [first, _] = fuzzing::webhook(&bytes);
        assert!(
            first.as_ref().is_err_and(|e| e.contains("stale webhook")),
            "{name}: {first:?}"
        );
    }
}

#[test]
fn signal_seeds_are_handled_whole() {
    for (name, bytes) in corpus("signal") {
        let n = fuzzing::signal(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(n >= 2, "{name}: {n} messages");
    }
    for (name, bytes) in regressions("signal", &[]) {
        assert!(fuzzing::signal(&bytes).is_err(), "{name}");
    }
}

#[test]
fn toml_seeds_load_and_findings_name_the_key() {
    for (name, bytes) in corpus("toml") {
        if name == "policy" {
            // A `[policy]` table on its own: a policy, not a config.
            let text = String::from_utf8_lossy(&bytes);
            let p = Policy::from_toml(&text, Path::new("policy"));
            assert!(p.is_ok(), "{p:?}");
            assert!(fuzzing::toml(&bytes).is_err());
            continue;
        }
        fuzzing::toml(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, bytes) in regressions("toml", &[]) {
        assert!(fuzzing::toml(&bytes).is_err(), "{name}");
    }
}
