//! Multi-object tracker over detector boxes (no pixels): Kalman prediction,
//! Hungarian IoU association, confidence decay and a small lifecycle.
//!
//! Censoring wants recall, so every live track is predicted, tentative ones
//! included, and a track that stops being detected keeps being censored
//! (coasting) while its confidence decays, for at most `max_coast_frames`.

use std::collections::VecDeque;

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;
use serde::Deserialize;

use super::kalman::{KalmanFilter, KalmanParams, KalmanState};
use crate::error::ConfigError;
use crate::frame::{BBox, Detection};

/// Frames an ended track is kept for predictions of earlier frames.
const REMOVED_MEMORY: u64 = 64;

/// Updates a track remembers (more than the longest lookahead).
const HISTORY: usize = 40;

/// IoU is scaled to integers for the assignment solver.
const COST_SCALE: f32 = 1_000_000.0;

/// Tracker tuning (TOML section; missing keys take the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct TrackerConfig {
    /// Confidence multiplier per frame without a matching detection.
    pub decay: f32,
    /// Frames a track may go undetected before it is removed.
    pub max_coast_frames: u32,
    /// A track whose confidence falls below this is removed. 0 (the default)
    /// leaves persistence to `max_coast_frames` alone, so a region found once
    /// at a low score stays masked as long as one found at a high score.
    pub min_confidence: f32,
    /// Matched updates needed before a track is confirmed.
    pub min_hits: u32,
    /// Track/detection pairs with a lower IoU are never matched.
    pub iou_gate: f32,
    /// Predicted boxes grow by this many standard deviations of their edges.
    pub uncertainty_sigmas: f32,
    /// Only detections of a track's own class can continue it. Off by
    /// default: every detection the tracker sees is of a censored class,
    /// and the detector flips between close classes (FACE_FEMALE and
    /// FACE_MALE on a half-visible face), which would otherwise leave a
    /// second, coasting track on the same region.
    pub class_aware: bool,
    /// Added to a cross-class pair's cost (1 - IoU) when `class_aware` is
    /// off, so a detection of the track's own class is preferred.
    pub class_penalty: f32,
    /// Kalman noise tuning.
    pub kalman: KalmanParams,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            decay: 0.85,
            max_coast_frames: 15,
            min_confidence: 0.0,
            min_hits: 2,
            iou_gate: 0.05,
            uncertainty_sigmas: 2.0,
            class_aware: false,
            class_penalty: 0.5,
            kalman: KalmanParams::default(),
        }
    }
}

impl TrackerConfig {
    /// Rejects values that would make tracks immortal or masks shrink.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: f32, reason: &str| ConfigError::Value {
            key: format!("track.{key}"),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return Err(bad("decay", self.decay, "must be in (0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(bad(
                "min_confidence",
                self.min_confidence,
                "must be in [0, 1]",
            ));
        }
        if !(0.0..=1.0).contains(&self.iou_gate) {
            return Err(bad("iou_gate", self.iou_gate, "must be in [0, 1]"));
        }
        if !(self.uncertainty_sigmas >= 0.0 && self.uncertainty_sigmas.is_finite()) {
            return Err(bad(
                "uncertainty_sigmas",
                self.uncertainty_sigmas,
                "must be finite and >= 0",
            ));
        }
        let k = &self.kalman;
        for (key, v) in [
            ("kalman.std_weight_position", k.std_weight_position),
            ("kalman.std_weight_velocity", k.std_weight_velocity),
            ("kalman.init_position_factor", k.init_position_factor),
            ("kalman.init_velocity_factor", k.init_velocity_factor),
            ("kalman.min_side", k.min_side),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(bad(key, v, "must be finite and > 0"));
            }
        }
        Ok(())
    }
}

/// Where a track is in its life. Every state but `Removed` is predicted and
/// censored: the state says how sure the tracker is, never whether a region
/// is masked (censor first: a region found once stays masked through misses
/// for `max_coast_frames`, tentative or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackState {
    /// Seen fewer than `min_hits` times: possibly a false positive, but
    /// censored all the same (over-censoring is measured, a leak is not
    /// allowed); a tentative track that misses stays tentative while it
    /// coasts.
    Tentative,
    /// Seen at least `min_hits` times and matched on its latest update.
    Confirmed,
    /// Was confirmed but missed its recent detections; still predicted and
    /// censored while it coasts.
    Coasting,
    /// Dropped (coasted too long or confidence too low). Kept until the next
    /// update so callers can observe the end; never predicted.
    Removed,
}

