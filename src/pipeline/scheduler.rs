//! Per-stream scheduler of the three lanes (sans-IO, frame ids only; the
//! runner keeps the pixels).
//!
//! It decides which frames go to the detector, turns detector completions
//! (any order, duplicated, missing) into in-order `Detections` events for the
//! tracker, and releases every arrived frame exactly once, in order, with a
//! verdict the publish lane censors by. Nothing leaves unverified in strict
//! mode: a frame the detector has not seen by its deadline is released
//! fail-closed (whole frame censored). Predictive mode with
//! `await_detections` (files, unpaced input) holds each frame until the
//! detections of every frame up to it that went to the detector are back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::batcher::millis;
use crate::error::PipelineError;
use crate::frame::Detection;

/// How many expired-but-unanswered frames are remembered, so a late answer
/// can still reach the tracker; older ones are forgotten (dropped as unknown).
const EXPIRED_MEMORY: usize = 512;

/// Publishing policy (see DESIGN.md, "The safety invariant").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A frame is published only after the detector has seen it, or its
    /// deadline fires (then fail-closed).
    #[default]
    Strict,
    /// Publish with the tracker's masks (at once, or with
    /// `await_detections` once the detections before the frame are back);
    /// detect every Nth arrival.
    Predictive {
        #[serde(default = "default_detect_every")]
        detect_every: u32,
    },
}

fn default_detect_every() -> u32 {
    3
}

/// In TOML: `mode = "strict"` or `mode = { predictive = { detect_every = 3 } }`,
/// `deadline_ms`, `max_pending`, `await_detections`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    pub mode: Mode,
    /// Longest a frame may wait for verification before it is failed closed;
    /// in predictive mode, the age at which an unanswered detection makes the
    /// detector stale.
    #[serde(rename = "deadline_ms", alias = "deadline", with = "millis")]
    pub deadline: Duration,
    /// Most frames held for verification; beyond it the oldest fail closed.
    pub max_pending: usize,
    /// Predictive mode: a frame leaves only once every frame up to it that
    /// went to the detector (itself included) has its detections emitted or
    /// has been given up (then the frames it governs fail closed). For input
    /// that arrives faster than the detector answers (files, unpaced
    /// streams), where otherwise every frame leaves before any detection is
    /// back; off for live paced streams, whose answers come within a frame
    /// or two, so waiting would only add latency. Strict mode waits anyway.
    pub await_detections: bool,
    /// Strict mode: a verified frame also waits until the detector has
    /// seen the next `lookahead` frames (or its deadline passes, or the
    /// input ends), so a region first found a few frames later is masked
    /// on it too, tracked backwards (a face entering, emerging from behind
    /// something, too small or too cut off to be found at first). Costs
    /// `lookahead` frame intervals of latency; files pay nothing for it.
    #[serde(default)]
    pub lookahead: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            mode: Mode::Strict,
            deadline: Duration::from_millis(250),
            max_pending: 32,
            await_detections: false,
            lookahead: 0,
        }
    }
}

/// Whether the runner must submit the frame to the detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submit {
    Detect,
    Skip,
}

/// Why a frame was released with the whole picture censored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// No verification before the deadline.
    Deadline,
    /// The detector failed on this frame.
    DetectorError(String),
    /// The detector queue refused the frame, or too many frames were held.
    Backpressure,
    /// Predictive mode: the detector has not answered in time, or failed, and
    /// has not succeeded since; with `await_detections`, the last frame
    /// before this one that went to the detector was given up.
    Stale,
}

/// How the publish lane must treat a released frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The detector saw this frame; mask these (plus the tracker's).
    Verified { detections: Vec<Detection> },
    /// Predictive mode: tracker masks only (the frame itself was not
    /// verified; with `await_detections`, the tracker has every detection up
    /// to it).
    Predicted,
    /// Censor the whole frame.
    FailClosed { reason: FailReason },
}

impl Verdict {
    pub fn is_fail_closed(&self) -> bool {
        matches!(self, Verdict::FailClosed { .. })
    }
}

/// Output of [`Scheduler::poll_event`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Feed the tracker. Increasing frame order; for a verified frame this
    /// comes before its `Release`.
    Detections {
        frame: u64,
        detections: Vec<Detection>,
    },
    /// Publish the frame. Strictly increasing frame order, once per frame.
    Release { frame: u64, verdict: Verdict },
}

/// Counters for metrics and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SchedulerStats {
    pub arrived: u64,
    /// Frames refused by `handle_frame` (id not increasing).
    pub rejected: u64,
    pub submitted: u64,
    pub skipped: u64,
    pub submit_failed: u64,
    pub released: u64,
    pub verified: u64,
    pub predicted: u64,
    pub fail_closed: u64,
    pub fail_deadline: u64,
    pub fail_detector: u64,
    pub fail_backpressure: u64,
    pub fail_stale: u64,
    /// Frames failed closed because more than `max_pending` were held.
    pub overflow: u64,
    pub detections_emitted: u64,
    /// Completions that came after their deadline.
    pub late_results: u64,
    /// Second completions for a frame still awaiting emission.
    pub duplicates: u64,
    /// Other ignored completions: frames never submitted, already emitted or
    /// dropped, or long forgotten.
    pub unknown: u64,
}

/// A frame arrived and not yet released.
#[derive(Debug)]
struct Held {
    frame: u64,
    arrived: Instant,
    /// Set when this frame's `Detections` event has been emitted.
    verified: Option<Vec<Detection>>,
    fail: Option<FailReason>,
}

/// A submitted frame whose detections have not been emitted or given up.
#[derive(Debug)]
struct Outstanding {
    frame: u64,
    arrived: Instant,
    result: Option<Result<Vec<Detection>, String>>,
}

/// The per-stream scheduler. After any `handle_*` call, drain `poll_event`
/// until `None`, then wake at `poll_timeout`.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    held: VecDeque<Held>,
    /// Sorted by frame id.
    outstanding: VecDeque<Outstanding>,
    /// Submitted frames given up on (deadline, overflow) whose answer may
    /// still feed the tracker.
    expired: BTreeSet<u64>,
    last_arrived: Option<u64>,
    /// [`Scheduler::handle_end`] was called.
    ended: bool,
    /// Highest frame whose `Detections` event was emitted.
    emitted_through: Option<u64>,
    /// Predictive: false after a failure or an unanswered deadline until an
    /// in-time success.
    healthy: bool,
    /// Frame whose outcome last set `healthy`; outcomes of older frames do not
    /// override it (a newer success outranks an older frame's expiry).
    health_frame: Option<u64>,
    /// `await_detections`: how each submission from the one governing the
    /// oldest held frame on ended: true once its detections reached the
    /// tracker, false when given up. The newest at or before a skipped frame
    /// decides whether its prediction is current.
    resolved: BTreeMap<u64, bool>,
    since_detect: u32,
    force_detect: bool,
    stats: SchedulerStats,
}

