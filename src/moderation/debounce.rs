//! Per-frame masks to debounced events: one `exposure_started` when a region
//! of a censored class appears, one `exposure_ended` once it has been absent
//! for a grace period, and the same for fail-closed spans. Sans-IO: the
//! caller passes each released frame with its clocks; nothing here sleeps.

use super::event::{new_id, Event, EventBody, Exposure, Source};
use crate::detect::CLASSES;
use crate::frame::{BBox, Mask, MaskOrigin};
use crate::pipeline::{FrameRecord, Status};
use std::time::SystemTime;

/// A region on one frame, as the tracker sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    /// Index into `detect::CLASSES`.
    pub class: u8,
    /// The detector's score; `None` for a tracker prediction.
    pub score: Option<f32>,
    pub bbox: BBox,
    /// The Kalman tracker's id, when the caller has it; regions with one are
    /// grouped by it, the others by overlap with the last box.
    pub track: Option<u64>,
}

/// One released frame, built from a `FrameRecord` (`from_record`) or by hand.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameObservation {
    /// Stream time in seconds.
    pub pts_s: f64,
    pub status: Status,
    /// Why the frame failed closed.
    pub reason: Option<String>,
    /// Regions of censored classes on this frame (not full-frame masks).
    pub regions: Vec<Region>,
}

impl FrameObservation {
    /// From a sidecar record whose `pts` ticks `ticks_per_s` times a second
    /// (90 000 for RTP video). Detections come with their scores; masks of a
    /// class the detector did not see on this frame (predictions) come
    /// without, so a tracked region stays one exposure between detections.
    pub fn from_record(r: &FrameRecord, ticks_per_s: f64) -> FrameObservation {
        let mut regions: Vec<Region> = r
            .detections
            .iter()
            .map(|d| Region {
                class: d.class,
                score: Some(d.score),
                bbox: d.bbox,
                track: None,
            })
            .collect();
        let predicted = |m: &&Mask| {
            m.origin != MaskOrigin::FullFrame
                && usize::from(m.class) < CLASSES.len()
                && !r.detections.iter().any(|d| d.class == m.class)
        };
        regions.extend(r.masks.iter().filter(predicted).map(|m| Region {
            class: m.class,
            score: None,
            bbox: m.bbox,
            track: None,
        }));
        FrameObservation {
            pts_s: r.pts as f64 / ticks_per_s.max(1.0),
            status: r.status,
            reason: r.reason.clone(),
            regions,
        }
    }
}

/// How long a region may vanish and still be the same exposure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DebounceConfig {
    /// An exposure ends once absent for this much stream time; the same
    /// applies to a fail-closed span.
    pub grace_s: f64,
    /// Frames a region must be seen on before `exposure_started` (1 = at
    /// once); a one-frame false positive with 2 is never reported.
    pub min_frames: u64,
    /// Regions without a track id continue an exposure of the same class
    /// when their box overlaps its last box by at least this IoU.
    pub min_iou: f32,
}

impl Default for DebounceConfig {
    fn default() -> Self {
        DebounceConfig {
            grace_s: 1.0,
            min_frames: 1,
            min_iou: 0.1,
        }
    }
}

#[derive(Debug)]
struct Open {
    class: u8,
    track: Option<u64>,
    /// The start event's id, once it has been emitted.
    started: Option<String>,
    frames: u64,
    scored: u64,
    score_sum: f64,
    max_score: Option<f32>,
    first_pts: f64,
    last_pts: f64,
    last_box: BBox,
    peak_box: BBox,
    /// Stream time since last seen, counted on frames that are not
    /// fail-closed only.
    absent_s: f64,
}

impl Open {
    fn new(r: &Region, pts: f64) -> Open {
        let mut o = Open {
            class: r.class,
            track: r.track,
            started: None,
            frames: 0,
            scored: 0,
            score_sum: 0.0,
            max_score: None,
            first_pts: pts,
            last_pts: pts,
            last_box: r.bbox,
            peak_box: r.bbox,
            absent_s: 0.0,
        };
        o.add(r, pts);
        o
    }

