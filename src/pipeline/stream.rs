//! One stream's three lanes glued together: frames enter, the detect lane
//! (shared [`DetectService`]) and the track lane feed the scheduler, and the
//! publish lane releases censored frames strictly in order. The LiveKit
//! session, the file runner and the bench all drive this same type.

use super::batcher::Key;
use super::scheduler::{Event, FailReason, Scheduler, SchedulerConfig, Submit, Verdict};
use super::service::{Completion, DetectService};
use super::sidecar::{FrameRecord, Status};
use crate::backend::{InputSpec, Lane, Picture};
use crate::censor;
use crate::detect::zoom::{self, ZoomConfig};
use crate::detect::{nms, Letterbox, LetterboxMode, ResizeFilter};
use crate::frame::{BBox, Detection, Frame, Mask, MaskOrigin, MaskShape, PixelFormat};
use crate::policy::Policy;
use crate::track::{Tracker, TrackerConfig};
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-frame time spent in each stage, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    pub decode: f64,
    pub preprocess: f64,
    pub queue_wait: f64,
    pub infer: f64,
    pub track: f64,
    pub censor: f64,
    pub encode: f64,
}

/// A censored frame leaving the publish lane.
#[derive(Debug)]
pub struct Released {
    pub index: u64,
    pub pts: i64,
    /// The censored picture: on the host, or left on the device when an
    /// NVENC encoder follows ([`Lane::set_keep_on_device`]).
    pub picture: Picture,
    pub record: FrameRecord,
    /// When the frame entered the stream.
    pub arrived: Instant,
    pub times: StageTimes,
    /// Verified with no mask at all: nothing detected that the policy
    /// censors or keeps a region for (weak candidates and second looks
    /// included), no live track, not corrupt, not failed closed, not
    /// censored whole; its pixels are exactly the decoded input's, so it
    /// may leave as the input's own access unit (passthrough).
    pub clean: bool,
}

struct Pending {
    index: u64,
    pts: i64,
    frame: Picture,
    arrived: Instant,
    corrupt: bool,
    times: StageTimes,
}

/// Options of one stream.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    pub policy: Policy,
    pub scheduler: SchedulerConfig,
    /// `None` disables the tracker (KALMAN_ENABLED=false): strict mode then
    /// applies each frame's own detections only.
    pub tracker: Option<TrackerConfig>,
    /// How frames are resampled to the detector input.
    pub resize: ResizeFilter,
    /// Second looks at weak candidates.
    pub zoom: ZoomConfig,
}

/// Counters of one stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamCounters {
    pub frames_in: u64,
    pub released: u64,
    pub verified: u64,
    pub predicted: u64,
    pub fail_closed: u64,
    pub backpressured: u64,
    pub detector_errors: u64,
    /// Crops sent back to the detector for a second look.
    pub second_looks: u64,
}

/// A frame whose weak candidates are being looked at again: its own
/// detections and what the crops found so far.
struct Look {
    width: usize,
    height: usize,
    base: Vec<Detection>,
    found: Vec<Detection>,
    crops: Vec<zoom::Crop>,
    waiting: usize,
}

impl Look {
    /// The frame's detections with the crops', overlaps resolved the way
    /// the detector's own NMS does (the better score wins).
    fn merged(self) -> Vec<Detection> {
        let mut all = self.base;
        all.extend(self.found);
        nms(all, LOOK_NMS_IOU, f32::NEG_INFINITY)
    }
}

/// A track a detection of this frame continued adds its own mask when that
/// detection lacks more than this share of the region's remembered size.
const SHORTFALL_MASKED: f32 = 0.05;

/// The fail-closed reason of a frame moderation censored whole.
pub const CENSORED_WHOLE: &str = "censored whole by moderation";

/// NudeNet's NMS IoU, for merging a frame's detections with its crops'.
const LOOK_NMS_IOU: f32 = 0.45;

pub struct StreamPipeline {
    id: u32,
    svc: Arc<DetectService>,
    tx: Sender<Completion>,
    rx: Receiver<Completion>,
    scheduler: Scheduler,
    tracker: Option<Tracker>,
    policy: Policy,
    resize: ResizeFilter,
    zoom: ZoomConfig,
    /// Frames waiting for their second looks.
    looks: HashMap<u64, Look>,
    pending: VecDeque<Pending>,
    next_index: u64,
    counters: StreamCounters,
    lane: Lane,
    /// A moderator or a rule censors the whole stream.
    whole: CensorWhole,
}

/// The whole output censored on purpose (moderation), whatever the
/// detector finds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CensorWhole {
    #[default]
    Off,
    /// Until this instant.
    Until(Instant),
    /// Until a moderator resumes it.
    UntilResumed,
}

impl CensorWhole {
    /// Whether a frame released at `now` is censored whole.
    pub fn active(&self, now: Instant) -> bool {
        match self {
            CensorWhole::Off => false,
            CensorWhole::Until(t) => now < *t,
            CensorWhole::UntilResumed => true,
        }
    }
}