impl Scheduler {
    /// `detect_every` and `max_pending` of 0 are raised to 1.
    pub fn new(mut cfg: SchedulerConfig) -> Self {
        cfg.max_pending = cfg.max_pending.max(1);
        if let Mode::Predictive { detect_every } = &mut cfg.mode {
            *detect_every = (*detect_every).max(1);
        }
        Scheduler {
            cfg,
            held: VecDeque::new(),
            outstanding: VecDeque::new(),
            expired: BTreeSet::new(),
            last_arrived: None,
            ended: false,
            emitted_through: None,
            healthy: true,
            health_frame: None,
            resolved: BTreeMap::new(),
            since_detect: u32::MAX,
            force_detect: false,
            stats: SchedulerStats::default(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    pub fn stats(&self) -> SchedulerStats {
        self.stats.clone()
    }

    /// Frames arrived and not yet released.
    pub fn pending(&self) -> usize {
        self.held.len()
    }

    /// Submitted frames whose detections are neither emitted nor given up.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Predictive mode would release frames fail-closed now.
    pub fn is_stale(&self) -> bool {
        !self.healthy
    }

    /// A new frame; says whether to submit it to the detector. A frame whose
    /// id does not increase is ignored (`Skip`, counted in `rejected`, never
    /// released): the runner must not publish it. See [`Self::try_handle_frame`].
    pub fn handle_frame(&mut self, now: Instant, frame: u64) -> Submit {
        match self.try_handle_frame(now, frame) {
            Ok(submit) => submit,
            Err(e) => {
                tracing::warn!("scheduler: {e}");
                Submit::Skip
            }
        }
    }

    /// [`Self::handle_frame`] that reports a non-increasing id as an error
    /// (state unchanged).
    pub fn try_handle_frame(&mut self, now: Instant, frame: u64) -> Result<Submit, PipelineError> {
        if let Some(last) = self.last_arrived.filter(|&last| frame <= last) {
            self.stats.rejected += 1;
            return Err(PipelineError::Other(format!(
                "frame {frame} arrived after frame {last}: ids must increase"
            )));
        }
        self.expire(now);
        self.last_arrived = Some(frame);
        self.stats.arrived += 1;
        let submit = match self.cfg.mode {
            Mode::Strict => Submit::Detect,
            Mode::Predictive { detect_every } => {
                let recovering = !self.healthy && self.waiting() == 0;
                if self.since_detect >= detect_every || self.force_detect || recovering {
                    self.since_detect = 1;
                    self.force_detect = false;
                    Submit::Detect
                } else {
                    self.since_detect = self.since_detect.saturating_add(1);
                    Submit::Skip
                }
            }
        };
        self.held.push_back(Held {
            frame,
            arrived: now,
            verified: None,
            fail: None,
        });
        match submit {
            Submit::Detect => {
                self.stats.submitted += 1;
                self.outstanding.push_back(Outstanding {
                    frame,
                    arrived: now,
                    result: None,
                });
            }
            Submit::Skip => self.stats.skipped += 1,
        }
        self.enforce_max_pending();
        Ok(submit)
    }

    /// The detector queue refused `frame`: no detection will come for it.
    pub fn handle_submit_failed(&mut self, now: Instant, frame: u64) {
        self.expire(now);
        let Some(i) = self.find_outstanding(frame) else {
            self.stats.unknown += 1;
            return;
        };
        if self.outstanding.get(i).is_some_and(|o| o.result.is_some()) {
            self.stats.unknown += 1;
            return;
        }
        self.outstanding.remove(i);
        self.stats.submit_failed += 1;
        match self.cfg.mode {
            Mode::Strict => self.fail_held(frame, FailReason::Backpressure),
            // The sample is lost; take the next frame instead.
            Mode::Predictive { .. } => self.force_detect = true,
        }
    }

    /// A detector completion. Duplicates and unknown frames are ignored; a
    /// late answer still reaches the tracker if it is in order.
    pub fn handle_detections(
        &mut self,
        now: Instant,
        frame: u64,
        result: Result<Vec<Detection>, String>,
    ) {
        let deadline = self.cfg.deadline;
        if let Some(i) = self.find_outstanding(frame) {
            let Some(o) = self.outstanding.get_mut(i) else {
                return;
            };
            if o.result.is_some() {
                self.stats.duplicates += 1;
                return;
            }
            let fresh = !expired_at(o.arrived, deadline, now);
            if !fresh {
                self.stats.late_results += 1;
            }
            let healthy = match &result {
                Ok(_) if fresh => Some(true),
                Ok(_) => None,
                Err(_) => Some(false),
            };
            let error = result.as_ref().err().cloned();
            o.result = Some(result);
            if let Some(h) = healthy {
                self.set_health(frame, h);
            }
            if let Some(msg) = error {
                // A frame that waits for its own answer fails closed on it.
                if self.cfg.mode == Mode::Strict || self.awaits() {
                    self.fail_held(frame, FailReason::DetectorError(msg));
                }
                self.give_up(frame);
            }
        } else if self.expired.remove(&frame) {
            self.stats.late_results += 1;
            let in_order = self.emitted_through.is_none_or(|e| frame > e);
            if let (Ok(detections), true) = (result, in_order) {
                let at = self.outstanding.partition_point(|o| o.frame < frame);
                self.outstanding.insert(
                    at,
                    Outstanding {
                        frame,
                        arrived: now,
                        result: Some(Ok(detections)),
                    },
                );
            }
        } else {
            self.stats.unknown += 1;
        }
    }

    /// Next event, if any is due at `now`. Events interleave in frame order:
    /// a frame's `Detections` precede its `Release`, and a releasable earlier
    /// frame goes out before a later frame's `Detections`, so the tracker is
    /// up to date for each release but never ahead of it without need.
    pub fn poll_event(&mut self, now: Instant) -> Option<Event> {
        self.expire(now);
        while self
            .outstanding
            .front()
            .is_some_and(|o| matches!(o.result, Some(Err(_))))
        {
            self.outstanding.pop_front();
        }
        let next_detections = self
            .outstanding
            .front()
            .filter(|o| o.result.is_some())
            .map(|o| o.frame);
        // Publish earlier frames before the tracker moves past them.
        let release_first = match (self.held.front(), next_detections) {
            (Some(h), Some(k)) => h.frame < k,
            (_, None) => true,
            (None, Some(_)) => false,
        };
        if release_first {
            if let Some(event) = self.poll_release(now) {
                return Some(event);
            }
        }
        next_detections?;
        let o = self.outstanding.pop_front()?;
        match o.result {
            Some(Ok(detections)) => Some(self.emit_detections(o.frame, detections)),
            _ => None,
        }
    }

    /// Releases the oldest held frame if its verdict is known at `now`.
    fn poll_release(&mut self, now: Instant) -> Option<Event> {
        let head = self.held.front()?;
        let expired = expired_at(head.arrived, self.cfg.deadline, now);
        let due = (head.verified.is_some() && (self.looked_ahead(head.frame) || expired))
            || head.fail.is_some()
            || match self.cfg.mode {
                Mode::Strict => expired,
                Mode::Predictive { .. } => !self.awaited(head.frame),
            };
        if !due {
            return None;
        }
        let h = self.held.pop_front()?;
        let stale = Verdict::FailClosed {
            reason: FailReason::Stale,
        };
        let verdict = match (h.verified, h.fail, self.cfg.mode) {
            (Some(detections), _, _) => Verdict::Verified { detections },
            (None, Some(reason), _) => Verdict::FailClosed { reason },
            (None, None, Mode::Strict) => Verdict::FailClosed {
                reason: FailReason::Deadline,
            },
            // The tracker is current only if the last submission up to this
            // frame reached it; none at all means it never saw a detection.
            (None, None, Mode::Predictive { .. }) if self.awaits() => {
                match self.resolved.range(..=h.frame).next_back() {
                    Some((_, true)) => Verdict::Predicted,
                    // Its own answer missed the deadline, as in strict mode.
                    Some((&g, false)) if g == h.frame => Verdict::FailClosed {
                        reason: FailReason::Deadline,
                    },
                    _ => stale,
                }
            }
            (None, None, Mode::Predictive { .. }) if !self.healthy => stale,
            (None, None, Mode::Predictive { .. }) => Verdict::Predicted,
        };
        // Only the newest resolution at or before a released frame can
        // still govern a later one.
        if let Some(&g) = self.resolved.range(..=h.frame).next_back().map(|(k, _)| k) {
            self.resolved = self.resolved.split_off(&g);
        }
        self.count_release(&verdict);
        Some(Event::Release {
            frame: h.frame,
            verdict,
        })
    }

    /// When `poll_event` next has something to do without new input (an
    /// instant already past when an event is due now).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.cfg.deadline;
        let held = self.held.front().and_then(|h| {
            if h.verified.is_some() && !self.looked_ahead(h.frame) {
                // Freed by later frames' answers, the end of input, or its
                // deadline.
                return h.arrived.checked_add(deadline);
            }
            if h.verified.is_some() || h.fail.is_some() {
                return Some(h.arrived);
            }
            match self.cfg.mode {
                Mode::Strict => h.arrived.checked_add(deadline),
                // Freed by the awaited submission: its answer or deadline
                // is the outstanding wake-up below.
                Mode::Predictive { .. } if self.awaited(h.frame) => None,
                Mode::Predictive { .. } => Some(h.arrived),
            }
        });
        let outstanding = self.outstanding.front().and_then(|o| match o.result {
            Some(_) => Some(o.arrived),
            None => o.arrived.checked_add(deadline),
        });
        match (held, outstanding) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// No more frames will arrive: frames held for lookahead need not wait
    /// for them.
    pub fn handle_end(&mut self) {
        self.ended = true;
    }

    /// Strict lookahead: the detector has answered (or given up on) every
    /// frame of the `lookahead` after `frame`, or none will come.
    fn looked_ahead(&self, frame: u64) -> bool {
        let ahead = u64::from(self.cfg.lookahead);
        if ahead == 0 || self.ended || !matches!(self.cfg.mode, Mode::Strict) {
            return true;
        }
        if self
            .last_arrived
            .is_none_or(|last| last < frame.saturating_add(ahead))
        {
            return false;
        }
        self.held
            .iter()
            .skip_while(|h| h.frame <= frame)
            .take_while(|h| h.frame <= frame.saturating_add(ahead))
            .all(|h| h.verified.is_some() || h.fail.is_some())
    }

    fn emit_detections(&mut self, frame: u64, detections: Vec<Detection>) -> Event {
        self.emitted_through = Some(frame);
        if self.awaits() {
            self.resolved.insert(frame, true);
        }
        self.stats.detections_emitted += 1;
        if let Some(h) = self.find_held_mut(frame) {
            if h.fail.is_none() {
                h.verified = Some(detections.clone());
            }
        }
        Event::Detections { frame, detections }
    }

    fn count_release(&mut self, verdict: &Verdict) {
        let s = &mut self.stats;
        s.released += 1;
        match verdict {
            Verdict::Verified { .. } => s.verified += 1,
            Verdict::Predicted => s.predicted += 1,
            Verdict::FailClosed { reason } => {
                s.fail_closed += 1;
                match reason {
                    FailReason::Deadline => s.fail_deadline += 1,
                    FailReason::DetectorError(_) => s.fail_detector += 1,
                    FailReason::Backpressure => s.fail_backpressure += 1,
                    FailReason::Stale => s.fail_stale += 1,
                }
            }
        }
    }

    /// Gives up on unanswered detections past their deadline (arrivals are in
    /// order, so only the head can be the oldest). In predictive mode this
    /// makes the detector stale.
    fn expire(&mut self, now: Instant) {
        let deadline = self.cfg.deadline;
        while let Some(head) = self.outstanding.front() {
            if head.result.is_some() || !expired_at(head.arrived, deadline, now) {
                break;
            }
            let frame = head.frame;
            self.outstanding.pop_front();
            self.remember_expired(frame);
            self.set_health(frame, false);
            self.give_up(frame);
        }
    }

    /// Predictive mode with `await_detections`: whether a submission at or
    /// before `frame` is neither emitted nor given up (an answered one is
    /// emitted before `frame` is considered).
    fn awaited(&self, frame: u64) -> bool {
        self.awaits() && self.outstanding.front().is_some_and(|o| o.frame <= frame)
    }

    fn awaits(&self) -> bool {
        self.cfg.await_detections && matches!(self.cfg.mode, Mode::Predictive { .. })
    }

    /// `await_detections`: records a submission given up on (deadline,
    /// detector error, overflow), so that its own frame and those it governs
    /// fail closed unless a late answer still reaches the tracker first.
    fn give_up(&mut self, frame: u64) {
        if self.awaits() {
            self.resolved.entry(frame).or_insert(false);
        }
    }

    fn set_health(&mut self, frame: u64, healthy: bool) {
        if self.health_frame.is_none_or(|f| frame >= f) {
            self.health_frame = Some(frame);
            self.healthy = healthy;
        }
    }

    /// More than `max_pending` held: fail the oldest unresolved ones closed and
    /// stop waiting for their detections.
    fn enforce_max_pending(&mut self) {
        let excess = self.held.len().saturating_sub(self.cfg.max_pending);
        let mut dropped = Vec::new();
        for h in self.held.iter_mut().take(excess) {
            if h.verified.is_none() && h.fail.is_none() {
                h.fail = Some(FailReason::Backpressure);
                dropped.push(h.frame);
            }
        }
        for frame in dropped {
            self.stats.overflow += 1;
            if let Some(i) = self.find_outstanding(frame) {
                if self.outstanding.get(i).is_some_and(|o| o.result.is_none()) {
                    self.outstanding.remove(i);
                    self.remember_expired(frame);
                    self.give_up(frame);
                }
            }
        }
    }

    fn remember_expired(&mut self, frame: u64) {
        self.expired.insert(frame);
        while self.expired.len() > EXPIRED_MEMORY {
            self.expired.pop_first();
        }
    }

    fn fail_held(&mut self, frame: u64, reason: FailReason) {
        if let Some(h) = self.find_held_mut(frame) {
            if h.verified.is_none() && h.fail.is_none() {
                h.fail = Some(reason);
            }
        }
    }

    /// Submitted detections not yet answered.
    fn waiting(&self) -> usize {
        self.outstanding
            .iter()
            .filter(|o| o.result.is_none())
            .count()
    }

    fn find_outstanding(&self, frame: u64) -> Option<usize> {
        self.outstanding
            .binary_search_by_key(&frame, |o| o.frame)
            .ok()
    }

    fn find_held_mut(&mut self, frame: u64) -> Option<&mut Held> {
        let i = self.held.binary_search_by_key(&frame, |h| h.frame).ok()?;
        self.held.get_mut(i)
    }
}

fn expired_at(arrived: Instant, deadline: Duration, now: Instant) -> bool {
    arrived.checked_add(deadline).is_some_and(|d| now >= d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BBox;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashSet};

    const MS: Duration = Duration::from_millis(1);

    fn det(frame: u64) -> Vec<Detection> {
        vec![Detection {
            bbox: BBox::new(frame as f32, 0.0, frame as f32 + 10.0, 10.0),
            class: (frame % 18) as u8,
            score: 0.5,
        }]
    }

    fn strict(deadline_ms: u64, max_pending: usize) -> Scheduler {
        Scheduler::new(SchedulerConfig {
            mode: Mode::Strict,
            deadline: Duration::from_millis(deadline_ms),
            max_pending,
            ..SchedulerConfig::default()
        })
    }

    fn predictive(every: u32, deadline_ms: u64) -> Scheduler {
        Scheduler::new(SchedulerConfig {
            mode: Mode::Predictive {
                detect_every: every,
            },
            deadline: Duration::from_millis(deadline_ms),
            max_pending: 32,
            ..SchedulerConfig::default()
        })
    }

    /// Predictive with `await_detections` (a file job).
    fn awaiting(every: u32, deadline_ms: u64) -> Scheduler {
        Scheduler::new(SchedulerConfig {
            await_detections: true,
            ..predictive(every, deadline_ms).cfg
        })
    }

    fn drain(s: &mut Scheduler, now: Instant) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event(now)).collect()
    }

    fn dets(frame: u64) -> Event {
        Event::Detections {
            frame,
            detections: det(frame),
        }
    }

    fn rel(frame: u64, verdict: Verdict) -> Event {
        Event::Release { frame, verdict }
    }

    fn verified(frame: u64) -> Verdict {
        Verdict::Verified {
            detections: det(frame),
        }
    }

    fn failed(reason: FailReason) -> Verdict {
        Verdict::FailClosed { reason }
    }

    #[test]
    fn config_defaults_and_toml() {
        let c = SchedulerConfig::default();
        assert_eq!(c.mode, Mode::Strict);
        assert_eq!(c.deadline, Duration::from_millis(250));
        assert_eq!(c.max_pending, 32);
        assert!(!c.await_detections, "live streams do not wait");
        let c: SchedulerConfig = toml::from_str("mode = \"strict\"\ndeadline_ms = 100").unwrap();
        assert_eq!((c.mode, c.deadline), (Mode::Strict, 100 * MS));
        let c: SchedulerConfig =
            toml::from_str("mode = { predictive = { detect_every = 5 } }").unwrap();
        assert_eq!(c.mode, Mode::Predictive { detect_every: 5 });
        let c: SchedulerConfig = toml::from_str("await_detections = true").unwrap();
        assert!(c.await_detections);
        assert_eq!(
            SchedulerConfig::default().lookahead,
            0,
            "live: no latency added"
        );
        let c: SchedulerConfig = toml::from_str("lookahead = 4").unwrap();
        assert_eq!(c.lookahead, 4);
        assert!(toml::from_str::<SchedulerConfig>("mode = \"sometimes\"").is_err());
    }

    #[test]
    fn strict_holds_frames_in_order() {
        let t = Instant::now();
        let mut s = strict(250, 32);
        for f in 0..3 {
            assert_eq!(
                s.try_handle_frame(t + f as u32 * MS, f).unwrap(),
                Submit::Detect
            );
        }
        assert!(drain(&mut s, t + 3 * MS).is_empty(), "nothing verified yet");
        s.handle_detections(t + 4 * MS, 1, Ok(det(1)));
        assert!(
            drain(&mut s, t + 4 * MS).is_empty(),
            "frame 1 waits for frame 0"
        );
        s.handle_detections(t + 5 * MS, 0, Ok(det(0)));
        assert_eq!(
            drain(&mut s, t + 5 * MS),
            vec![dets(0), rel(0, verified(0)), dets(1), rel(1, verified(1))]
        );
        assert_eq!(s.pending(), 1);
        assert_eq!(s.poll_timeout(), Some(t + 2 * MS + 250 * MS));
    }

    #[test]
    fn lookahead_holds_a_verified_frame_until_the_next_ones_are_seen() {
        let t = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig {
            lookahead: 2,
            ..SchedulerConfig::default()
        });
        for f in 0..2 {
            s.try_handle_frame(t, f).unwrap();
        }
        s.handle_detections(t, 0, Ok(det(0)));
        s.handle_detections(t, 1, Ok(det(1)));
        // Frame 2 has not arrived: frame 0 waits (its deadline is the wake-up).
        assert_eq!(drain(&mut s, t), vec![dets(0), dets(1)]);
        assert_eq!(s.poll_timeout(), Some(t + 250 * MS));
        s.try_handle_frame(t + MS, 2).unwrap();
        assert!(drain(&mut s, t + MS).is_empty(), "frame 2 not answered yet");
        s.handle_detections(t + 2 * MS, 2, Err("down".into()));
        // Given up on frame 2 (failed closed) counts as seen; frame 1 still
        // waits for frame 3.
        assert_eq!(drain(&mut s, t + 2 * MS), vec![rel(0, verified(0))]);
        // Its deadline lets it go verified.
        assert_eq!(
            drain(&mut s, t + 250 * MS),
            vec![
                rel(1, verified(1)),
                rel(2, failed(FailReason::DetectorError("down".into())))
            ]
        );
    }