    fn add(&mut self, r: &Region, pts: f64) {
        self.frames += 1;
        self.last_pts = pts;
        self.absent_s = 0.0;
        self.last_box = r.bbox;
        if let Some(s) = r.score {
            self.scored += 1;
            self.score_sum += f64::from(s);
            if self.max_score.is_none_or(|m| s > m) {
                self.max_score = Some(s);
                self.peak_box = r.bbox;
            }
        }
    }

    fn exposure(&self, id: String) -> Exposure {
        Exposure {
            exposure_id: id,
            class: CLASSES
                .get(usize::from(self.class))
                .map_or_else(|| format!("class {}", self.class), |c| c.to_string()),
            track: self.track,
            max_score: self.max_score,
            mean_score: (self.scored > 0).then(|| (self.score_sum / self.scored as f64) as f32),
            frames: self.frames,
            duration_s: self.last_pts - self.first_pts,
            first_pts: self.first_pts,
            last_pts: self.last_pts,
            peak_box: self.peak_box,
        }
    }
}

#[derive(Debug)]
struct FailClosed {
    reason: String,
    frames: u64,
    first_pts: f64,
    last_pts: f64,
}

/// Turns released frames into debounced exposure and fail-closed events for
/// one video track.
#[derive(Debug)]
pub struct ExposureTracker {
    cfg: DebounceConfig,
    source: Source,
    open: Vec<Open>,
    fail_closed: Option<FailClosed>,
    prev_pts: Option<f64>,
}

/// Float slack so that 30 frames of 1/30 s make a full second.
const EPS: f64 = 1e-6;

impl ExposureTracker {
    /// Who later events name (the broadcaster became known).
    pub fn set_source(&mut self, source: Source) {
        self.source = source;
    }

    pub fn new(source: Source, cfg: DebounceConfig) -> ExposureTracker {
        ExposureTracker {
            cfg,
            source,
            open: Vec::new(),
            fail_closed: None,
            prev_pts: None,
        }
    }

    /// Exposures currently open (started or not yet).
    pub fn open_exposures(&self) -> usize {
        self.open.len()
    }

    pub fn is_fail_closed(&self) -> bool {
        self.fail_closed.is_some()
    }

    /// Feeds one released frame, in stream order; returns the events it
    /// completes. `wall` stamps them.
    pub fn observe(&mut self, f: &FrameObservation, wall: SystemTime) -> Vec<Event> {
        let mut out = Vec::new();
        let pts = f.pts_s;
        if f.status == Status::FailClosed {
            match &mut self.fail_closed {
                Some(fc) => {
                    fc.frames += 1;
                    fc.last_pts = pts;
                }
                None => {
                    let reason = f.reason.clone().unwrap_or_else(|| "unknown".into());
                    out.push(self.event(
                        EventBody::FailClosedStarted {
                            reason: reason.clone(),
                        },
                        wall,
                        pts,
                    ));
                    self.fail_closed = Some(FailClosed {
                        reason,
                        frames: 1,
                        first_pts: pts,
                        last_pts: pts,
                    });
                }
            }
        } else if self
            .fail_closed
            .as_ref()
            .is_some_and(|fc| pts - fc.last_pts + EPS >= self.cfg.grace_s)
        {
            self.end_fail_closed(wall, &mut out);
        }

        let mut seen = vec![false; self.open.len()];
        for r in &f.regions {
            match self.match_open(r, &seen) {
                Some(i) => {
                    seen[i] = true;
                    self.open[i].add(r, pts);
                }
                None => {
                    self.open.push(Open::new(r, pts));
                    seen.push(true);
                }
            }
        }
        let min_frames = self.cfg.min_frames;
        for (o, _) in self
            .open
            .iter_mut()
            .zip(&seen)
            .filter(|(o, seen)| **seen && o.started.is_none() && o.frames >= min_frames)
        {
            // The start event's own id names the exposure.
            let id = new_id();
            let body = EventBody::ExposureStarted(o.exposure(id.clone()));
            let mut ev = Event::new(body, &self.source, wall, Some(pts));
            ev.id = id.clone();
            o.started = Some(id);
            out.push(ev);
        }
        // A fail-closed frame says nothing about what is in the picture, so
        // it neither continues nor ends an exposure.
        let step = self.prev_pts.map_or(0.0, |p| (pts - p).max(0.0));
        self.prev_pts = Some(pts);
        if f.status != Status::FailClosed {
            let grace = self.cfg.grace_s;
            let mut i = 0;
            while i < self.open.len() {
                if !seen[i] {
                    self.open[i].absent_s += step;
                }
                if self.open[i].absent_s + EPS >= grace {
                    let o = self.open.swap_remove(i);
                    seen.swap_remove(i);
                    out.extend(self.end_exposure(o, wall));
                } else {
                    i += 1;
                }
            }
        }
        out
    }