impl StreamPipeline {
    pub fn new(id: u32, svc: Arc<DetectService>, opts: StreamOptions) -> Self {
        let (tx, rx) = channel();
        let policy = opts.policy.lowered(svc.letterbox_mode().score_margin());
        StreamPipeline {
            id,
            svc,
            tx,
            rx,
            scheduler: Scheduler::new(opts.scheduler),
            tracker: opts.tracker.map(Tracker::new),
            policy,
            resize: opts.resize,
            zoom: opts.zoom,
            looks: HashMap::new(),
            pending: VecDeque::new(),
            next_index: 0,
            counters: StreamCounters::default(),
            lane: Lane::Cpu,
            whole: CensorWhole::Off,
        }
    }

    /// The backend lane this stream's pictures run on (the CPU by default;
    /// device pictures need a CUDA lane, else they are censored whole).
    pub fn with_lane(mut self, lane: Lane) -> Self {
        self.lane = lane;
        self
    }

    /// Censors every frame released from now on whole (moderation), until
    /// `whole` ends; `CensorWhole::Off` resumes.
    pub fn set_censor_whole(&mut self, whole: CensorWhole) {
        self.whole = whole;
    }

    /// The lane, for the encoder that follows and the decoder's reuse of
    /// device frames that have left.
    pub fn lane_mut(&mut self) -> &mut Lane {
        &mut self.lane
    }

    /// No more frames will be pushed: frames held back for lookahead leave
    /// without waiting for later ones.
    pub fn finish(&mut self) {
        self.scheduler.handle_end();
    }

    /// Frames inside the stream (not yet released).
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    pub fn counters(&self) -> StreamCounters {
        self.counters
    }

    /// How long a frame may wait for its detection before it leaves
    /// censored whole.
    pub fn deadline(&self) -> Duration {
        self.scheduler.config().deadline
    }

    /// Strict or predictive.
    pub fn mode(&self) -> super::scheduler::Mode {
        self.scheduler.config().mode
    }

    /// A frame enters. `corrupt` frames (decoder errors) are censored whole,
    /// as are host frames whose buffer does not match their size and device
    /// frames on a stream without a CUDA lane. Frame indices are assigned
    /// here so they are strictly increasing.
    pub fn push(&mut self, now: Instant, pts: i64, frame: Picture, corrupt: bool, decode: f64) {
        let malformed = match &frame {
            Picture::Host(f) => f.data.len() != Frame::expected_len(f.width, f.height),
            Picture::Device(_) => false,
        };
        let corrupt = corrupt || malformed || !self.lane.can_read(&frame);
        self.enter(now, pts, frame, corrupt, decode);
    }

    fn enter(&mut self, now: Instant, pts: i64, frame: Picture, corrupt: bool, decode: f64) {
        let index = self.next_index;
        self.next_index += 1;
        self.counters.frames_in += 1;
        let mut times = StageTimes {
            decode,
            ..StageTimes::default()
        };
        let submit = self.scheduler.handle_frame(now, index);
        if matches!(submit, Submit::Detect) {
            if corrupt {
                self.scheduler
                    .handle_detections(now, index, Err("corrupt frame".into()));
            } else {
                let t0 = Instant::now();
                let size = self.svc.input_size();
                let prepared = self.lane.prepare(&frame, None, self.input_spec(size));
                times.preprocess = t0.elapsed().as_secs_f64();
                match prepared {
                    Ok((tensor, lb)) => {
                        let key = Key {
                            stream: self.id,
                            frame: index,
                            part: 0,
                        };
                        let expires = now + self.scheduler.config().deadline;
                        let refused = self.svc.submit(key, expires, tensor, lb, self.tx.clone());
                        if let Err(input) = refused {
                            self.lane.recycle(input);
                            self.counters.backpressured += 1;
                            self.scheduler.handle_submit_failed(now, index);
                        }
                    }
                    Err(e) => {
                        self.counters.detector_errors += 1;
                        self.scheduler.handle_detections(now, index, Err(e));
                    }
                }
            }
        }
        self.pending.push_back(Pending {
            index,
            pts,
            frame,
            arrived: now,
            corrupt,
            times,
        });
    }

    fn take(&mut self, now: Instant, mut c: Completion) {
        if let Some(input) = c.spent.take() {
            self.lane.recycle(input);
        }
        let (frame, part) = (c.key.frame, c.key.part);
        if let Some(p) = self.pending.iter_mut().find(|p| p.index == frame) {
            if part == 0 {
                p.times.queue_wait = c.queue_wait.as_secs_f64();
                p.times.infer = c.infer.as_secs_f64();
            } else {
                p.times.infer += c.infer.as_secs_f64();
            }
        }
        if c.result.is_err() {
            self.counters.detector_errors += 1;
        }
        if part > 0 {
            self.take_look(now, frame, part, c.result);
            return;
        }
        let result = match c.result {
            Ok(dets) => match self.second_look(frame, dets) {
                Some(dets) => Ok(dets),
                // Verified once the crops are back.
                None => return,
            },
            Err(e) => Err(e),
        };
        self.scheduler.handle_detections(now, frame, result);
    }