    #[test]
    fn lookahead_ends_with_the_input() {
        let t = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig {
            lookahead: 5,
            ..SchedulerConfig::default()
        });
        s.try_handle_frame(t, 0).unwrap();
        s.handle_detections(t, 0, Ok(det(0)));
        assert_eq!(drain(&mut s, t), vec![dets(0)]);
        s.handle_end();
        assert_eq!(drain(&mut s, t), vec![rel(0, verified(0))]);
        // Predictive mode never looks ahead.
        let mut p = Scheduler::new(SchedulerConfig {
            lookahead: 5,
            ..predictive(1, 250).cfg
        });
        p.try_handle_frame(t, 0).unwrap();
        assert_eq!(drain(&mut p, t), vec![rel(0, Verdict::Predicted)]);
    }

    #[test]
    fn strict_deadline_fails_closed_and_late_result_feeds_tracker() {
        let t = Instant::now();
        let mut s = strict(250, 32);
        s.try_handle_frame(t, 0).unwrap();
        assert_eq!(s.poll_timeout(), Some(t + 250 * MS));
        assert!(drain(&mut s, t + 249 * MS).is_empty());
        assert_eq!(
            drain(&mut s, t + 250 * MS),
            vec![rel(0, failed(FailReason::Deadline))]
        );
        s.handle_detections(t + 300 * MS, 0, Ok(det(0)));
        assert_eq!(drain(&mut s, t + 300 * MS), vec![dets(0)]);
        assert_eq!(s.stats().late_results, 1);
        assert_eq!(s.stats().fail_deadline, 1);
    }

    #[test]
    fn late_result_out_of_order_is_dropped() {
        let t = Instant::now();
        let mut s = strict(100, 32);
        s.try_handle_frame(t, 0).unwrap();
        s.try_handle_frame(t + 10 * MS, 1).unwrap();
        s.handle_detections(t + 20 * MS, 1, Ok(det(1)));
        assert!(drain(&mut s, t + 20 * MS).is_empty());
        assert_eq!(
            drain(&mut s, t + 100 * MS),
            vec![
                rel(0, failed(FailReason::Deadline)),
                dets(1),
                rel(1, verified(1))
            ]
        );
        s.handle_detections(t + 150 * MS, 0, Ok(det(0)));
        assert!(drain(&mut s, t + 150 * MS).is_empty());
        assert_eq!(s.stats().late_results, 1);
    }

    #[test]
    fn detector_error_fails_closed_without_detections() {
        let t = Instant::now();
        let mut s = strict(250, 32);
        s.try_handle_frame(t, 0).unwrap();
        s.try_handle_frame(t, 1).unwrap();
        s.handle_detections(t, 0, Err("boom".into()));
        s.handle_detections(t, 1, Ok(det(1)));
        assert_eq!(
            drain(&mut s, t),
            vec![
                rel(0, failed(FailReason::DetectorError("boom".into()))),
                dets(1),
                rel(1, verified(1))
            ]
        );
        assert_eq!(s.stats().fail_detector, 1);
    }

    #[test]
    fn backpressure_fails_closed_and_ignores_later_answer() {
        let t = Instant::now();
        let mut s = strict(250, 32);
        s.try_handle_frame(t, 0).unwrap();
        s.handle_submit_failed(t, 0);
        assert_eq!(
            drain(&mut s, t),
            vec![rel(0, failed(FailReason::Backpressure))]
        );
        s.handle_detections(t, 0, Ok(det(0)));
        assert!(drain(&mut s, t).is_empty());
        assert_eq!(s.stats().unknown, 1);
        assert_eq!(s.stats().submit_failed, 1);
    }

    #[test]
    fn duplicate_and_unknown_completions_are_ignored() {
        let t = Instant::now();
        let mut s = strict(250, 32);
        s.try_handle_frame(t, 0).unwrap();
        s.handle_detections(t, 0, Ok(det(0)));
        s.handle_detections(t, 0, Ok(vec![]));
        s.handle_detections(t, 42, Ok(det(42)));
        assert_eq!(drain(&mut s, t), vec![dets(0), rel(0, verified(0))]);
        s.handle_detections(t, 0, Ok(det(0)));
        assert!(drain(&mut s, t).is_empty());
        assert_eq!((s.stats().duplicates, s.stats().unknown), (1, 2));
    }

    #[test]
    fn non_increasing_frame_ids_are_refused() {
        let t = Instant::now();
        let mut s = strict(250, 32);
        s.try_handle_frame(t, 5).unwrap();
        assert!(s.try_handle_frame(t, 5).is_err());
        assert_eq!(s.handle_frame(t, 3), Submit::Skip);
        assert_eq!(s.pending(), 1);
        assert_eq!(s.stats().rejected, 2);
        assert_eq!(s.handle_frame(t, 6), Submit::Detect);
        assert_eq!(
            drain(&mut s, t + 250 * MS),
            vec![
                rel(5, failed(FailReason::Deadline)),
                rel(6, failed(FailReason::Deadline))
            ]
        );
    }

    #[test]
    fn max_pending_overflow_fails_oldest_closed() {
        let t = Instant::now();
        let mut s = strict(250, 3);
        for f in 0..5 {
            s.try_handle_frame(t, f).unwrap();
        }
        assert_eq!(
            drain(&mut s, t),
            vec![
                rel(0, failed(FailReason::Backpressure)),
                rel(1, failed(FailReason::Backpressure))
            ]
        );
        assert_eq!((s.pending(), s.stats().overflow), (3, 2));
        // The overflowed frame's answer still reaches the tracker, in order.
        s.handle_detections(t, 1, Ok(det(1)));
        s.handle_detections(t, 2, Ok(det(2)));
        assert_eq!(
            drain(&mut s, t),
            vec![dets(1), dets(2), rel(2, verified(2))]
        );
    }

    #[test]
    fn predictive_releases_at_once_and_detects_every_nth() {
        let t = Instant::now();
        let mut s = predictive(3, 100);
        let mut submits = Vec::new();
        for f in 0..7 {
            submits.push(s.try_handle_frame(t, f).unwrap());
            assert_eq!(drain(&mut s, t), vec![rel(f, Verdict::Predicted)]);
        }
        use Submit::{Detect as D, Skip as S};
        assert_eq!(submits, vec![D, S, S, D, S, S, D]);
        s.handle_detections(t + 5 * MS, 3, Ok(det(3)));
        assert!(drain(&mut s, t + 5 * MS).is_empty(), "waits for frame 0");
        s.handle_detections(t + 6 * MS, 0, Ok(det(0)));
        assert_eq!(drain(&mut s, t + 6 * MS), vec![dets(0), dets(3)]);
        assert_eq!(s.stats().predicted, 7);
    }

    #[test]
    fn predictive_early_result_waits_for_expiry_of_earlier() {
        let t = Instant::now();
        let mut s = predictive(1, 100);
        s.try_handle_frame(t, 0).unwrap();
        s.try_handle_frame(t + 10 * MS, 1).unwrap();
        drain(&mut s, t + 10 * MS);
        s.handle_detections(t + 20 * MS, 1, Ok(det(1)));
        assert!(drain(&mut s, t + 20 * MS).is_empty());
        assert_eq!(s.poll_timeout(), Some(t + 100 * MS));
        assert_eq!(drain(&mut s, t + 100 * MS), vec![dets(1)]);
        assert!(
            !s.is_stale(),
            "frame 0's expiry is older news than frame 1's success"
        );
        s.try_handle_frame(t + 100 * MS, 2).unwrap();
        assert_eq!(
            drain(&mut s, t + 100 * MS),
            vec![rel(2, Verdict::Predicted)]
        );
        assert!(drain(&mut s, t + 200 * MS).is_empty());
        assert!(s.is_stale(), "frame 2 never answered");
    }

    #[test]
    fn predictive_stale_fails_closed_then_recovers() {
        let t = Instant::now();
        let mut s = predictive(2, 50);
        let at = |f: u64| t + Duration::from_millis(f * 10);
        // Frame 0 is submitted and never answered.
        let mut verdicts = Vec::new();
        let mut submits = Vec::new();
        for f in 0..8 {
            submits.push(s.try_handle_frame(at(f), f).unwrap());
            for e in drain(&mut s, at(f)) {
                if let Event::Release { verdict, .. } = e {
                    verdicts.push(verdict);
                }
            }
        }
        let stale = failed(FailReason::Stale);
        // Frames 0..=4 predate the deadline of frame 0 (t+50); from then on stale.
        assert!(verdicts[..5].iter().all(|v| *v == Verdict::Predicted));
        assert!(verdicts[5..].iter().all(|v| *v == stale), "{verdicts:?}");
        // Frame 2 and 4 were submitted on schedule and never answered either.
        assert_eq!(submits[2], Submit::Detect);
        // A fresh success restores prediction, even while older submissions
        // (frames 4 and 6) are still unanswered.
        assert_eq!(s.try_handle_frame(at(8), 8).unwrap(), Submit::Detect);
        assert_eq!(drain(&mut s, at(8)), vec![rel(8, stale.clone())]);
        s.handle_detections(at(8) + MS, 8, Ok(det(8)));
        assert!(
            drain(&mut s, at(8) + MS).is_empty(),
            "waits for frames 4 and 6"
        );
        s.try_handle_frame(at(9), 9).unwrap();
        assert_eq!(drain(&mut s, at(9)), vec![rel(9, Verdict::Predicted)]);
        // A failure makes it stale again until the next success.
        assert_eq!(s.try_handle_frame(at(10), 10).unwrap(), Submit::Detect);
        s.handle_detections(at(10), 10, Err("cuda".into()));
        assert_eq!(drain(&mut s, at(10)), vec![rel(10, stale.clone())]);
        // Frame 6 expires: frame 8's answer reaches the tracker.
        assert_eq!(drain(&mut s, at(6) + 50 * MS), vec![dets(8)]);
        assert_eq!(
            s.try_handle_frame(at(11), 11).unwrap(),
            Submit::Detect,
            "stale and idle: detect at once to recover"
        );
        assert_eq!(drain(&mut s, at(11)), vec![rel(11, stale)]);
        s.handle_detections(at(11) + MS, 11, Ok(det(11)));
        assert_eq!(drain(&mut s, at(11) + MS), vec![dets(11)]);
        s.try_handle_frame(at(12), 12).unwrap();
        assert_eq!(drain(&mut s, at(12)), vec![rel(12, Verdict::Predicted)]);
    }

    #[test]
    fn predictive_backpressure_moves_the_sample_to_the_next_frame() {
        let t = Instant::now();
        let mut s = predictive(4, 100);
        assert_eq!(s.try_handle_frame(t, 0).unwrap(), Submit::Detect);
        s.handle_submit_failed(t, 0);
        assert_eq!(drain(&mut s, t), vec![rel(0, Verdict::Predicted)]);
        assert_eq!(s.try_handle_frame(t, 1).unwrap(), Submit::Detect);
        assert_eq!(s.try_handle_frame(t, 2).unwrap(), Submit::Skip);
    }

    #[test]
    fn await_holds_frames_until_earlier_detections_are_back() {
        let t = Instant::now();
        let mut s = awaiting(3, 100);
        let mut submits = Vec::new();
        for f in 0..6 {
            submits.push(s.try_handle_frame(t + f as u32 * MS, f).unwrap());
        }
        use Submit::{Detect as D, Skip as S};
        assert_eq!(submits, vec![D, S, S, D, S, S]);
        assert!(drain(&mut s, t + 6 * MS).is_empty(), "nothing is back yet");
        assert_eq!(s.poll_timeout(), Some(t + 100 * MS), "frame 0's deadline");
        // Frame 3's answer alone frees nothing: frame 0 comes first.
        s.handle_detections(t + 7 * MS, 3, Ok(det(3)));
        assert!(drain(&mut s, t + 7 * MS).is_empty());
        s.handle_detections(t + 8 * MS, 0, Ok(det(0)));
        assert_eq!(
            drain(&mut s, t + 8 * MS),
            vec![
                dets(0),
                rel(0, verified(0)),
                rel(1, Verdict::Predicted),
                rel(2, Verdict::Predicted),
                dets(3),
                rel(3, verified(3)),
                rel(4, Verdict::Predicted),
                rel(5, Verdict::Predicted),
            ]
        );
        assert_eq!(s.poll_timeout(), None);
        let st = s.stats();
        assert_eq!((st.verified, st.predicted, st.fail_closed), (2, 4, 0));
    }

    #[test]
    fn await_frame_sent_to_the_detector_waits_for_its_own_answer() {
        let t = Instant::now();
        let mut s = awaiting(2, 100);
        s.try_handle_frame(t, 0).unwrap();
        s.try_handle_frame(t + MS, 1).unwrap();
        s.handle_detections(t + 2 * MS, 0, Ok(det(0)));
        assert_eq!(
            drain(&mut s, t + 2 * MS),
            vec![dets(0), rel(0, verified(0)), rel(1, Verdict::Predicted)]
        );
        assert_eq!(s.try_handle_frame(t + 3 * MS, 2).unwrap(), Submit::Detect);
        assert!(drain(&mut s, t + 3 * MS).is_empty());
        assert_eq!(s.poll_timeout(), Some(t + 103 * MS));
        s.handle_detections(t + 50 * MS, 2, Ok(det(2)));
        assert!(
            s.poll_timeout().is_some_and(|w| w <= t + 50 * MS),
            "due at once"
        );
        assert_eq!(
            drain(&mut s, t + 50 * MS),
            vec![dets(2), rel(2, verified(2))]
        );
    }

    #[test]
    fn await_deadline_fails_the_frame_and_those_behind_it_closed() {
        let t = Instant::now();
        let mut s = awaiting(3, 100);
        for f in 0..5 {
            s.try_handle_frame(t + f as u32 * MS, f).unwrap();
        }
        // Frame 3's answer is back early (a newer success); frame 0's never.
        s.handle_detections(t + 10 * MS, 3, Ok(det(3)));
        assert!(drain(&mut s, t + 99 * MS).is_empty());
        let stale = failed(FailReason::Stale);
        assert_eq!(
            drain(&mut s, t + 100 * MS),
            vec![
                rel(0, failed(FailReason::Deadline)),
                rel(1, stale.clone()),
                rel(2, stale),
                dets(3),
                rel(3, verified(3)),
                rel(4, Verdict::Predicted),
            ]
        );
        // A late answer for frame 0 is out of order now: dropped.
        s.handle_detections(t + 120 * MS, 0, Ok(det(0)));
        assert!(drain(&mut s, t + 120 * MS).is_empty());
        let st = s.stats();
        assert_eq!(
            (st.fail_deadline, st.fail_stale, st.late_results),
            (1, 2, 1)
        );
    }

    #[test]
    fn await_answer_at_the_deadline_still_verifies_its_frame() {
        let t = Instant::now();
        let mut s = awaiting(1, 60);
        s.try_handle_frame(t, 0).unwrap();
        // The next arrival, at frame 0's deadline, gives frame 0 up; its
        // answer comes the same instant, before the frame leaves (as strict).
        s.try_handle_frame(t + 60 * MS, 1).unwrap();
        s.handle_detections(t + 60 * MS, 0, Ok(det(0)));
        assert_eq!(
            drain(&mut s, t + 60 * MS),
            vec![dets(0), rel(0, verified(0))]
        );
    }

    #[test]
    fn await_detector_error_fails_the_frames_it_governs_closed() {
        let t = Instant::now();
        let mut s = awaiting(3, 100);
        for f in 0..7 {
            s.try_handle_frame(t, f).unwrap();
        }
        s.handle_detections(t, 0, Ok(det(0)));
        s.handle_detections(t, 3, Err("cuda".into()));
        let stale = failed(FailReason::Stale);
        assert_eq!(
            drain(&mut s, t),
            vec![
                dets(0),
                rel(0, verified(0)),
                rel(1, Verdict::Predicted),
                rel(2, Verdict::Predicted),
                rel(3, failed(FailReason::DetectorError("cuda".into()))),
                rel(4, stale.clone()),
                rel(5, stale),
            ]
        );
        // Frame 6 waits for its own answer, which restores prediction.
        s.try_handle_frame(t, 7).unwrap();
        s.handle_detections(t + MS, 6, Ok(det(6)));
        assert_eq!(
            drain(&mut s, t + MS),
            vec![dets(6), rel(6, verified(6)), rel(7, Verdict::Predicted)]
        );
    }

    #[test]
    fn await_a_refused_first_frame_is_not_predicted_blind() {
        let t = Instant::now();
        let mut s = awaiting(3, 100);
        assert_eq!(s.try_handle_frame(t, 0).unwrap(), Submit::Detect);
        s.handle_submit_failed(t, 0);
        assert_eq!(s.try_handle_frame(t, 1).unwrap(), Submit::Detect);
        assert_eq!(drain(&mut s, t), vec![rel(0, failed(FailReason::Stale))]);
        s.handle_detections(t, 1, Ok(det(1)));
        assert_eq!(drain(&mut s, t), vec![dets(1), rel(1, verified(1))]);
    }

    #[test]
    fn await_is_ignored_in_strict_mode() {
        let t = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig {
            await_detections: true,
            ..SchedulerConfig::default()
        });
        s.try_handle_frame(t, 0).unwrap();
        s.try_handle_frame(t, 1).unwrap();
        s.handle_detections(t, 1, Ok(det(1)));
        assert!(drain(&mut s, t).is_empty());
        assert_eq!(
            drain(&mut s, t + 250 * MS),
            vec![
                rel(0, failed(FailReason::Deadline)),
                dets(1),
                rel(1, verified(1))
            ]
        );
    }

    // ---- property tests: a synthetic 1 ms clock ----

    #[derive(Clone, Debug)]
    enum Plan {
        Ok(u64),
        Fail(u64),
        Stall,
        Refused,
        Twice(u64, u64),
    }

    fn plan() -> impl Strategy<Value = Plan> {
        prop_oneof![
            6 => (0u64..80).prop_map(Plan::Ok),
            1 => (0u64..80).prop_map(Plan::Fail),
            1 => Just(Plan::Stall),
            1 => Just(Plan::Refused),
            1 => (0u64..80, 0u64..80).prop_map(|(a, b)| Plan::Twice(a, b)),
        ]
    }

    #[derive(Debug)]
    struct Arrival {
        id: u64,
        at: u64,
        plan: Plan,
    }

    fn run_sim(
        mode: Mode,
        await_detections: bool,
        deadline_ms: u64,
        max_pending: usize,
        arrivals: &[Arrival],
    ) -> Result<(), TestCaseError> {
        run_sim_ahead(
            mode,
            await_detections,
            0,
            deadline_ms,
            max_pending,
            arrivals,
        )
    }

    fn run_sim_ahead(
        mode: Mode,
        await_detections: bool,
        lookahead: u32,
        deadline_ms: u64,
        max_pending: usize,
        arrivals: &[Arrival],
    ) -> Result<(), TestCaseError> {
        let t0 = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig {
            mode,
            deadline: Duration::from_millis(deadline_ms),
            max_pending,
            await_detections,
            lookahead,
        });
        let is_strict = mode == Mode::Strict;
        // Releases wait for every earlier answer (strict, or predictive
        // awaiting detections).
        let waits = is_strict || await_detections;
        // Frames the detector took: frame -> (arrival ms, plan).
        let mut submitted: BTreeMap<u64, (u64, Plan)> = BTreeMap::new();
        let mut failed_at: HashSet<u64> = HashSet::new();
        // (time, seq) -> (frame, ok)
        let mut deliveries: BTreeMap<(u64, usize), (u64, bool)> = BTreeMap::new();
        let mut arrived_at: BTreeMap<u64, u64> = BTreeMap::new();
        let mut released: Vec<u64> = Vec::new();
        let mut emitted: Vec<u64> = Vec::new();
        // Ok results delivered: frame -> highest emitted frame at delivery.
        let mut delivered_ok: BTreeMap<u64, Option<u64>> = BTreeMap::new();
        let end = arrivals.last().map_or(0, |a| a.at) + deadline_ms + 200;
        let mut next = arrivals.iter().peekable();
        let mut seq = 0usize;
        for ms in 0..=end {
            let now = t0 + Duration::from_millis(ms);
            while let Some(a) = next.next_if(|a| a.at == ms) {
                arrived_at.insert(a.id, ms);
                if s.try_handle_frame(now, a.id)? == Submit::Detect {
                    if !matches!(a.plan, Plan::Refused) {
                        submitted.insert(a.id, (ms, a.plan.clone()));
                    }
                    let mut sched = |d: u64, ok: bool| {
                        seq += 1;
                        deliveries.insert((ms + d, seq), (a.id, ok));
                    };
                    match a.plan {
                        Plan::Ok(d) => sched(d, true),
                        Plan::Fail(d) => sched(d, false),
                        Plan::Twice(d1, d2) => {
                            sched(d1, true);
                            sched(d2, true);
                        }
                        Plan::Stall => {}
                        Plan::Refused => s.handle_submit_failed(now, a.id),
                    }
                }
            }
            while let Some(entry) = deliveries.first_entry() {
                if entry.key().0 > ms {
                    break;
                }
                let (frame, ok) = entry.remove();
                if ok {
                    delivered_ok.entry(frame).or_insert(emitted.last().copied());
                    s.handle_detections(now, frame, Ok(det(frame)));
                } else {
                    failed_at.insert(frame);
                    s.handle_detections(now, frame, Err("detector failed".into()));
                }
            }
            // A completion for a frame nobody submitted.
            s.handle_detections(now, u64::MAX - ms, Ok(vec![]));
            while let Some(ev) = s.poll_event(now) {
                match ev {
                    Event::Detections { frame, detections } => {
                        prop_assert!(emitted.last().is_none_or(|&l| frame > l));
                        prop_assert_eq!(detections, det(frame));
                        emitted.push(frame);
                    }
                    Event::Release { frame, verdict } => {
                        prop_assert!(released.last().is_none_or(|&l| frame > l));
                        let arrival = arrived_at.get(&frame).copied();
                        prop_assert!(arrival.is_some(), "released unknown frame {}", frame);
                        let arrival = arrival.unwrap_or_default();
                        prop_assert!(ms <= arrival + deadline_ms, "frame {} late", frame);
                        released.push(frame);
                        match &verdict {
                            Verdict::Verified { detections } => {
                                prop_assert_eq!(detections, &det(frame));
                                prop_assert!(emitted.contains(&frame));
                                // Lookahead: the next frames were seen first,
                                // unless the frame's deadline came.
                                let ahead = frame + u64::from(lookahead);
                                if is_strict && lookahead > 0 && ms < arrival + deadline_ms {
                                    prop_assert!(
                                        arrived_at.keys().any(|&k| k >= ahead),
                                        "frame {} left before frame {} arrived",
                                        frame,
                                        ahead
                                    );
                                    for (&k, &at) in arrived_at.range(frame + 1..=ahead) {
                                        prop_assert!(
                                            emitted.contains(&k)
                                                || failed_at.contains(&k)
                                                || ms >= at + deadline_ms
                                                || s.stats().overflow > 0
                                                || !submitted.contains_key(&k),
                                            "frame {} left before frame {} was answered",
                                            frame,
                                            k
                                        );
                                    }
                                }
                            }
                            Verdict::Predicted => prop_assert!(!is_strict),
                            Verdict::FailClosed { .. } => {}
                        }
                        if await_detections && !is_strict {
                            // Every submission up to this frame is emitted or
                            // given up (error, deadline, overflow) ...
                            let overflowed = s.stats().overflow > 0;
                            for (&k, &(at, _)) in submitted.range(..=frame) {
                                prop_assert!(
                                    emitted.contains(&k)
                                        || failed_at.contains(&k)
                                        || ms >= at + deadline_ms
                                        || overflowed,
                                    "frame {} left before submission {} was resolved",
                                    frame,
                                    k
                                );
                            }
                            // ... and a prediction rests on the last one's answer.
                            if verdict == Verdict::Predicted {
                                let last = submitted.range(..=frame).next_back().map(|(k, _)| *k);
                                prop_assert!(
                                    last.is_some_and(|k| emitted.contains(&k)),
                                    "frame {} predicted without the detections of {:?}",
                                    frame,
                                    last
                                );
                            }
                        }
                        if waits {
                            // The tracker is up to date: every in-order answer
                            // delivered so far for frames <= this one was emitted.
                            for (&k, &hi) in delivered_ok.range(..=frame) {
                                let dropped = hi.is_some_and(|h| h > k);
                                prop_assert!(
                                    emitted.contains(&k) || dropped,
                                    "detections of {} not emitted before release of {}",
                                    k,
                                    frame
                                );
                            }
                        }
                    }
                }
            }
            if let Some(t) = s.poll_timeout() {
                prop_assert!(t > now, "poll_timeout due but nothing polled");
            }
        }
        let all: Vec<u64> = arrived_at.keys().copied().collect();
        prop_assert_eq!(&released, &all, "every frame released exactly once");
        let st = s.stats();
        prop_assert_eq!(st.released, all.len() as u64);
        prop_assert_eq!(st.verified + st.predicted + st.fail_closed, st.released);
        let unique: HashSet<_> = emitted.iter().collect();
        prop_assert_eq!(unique.len(), emitted.len());
        // Liveness: without overflow, a frame that waits for its own answer
        // (strict, or submitted while awaiting) and got it by its deadline
        // (delivered before that instant's poll) is verified.
        if waits && st.overflow == 0 {
            let expect = submitted
                .values()
                .filter(|(_, plan)| match plan {
                    Plan::Ok(d) => *d <= deadline_ms,
                    Plan::Twice(d1, d2) => *d1.min(d2) <= deadline_ms,
                    _ => false,
                })
                .count() as u64;
            prop_assert_eq!(st.verified, expect);
        }
        Ok(())
    }

    fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
        proptest::collection::vec((1u64..4, 1u64..12, plan()), 0..60).prop_map(|v| {
            let (mut id, mut at) = (0u64, 0u64);
            v.into_iter()
                .map(|(gap, dt, plan)| {
                    id += gap;
                    at += dt;
                    Arrival { id, at, plan }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn strict_invariants(
            deadline in 5u64..120,
            max_pending in prop_oneof![1usize..8, Just(1000)],
            arrivals in arrivals(),
        ) {
            run_sim(Mode::Strict, false, deadline, max_pending, &arrivals)?;
        }

        #[test]
        fn strict_lookahead_invariants(
            lookahead in 1u32..6,
            deadline in 5u64..120,
            max_pending in prop_oneof![1usize..8, Just(1000)],
            arrivals in arrivals(),
        ) {
            run_sim_ahead(Mode::Strict, false, lookahead, deadline, max_pending, &arrivals)?;
        }

        #[test]
        fn predictive_invariants(
            every in 1u32..5,
            deadline in 5u64..120,
            max_pending in prop_oneof![1usize..8, Just(1000)],
            arrivals in arrivals(),
        ) {
            run_sim(Mode::Predictive { detect_every: every }, false, deadline, max_pending, &arrivals)?;
        }

        #[test]
        fn predictive_await_invariants(
            every in 1u32..5,
            deadline in 5u64..120,
            max_pending in prop_oneof![1usize..8, Just(1000)],
            arrivals in arrivals(),
        ) {
            run_sim(Mode::Predictive { detect_every: every }, true, deadline, max_pending, &arrivals)?;
        }
    }
}
