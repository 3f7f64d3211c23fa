//! The per-frame sidecar (JSON lines) written beside every output: what was
//! applied to each frame and why. `audit` reads it back.
//!
//! Version 2 starts with one header line, `{"header":{"version":2,...}}`,
//! naming the policy and mode the censor ran with, so an audit judges the
//! output by the policy that was applied rather than by whatever flags it is
//! given. Version 1 (no header) is still read: its header is `None`.

use crate::config::Config;
use crate::error::{ConfigError, Error};
use crate::frame::{Detection, Mask};
use crate::policy::PolicyFile;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

/// How a frame's masks were decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The detector saw this frame; its own detections are applied.
    Verified,
    /// Released on the tracker's prediction (predictive mode).
    Predicted,
    /// Whole frame censored.
    FailClosed,
}

/// One line of the sidecar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameRecord {
    pub frame: u64,
    pub pts: i64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub masks: Vec<Mask>,
    /// This frame's own detections that the policy censors.
    #[serde(default)]
    pub detections: Vec<Detection>,
    /// Frame in -> censored frame out, before encoding.
    pub latency_ms: f64,
    /// It left as the input's own access unit, not re-encoded.
    #[serde(default)]
    pub passthrough: bool,
    /// On the first frame after passthrough was turned off for the
    /// stream mid-way: why (B-frames, a profile that does not fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough_off: Option<String>,
}

/// The sidecar format this build writes; sidecars without a header are 1.
pub const SIDECAR_VERSION: u32 = 2;

/// The first line of a version-2 sidecar: what the censor ran with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SidecarHeader {
    pub version: u32,
    /// The policy as applied, with the censored classes listed by name (an
    /// empty list would mean "this build's default set", which may change).
    pub policy: PolicyFile,
    /// `strict` or `predictive`.
    pub mode: String,
    /// Predictive mode: the detector ran on every Nth frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_every: Option<u32>,
    /// The pipeline's letterbox (`rect` thresholds run 0.05 lower).
    pub letterbox: String,
    /// The livecensor version that wrote the sidecar.
    pub livecensor: String,
    /// `on` (clean frames may leave as the input's own access units), or
    /// `off: <why>`; a later turn-off is in the frame records
    /// (`passthrough_off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<String>,
}

impl SidecarHeader {
    /// The header for a censor run with `cfg`.
    pub fn from_config(cfg: &Config) -> Result<SidecarHeader, ConfigError> {
        let mut policy = cfg.policy.clone();
        policy.classes = cfg
            .policy()?
            .class_names()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let mode = cfg.scheduler.mode.to_ascii_lowercase();
        let detect_every = (mode == "predictive").then_some(cfg.scheduler.detect_every);
        Ok(SidecarHeader {
            version: SIDECAR_VERSION,
            policy,
            mode,
            detect_every,
            letterbox: cfg.detector.letterbox.to_string(),
            livecensor: env!("CARGO_PKG_VERSION").to_string(),
            passthrough: None,
        })
    }
}

/// The header line's wrapper: `{"header":{...}}` can never be mistaken for
/// a frame record (which has no `header` key).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderLine {
    header: SidecarHeader,
}

/// A whole sidecar: its header (`None` for version 1) and frame records in
/// file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sidecar {
    pub header: Option<SidecarHeader>,
    pub records: Vec<FrameRecord>,
}

/// `out.mp4` -> `out.mp4.censor.jsonl`.
pub fn sidecar_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".censor.jsonl");
    PathBuf::from(s)
}

pub struct SidecarWriter {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
}

impl SidecarWriter {
    pub fn create(path: &Path) -> Result<Self, Error> {
        let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(SidecarWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }

    /// Writes the header; call it once, before any frame record.
    pub fn write_header(&mut self, h: &SidecarHeader) -> Result<(), Error> {
        self.write_json(&HeaderLine { header: h.clone() })
    }

    pub fn write(&mut self, r: &FrameRecord) -> Result<(), Error> {
        self.write_json(r)
    }

    fn write_json(&mut self, v: &impl Serialize) -> Result<(), Error> {
        let line = serde_json::to_string(v)
            .map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
        writeln!(self.out, "{line}").map_err(|e| Error::io(&self.path, e))
    }

    pub fn finish(mut self) -> Result<(), Error> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Reads a whole sidecar, header (when there is one) and records; a
/// malformed line, a header anywhere but first, or a version newer than
/// this build's is an error naming the path and line.
pub fn read_sidecar(path: &Path) -> Result<Sidecar, Error> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let bad = |line: usize, reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let mut out = Sidecar::default();
    let mut first = true;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(i + 1, e.to_string()))?;
        if v.get("header").is_some() {
            if !first {
                return Err(bad(i + 1, "a header after the first line".into()).into());
            }
            let h = serde_json::from_value::<HeaderLine>(v)
                .map_err(|e| bad(i + 1, format!("header: {e}")))?
                .header;
            if h.version > SIDECAR_VERSION {
                return Err(bad(
                    i + 1,
                    format!(
                        "sidecar version {} is newer than this livecensor reads ({SIDECAR_VERSION})",
                        h.version
                    ),
                )
                .into());
            }
            out.header = Some(h);
        } else {
            let r: FrameRecord =
                serde_json::from_value(v).map_err(|e| bad(i + 1, e.to_string()))?;
            out.records.push(r);
        }
        first = false;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{BBox, MaskOrigin, MaskShape};