    /// Sends crops around the frame's weak candidates back to the detector
    /// (see `detect::zoom`). `Some(dets)` when there is nothing to look at
    /// again (the frame's detections stand as they are), `None` when its
    /// verdict waits for the crops.
    fn second_look(&mut self, frame: u64, dets: Vec<Detection>) -> Option<Vec<Detection>> {
        if !self.zoom.enabled() {
            return Some(dets);
        }
        let Some(i) = self.pending.iter().position(|p| p.index == frame) else {
            return Some(dets);
        };
        let (w, h) = self.pending[i].frame.size();
        let (mode, size) = (self.svc.letterbox_mode(), self.svc.input_size());
        let input = match mode {
            LetterboxMode::Rect => self.zoom.input.min(size),
            LetterboxMode::Square => size,
        };
        let scale = Letterbox::with_mode(mode, w, h, size).scale;
        let crops = zoom::plan(&dets, &self.policy, &self.zoom, w, h, scale, input);
        if crops.is_empty() {
            return Some(dets);
        }
        let expires = self.pending[i].arrived + self.scheduler.config().deadline;
        let mut look = Look {
            width: w,
            height: h,
            base: dets,
            found: Vec::new(),
            crops: Vec::new(),
            waiting: 0,
        };
        for (k, crop) in crops.into_iter().enumerate() {
            let window = Some((crop.x, crop.y, crop.w, crop.h));
            let picture = &self.pending[i].frame;
            let prepared = self.lane.prepare(picture, window, self.input_spec(input));
            let key = Key {
                stream: self.id,
                frame,
                part: u8::try_from(k + 1).unwrap_or(u8::MAX),
            };
            let sent = match prepared {
                Ok((tensor, lb)) => {
                    match self.svc.submit(key, expires, tensor, lb, self.tx.clone()) {
                        Ok(()) => true,
                        Err(input) => {
                            self.lane.recycle(input);
                            false
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(stream = self.id, frame, "second look: {e}");
                    false
                }
            };
            if sent {
                look.waiting += 1;
                self.counters.second_looks += 1;
            } else {
                look.found.extend(crop.fallback(&self.policy));
            }
            look.crops.push(crop);
        }
        if look.waiting == 0 {
            return Some(look.merged());
        }
        self.looks.insert(frame, look);
        None
    }

    /// A crop's detections are back; the frame goes to the scheduler once
    /// all of its crops are.
    fn take_look(
        &mut self,
        now: Instant,
        frame: u64,
        part: u8,
        result: Result<Vec<Detection>, String>,
    ) {
        let Some(look) = self.looks.get_mut(&frame) else {
            return;
        };
        let Some(crop) = look.crops.get(usize::from(part).saturating_sub(1)) else {
            return;
        };
        match result {
            Ok(dets) => {
                let (w, h) = (look.width, look.height);
                let answers = dets
                    .iter()
                    .map(|d| crop.to_frame(d, w, h))
                    .filter(|d| crop.confirms(d, w, h));
                look.found.extend(answers);
            }
            Err(_) => {
                let fallback = crop.fallback(&self.policy);
                look.found.extend(fallback);
            }
        }
        look.waiting = look.waiting.saturating_sub(1);
        if look.waiting > 0 {
            return;
        }
        if let Some(look) = self.looks.remove(&frame) {
            self.scheduler
                .handle_detections(now, frame, Ok(look.merged()));
        }
    }

    /// Takes every detection that has come back, without blocking.
    pub fn pump(&mut self, now: Instant) {
        while let Ok(c) = self.rx.try_recv() {
            self.take(now, c);
        }
    }

    /// Blocks until a detection comes back, the next deadline, or `max`.
    pub fn wait(&mut self, max: Duration) {
        let now = Instant::now();
        let until = self
            .scheduler
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(max)
            .min(max);
        match self.rx.recv_timeout(until) {
            Ok(c) => {
                let now = Instant::now();
                self.take(now, c);
                self.pump(now);
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
    }

    /// The next censored frame, in order, if one may leave now.
    pub fn poll_output(&mut self, now: Instant) -> Option<Released> {
        self.pump(now);
        while let Some(ev) = self.scheduler.poll_event(now) {
            match ev {
                Event::Detections { frame, detections } => {
                    if let Some(tr) = self.tracker.as_mut() {
                        let t0 = Instant::now();
                        let (strong, weak): (Vec<_>, Vec<_>) = detections
                            .iter()
                            .filter(|d| self.policy.keeps(d))
                            .partition(|d| self.policy.accepts(d));
                        tr.observe(frame, &strong, &weak);
                        let dt = t0.elapsed().as_secs_f64();
                        if let Some(p) = self.pending.iter_mut().find(|p| p.index == frame) {
                            p.times.track += dt;
                        }
                    }
                }
                Event::Release { frame, verdict } => {
                    return Some(self.release(now, frame, verdict));
                }
            }
        }
        None
    }

    fn release(&mut self, now: Instant, frame: u64, verdict: Verdict) -> Released {
        // The scheduler releases every pushed frame once, in order, so the
        // front is this frame; anything else is censored whole.
        let mut p = match self.pending.pop_front() {
            Some(p) if p.index == frame => p,
            Some(p) => {
                let mut p = p;
                p.corrupt = true;
                p
            }
            None => Pending {
                index: frame,
                pts: 0,
                frame: Picture::Host(Frame::new(PixelFormat::I420, 2, 2)),
                arrived: now,
                corrupt: true,
                times: StageTimes::default(),
            },
        };
        self.counters.released += 1;
        // A frame leaving unverified (deadline) no longer waits for crops.
        self.looks.retain(|&f, _| f > frame);
        let t0 = Instant::now();
        let whole = self.whole.active(now);
        let mut found = false;
        let (mut status, mut reason, masks, detections) = if p.corrupt || whole {
            (
                Status::FailClosed,
                Some(
                    if whole {
                        CENSORED_WHOLE
                    } else {
                        "corrupt frame"
                    }
                    .to_string(),
                ),
                Vec::new(),
                Vec::new(),
            )
        } else {
            match verdict {
                Verdict::Verified { detections } => {
                    found = detections
                        .iter()
                        .any(|d| self.policy.keeps(d) || self.policy.accepts(d));
                    let own: Vec<_> = detections
                        .into_iter()
                        .filter(|d| self.policy.accepts(d))
                        .collect();
                    let mut masks: Vec<Mask> = own
                        .iter()
                        .map(|d| self.policy.mask(&d.bbox, d.class, MaskOrigin::Detected))
                        .collect();
                    // Censor first: every live track keeps its mask,
                    // whatever its state (a one-hit tentative track that
                    // missed, a region kept by a weak detection, a coasting
                    // one); one a strong detection of this frame continued
                    // adds its box only where that detection lacks part of
                    // the region (partly hidden).
                    masks.extend(self.track_masks(p.index));
                    censor::merge_overlapping(&mut masks);
                    (Status::Verified, None, masks, own)
                }
                Verdict::Predicted => {
                    let mut masks = self.track_masks(p.index);
                    censor::merge_overlapping(&mut masks);
                    (Status::Predicted, None, masks, Vec::new())
                }
                Verdict::FailClosed { reason } => (
                    Status::FailClosed,
                    Some(reason_text(&reason)),
                    Vec::new(),
                    Vec::new(),
                ),
            }
        };
        let (out, masks) = if status == Status::FailClosed {
            let mut out = self.lane.to_host(p.frame);
            censor::censor_full(&mut out, &self.policy.method);
            let m = full_frame_mask(&out);
            (Picture::Host(out), m)
        } else {
            match self.lane.censor(p.frame, &masks, &self.policy.method) {
                Ok(out) => (out, masks),
                Err((mut out, e)) => {
                    // The censored picture could not be made: the whole
                    // frame is censored instead.
                    tracing::warn!(
                        stream = self.id,
                        frame = p.index,
                        "{e}; frame censored whole"
                    );
                    censor::censor_full(&mut out, &self.policy.method);
                    status = Status::FailClosed;
                    reason = Some(e);
                    let m = full_frame_mask(&out);
                    (Picture::Host(out), m)
                }
            }
        };
        match status {
            Status::FailClosed => self.counters.fail_closed += 1,
            Status::Verified => self.counters.verified += 1,
            _ => self.counters.predicted += 1,
        }
        p.times.censor = t0.elapsed().as_secs_f64();
        let clean = status == Status::Verified && masks.is_empty() && !found;
        let record = FrameRecord {
            frame: p.index,
            pts: p.pts,
            status,
            reason,
            masks,
            detections,
            latency_ms: now.saturating_duration_since(p.arrived).as_secs_f64() * 1e3,
            passthrough: false,
            passthrough_off: None,
        };
        Released {
            index: p.index,
            pts: p.pts,
            picture: out,
            record,
            arrived: p.arrived,
            times: p.times,
            clean,
        }
    }

    /// The tracker's masks for `frame`: each live track's box widened by
    /// its uncertainty, or for a track a strong detection of this very
    /// frame continued (its detection is masked already) the filtered box
    /// pushed out on every side by what it lacks of the region's
    /// remembered extent (a face partly behind something is detected
    /// by its visible part, and which side is hidden is not known).
    fn track_masks(&self, frame: u64) -> Vec<Mask> {
        let Some(tr) = self.tracker.as_ref() else {
            return Vec::new();
        };
        // A detection of the whole region needs no second mask over it.
        let lacks = |t: &crate::track::TrackPrediction| {
            let (w, h) = (t.raw_bbox.width(), t.raw_bbox.height());
            t.shortfall.0 > SHORTFALL_MASKED * w || t.shortfall.1 > SHORTFALL_MASKED * h
        };
        tr.predict(frame)
            .into_iter()
            .filter(|t| self.policy.censors_class(t.class))
            .filter(|t| !t.covered || lacks(t))
            .map(|t| {
                let b = if t.covered {
                    t.raw_bbox.padded(t.shortfall.0, t.shortfall.1)
                } else {
                    t.bbox
                };
                self.policy.mask(&b, t.class, MaskOrigin::Predicted)
            })
            .collect()
    }
}

impl StreamPipeline {
    fn input_spec(&self, size: usize) -> InputSpec {
        InputSpec {
            mode: self.svc.letterbox_mode(),
            resize: self.resize,
            size,
            device: self.svc.device_input(),
        }
    }
}

fn full_frame_mask(f: &Frame) -> Vec<Mask> {
    vec![Mask {
        bbox: BBox::new(0.0, 0.0, f.width as f32, f.height as f32),
        shape: MaskShape::Rect,
        origin: MaskOrigin::FullFrame,
        class: 255,
    }]
}

fn reason_text(r: &FailReason) -> String {
    match r {
        FailReason::Deadline => "verification deadline missed".into(),
        FailReason::DetectorError(e) => format!("detector error: {e}"),
        FailReason::Backpressure => "detector queue full".into(),
        FailReason::Stale => "detector stale".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectBackend;
    use crate::detect::{class_index, Letterbox};
    use crate::error::DetectError;
    use crate::frame::{Detection, PixelFormat};
    use crate::pipeline::batcher::BatcherConfig;
    use crate::pipeline::scheduler::Mode;

    /// Finds one exposed breast at a fixed place, or fails on demand.
    struct Fixed {
        fail: bool,
    }

    impl DetectBackend for Fixed {
        fn input_size(&self) -> usize {
            32
        }
        fn detect(
            &mut self,
            _: &[f32],
            batch: usize,
            _: &[Letterbox],
        ) -> Result<Vec<Vec<Detection>>, DetectError> {
            if self.fail {
                return Err(DetectError::Runtime("down".into()));
            }
            let d = Detection {
                bbox: BBox::new(8.0, 8.0, 24.0, 24.0),
                class: class_index("FEMALE_BREAST_EXPOSED").unwrap_or(3),
                score: 0.9,
            };
            Ok(vec![vec![d]; batch])
        }
    }

    fn noisy(w: usize, h: usize, seed: u8) -> Frame {
        let mut f = Frame::new(PixelFormat::I420, w, h);
        for (i, p) in f.data.iter_mut().enumerate() {
            *p = (i as u8).wrapping_mul(37).wrapping_add(seed);
        }
        f
    }

    fn run(fail: bool, corrupt_at: Option<u64>, mode: Mode) -> Vec<Released> {
        let svc = Arc::new(
            DetectService::start(vec![Box::new(Fixed { fail })], BatcherConfig::default()).unwrap(),
        );
        let opts = StreamOptions {
            policy: Policy::default(),
            scheduler: SchedulerConfig {
                mode,
                ..SchedulerConfig::default()
            },
            tracker: Some(TrackerConfig::default()),
            resize: Default::default(),
            zoom: ZoomConfig::off(),
        };
        let mut s = StreamPipeline::new(7, svc, opts);
        let mut out = Vec::new();
        for i in 0..12u64 {
            let corrupt = corrupt_at == Some(i);
            s.push(
                Instant::now(),
                i as i64 * 10,
                Picture::Host(noisy(48, 40, i as u8)),
                corrupt,
                0.0,
            );
            while let Some(r) = s.poll_output(Instant::now()) {
                out.push(r);
            }
            if i == 0 {
                // Let the first detection come back and reach the tracker.
                for _ in 0..10 {
                    s.wait(Duration::from_millis(10));
                    while let Some(r) = s.poll_output(Instant::now()) {
                        out.push(r);
                    }
                }
            }
        }
        let give_up = Instant::now() + Duration::from_secs(10);
        while s.in_flight() > 0 && Instant::now() < give_up {
            s.wait(Duration::from_millis(20));
            while let Some(r) = s.poll_output(Instant::now()) {
                out.push(r);
            }
        }
        out
    }

    #[test]
    fn strict_releases_every_frame_in_order_with_its_masks() {
        let out = run(false, None, Mode::Strict);
        assert_eq!(out.len(), 12);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.index, i as u64);
            assert_eq!(r.pts, i as i64 * 10);
            assert_eq!(r.record.status, Status::Verified);
            assert!(r
                .record
                .masks
                .iter()
                .any(|m| m.origin == MaskOrigin::Detected && m.bbox.x0 <= 8.0));
            let before = noisy(48, 40, i as u8);
            let ratio = censor::detail_ratio(
                &before,
                r.picture.as_host().unwrap(),
                &BBox::new(8.0, 8.0, 24.0, 24.0),
            );
            assert!(ratio < 0.35, "frame {i}: detail ratio {ratio}");
        }
    }

    #[test]
    fn corrupt_frame_and_detector_failure_fail_closed() {
        let out = run(false, Some(5), Mode::Strict);
        assert_eq!(out.len(), 12);
        assert_eq!(out[5].record.status, Status::FailClosed);
        assert_eq!(out[5].record.masks[0].origin, MaskOrigin::FullFrame);
        assert_eq!(out[4].record.status, Status::Verified);
        let out = run(true, None, Mode::Strict);
        assert_eq!(out.len(), 12);
        assert!(out.iter().all(|r| r.record.status == Status::FailClosed));
        let before = noisy(48, 40, 3);
        let whole = BBox::new(0.0, 0.0, 48.0, 40.0);
        assert!(censor::detail_ratio(&before, out[3].picture.as_host().unwrap(), &whole) < 0.35);
    }

    #[test]
    fn predictive_mode_uses_the_tracker_between_detections() {
        let out = run(false, None, Mode::Predictive { detect_every: 3 });
        assert_eq!(out.len(), 12);
        assert!(out.iter().any(|r| r.record.status == Status::Predicted));
        // Once the first detection reached the tracker, predicted frames carry masks.
        let later: Vec<_> = out
            .iter()
            .skip(1)
            .filter(|r| r.record.status == Status::Predicted)
            .collect();
        assert!(!later.is_empty());
        assert!(later.iter().all(|r| !r.record.masks.is_empty()));
    }

    /// Predictive mode fed as fast as a file is read (no pause for the
    /// detector): every frame still leaves in order and masked, the ones sent
    /// to the detector verified, the others predicted from detections that
    /// came back before them.
    #[test]
    fn predictive_awaiting_detections_masks_every_frame_of_a_fast_input() {
        let svc = Arc::new(
            DetectService::start(
                vec![Box::new(Fixed { fail: false })],
                BatcherConfig::default(),
            )
            .unwrap(),
        );
        let opts = StreamOptions {
            policy: Policy::default(),
            scheduler: SchedulerConfig {
                mode: Mode::Predictive { detect_every: 3 },
                await_detections: true,
                ..SchedulerConfig::default()
            },
            tracker: Some(TrackerConfig::default()),
            resize: Default::default(),
            zoom: ZoomConfig::off(),
        };
        let mut s = StreamPipeline::new(2, svc, opts);
        let mut out = Vec::new();
        for i in 0..12u64 {
            s.push(
                Instant::now(),
                i as i64,
                Picture::Host(noisy(48, 40, i as u8)),
                false,
                0.0,
            );
            while let Some(r) = s.poll_output(Instant::now()) {
                out.push(r);
            }
        }
        let give_up = Instant::now() + Duration::from_secs(10);
        while s.in_flight() > 0 && Instant::now() < give_up {
            s.wait(Duration::from_millis(20));
            while let Some(r) = s.poll_output(Instant::now()) {
                out.push(r);
            }
        }
        assert_eq!(out.len(), 12);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.index, i as u64);
            let want = if i % 3 == 0 {
                Status::Verified
            } else {
                Status::Predicted
            };
            assert_eq!(r.record.status, want, "frame {i}");
            assert!(covers_box(&r.record.masks), "frame {i}: {:?}", r.record);
            let before = noisy(48, 40, i as u8);
            let ratio = censor::detail_ratio(
                &before,
                r.picture.as_host().unwrap(),
                &BBox::new(8.0, 8.0, 24.0, 24.0),
            );
            assert!(ratio < 0.35, "frame {i}: detail ratio {ratio}");
        }
    }

    /// Answers each real image with the next scripted score for one fixed
    /// box (`None`: nothing found); the service's warm-up images (all 0.5)
    /// get nothing.
    struct Scripted {
        scores: Vec<Option<f32>>,
        next: usize,
    }

    impl DetectBackend for Scripted {
        fn input_size(&self) -> usize {
            32
        }
        fn detect(
            &mut self,
            tensors: &[f32],
            batch: usize,
            _: &[Letterbox],
        ) -> Result<Vec<Vec<Detection>>, DetectError> {
            let per = tensors.len() / batch.max(1);
            Ok(tensors
                .chunks(per.max(1))
                .take(batch)
                .map(|t| {
                    if t.iter().all(|v| *v == 0.5) {
                        return Vec::new();
                    }
                    let score = self.scores.get(self.next).copied().flatten();
                    self.next += 1;
                    score
                        .map(|score| Detection {
                            bbox: BBox::new(8.0, 8.0, 24.0, 24.0),
                            class: class_index("FEMALE_BREAST_EXPOSED").unwrap_or(3),
                            score,
                        })
                        .into_iter()
                        .collect()
                })
                .collect())
        }
    }

    /// Strict mode, one frame at a time; the masks of each released frame.
    fn masks_of(scores: Vec<Option<f32>>, frames: u64) -> Vec<Vec<Mask>> {
        let backend = Scripted { scores, next: 0 };
        let svc = Arc::new(
            DetectService::start(vec![Box::new(backend)], BatcherConfig::default()).unwrap(),
        );
        let opts = StreamOptions {
            policy: Policy::default(),
            scheduler: SchedulerConfig::default(),
            tracker: Some(TrackerConfig::default()),
            resize: Default::default(),
            zoom: ZoomConfig::off(),
        };
        let mut s = StreamPipeline::new(1, svc, opts);
        let mut out = Vec::new();
        for i in 0..frames {
            s.push(
                Instant::now(),
                i as i64,
                Picture::Host(noisy(48, 40, i as u8)),
                false,
                0.0,
            );
            let give_up = Instant::now() + Duration::from_secs(10);
            while s.in_flight() > 0 && Instant::now() < give_up {
                s.wait(Duration::from_millis(10));
                while let Some(r) = s.poll_output(Instant::now()) {
                    assert_eq!(r.record.status, Status::Verified);
                    out.push(r.record.masks);
                }
            }
        }
        out
    }

    #[test]
    fn lookahead_masks_a_region_on_the_frames_before_it_was_found() {
        let run = |lookahead: u32| -> Vec<Vec<Mask>> {
            // Found from frame 3 on only.
            let scores = vec![None, None, None, Some(0.6), Some(0.6), Some(0.6)];
            let svc = Arc::new(
                DetectService::start(
                    vec![Box::new(Scripted { scores, next: 0 })],
                    BatcherConfig::default(),
                )
                .unwrap(),
            );
            let opts = StreamOptions {
                policy: Policy::default(),
                scheduler: SchedulerConfig {
                    lookahead,
                    ..SchedulerConfig::default()
                },
                tracker: Some(TrackerConfig::default()),
                resize: Default::default(),
                zoom: ZoomConfig::off(),
            };
            let mut s = StreamPipeline::new(5, svc, opts);
            let mut out = Vec::new();
            for i in 0..6u64 {
                s.push(
                    Instant::now(),
                    i as i64,
                    Picture::Host(noisy(48, 40, i as u8)),
                    false,
                    0.0,
                );
                // One at a time through the detector, so the script is in
                // frame order.
                let give_up = Instant::now() + Duration::from_secs(10);
                loop {
                    while let Some(r) = s.poll_output(Instant::now()) {
                        out.push(r.record.masks);
                    }
                    if s.scheduler.outstanding() == 0 || Instant::now() > give_up {
                        break;
                    }
                    s.wait(Duration::from_millis(5));
                }
            }
            s.finish();
            let give_up = Instant::now() + Duration::from_secs(10);
            while s.in_flight() > 0 && Instant::now() < give_up {
                s.wait(Duration::from_millis(5));
                while let Some(r) = s.poll_output(Instant::now()) {
                    out.push(r.record.masks);
                }
            }
            out
        };
        let none = run(0);
        assert_eq!(none.len(), 6);
        assert!(none[..3].iter().all(|m| m.is_empty()), "{none:?}");
        let ahead = run(2);
        assert_eq!(ahead.len(), 6);
        assert!(ahead[0].is_empty(), "3 frames before: out of reach");
        for (f, m) in ahead.iter().enumerate().skip(1) {
            assert!(covers_box(m), "frame {f}: {m:?}");
        }
    }

    fn covers_box(masks: &[Mask]) -> bool {
        crate::audit::coverage(&BBox::new(8.0, 8.0, 24.0, 24.0), masks) >= 0.999
    }

    #[test]
    fn a_region_found_once_stays_masked_through_misses() {
        // Found on frame 0 only (one hit: a tentative track), then missed.
        let max_coast = TrackerConfig::default().max_coast_frames as u64;
        let out = masks_of(vec![Some(0.3)], max_coast + 4);
        assert!(covers_box(&out[0]));
        for (f, m) in out.iter().enumerate().take(max_coast as usize + 1).skip(1) {
            assert!(covers_box(m), "frame {f}: {m:?}");
            assert!(m.iter().all(|m| m.origin == MaskOrigin::Predicted));
        }
        let last = &out[max_coast as usize + 1];
        assert!(last.is_empty(), "persistence ends: {last:?}");
    }

    #[test]
    fn a_sinking_score_keeps_its_mask_and_a_weak_one_alone_never_masks() {
        // 0.5 once, then 0.12 (under the 0.25 threshold, over the 0.1 keep
        // threshold) for longer than the persistence window.
        let mut scores = vec![Some(0.5)];
        scores.extend(std::iter::repeat_n(Some(0.12), 24));
        let out = masks_of(scores, 25);
        for (f, m) in out.iter().enumerate() {
            assert!(covers_box(m), "frame {f}: {m:?}");
        }
        // Weak alone starts nothing.
        let out = masks_of(vec![Some(0.12); 5], 5);
        assert!(out.iter().all(|m| m.is_empty()), "{out:?}");
    }

    /// A rect-letterbox backend for second looks: the whole 1280x720
    /// frame (a 320x192 input) shows a weak candidate at frame pixels
    /// (1000, 100)-(1040, 140); a 160x160 crop shows a strong one at crop
    /// pixels (150, 110)-(190, 150), or fails.
    struct Zoomer {
        fail_crop: bool,
    }

    impl DetectBackend for Zoomer {
        fn input_size(&self) -> usize {
            320
        }
        fn letterbox_mode(&self) -> LetterboxMode {
            LetterboxMode::Rect
        }
        fn detect(
            &mut self,
            tensors: &[f32],
            batch: usize,
            lbs: &[Letterbox],
        ) -> Result<Vec<Vec<Detection>>, DetectError> {
            let class = class_index("FEMALE_BREAST_EXPOSED").unwrap_or(3);
            let det = |x0, y0, x1, y1, score| Detection {
                bbox: BBox::new(x0, y0, x1, y1),
                class,
                score,
            };
            if tensors.iter().all(|v| *v == 0.5) {
                return Ok(vec![Vec::new(); batch]);
            }
            lbs.iter()
                .map(|lb| match lb.dims() {
                    (160, 160) if self.fail_crop => Err(DetectError::Runtime("crop".into())),
                    (160, 160) => Ok(vec![det(150.0, 110.0, 190.0, 150.0, 0.7)]),
                    _ => Ok(vec![det(1000.0, 100.0, 1040.0, 140.0, 0.1)]),
                })
                .collect()
        }
    }

    /// One 720p frame through a stream on [`Zoomer`]; its masks and the
    /// stream's counters.
    fn one_look(fail_crop: bool, zoom: ZoomConfig) -> (Vec<Mask>, StreamCounters) {
        let svc = Arc::new(
            DetectService::start(
                vec![Box::new(Zoomer { fail_crop })],
                BatcherConfig::default(),
            )
            .unwrap(),
        );
        let opts = StreamOptions {
            policy: Policy::default(),
            scheduler: SchedulerConfig::default(),
            tracker: Some(TrackerConfig::default()),
            resize: Default::default(),
            zoom,
        };
        let mut s = StreamPipeline::new(4, svc, opts);
        s.push(
            Instant::now(),
            0,
            Picture::Host(noisy(1280, 720, 9)),
            false,
            0.0,
        );
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            s.wait(Duration::from_millis(10));
            if let Some(r) = s.poll_output(Instant::now()) {
                assert_eq!(r.record.status, Status::Verified, "{:?}", r.record.reason);
                return (r.record.masks, s.counters());
            }
        }
        panic!("no frame out");
    }

