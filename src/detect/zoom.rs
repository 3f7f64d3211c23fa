//! Second looks: where the whole-frame pass sees only a weak candidate of a
//! censored class (a small face, a face half out of the frame), the same
//! model looks again at a crop around it at a higher resolution, before
//! the frame is verified. At 320 input a 720p frame is shrunk 4x, so a
//! face 40-80 px tall is 10-20 px for the model and scores 0.05-0.25; the
//! same face in a 320 px window at 160 input (2x less shrinking) scores
//! 0.5-0.65. Pure geometry here; the stream runs the crops.

use serde::Deserialize;

use crate::error::ConfigError;
use crate::frame::{BBox, Detection};
use crate::policy::Policy;

/// `[detector.zoom]`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoomConfig {
    /// How much less a crop is shrunk than the whole frame (2: half as
    /// much). 0 turns second looks off.
    pub factor: f32,
    /// Candidates of censored classes scoring at least this (and under the
    /// policy's threshold) get a second look.
    pub probe: f32,
    /// Most crops per frame (the highest-scoring candidates first).
    pub max_crops: usize,
    /// A crop's input side for backends that take any stride-aligned
    /// shape (ONNX Runtime); square-only backends use their own size.
    pub input: usize,
}

impl Default for ZoomConfig {
    fn default() -> Self {
        ZoomConfig {
            factor: 2.0,
            probe: 0.03,
            max_crops: 2,
            input: 160,
        }
    }
}

impl ZoomConfig {
    /// Second looks off.
    pub fn off() -> Self {
        ZoomConfig {
            factor: 0.0,
            ..ZoomConfig::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.factor > 1.0 && self.max_crops > 0
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, reason: &str| ConfigError::Value {
            key: format!("detector.zoom.{key}"),
            value,
            reason: reason.into(),
        };
        if !(self.factor == 0.0 || (self.factor > 1.0 && self.factor <= 8.0)) {
            return Err(bad(
                "factor",
                self.factor.to_string(),
                "must be 0 (off) or in (1, 8]",
            ));
        }
        if !(0.0..=1.0).contains(&self.probe) {
            return Err(bad("probe", self.probe.to_string(), "must be in [0, 1]"));
        }
        if self.max_crops > 8 {
            return Err(bad(
                "max_crops",
                self.max_crops.to_string(),
                "must be at most 8",
            ));
        }
        if self.input == 0 || self.input % 32 != 0 || self.input > 640 {
            return Err(bad(
                "input",
                self.input.to_string(),
                "must be a multiple of 32 up to 640",
            ));
        }
        Ok(())
    }
}

/// A crop's detection answers a candidate it overlaps this much.
const CONFIRM_IOU: f32 = 0.25;

/// One window to look at again, in frame pixels (even corner), and the
/// candidates that asked for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Crop {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
    pub candidates: Vec<Detection>,
}

impl Crop {
    /// A detection found in the crop, in frame pixels (clipped).
    pub fn to_frame(&self, d: &Detection, width: usize, height: usize) -> Detection {
        let (dx, dy) = (self.x as f32, self.y as f32);
        let b = &d.bbox;
        Detection {
            bbox: BBox::new(b.x0 + dx, b.y0 + dy, b.x1 + dx, b.y1 + dy).clipped(width, height),
            ..*d
        }
    }

    /// Whether a detection of the crop (in frame pixels, within a frame of
    /// `width x height`) answers one of the candidates that asked for the
    /// look: it overlaps one, and does not run into an edge of the crop
    /// inside the frame. Anything else in the window was in the
    /// whole-frame pass too and was not a candidate there; a crop cuts
    /// objects at its edges and shows them out of context, which the model
    /// can mistake (a 0.44 face cut off at a crop's corner over a
    /// motorbike).
    pub fn confirms(&self, d: &Detection, width: usize, height: usize) -> bool {
        let b = &d.bbox;
        let (x0, y0) = (self.x as f32, self.y as f32);
        let (x1, y1) = ((self.x + self.w) as f32, (self.y + self.h) as f32);
        let cut = (b.x0 <= x0 + 1.0 && self.x > 0)
            || (b.y0 <= y0 + 1.0 && self.y > 0)
            || (b.x1 >= x1 - 1.0 && self.x + self.w < width)
            || (b.y1 >= y1 - 1.0 && self.y + self.h < height);
        !cut && self.candidates.iter().any(|c| c.bbox.iou(b) >= CONFIRM_IOU)
    }