/// One tracked object.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    /// Unique for the tracker's lifetime (not reused after `reset`).
    pub id: u64,
    pub class: u8,
    pub state: TrackState,
    /// Detector score, decayed by `decay` per frame without a match.
    pub confidence: f32,
    /// Matched detections, including the one that started the track.
    pub hits: u32,
    /// Frames since the last matched detection.
    pub misses: u32,
    /// Frame of the latest update that touched this track.
    pub last_frame: u64,
    /// Frame of the latest matched detection, and whether that detection
    /// was strong (passes the policy, so it is masked by itself).
    pub last_hit: u64,
    pub last_hit_strong: bool,
    /// The region's full size as seen before (width, height): it follows
    /// detections that grow, or that keep the region's shape, but not one
    /// that loses a side (the region partly hidden or cut off), so a mask
    /// can make up the part the detector no longer sees.
    pub extent: (f32, f32),
    /// The update that removed it (`u64::MAX` while it lives).
    pub removed_at: u64,
    kalman: KalmanState,
    /// The state after each of its latest updates, oldest first: a frame
    /// held back for lookahead is masked as it would have been then.
    history: VecDeque<Snapshot>,
}

/// A track as it stood after the update of `frame`.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    frame: u64,
    kalman: KalmanState,
    /// Matched on that frame, and by a strong detection.
    hit: bool,
    strong: bool,
    extent: (f32, f32),
}

impl Track {
    fn remember(&mut self, frame: u64, hit: bool, strong: bool) {
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Snapshot {
            frame,
            kalman: self.kalman,
            hit,
            strong,
            extent: self.extent,
        });
    }
}

impl Track {
    /// Filtered box at `last_frame`.
    pub fn bbox(&self) -> BBox {
        self.kalman.bbox()
    }

    /// Filter state at `last_frame`.
    pub fn kalman(&self) -> &KalmanState {
        &self.kalman
    }
}

/// A track extrapolated to a frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackPrediction {
    pub id: u64,
    pub class: u8,
    /// `raw_bbox` widened by `uncertainty_sigmas` edge standard deviations.
    pub bbox: BBox,
    /// Predicted mean box.
    pub raw_bbox: BBox,
    /// Confidence decayed to the predicted frame.
    pub confidence: f32,
    pub state: TrackState,
    /// A strong detection of this very frame continued the track: the
    /// frame's own mask already covers it.
    pub covered: bool,
    /// How much smaller than the region's remembered extent `raw_bbox` is
    /// (width, height; 0 when not): the part a partly hidden region may
    /// show beyond its detection, on either side.
    pub shortfall: (f32, f32),
}