    #[test]
    fn a_weak_candidate_gets_a_second_look_at_a_crop() {
        let (masks, c) = one_look(false, ZoomConfig::default());
        assert_eq!(c.second_looks, 1);
        // The crop (320 px around the candidate, corner (860, 0)) found it
        // at crop (150, 110): frame (1010, 110)-(1050, 150).
        let found = BBox::new(1010.0, 110.0, 1050.0, 150.0);
        assert!(crate::audit::coverage(&found, &masks) >= 0.999, "{masks:?}");
        assert!(masks.iter().any(|m| m.origin == MaskOrigin::Detected));
        // No second look: a weak candidate alone is not masked.
        let (masks, c) = one_look(false, ZoomConfig::off());
        assert_eq!(c.second_looks, 0);
        assert!(masks.is_empty(), "{masks:?}");
    }

    #[test]
    fn a_failed_second_look_masks_its_candidate() {
        let (masks, c) = one_look(true, ZoomConfig::default());
        assert_eq!(c.second_looks, 1);
        let weak = BBox::new(1000.0, 100.0, 1040.0, 140.0);
        assert!(crate::audit::coverage(&weak, &masks) >= 0.999, "{masks:?}");
    }

    #[test]
    fn mismatched_buffer_is_censored_whole() {
        let svc = Arc::new(
            DetectService::start(
                vec![Box::new(Fixed { fail: false })],
                BatcherConfig::default(),
            )
            .unwrap(),
        );
        let opts = StreamOptions {
            policy: Policy::default(),
            scheduler: SchedulerConfig::default(),
            tracker: None,
            resize: Default::default(),
            zoom: ZoomConfig::off(),
        };
        let mut s = StreamPipeline::new(0, svc, opts);
        let mut f = noisy(48, 40, 0);
        f.data.truncate(100);
        s.push(Instant::now(), 0, Picture::Host(f), false, 0.0);
        let mut got = None;
        for _ in 0..100 {
            if let Some(r) = s.poll_output(Instant::now()) {
                got = Some(r);
                break;
            }
            s.wait(Duration::from_millis(10));
        }
        assert_eq!(got.unwrap().record.status, Status::FailClosed);
    }
}