    /// Ends everything still open (the stream ended); call once.
    pub fn finish(&mut self, wall: SystemTime) -> Vec<Event> {
        let mut out = Vec::new();
        for o in std::mem::take(&mut self.open) {
            out.extend(self.end_exposure(o, wall));
        }
        self.end_fail_closed(wall, &mut out);
        out
    }

    fn match_open(&self, r: &Region, seen: &[bool]) -> Option<usize> {
        if let Some(t) = r.track {
            return self
                .open
                .iter()
                .position(|o| o.class == r.class && o.track == Some(t));
        }
        let mut best: Option<(usize, f32)> = None;
        for (i, o) in self.open.iter().enumerate() {
            if o.class != r.class || o.track.is_some() || seen.get(i) == Some(&true) {
                continue;
            }
            let iou = o.last_box.iou(&r.bbox);
            if iou >= self.cfg.min_iou && best.is_none_or(|(_, b)| iou > b) {
                best = Some((i, iou));
            }
        }
        best.map(|(i, _)| i)
    }

    fn end_exposure(&self, o: Open, wall: SystemTime) -> Option<Event> {
        let id = o.started.clone()?;
        Some(self.event(EventBody::ExposureEnded(o.exposure(id)), wall, o.last_pts))
    }

    fn end_fail_closed(&mut self, wall: SystemTime, out: &mut Vec<Event>) {
        if let Some(fc) = self.fail_closed.take() {
            out.push(self.event(
                EventBody::FailClosedEnded {
                    reason: fc.reason,
                    frames: fc.frames,
                    duration_s: fc.last_pts - fc.first_pts,
                },
                wall,
                fc.last_pts,
            ));
        }
    }