/// The tracker of one stream.
#[derive(Clone, Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    kf: KalmanFilter,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Tracker {
            cfg,
            kf: KalmanFilter::new(cfg.kalman),
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// All tracks, including those removed by the latest update.
    pub fn tracks(&self) -> impl Iterator<Item = &Track> {
        self.tracks.iter()
    }

    /// Forgets every track (hard cut, new stream). Ids keep increasing.
    pub fn reset(&mut self) {
        self.tracks.clear();
    }

    /// Frames elapsed for `t`, and whether `frame` is older than its state.
    fn gap(t: &Track, frame: u64) -> (u32, bool) {
        let stale = frame < t.last_frame;
        let dt = frame.saturating_sub(t.last_frame);
        (u32::try_from(dt).unwrap_or(u32::MAX), stale)
    }

    /// Whether a track that goes `dt` more frames unmatched is still alive.
    fn survives(&self, t: &Track, dt: u32) -> bool {
        let misses = t.misses.saturating_add(dt);
        misses <= self.cfg.max_coast_frames
            && decayed(t.confidence, self.cfg.decay, dt) >= self.cfg.min_confidence
    }

    /// Feeds the detections found on `frame`, every one strong enough to
    /// start a track. See [`Tracker::observe`].
    pub fn update(&mut self, frame: u64, detections: &[Detection]) {
        self.observe(frame, detections, &[]);
    }

    /// Feeds the detections found on `frame`: `strong` ones (at the policy's
    /// threshold) continue or start tracks, `weak` ones (under it, at the
    /// keep threshold) only continue a track, so a region whose score sinks
    /// stays masked (hysteresis). Results may arrive out of order: a track
    /// already updated past `frame` is not moved (dt = 0), and a detection
    /// that matches it only refreshes its confidence.
    pub fn observe(&mut self, frame: u64, strong: &[Detection], weak: &[Detection]) {
        // Ended tracks are kept a while: a frame held back for lookahead
        // is censored after later updates, and must still see the tracks
        // that were alive on it.
        self.tracks.retain(|t| {
            t.state != TrackState::Removed || frame.saturating_sub(t.removed_at) <= REMOVED_MEMORY
        });

        // A track whose gap alone outlives its persistence ends before
        // association, which also keeps dt (and so the covariance) bounded.
        for i in 0..self.tracks.len() {
            let (dt, _) = Self::gap(&self.tracks[i], frame);
            let t = &self.tracks[i];
            if t.state != TrackState::Removed && !self.survives(t, dt) {
                self.tracks[i].state = TrackState::Removed;
                self.tracks[i].removed_at = frame;
            }
        }

        let dets: Vec<&Detection> = strong.iter().filter(|d| is_usable(d)).collect();
        let n_strong = dets.len();
        let dets: Vec<&Detection> = dets
            .into_iter()
            .chain(weak.iter().filter(|d| is_usable(d)))
            .collect();
        let live: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].state != TrackState::Removed)
            .collect();
        let predicted: Vec<KalmanState> = live
            .iter()
            .map(|&i| {
                let (dt, _) = Self::gap(&self.tracks[i], frame);
                self.kf.predict(&self.tracks[i].kalman, dt as f32)
            })
            .collect();

        let pairs = self.associate(&live, &predicted, &dets);
        let mut det_used = vec![false; dets.len()];
        let mut track_matched = vec![None; live.len()];
        for (ti, di) in pairs {
            if let (Some(slot), Some(used)) = (track_matched.get_mut(ti), det_used.get_mut(di)) {
                *slot = Some(di);
                *used = true;
            }
        }

        for (li, &i) in live.iter().enumerate() {
            let (dt, stale) = Self::gap(&self.tracks[i], frame);
            let pred = predicted[li];
            let matched = track_matched[li].and_then(|di| Some((dets.get(di).copied()?, di)));
            let cfg = self.cfg;
            let t = &mut self.tracks[i];
            match (matched, stale) {
                (Some((d, _)), true) => {
                    t.confidence = t.confidence.max(d.score);
                }
                (Some((d, di)), false) => {
                    t.kalman = self.kf.update(&pred, d.bbox);
                    t.confidence = decayed(t.confidence, cfg.decay, dt).max(d.score);
                    t.hits = t.hits.saturating_add(1);
                    t.misses = 0;
                    t.last_frame = frame;
                    t.last_hit = frame;
                    t.last_hit_strong = di < n_strong;
                    t.class = d.class;
                    t.extent = next_extent(t.extent, &d.bbox);
                    t.state = if t.hits >= cfg.min_hits {
                        TrackState::Confirmed
                    } else {
                        TrackState::Tentative
                    };
                    t.remember(frame, true, di < n_strong);
                }
                (None, true) => {}
                (None, false) => {
                    t.kalman = pred;
                    t.confidence = decayed(t.confidence, cfg.decay, dt);
                    t.misses = t.misses.saturating_add(dt);
                    t.last_frame = frame;
                    t.remember(frame, false, false);
                    if t.state == TrackState::Confirmed && dt > 0 {
                        t.state = TrackState::Coasting;
                    }
                    if t.misses > cfg.max_coast_frames || t.confidence < cfg.min_confidence {
                        t.state = TrackState::Removed;
                        t.removed_at = frame;
                    }
                }
            }
        }

        for (d, used) in dets.iter().zip(det_used).take(n_strong) {
            if !used {
                self.start(frame, d);
            }
        }
    }

    fn start(&mut self, frame: u64, d: &Detection) {
        let state = if self.cfg.min_hits <= 1 {
            TrackState::Confirmed
        } else {
            TrackState::Tentative
        };
        self.tracks.push(Track {
            id: self.next_id,
            class: d.class,
            state,
            confidence: d.score,
            hits: 1,
            misses: 0,
            last_frame: frame,
            last_hit: frame,
            last_hit_strong: true,
            extent: (d.bbox.width(), d.bbox.height()),
            removed_at: u64::MAX,
            kalman: self.kf.initiate(d.bbox),
            history: VecDeque::new(),
        });
        if let Some(t) = self.tracks.last_mut() {
            t.remember(frame, true, true);
        }
        self.next_id = self.next_id.wrapping_add(1);
    }

    /// Minimum-cost assignment with cost `1 - IoU`; pairs under the gate (or
    /// of different classes) cost more than any allowed pair and are dropped
    /// afterwards. Returns (index into `live`, index into `dets`).
    fn associate(
        &self,
        live: &[usize],
        predicted: &[KalmanState],
        dets: &[&Detection],
    ) -> Vec<(usize, usize)> {
        let (nt, nd) = (live.len(), dets.len());
        if nt == 0 || nd == 0 {
            return Vec::new();
        }
        let forbidden = ((2.0 + self.cfg.class_penalty.max(0.0)) * COST_SCALE) as i64;
        let n = nt.max(nd);
        let mut iou = vec![0.0f32; nt * nd];
        let mut costs = Matrix::new(n, n, forbidden);
        for (ti, (&i, p)) in live.iter().zip(predicted).enumerate() {
            let tb = p.bbox();
            let class = self.tracks[i].class;
            for (di, d) in dets.iter().enumerate() {
                let other = d.class != class;
                if self.cfg.class_aware && other {
                    continue;
                }
                let v = tb.iou(&d.bbox);
                if v.is_finite() && v > 0.0 && v >= self.cfg.iou_gate {
                    iou[ti * nd + di] = v;
                    let penalty = if other { self.cfg.class_penalty } else { 0.0 };
                    costs[(ti, di)] = ((1.0 - v + penalty) * COST_SCALE).round() as i64;
                }
            }
        }
        let (_, assignment) = kuhn_munkres_min(&costs);
        assignment
            .into_iter()
            .enumerate()
            .filter(|&(ti, di)| ti < nt && di < nd && iou[ti * nd + di] > 0.0)
            .collect()
    }

    /// Every track alive on `frame` extrapolated to it (never mutates). A
    /// track that `update(frame, &[])` would remove is left out, so masks
    /// end exactly when the track does. A frame older than a track's state
    /// (a frame held back for lookahead, or a late result) gets the motion
    /// run backwards, with the uncertainty grown as forwards: a track
    /// first seen a few frames later covers where the region was coming
    /// from. A track ended after `frame` still counts there.
    pub fn predict(&self, frame: u64) -> Vec<TrackPrediction> {
        self.tracks
            .iter()
            .filter(|t| t.state != TrackState::Removed || frame < t.removed_at)
            .filter_map(|t| self.predict_track(t, frame))
            .collect()
    }

    fn predict_track(&self, t: &Track, frame: u64) -> Option<TrackPrediction> {
        let sigmas = self.cfg.uncertainty_sigmas;
        let max_coast = u64::from(self.cfg.max_coast_frames);
        // The state to extrapolate from: the current one, or for a frame
        // in the past the one the track had then (a frame before the track
        // began runs the first one backwards).
        let (from, last_hit, strong_hit, extent) = if frame >= t.last_frame {
            (t.last_frame, t.last_hit, t.last_hit_strong, t.extent)
        } else {
            let then = t.history.iter().rev().find(|s| s.frame <= frame);
            match then {
                Some(s) => {
                    let hit = t
                        .history
                        .iter()
                        .rev()
                        .filter(|h| h.frame <= frame)
                        .find(|h| h.hit);
                    (
                        s.frame,
                        hit.map_or(s.frame, |h| h.frame),
                        s.hit && s.strong,
                        s.extent,
                    )
                }
                None => {
                    let first = t.history.front();
                    let f = first.map_or(t.last_frame, |s| s.frame);
                    (f, frame, false, first.map_or(t.extent, |s| s.extent))
                }
            }
        };
        let state = if from == t.last_frame {
            &t.kalman
        } else {
            &t.history.iter().find(|s| s.frame == from)?.kalman
        };
        let dt = frame.saturating_sub(from);
        let alive = frame.saturating_sub(last_hit) <= max_coast
            && decayed(
                t.confidence,
                self.cfg.decay,
                u32::try_from(dt).unwrap_or(u32::MAX),
            ) >= self.cfg.min_confidence;
        if !alive {
            return None;
        }
        let s = self
            .kf
            .extrapolate(state, (frame as f64 - from as f64) as f32);
        if !s.is_finite() {
            return None;
        }
        let raw = s.bbox();
        let (sx, sy) = s.edge_std();
        Some(TrackPrediction {
            id: t.id,
            class: t.class,
            bbox: raw.padded(sigmas * sx, sigmas * sy),
            raw_bbox: raw,
            confidence: decayed(
                t.confidence,
                self.cfg.decay,
                u32::try_from(dt).unwrap_or(u32::MAX),
            ),
            // Removed later, it was coasting on this frame.
            state: if t.state == TrackState::Removed {
                TrackState::Coasting
            } else {
                t.state
            },
            covered: last_hit == frame && strong_hit,
            shortfall: (
                (extent.0 - raw.width()).max(0.0),
                (extent.1 - raw.height()).max(0.0),
            ),
        })
    }
}