    #[test]
    fn round_trip_and_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = sidecar_path(&dir.path().join("o.mp4"));
        assert!(p.to_string_lossy().ends_with("o.mp4.censor.jsonl"));
        let rec = FrameRecord {
            frame: 3,
            pts: 9000,
            status: Status::Verified,
            reason: None,
            masks: vec![Mask {
                bbox: BBox::new(1.0, 2.0, 3.0, 4.0),
                shape: MaskShape::Ellipse,
                origin: MaskOrigin::Detected,
                class: 1,
            }],
            detections: vec![],
            latency_ms: 12.5,
            passthrough: false,
            passthrough_off: None,
        };
        let mut w = SidecarWriter::create(&p).unwrap();
        w.write(&rec).unwrap();
        w.finish().unwrap();
        let back = read_sidecar(&p).unwrap();
        assert_eq!((back.header, back.records), (None, vec![rec]));
        std::fs::write(&p, "{\"frame\": 1}\n").unwrap();
        let e = read_sidecar(&p).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    fn record(frame: u64) -> FrameRecord {
        FrameRecord {
            frame,
            pts: frame as i64 * 3000,
            status: Status::Verified,
            reason: None,
            masks: vec![],
            detections: vec![],
            latency_ms: 1.0,
            passthrough: false,
            passthrough_off: None,
        }
    }

    #[test]
    fn header_round_trip_names_the_policy_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.censor.jsonl");
        let mut cfg = Config::default();
        cfg.policy.classes = vec![];
        cfg.policy.threshold = 0.3;
        cfg.scheduler.mode = "Predictive".into();
        cfg.scheduler.detect_every = 2;
        let h = SidecarHeader::from_config(&cfg).unwrap();
        assert_eq!(h.version, SIDECAR_VERSION);
        assert_eq!((h.mode.as_str(), h.detect_every), ("predictive", Some(2)));
        // The default class set is written out by name.
        assert!(h
            .policy
            .classes
            .contains(&"FEMALE_BREAST_EXPOSED".to_string()));
        assert_eq!(h.policy.threshold, 0.3);
        let mut w = SidecarWriter::create(&p).unwrap();
        w.write_header(&h).unwrap();
        w.write(&record(0)).unwrap();
        w.write(&record(1)).unwrap();
        w.finish().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("{\"header\":{\"version\":2,"), "{text}");
        let back = read_sidecar(&p).unwrap();
        assert_eq!(back.header, Some(h.clone()));
        assert_eq!(back.records, vec![record(0), record(1)]);
        let policy = crate::policy::Policy::from_file(&back.header.unwrap().policy).unwrap();
        assert_eq!(policy, cfg.policy().unwrap());
        // A strict run names no detect_every.
        cfg.scheduler.mode = "strict".into();
        assert_eq!(SidecarHeader::from_config(&cfg).unwrap().detect_every, None);
    }

    #[test]
    fn old_sidecars_load_and_bad_headers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.censor.jsonl");
        let line = |r: &FrameRecord| serde_json::to_string(r).unwrap();
        // Version 1: frame records only.
        std::fs::write(
            &p,
            format!("{}\n\n{}\n", line(&record(0)), line(&record(1))),
        )
        .unwrap();
        let old = read_sidecar(&p).unwrap();
        assert_eq!(old.header, None);
        assert_eq!(old.records.len(), 2);
        let h = SidecarHeader::from_config(&Config::default()).unwrap();
        let header = serde_json::to_string(&HeaderLine { header: h.clone() }).unwrap();
        for (text, needle) in [
            (
                format!("{}\n{header}\n", line(&record(0))),
                "line 2: a header after the first line",
            ),
            (
                header.replace("\"version\":2", "\"version\":3"),
                "line 1: sidecar version 3 is newer",
            ),
            (
                "{\"header\":{\"version\":2}}".to_string(),
                "line 1: header:",
            ),
            ("{\"header\": 5".to_string(), "line 1:"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read_sidecar(&p).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("o.censor.jsonl"), "{e}");
        }
    }
}