    fn event(&self, body: EventBody, wall: SystemTime, pts: f64) -> Event {
        Event::new(body, &self.source, wall, Some(pts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::class_index;
    use crate::frame::{Detection, MaskShape};
    use std::time::UNIX_EPOCH;

    const FPS: f64 = 30.0;

    fn face() -> u8 {
        class_index("FACE_FEMALE").unwrap()
    }

    fn region(class: u8, score: Option<f32>, x: f32, track: Option<u64>) -> Region {
        Region {
            class,
            score,
            bbox: BBox::new(x, 10.0, x + 50.0, 60.0),
            track,
        }
    }

    fn frame(n: u64, regions: Vec<Region>) -> FrameObservation {
        FrameObservation {
            pts_s: n as f64 / FPS,
            status: Status::Verified,
            reason: None,
            regions,
        }
    }

    fn wall(n: u64) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs_f64(n as f64 / FPS)
    }

    fn kinds(evs: &[Event]) -> Vec<&'static str> {
        evs.iter().map(Event::kind).collect()
    }

    fn run(t: &mut ExposureTracker, frames: &[FrameObservation]) -> Vec<Event> {
        let mut out = Vec::new();
        for (n, f) in frames.iter().enumerate() {
            out.extend(t.observe(f, wall(n as u64)));
        }
        out
    }

    #[test]
    fn flicker_is_one_exposure_with_stats() {
        let mut t = ExposureTracker::new(Source::default(), DebounceConfig::default());
        // Seen on frames 0..60 except a 10-frame gap (1/3 s < 1 s grace),
        // then absent for 2 s.
        let frames: Vec<_> = (0..120)
            .map(|n| {
                let on = n < 60 && !(20..30).contains(&n);
                let score = if n == 40 { 0.9 } else { 0.5 };
                let x = if n == 40 { 12.0 } else { 10.0 };
                frame(
                    n,
                    if on {
                        vec![region(face(), Some(score), x, None)]
                    } else {
                        vec![]
                    },
                )
            })
            .collect();
        let evs = run(&mut t, &frames);
        assert_eq!(kinds(&evs), ["exposure_started", "exposure_ended"]);
        let (EventBody::ExposureStarted(s), EventBody::ExposureEnded(e)) =
            (&evs[0].body, &evs[1].body)
        else {
            panic!("{evs:?}");
        };
        assert_eq!(s.exposure_id, evs[0].id);
        assert_eq!(e.exposure_id, evs[0].id);
        assert_eq!(e.class, "FACE_FEMALE");
        assert_eq!(e.frames, 50);
        assert_eq!(e.max_score, Some(0.9));
        let mean = e.mean_score.unwrap();
        assert!((mean - (49.0 * 0.5 + 0.9) / 50.0).abs() < 1e-6, "{mean}");
        assert_eq!(e.peak_box.x0, 12.0);
        assert_eq!(e.first_pts, 0.0);
        assert!((e.last_pts - 59.0 / FPS).abs() < 1e-9);
        assert!((e.duration_s - 59.0 / FPS).abs() < 1e-9);
        // Ended a full grace period after the last sighting, stamped with
        // the last sighting's pts.
        assert!((evs[1].stream_time.unwrap() - 59.0 / FPS).abs() < 1e-9);
        assert_eq!(evs[0].stream_time, Some(0.0));
        assert_eq!(t.open_exposures(), 0);
    }

    #[test]
    fn a_gap_longer_than_grace_is_two_exposures() {
        let mut t = ExposureTracker::new(Source::default(), DebounceConfig::default());
        let frames: Vec<_> = (0..150)
            .map(|n| {
                let on = n < 10 || (50..60).contains(&n);
                frame(
                    n,
                    if on {
                        vec![region(face(), Some(0.6), 10.0, None)]
                    } else {
                        vec![]
                    },
                )
            })
            .collect();
        let evs = run(&mut t, &frames);
        assert_eq!(
            kinds(&evs),
            [
                "exposure_started",
                "exposure_ended",
                "exposure_started",
                "exposure_ended"
            ]
        );
        assert_ne!(evs[0].id, evs[2].id);
    }

    #[test]
    fn classes_tracks_and_places_are_separate_exposures() {
        let mut t = ExposureTracker::new(Source::default(), DebounceConfig::default());
        let other = class_index("FEMALE_BREAST_EXPOSED").unwrap();
        let frames: Vec<_> = (0..10)
            .map(|n| {
                frame(
                    n,
                    vec![
                        region(face(), Some(0.5), 10.0, None),
                        region(face(), Some(0.5), 500.0, None),
                        region(other, Some(0.5), 10.0, None),
                        region(face(), Some(0.5), 10.0, Some(7)),
                        region(face(), Some(0.5), 900.0, Some(8)),
                    ],
                )
            })
            .collect();
        let mut evs = run(&mut t, &frames);
        assert_eq!(t.open_exposures(), 5);
        evs.extend(t.finish(wall(10)));
        let starts = evs
            .iter()
            .filter(|e| e.kind() == "exposure_started")
            .count();
        let ends: Vec<_> = evs
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::ExposureEnded(x) => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!((starts, ends.len()), (5, 5));
        assert!(ends.iter().all(|e| e.frames == 10));
        assert!(ends.iter().any(|e| e.track == Some(7)));
    }

    #[test]
    fn a_tracked_region_that_moves_stays_one_exposure() {
        let mut t = ExposureTracker::new(Source::default(), DebounceConfig::default());
        // 40 px a frame: consecutive boxes barely overlap, the id holds it.
        let frames: Vec<_> = (0..20)
            .map(|n| frame(n, vec![region(face(), Some(0.5), n as f32 * 40.0, Some(3))]))
            .collect();
        let evs = run(&mut t, &frames);
        assert_eq!(kinds(&evs), ["exposure_started"]);
        assert_eq!(t.open_exposures(), 1);
    }

    #[test]
    fn min_frames_hides_one_frame_blips() {
        let cfg = DebounceConfig {
            min_frames: 3,
            ..DebounceConfig::default()
        };
        let mut t = ExposureTracker::new(Source::default(), cfg);
        let frames: Vec<_> = (0..70)
            .map(|n| {
                let on = n == 0 || (50..55).contains(&n);
                frame(
                    n,
                    if on {
                        vec![region(face(), Some(0.5), 10.0, None)]
                    } else {
                        vec![]
                    },
                )
            })
            .collect();
        let evs = run(&mut t, &frames);
        assert_eq!(kinds(&evs), ["exposure_started"]);
        assert_eq!(evs[0].stream_time, Some(52.0 / FPS));
        let EventBody::ExposureStarted(s) = &evs[0].body else {
            panic!()
        };
        assert_eq!(s.frames, 3);
        assert_eq!(kinds(&t.finish(wall(70))), ["exposure_ended"]);
    }

    #[test]
    fn fail_closed_spans_are_debounced_and_do_not_end_exposures() {
        let mut t = ExposureTracker::new(Source::default(), DebounceConfig::default());
        let frames: Vec<_> = (0..200)
            .map(|n| {
                let mut f = frame(n, vec![]);
                if (10..100).contains(&n) && n != 50 {
                    f.status = Status::FailClosed;
                    f.reason = Some(if n < 50 { "deadline" } else { "model" }.into());
                } else if n < 10 || n == 100 {
                    f.regions.push(region(face(), Some(0.5), 10.0, None));
                }
                f
            })
            .collect();
        let evs = run(&mut t, &frames);
        assert_eq!(
            kinds(&evs),
            [
                "exposure_started",
                "fail_closed_started",
                "fail_closed_ended",
                "exposure_ended"
            ]
        );
        let EventBody::FailClosedEnded {
            reason,
            frames,
            duration_s,
        } = &evs[2].body
        else {
            panic!()
        };
        assert_eq!(reason, "deadline");
        assert_eq!(*frames, 89);
        assert!((duration_s - 89.0 / FPS).abs() < 1e-9);
        // The face before and after the span is one exposure: fail-closed
        // frames do not count as absence.
        let EventBody::ExposureEnded(e) = &evs[3].body else {
            panic!()
        };
        assert_eq!(e.frames, 11);
    }

    #[test]
    fn finish_closes_fail_closed() {
        let mut t = ExposureTracker::new(Source::default(), DebounceConfig::default());
        let mut f = frame(0, vec![]);
        f.status = Status::FailClosed;
        assert_eq!(kinds(&t.observe(&f, wall(0))), ["fail_closed_started"]);
        assert!(t.is_fail_closed());
        let evs = t.finish(wall(1));
        assert_eq!(kinds(&evs), ["fail_closed_ended"]);
        let EventBody::FailClosedEnded { reason, .. } = &evs[0].body else {
            panic!()
        };
        assert_eq!(reason, "unknown");
    }

    #[test]
    fn from_record_keeps_scores_and_predictions() {
        let face = face();
        let other = class_index("FEMALE_BREAST_EXPOSED").unwrap();
        let b = BBox::new(0.0, 0.0, 10.0, 10.0);
        let mask = |class, origin| Mask {
            bbox: b,
            shape: MaskShape::Rect,
            origin,
            class,
        };
        let r = FrameRecord {
            frame: 3,
            pts: 9000,
            status: Status::Predicted,
            reason: None,
            masks: vec![
                mask(face, MaskOrigin::Detected),
                mask(other, MaskOrigin::Predicted),
                mask(255, MaskOrigin::FullFrame),
            ],
            detections: vec![Detection {
                bbox: b,
                class: face,
                score: 0.8,
            }],
            latency_ms: 1.0,
            passthrough: false,
            passthrough_off: None,
        };
        let o = FrameObservation::from_record(&r, 90_000.0);
        assert!((o.pts_s - 0.1).abs() < 1e-12);
        assert_eq!(o.status, Status::Predicted);
        assert_eq!(o.regions.len(), 2);
        assert_eq!((o.regions[0].class, o.regions[0].score), (face, Some(0.8)));
        assert_eq!((o.regions[1].class, o.regions[1].score), (other, None));
    }
}