/// A region's remembered extent after a detection `b`: a detection at
/// least as large in both sides, or of about the same shape (the region
/// moved nearer or away), is the region; one that lost a side is the
/// region partly hidden, and leaves the extent as it was.
fn next_extent(extent: (f32, f32), b: &BBox) -> (f32, f32) {
    let (w, h) = (b.width(), b.height());
    let (ew, eh) = extent;
    if !(w > 0.0 && h > 0.0 && ew > 0.0 && eh > 0.0) {
        return (w.max(0.0), h.max(0.0));
    }
    if w >= ew && h >= eh {
        return (w, h);
    }
    let shape = (w / h) / (ew / eh);
    if (shape - 1.0).abs() <= EXTENT_SHAPE_TOLERANCE {
        // Follows a change of scale, smoothed.
        (0.7 * ew + 0.3 * w, 0.7 * eh + 0.3 * h)
    } else {
        extent
    }
}

/// How far a detection's aspect ratio may stray from the remembered one
/// and still be the whole region.
const EXTENT_SHAPE_TOLERANCE: f32 = 0.15;

fn decayed(confidence: f32, decay: f32, dt: u32) -> f32 {
    confidence * decay.powi(i32::try_from(dt).unwrap_or(i32::MAX))
}

/// Non-finite boxes or scores would poison a track's state.
fn is_usable(d: &Detection) -> bool {
    let b = &d.bbox;
    [b.x0, b.y0, b.x1, b.y1, d.score]
        .iter()
        .all(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Synthetic ground truth: a box with per-axis velocity and acceleration
    /// (pixels per frame, per frame squared) starting at frame 0.
    #[derive(Clone, Copy)]
    struct Traj {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        vx: f32,
        vy: f32,
        ax: f32,
        ay: f32,
        class: u8,
    }

    impl Traj {
        fn new(x: f32, y: f32, w: f32, h: f32) -> Self {
            Traj {
                x,
                y,
                w,
                h,
                vx: 0.0,
                vy: 0.0,
                ax: 0.0,
                ay: 0.0,
                class: 3,
            }
        }
        fn vel(mut self, vx: f32, vy: f32) -> Self {
            self.vx = vx;
            self.vy = vy;
            self
        }
        fn acc(mut self, ax: f32, ay: f32) -> Self {
            self.ax = ax;
            self.ay = ay;
            self
        }
        fn at(&self, frame: u64) -> BBox {
            let t = frame as f32;
            BBox::from_xywh(
                self.x + self.vx * t + 0.5 * self.ax * t * t,
                self.y + self.vy * t + 0.5 * self.ay * t * t,
                self.w,
                self.h,
            )
        }
        fn det(&self, frame: u64) -> Detection {
            Detection {
                bbox: self.at(frame),
                class: self.class,
                score: 0.9,
            }
        }
    }

    fn contains(outer: &BBox, inner: &BBox) -> bool {
        outer.x0 <= inner.x0 && outer.y0 <= inner.y0 && outer.x1 >= inner.x1 && outer.y1 >= inner.y1
    }

    fn only(preds: &[TrackPrediction]) -> TrackPrediction {
        assert_eq!(preds.len(), 1, "expected one prediction, got {preds:?}");
        preds[0]
    }

    fn live(t: &Tracker) -> Vec<&Track> {
        t.tracks()
            .filter(|t| t.state != TrackState::Removed)
            .collect()
    }

    #[test]
    fn fresh_detection_is_covered_at_once() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let d = Traj::new(100.0, 100.0, 40.0, 60.0).det(0);
        tr.update(0, &[d]);
        let p = only(&tr.predict(0));
        assert_eq!(p.state, TrackState::Tentative);
        assert_eq!(p.class, d.class);
        assert!(contains(&p.bbox, &d.bbox));
        assert!(
            p.bbox.area() > d.bbox.area(),
            "widened by the initial uncertainty"
        );
        assert!(contains(&p.bbox, &p.raw_bbox));
        assert!((p.confidence - 0.9).abs() < 1e-6);
    }

    #[test]
    fn confirmed_after_min_hits() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let g = Traj::new(10.0, 10.0, 50.0, 50.0).vel(2.0, 0.0);
        tr.update(0, &[g.det(0)]);
        assert_eq!(live(&tr)[0].state, TrackState::Tentative);
        tr.update(1, &[g.det(1)]);
        let t = live(&tr)[0];
        assert_eq!((t.state, t.hits, t.misses), (TrackState::Confirmed, 2, 0));
    }

    #[test]
    fn constant_velocity_five_frames_ahead() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let g = Traj::new(50.0, 80.0, 60.0, 90.0).vel(4.0, -1.5);
        for f in 0..15 {
            tr.update(f, &[g.det(f)]);
        }
        let truth = g.at(19);
        let p = only(&tr.predict(19));
        let iou = p.raw_bbox.iou(&truth);
        assert!(iou > 0.7, "iou {iou}");
        assert!(contains(&p.bbox, &truth), "{:?} vs {truth:?}", p.bbox);
        // Without motion the old box would be far off: the velocity matters.
        assert!(g.at(14).iou(&truth) < 0.7);
    }

    #[test]
    fn acceleration_stays_inside_widened_box() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let g = Traj::new(20.0, 40.0, 80.0, 80.0)
            .vel(1.0, 0.5)
            .acc(0.3, 0.1);
        for f in 0..40 {
            tr.update(f, &[g.det(f)]);
            if f < 10 {
                continue;
            }
            for k in 1..=3 {
                let truth = g.at(f + k);
                let p = only(&tr.predict(f + k));
                assert!(
                    contains(&p.bbox, &truth),
                    "f {f} k {k}: {:?} vs {truth:?}",
                    p.bbox
                );
            }
        }
        assert_eq!(live(&tr).len(), 1);
        assert_eq!(live(&tr)[0].id, 1);
    }

    #[test]
    fn stop_and_start_keeps_identity_and_coverage() {
        let mut tr = Tracker::new(TrackerConfig::default());
        // Moves 5 px/frame, stops dead at frame 20, starts again at frame 35.
        let pos = |f: u64| -> BBox {
            let x = match f {
                0..20 => 5.0 * f as f32,
                20..35 => 100.0,
                _ => 100.0 + 5.0 * (f - 35) as f32,
            };
            BBox::from_xywh(x, 50.0, 70.0, 70.0)
        };
        for f in 0..60 {
            let d = Detection {
                bbox: pos(f),
                class: 1,
                score: 0.8,
            };
            if f > 0 {
                let p = only(&tr.predict(f));
                assert!(
                    contains(&p.bbox, &d.bbox),
                    "frame {f}: {:?} vs {:?}",
                    p.bbox,
                    d.bbox
                );
            }
            tr.update(f, &[d]);
            let l = live(&tr);
            assert_eq!(l.len(), 1, "frame {f}");
            assert_eq!(l[0].id, 1);
        }
    }

    #[test]
    fn crossing_objects_keep_identities() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let a = Traj::new(0.0, 100.0, 60.0, 60.0).vel(6.0, 0.0);
        let b = Traj::new(300.0, 110.0, 60.0, 60.0).vel(-6.0, 0.0);
        tr.update(0, &[a.det(0), b.det(0)]);
        let id_near = |tr: &Tracker, bx: &BBox| -> u64 {
            live(tr)
                .into_iter()
                .max_by(|p, q| p.bbox().iou(bx).total_cmp(&q.bbox().iou(bx)))
                .map(|t| t.id)
                .unwrap_or(0)
        };
        let (ida, idb) = (id_near(&tr, &a.at(0)), id_near(&tr, &b.at(0)));
        assert_ne!(ida, idb);
        // They meet around frame 25; detections come in alternating order so
        // that the order of the list cannot carry the identity.
        for f in 1..50 {
            let dets = if f % 2 == 0 {
                [a.det(f), b.det(f)]
            } else {
                [b.det(f), a.det(f)]
            };
            tr.update(f, &dets);
            assert_eq!(live(&tr).len(), 2, "frame {f}");
            assert_eq!(id_near(&tr, &a.at(f)), ida, "frame {f}");
            assert_eq!(id_near(&tr, &b.at(f)), idb, "frame {f}");
        }
        assert!(a.at(49).x0 > b.at(49).x1, "they did cross");
    }

    #[test]
    fn missed_streak_coasts_decays_and_reassociates() {
        let cfg = TrackerConfig::default();
        let mut tr = Tracker::new(cfg);
        let g = Traj::new(100.0, 100.0, 80.0, 80.0).vel(3.0, 1.0);
        for f in 0..10 {
            tr.update(f, &[g.det(f)]);
        }
        let c0 = live(&tr)[0].confidence;
        for n in 1..=8u64 {
            let f = 9 + n;
            tr.update(f, &[]);
            let t = live(&tr)[0];
            assert_eq!(t.state, TrackState::Coasting);
            assert_eq!(t.misses, n as u32);
            let want = c0 * cfg.decay.powi(n as i32);
            assert!(
                (t.confidence - want).abs() < 1e-5,
                "{} vs {want}",
                t.confidence
            );
            let p = only(&tr.predict(f));
            assert_eq!(p.id, 1);
            assert!(
                p.raw_bbox.iou(&g.at(f)) > 0.7,
                "coasting follows the motion"
            );
        }
        tr.update(18, &[g.det(18)]);
        let l = live(&tr);
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].id, l[0].state, l[0].misses),
            (1, TrackState::Confirmed, 0)
        );
        assert!((l[0].confidence - 0.9).abs() < 1e-6);
    }

    #[test]
    fn streak_past_max_coast_removes_track() {
        let cfg = TrackerConfig::default();
        let mut tr = Tracker::new(cfg);
        // A static box, so decay alone would allow 0.9*0.85^13 > 0.1 and the
        // frame limit is what ends it.
        let g = Traj::new(100.0, 100.0, 80.0, 80.0);
        for f in 0..5 {
            tr.update(f, &[g.det(f)]);
        }
        let last = 4 + cfg.max_coast_frames as u64;
        for f in 5..=last {
            tr.update(f, &[]);
            assert_eq!(live(&tr).len(), 1, "frame {f}");
        }
        assert_eq!(tr.predict(last + 1).len(), 0, "predict ends with the track");
        tr.update(last + 1, &[]);
        let all: Vec<_> = tr.tracks().collect();
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].state,
            TrackState::Removed,
            "observable for one update"
        );
        assert!(tr.predict(last + 1).is_empty());
        tr.update(last + 2, &[g.det(last + 2)]);
        let l = live(&tr);
        assert_eq!(l.len(), 1);
        assert_ne!(l[0].id, 1);
        assert_eq!(l[0].state, TrackState::Tentative);
        // Ended, it still covers the frames it was alive on (a frame held
        // back for lookahead is censored after later updates).
        let back: Vec<u64> = tr.predict(last).iter().map(|p| p.id).collect();
        assert!(back.contains(&1), "{back:?}");
        assert!(tr.predict(last + 1).iter().all(|p| p.id != 1));
    }

    #[test]
    fn one_weak_hit_stays_predicted_for_the_whole_persistence_window() {
        let cfg = TrackerConfig::default();
        let mut tr = Tracker::new(cfg);
        let mut d = Traj::new(200.0, 100.0, 60.0, 60.0).det(0);
        d.score = 0.26;
        tr.update(0, &[d]);
        assert!(
            only(&tr.predict(0)).covered,
            "its own detection masks frame 0"
        );
        for f in 1..=cfg.max_coast_frames as u64 {
            tr.update(f, &[]);
            let p = only(&tr.predict(f));
            assert_eq!(p.state, TrackState::Tentative, "frame {f}");
            assert!(!p.covered, "frame {f}: nothing else masks it");
            assert!(contains(&p.bbox, &d.bbox), "frame {f}");
        }
        tr.update(cfg.max_coast_frames as u64 + 1, &[]);
        assert!(tr.predict(cfg.max_coast_frames as u64 + 1).is_empty());
    }

    #[test]
    fn a_region_that_loses_a_side_keeps_its_extent_one_that_shrinks_whole_does_not() {
        let mut tr = Tracker::new(TrackerConfig::default());
        for f in 0..10 {
            tr.update(f, &[Traj::new(100.0, 100.0, 100.0, 100.0).det(f)]);
        }
        assert_eq!(only(&tr.predict(9)).shortfall, (0.0, 0.0));
        // The bottom 30% goes behind something: the detection is 100x70.
        for f in 10..30 {
            tr.update(f, &[Traj::new(100.0, 100.0, 100.0, 70.0).det(f)]);
        }
        let p = only(&tr.predict(29));
        assert!(p.shortfall.1 > 25.0, "{:?}", p.shortfall);
        assert!(p.shortfall.0 < 1.0, "{:?}", p.shortfall);
        // A region moving away shrinks whole: the extent follows it.
        let mut tr = Tracker::new(TrackerConfig::default());
        for f in 0..40u64 {
            let s = 100.0 - f as f32;
            tr.update(f, &[Traj::new(100.0, 100.0, s, s).det(f)]);
        }
        let p = only(&tr.predict(39));
        assert!(
            p.shortfall.0 < 3.0 && p.shortfall.1 < 3.0,
            "{:?}",
            p.shortfall
        );
    }

    #[test]
    fn weak_detections_continue_tracks_but_never_start_one() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let g = Traj::new(100.0, 100.0, 60.0, 60.0).vel(3.0, 0.0);
        let mut weak = g.det(1);
        weak.score = 0.12;
        // Weak alone: no track.
        tr.observe(0, &[], &[weak]);
        assert!(tr.predict(0).is_empty());
        tr.observe(0, &[g.det(0)], &[]);
        for f in 1..40u64 {
            let mut w = g.det(f);
            w.score = 0.12;
            tr.observe(f, &[], &[w]);
            let p = only(&tr.predict(f));
            assert_eq!(p.id, 1, "frame {f}");
            assert!(!p.covered, "frame {f}: a weak hit has no mask of its own");
            assert!(contains(&p.bbox, &g.at(f)), "frame {f}");
        }
        let t = live(&tr)[0];
        assert_eq!((t.misses, t.state), (0, TrackState::Confirmed));
        // A strong hit covers its frame.
        tr.observe(40, &[g.det(40)], &[]);
        assert!(only(&tr.predict(40)).covered);
        assert!(!only(&tr.predict(41)).covered);
    }

    #[test]
    fn low_confidence_removes_track() {
        let mut tr = Tracker::new(TrackerConfig {
            min_confidence: 0.1,
            ..TrackerConfig::default()
        });
        let mut d = Traj::new(0.0, 0.0, 30.0, 30.0).det(0);
        d.score = 0.3;
        tr.update(0, &[d]);
        // 0.3 * 0.85^7 = 0.096 < 0.1.
        for f in 1..=6 {
            tr.update(f, &[]);
            assert_eq!(live(&tr).len(), 1, "frame {f}");
        }
        tr.update(7, &[]);
        assert!(live(&tr).is_empty());
    }

    #[test]
    fn out_of_order_update_does_not_move_back() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let g = Traj::new(0.0, 0.0, 50.0, 50.0).vel(5.0, 0.0);
        for f in 0..10 {
            tr.update(f, &[g.det(f)]);
        }
        let before = live(&tr)[0].clone();
        tr.update(3, &[g.det(3)]);
        tr.update(2, &[]);
        let after = live(&tr);
        assert_eq!(after.len(), 1, "the stale detection did not spawn a track");
        assert_eq!(after[0].last_frame, 9);
        assert_eq!(after[0].bbox(), before.bbox());
        assert_eq!(after[0].misses, 0);
        // Predicting into the past runs the motion back, widened.
        let p = only(&tr.predict(1));
        assert!(
            p.raw_bbox.iou(&g.at(1)) > 0.8,
            "{:?} vs {:?}",
            p.raw_bbox,
            g.at(1)
        );
        assert!(contains(&p.bbox, &g.at(1)));
        assert!(p.bbox.width() > only(&tr.predict(9)).bbox.width());
        // And the track continues normally afterwards.
        tr.update(10, &[g.det(10)]);
        assert_eq!(live(&tr)[0].id, before.id);
        assert_eq!(live(&tr)[0].hits, before.hits + 1);
    }

    #[test]
    fn widening_grows_while_coasting() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let g = Traj::new(100.0, 100.0, 60.0, 60.0).vel(2.0, 2.0);
        for f in 0..10 {
            tr.update(f, &[g.det(f)]);
        }
        let margin = |p: &TrackPrediction| p.raw_bbox.x0 - p.bbox.x0;
        let mut prev = margin(&only(&tr.predict(9)));
        assert!(prev > 0.0);
        for f in 10..18 {
            tr.update(f, &[]);
            let m = margin(&only(&tr.predict(f)));
            assert!(m > prev, "frame {f}: {m} <= {prev}");
            prev = m;
        }
        // A detection shrinks it again.
        tr.update(18, &[g.det(18)]);
        assert!(margin(&only(&tr.predict(18))) < prev);
    }

    #[test]
    fn classes_and_gate_prevent_association() {
        let mut tr = Tracker::new(TrackerConfig {
            class_aware: true,
            ..TrackerConfig::default()
        });
        let g = Traj::new(0.0, 0.0, 50.0, 50.0);
        tr.update(0, &[g.det(0)]);
        let mut other = g.det(1);
        other.class = 7;
        tr.update(1, &[other]);
        assert_eq!(live(&tr).len(), 2, "another class starts its own track");
        let far = Traj::new(500.0, 500.0, 50.0, 50.0).det(2);
        tr.update(2, &[far]);
        assert_eq!(live(&tr).len(), 3, "no overlap: no association");

        let mut blind = Tracker::new(TrackerConfig::default());
        blind.update(0, &[g.det(0)]);
        blind.update(1, &[other]);
        assert_eq!(live(&blind).len(), 1, "a class flip continues the track");
        assert_eq!((live(&blind)[0].hits, live(&blind)[0].class), (2, 7));
        // With both on offer, the track's own class (now 7) wins over a
        // better IoU.
        let mut own = g.det(2);
        own.bbox = BBox::from_xywh(4.0, 4.0, 50.0, 50.0);
        own.class = 7;
        let flip = g.det(2);
        blind.update(2, &[flip, own]);
        assert_eq!(live(&blind).len(), 2);
        let t = live(&blind)
            .into_iter()
            .find(|t| t.id == 1)
            .map(|t| t.bbox());
        assert!(
            t.is_some_and(|b| b.x0 > 1.0),
            "continued by the own-class box: {t:?}"
        );
    }

    #[test]
    fn reset_forgets_tracks_and_keeps_ids_unique() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let g = Traj::new(0.0, 0.0, 50.0, 50.0);
        tr.update(0, &[g.det(0)]);
        tr.reset();
        assert_eq!(tr.tracks().count(), 0);
        assert!(tr.predict(1).is_empty());
        tr.update(0, &[g.det(0)]);
        assert_eq!(live(&tr)[0].id, 2);
    }

    #[test]
    fn non_finite_detections_are_ignored() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut d = Traj::new(0.0, 0.0, 50.0, 50.0).det(0);
        d.bbox.x1 = f32::NAN;
        tr.update(0, &[d]);
        assert_eq!(tr.tracks().count(), 0);
    }

    #[test]
    fn config_from_partial_toml_and_validation() {
        let cfg: TrackerConfig = toml::from_str("decay = 0.9\nmax_coast_frames = 15\n").unwrap();
        assert_eq!(cfg.decay, 0.9);
        assert_eq!(cfg.max_coast_frames, 15);
        assert_eq!(cfg.min_hits, TrackerConfig::default().min_hits);
        assert!(cfg.validate().is_ok());
        let bad = TrackerConfig {
            decay: 1.5,
            ..TrackerConfig::default()
        };
        assert!(
            matches!(bad.validate(), Err(ConfigError::Value { key, .. }) if key == "track.decay")
        );
        let bad = TrackerConfig {
            uncertainty_sigmas: f32::NAN,
            ..TrackerConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    fn arb_det() -> impl Strategy<Value = Detection> {
        (
            -50.0f32..700.0,
            -50.0f32..500.0,
            0.0f32..200.0,
            0.0f32..200.0,
            0u8..3,
            0.0f32..1.0,
        )
            .prop_map(|(x, y, w, h, class, score)| Detection {
                bbox: BBox::from_xywh(x, y, w, h),
                class,
                score,
            })
    }

    proptest! {
        /// Any order of frames and any boxes: no panic, finite widened boxes
        /// that contain the mean box, frames never move backwards, ids unique.
        #[test]
        fn arbitrary_streams_keep_invariants(
            steps in prop::collection::vec(
                (0u64..60, prop::collection::vec(arb_det(), 0..6)),
                1..40,
            )
        ) {
            let mut tr = Tracker::new(TrackerConfig::default());
            let mut last: std::collections::HashMap<u64, u64> = Default::default();
            for (frame, dets) in &steps {
                tr.update(*frame, dets);
                let mut ids = std::collections::HashSet::new();
                for t in tr.tracks() {
                    prop_assert!(ids.insert(t.id));
                    if let Some(prev) = last.insert(t.id, t.last_frame) {
                        prop_assert!(t.last_frame >= prev);
                    }
                    prop_assert!(t.kalman().is_finite());
                    prop_assert!(t.misses <= tr.config().max_coast_frames || t.state == TrackState::Removed);
                }
                for p in tr.predict(frame + 2) {
                    prop_assert!(p.state != TrackState::Removed);
                    prop_assert!(contains(&p.bbox, &p.raw_bbox));
                    prop_assert!([p.bbox.x0, p.bbox.y0, p.bbox.x1, p.bbox.y1].iter().all(|v| v.is_finite()));
                    prop_assert!(p.confidence >= tr.config().min_confidence);
                }
            }
        }
    }
}
