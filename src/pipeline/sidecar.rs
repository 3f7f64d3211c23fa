//! The per-frame sidecar (JSON lines) written beside every output: what was
//! applied to each frame and why. `audit` reads it back.

use crate::error::{ConfigError, Error};
use crate::frame::{Detection, Mask};
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

    pub fn write(&mut self, r: &FrameRecord) -> Result<(), Error> {
        let line = serde_json::to_string(r)
            .map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
        writeln!(self.out, "{line}").map_err(|e| Error::io(&self.path, e))
    }

    pub fn finish(mut self) -> Result<(), Error> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Reads a whole sidecar; a malformed line is an error naming its number.
pub fn read_sidecar(path: &Path) -> Result<Vec<FrameRecord>, Error> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: FrameRecord = serde_json::from_str(&line).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        out.push(r);
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
        };
        let mut w = SidecarWriter::create(&p).unwrap();
        w.write(&rec).unwrap();
        w.finish().unwrap();
        assert_eq!(read_sidecar(&p).unwrap(), vec![rec]);
        std::fs::write(&p, "{\"frame\": 1}\n").unwrap();
        let e = read_sidecar(&p).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