    /// What stands in for the second look when it cannot be had (queue
    /// full, detector error): the candidates themselves, raised to the
    /// policy's threshold so they are masked. A failure censors more.
    pub fn fallback(&self, policy: &Policy) -> Vec<Detection> {
        self.candidates
            .iter()
            .map(|d| {
                let t = policy
                    .threshold
                    .get(d.class as usize)
                    .copied()
                    .unwrap_or(0.0);
                Detection {
                    score: d.score.max(t),
                    ..*d
                }
            })
            .collect()
    }
}

/// The crops for one frame's detections. `scale` is the whole-frame pass's
/// frame pixels per input pixel, `input` the crop's input side. Nothing
/// when the crop would not be shrunk noticeably less than the frame.
pub fn plan(
    dets: &[Detection],
    policy: &Policy,
    cfg: &ZoomConfig,
    width: usize,
    height: usize,
    scale: f32,
    input: usize,
) -> Vec<Crop> {
    if !cfg.enabled() || width == 0 || height == 0 || input == 0 {
        return Vec::new();
    }
    // Never upscale: at most one frame pixel per input pixel.
    let zoom_scale = (scale / cfg.factor).max(1.0);
    if zoom_scale > 0.75 * scale {
        return Vec::new();
    }
    let side = (input as f32 * zoom_scale).round() as usize;
    let (w, h) = (side.min(width), side.min(height));
    let strong: Vec<&Detection> = dets.iter().filter(|d| policy.accepts(d)).collect();
    let mut weak: Vec<&Detection> = dets
        .iter()
        .filter(|d| policy.censors_class(d.class) && d.score >= cfg.probe && !policy.accepts(d))
        .filter(|d| d.bbox.width().max(d.bbox.height()) <= 0.6 * side as f32)
        .filter(|d| !strong.iter().any(|s| s.bbox.iou(&d.bbox) >= 0.3))
        .collect();
    weak.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut crops: Vec<Crop> = Vec::new();
    for d in weak {
        let inside = |c: &Crop| {
            let b = &d.bbox;
            b.x0 >= c.x as f32
                && b.y0 >= c.y as f32
                && b.x1 <= (c.x + c.w) as f32
                && b.y1 <= (c.y + c.h) as f32
        };
        if let Some(c) = crops.iter_mut().find(|c| inside(c)) {
            c.candidates.push(*d);
            continue;
        }
        if crops.len() >= cfg.max_crops {
            // A later (weaker) candidate may still fall in a window.
            continue;
        }
        let (cx, cy) = d.bbox.center();
        let corner = |c: f32, n: usize, extent: usize| -> usize {
            let start = (c - n as f32 * 0.5).round().max(0.0) as usize;
            start.min(extent - n) & !1
        };
        crops.push(Crop {
            x: corner(cx, w, width),
            y: corner(cy, h, height),
            w,
            h,
            candidates: vec![*d],
        });
    }
    crops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::class_index;

    fn face(x: f32, y: f32, side: f32, score: f32) -> Detection {
        Detection {
            bbox: BBox::from_xywh(x, y, side, side),
            class: class_index("FACE_FEMALE").unwrap_or(1),
            score,
        }
    }

    fn faces_policy() -> Policy {
        let mut p = Policy::default();
        p.set_classes("FACE_FEMALE,FACE_MALE").unwrap();
        p
    }

    #[test]
    fn a_weak_small_candidate_gets_a_window_at_twice_the_resolution() {
        let p = faces_policy();
        let cfg = ZoomConfig::default();
        // 720p at 320: 4 frame pixels per input pixel; the crop 2.
        let crops = plan(
            &[face(1200.0, 5.0, 40.0, 0.1)],
            &p,
            &cfg,
            1280,
            720,
            4.0,
            160,
        );
        assert_eq!(crops.len(), 1);
        let c = &crops[0];
        assert_eq!((c.w, c.h), (320, 320));
        // Clamped inside the frame, even corner, the candidate inside.
        assert_eq!((c.x, c.y), (960, 0));
        assert_eq!(c.candidates.len(), 1);
        // Back in frame pixels.
        let mut d = face(100.0, 10.0, 30.0, 0.6);
        d.bbox = BBox::new(250.0, 10.0, 400.0, 40.0);
        let f = c.to_frame(&d, 1280, 720);
        assert_eq!(f.bbox, BBox::new(1210.0, 10.0, 1280.0, 40.0));
        assert_eq!(f.score, 0.6);
    }

    #[test]
    fn strong_large_unpoliced_or_faint_candidates_get_none() {
        let p = faces_policy();
        let cfg = ZoomConfig::default();
        let none = |dets: &[Detection]| plan(dets, &p, &cfg, 1280, 720, 4.0, 160).is_empty();
        assert!(none(&[face(100.0, 100.0, 40.0, 0.5)]), "already strong");
        assert!(
            none(&[face(100.0, 100.0, 250.0, 0.1)]),
            "large: seen well already"
        );
        assert!(none(&[face(100.0, 100.0, 40.0, 0.02)]), "under the probe");
        let mut other = face(100.0, 100.0, 40.0, 0.1);
        other.class = class_index("FEET_EXPOSED").unwrap_or(7);
        assert!(none(&[other]), "not a censored class");
        // A weak box on top of a strong one of the same region.
        assert!(none(&[
            face(100.0, 100.0, 40.0, 0.5),
            face(102.0, 101.0, 40.0, 0.1)
        ]));
        // Small frames: the crop would not be shrunk less.
        assert!(plan(&[face(10.0, 10.0, 20.0, 0.1)], &p, &cfg, 320, 180, 1.0, 160).is_empty());
        assert!(plan(
            &[face(10.0, 10.0, 20.0, 0.1)],
            &p,
            &ZoomConfig::off(),
            1280,
            720,
            4.0,
            160
        )
        .is_empty());
    }

    #[test]
    fn nearby_candidates_share_a_window_and_the_count_is_capped() {
        let p = faces_policy();
        let cfg = ZoomConfig::default();
        let dets = [
            face(100.0, 100.0, 30.0, 0.2),
            face(150.0, 120.0, 30.0, 0.1),
            face(900.0, 500.0, 30.0, 0.15),
            face(600.0, 300.0, 30.0, 0.12),
        ];
        let crops = plan(&dets, &p, &cfg, 1280, 720, 4.0, 160);
        assert_eq!(crops.len(), 2, "{crops:?}");
        // Highest first: the 0.2 one, which the 0.1 one joins; then 0.15.
        assert_eq!(crops[0].candidates.len(), 2);
        assert_eq!(crops[1].candidates[0].score, 0.15);
        // Only detections on a candidate answer it.
        let c = &crops[1];
        assert!(c.confirms(&face(905.0, 498.0, 36.0, 0.6), 1280, 720));
        assert!(!c.confirms(&face(1000.0, 600.0, 40.0, 0.6), 1280, 720));
        // Cut off at the crop's edge inside the frame: not an answer.
        let mut cut = face(905.0, 498.0, 36.0, 0.6);
        cut.bbox.x0 = c.x as f32;
        assert!(!c.confirms(&cut, 1280, 720));
        let back = crops[1].fallback(&p);
        assert!(
            back.iter().all(|d| p.accepts(d)),
            "a failed look masks its candidates"
        );
    }

    #[test]
    fn config_is_checked() {
        assert!(ZoomConfig::default().validate().is_ok());
        assert!(ZoomConfig::off().validate().is_ok());
        assert!(!ZoomConfig::off().enabled());
        let bad = ZoomConfig {
            factor: 0.5,
            ..ZoomConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("detector.zoom.factor"));
        let bad = ZoomConfig {
            input: 100,
            ..ZoomConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
