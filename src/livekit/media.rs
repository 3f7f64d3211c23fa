//! The session's media thread: the broadcaster's access units as an engine
//! [`Source`] and the censored track's publisher as its [`Sink`], around the
//! one stream engine ([`crate::engine`]) that `censor` and `bench` run too.
//! What is live-only is here: input that waited too long in our queue is
//! decoded (references) but not shown; input far behind is not decoded and
//! stands in grey until a key frame (asked for with a PLI); the output's
//! RTP timeline keeps going forward across broadcaster reconnects; the
//! added latency sets the audio delay.

use super::io::Command;
use super::moderate::LiveModeration;
use super::preview::preview_of;
use super::session::SessionStats;
use super::timing::{LatencyEstimate, MAX_AUDIO_DELAY};
use crate::codec::is_keyframe;
use crate::engine::{Engine, Feed, Input, Output, Sink, Source};
use crate::error::Error;
use crate::moderation::Action;
use crate::pipeline::Status;
use std::cell::Cell;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Frames inside the pipeline beyond which new input frames are skipped:
/// ~270 ms at 30 fps, just above the strict-mode deadline (250 ms).
pub const MAX_IN_FLIGHT: usize = 8;

/// A decoded frame that waited longer than this in the media thread's
/// queue is not published.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_millis(100);

/// Input older than this is dropped up to the next key frame.
pub const MAX_INPUT_AGE: Duration = Duration::from_millis(400);

/// Media thread input.
pub enum MediaIn {
    AccessUnit {
        data: Arc<[u8]>,
        rtp_time: u64,
        contiguous: bool,
        arrived: Instant,
        /// When it entered the media thread's queue.
        queued: Instant,
    },
    /// The publisher (re)connected or a viewer needs a key frame.
    ForceKeyframe,
    /// The published track's negotiated `profile-level-id`, or why it
    /// cannot be read.
    PublishProfile(Result<(u8, u8, u8), String>),
    /// The remote track went away: decoder state is stale.
    Reset,
    /// The broadcaster whose track is subscribed (moderation names them).
    Publisher { identity: String, track_sid: String },
    /// A moderator's action from the page.
    Moderate { action: Action, label: String },
}

/// A session's moderation, shared by its source (moderator actions in) and
/// its sink (released frames in); both run on the media thread.
pub type SharedModeration = Rc<RefCell<Option<LiveModeration>>>;

/// What the engine makes of a message taken at `now`. `restarted` is set on
/// a reset: the output timeline and latency estimate start again.
pub fn input_of(
    m: MediaIn,
    now: Instant,
    restarted: &Cell<bool>,
    moderation: &SharedModeration,
) -> Option<Input> {
    Some(match m {
        MediaIn::ForceKeyframe => Input::ForceKeyframe,
        MediaIn::PublishProfile(p) => Input::PublishProfile(p),
        MediaIn::Reset => {
            restarted.set(true);
            Input::Reset
        }
        MediaIn::Publisher {
            identity,
            track_sid,
        } => {
            if let Some(m) = moderation.borrow_mut().as_mut() {
                m.publisher(identity, track_sid);
            }
            return None;
        }
        MediaIn::Moderate { action, label } => {
            let mut guard = moderation.borrow_mut();
            let m = guard.as_mut()?;
            m.moderator(action, &label, now);
            Input::CensorWhole(m.take_whole()?)
        }
        MediaIn::AccessUnit {
            data,
            rtp_time,
            contiguous,
            arrived,
            queued,
        } => {
            let (show, stale) = admit(&data, now, queued, arrived);
            Input::AccessUnit {
                data,
                pts: rtp_time as i64,
                arrival: now,
                origin: arrived,
                contiguous,
                show,
                stale,
            }
        }
    })
}

/// How an access unit taken at `now` is admitted, as `(show, stale)` for
/// [`Input::AccessUnit`]; `bench --live` admits its paced input the same
/// way. Waited over [`MAX_QUEUE_WAIT`] in our own queue (this thread fell
/// behind, e.g. a slow start or a CPU spike): decoded, to keep the
/// reference chain, but not published, so the backlog drains at decode
/// speed instead of at full processing speed. Older than
/// [`MAX_INPUT_AGE`] and not a key frame: decoding the backlog would only
/// publish stale frames; not decoded, grey until the next key frame.
pub fn admit(data: &[u8], now: Instant, queued: Instant, arrived: Instant) -> (bool, bool) {
    let late = now.saturating_duration_since(queued) > MAX_QUEUE_WAIT;
    let stale = !is_keyframe(data) && now.saturating_duration_since(arrived) > MAX_INPUT_AGE;
    (!late, stale)
}

/// The broadcaster's track as a source.
pub struct LiveSource<'a> {
    pub rx: &'a std_mpsc::Receiver<MediaIn>,
    pub stop: &'a AtomicBool,
    pub to_sub: mpsc::UnboundedSender<Command>,
    pub restarted: Rc<Cell<bool>>,
    pub moderation: SharedModeration,
}

impl Source for LiveSource<'_> {
    /// One message at a time, then whatever the pipeline can release:
    /// taking every queued access unit first would starve the publisher
    /// whenever input arrives faster than it is processed.
    fn next(&mut self, in_flight: usize) -> Result<Feed, Error> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(Feed::End);
        }
        // A rule decided on the last frame: the engine applies it first.
        if let Some(w) = self
            .moderation
            .borrow_mut()
            .as_mut()
            .and_then(LiveModeration::take_whole)
        {
            return Ok(Feed::Input(Input::CensorWhole(w)));
        }
        let wait = if in_flight > 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        match self.rx.recv_timeout(wait) {
            Ok(m) => Ok(
                match input_of(m, Instant::now(), &self.restarted, &self.moderation) {
                    Some(i) => Feed::Input(i),
                    None => Feed::Idle,
                },
            ),
            // Nothing new: sleep until a detection, a deadline or 5 ms.
            Err(std_mpsc::RecvTimeoutError::Timeout) if in_flight > 0 => {
                Ok(Feed::Wait(Duration::from_millis(5)))
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => Ok(Feed::Idle),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Ok(Feed::End),
        }
    }

    fn keyframe_wanted(&mut self) {
        let _ = self.to_sub.send(Command::RequestKeyframe);
    }
}

/// The censored track's publisher as a sink.
pub struct LiveSink {
    pub to_pub: mpsc::UnboundedSender<Command>,
    pub stats: Arc<SessionStats>,
    pub restarted: Rc<Cell<bool>>,
    pub moderation: SharedModeration,
    /// Input timestamp and output timestamp of the first frame of the
    /// current input stream: a broadcaster that comes back starts a new
    /// random RTP timeline, while our track's must keep going forward or
    /// receivers drop the frames as old.
    ts_base: Option<(i64, u64)>,
    last_out_ts: u64,
    latency: LatencyEstimate,
    /// Start and frame count of the current one-second fps window.
    fps_window: (Instant, u64),
}

impl LiveSink {
    pub fn new(
        to_pub: mpsc::UnboundedSender<Command>,
        stats: Arc<SessionStats>,
        restarted: Rc<Cell<bool>>,
        moderation: SharedModeration,
    ) -> Self {
        LiveSink {
            to_pub,
            stats,
            restarted,
            moderation,
            ts_base: None,
            last_out_ts: 0,
            latency: LatencyEstimate::default(),
            fps_window: (Instant::now(), 0),
        }
    }

    /// A censored access unit is being sent: its added latency (network
    /// arrival to now) sets the audio delay.
    fn sent(&mut self, arrived: Instant) {
        let added = arrived.elapsed();
        self.stats.added_latency.observe_ms(added);
        if let Some(d) = self.latency.push(added) {
            let d = d.min(MAX_AUDIO_DELAY);
            self.stats
                .audio_delay_us
                .store(d.as_micros() as u64, Ordering::Relaxed);
        }
        let (start, n) = &mut self.fps_window;
        *n += 1;
        let span = start.elapsed();
        if span >= Duration::from_secs(1) {
            let fps = *n as f64 / span.as_secs_f64();
            self.stats
                .fps_x100
                .store((fps * 100.0) as u64, Ordering::Relaxed);
            *start = Instant::now();
            *n = 0;
        }
    }

    /// Maps an input timestamp (90 kHz) onto our track's timeline: same
    /// spacing as the input, continuous across input streams, never
    /// backwards.
    fn output_ts(&mut self, pts: i64) -> u64 {
        // One frame at 30 fps after the last output when a new input starts.
        let next = self.last_out_ts.saturating_add(3000);
        let (in0, out0) = *self.ts_base.get_or_insert((pts, next));
        let t = (out0 as i64).saturating_add(pts.saturating_sub(in0));
        let t = (t.max(0) as u64).max(self.last_out_ts.saturating_add(1));
        self.last_out_ts = t;
        t
    }
}

impl Sink for LiveSink {
    fn write(&mut self, out: Output) -> Result<(), Error> {
        if self.restarted.take() {
            self.ts_base = None;
            self.latency.reset();
        }
        if out.record.status == Status::FailClosed {
            tracing::debug!(frame = out.index, reason = ?out.record.reason, "fail-closed");
        }
        if let Some(m) = self.moderation.borrow_mut().as_mut() {
            m.on_frame(&out.record, Instant::now());
            self.stats
                .censored_whole
                .store(m.censor_whole().active(Instant::now()), Ordering::Relaxed);
        }
        if let Some(p) = out
            .snapshot
            .as_ref()
            .and_then(|f| preview_of(f, &out.record.masks, out.pts))
        {
            self.stats.preview.set(p);
        }
        let au = match out.encoded {
            Some(Ok(au)) if !au.is_empty() => au,
            Some(Err(e)) => {
                // One bad frame (e.g. a tiny placeholder picture when the
                // broadcaster leaves) must not end the session: it is not
                // published, the encoder restarts with an IDR.
                tracing::warn!(
                    width = out.width,
                    height = out.height,
                    "frame not published: {e}"
                );
                return Ok(());
            }
            _ => return Ok(()),
        };
        self.sent(out.origin);
        self.stats.access_units_out.fetch_add(1, Ordering::Relaxed);
        let rtp_time_90k = self.output_ts(out.pts);
        let _ = self.to_pub.send(Command::Video {
            rtp_time_90k,
            data: au,
        });
        Ok(())
    }

    /// The engine's counters, published for `/metrics`.
    fn tick(&mut self, engine: &Engine) {
        let c = engine.counters();
        let s = &self.stats;
        for (a, v) in [
            (&s.access_units_in, c.access_units),
            (&s.frames_decoded, c.frames_decoded),
            (&s.decode_errors, c.decode_errors),
            (&s.encode_errors, c.encode_errors),
            (&s.frames_skipped, c.frames_skipped),
            (&s.frames_late, c.frames_late),
            (&s.access_units_dropped, c.access_units_dropped),
            (&s.frames_corrupt, c.frames_corrupt),
            (&s.frames_released, c.released),
            (&s.fail_closed, c.fail_closed),
            (&s.keyframes_forced, c.keyframes_forced),
            (&s.encoder_fallbacks, c.encoder_fallbacks),
            (&s.frames_passed_through, c.passed_through),
            (&s.passthrough_switches, c.passthrough_switches),
        ] {
            a.store(v, Ordering::Relaxed);
        }
        s.passthrough_active
            .store(engine.passthrough_active(), Ordering::Relaxed);
        let off = engine.passthrough_off();
        if let Ok(mut why) = s.passthrough_off.lock() {
            if why.as_deref() != off {
                *why = off.map(str::to_string);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::codec::test_util::pattern;
    use crate::codec::{Decoder, Encoder, EncoderConfig};
    use crate::engine::test_util::engine_finding_nothing;
    use crate::engine::EngineOptions;
    use crate::frame::Frame;
    use crate::livekit::moderate::ModerationCtx;
    use crate::moderation::Moderation;
    use std::sync::atomic::AtomicU64;

    struct Harness {
        engine: Engine,
        source: LiveSource<'static>,
        sink: LiveSink,
        to_pub: mpsc::UnboundedReceiver<Command>,
        to_sub: mpsc::UnboundedReceiver<Command>,
    }

    fn harness_on(backend: &Backend) -> Harness {
        let (pub_tx, to_pub) = mpsc::unbounded_channel();
        let (sub_tx, to_sub) = mpsc::unbounded_channel();
        let engine = engine_finding_nothing(
            backend,
            EngineOptions {
                passthrough: crate::engine::PassthroughOptions::off(),
                fps: 30.0,
                encode: true,
                max_in_flight: Some(MAX_IN_FLIGHT),
                snapshot_every: Some(Duration::ZERO),
                late_margin: Some(crate::engine::LATE_MARGIN),
            },
        );
        let restarted = Rc::new(Cell::new(false));
        let moderation: SharedModeration = Rc::default();
        // The harness feeds the engine itself; the source only asks for
        // key frames.
        let (_, rx) = std_mpsc::channel();
        let source = LiveSource {
            rx: Box::leak(Box::new(rx)),
            stop: Box::leak(Box::new(AtomicBool::new(false))),
            to_sub: sub_tx,
            restarted: restarted.clone(),
            moderation: moderation.clone(),
        };
        let sink = LiveSink::new(
            pub_tx,
            Arc::new(SessionStats::default()),
            restarted,
            moderation,
        );
        Harness {
            engine,
            source,
            sink,
            to_pub,
            to_sub,
        }
    }

    fn harness() -> Harness {
        harness_on(&Backend::Cpu)
    }

    impl Harness {
        /// Moderation with no rules and no LiveKit calls, as `serve` runs it.
        fn moderated(self, runtime: tokio::runtime::Handle) -> Self {
            let ctx = ModerationCtx {
                hub: Arc::new(Moderation::hub_only()),
                rules: Vec::new(),
                actions: None,
                runtime,
            };
            *self.source.moderation.borrow_mut() =
                Some(LiveModeration::new(ctx, "room", self.sink.stats.clone()));
            self
        }

        fn au(&mut self, data: &[u8], n: u64, contiguous: bool, arrived: Instant) {
            self.au_queued(data, n, contiguous, arrived, Instant::now());
        }

        fn au_queued(
            &mut self,
            data: &[u8],
            n: u64,
            contiguous: bool,
            arrived: Instant,
            queued: Instant,
        ) {
            let m = MediaIn::AccessUnit {
                data: data.into(),
                rtp_time: n * 3000,
                contiguous,
                arrived,
                queued,
            };
            self.take(m);
        }

        fn take(&mut self, m: MediaIn) {
            let input = input_of(
                m,
                Instant::now(),
                &self.source.restarted,
                &self.source.moderation,
            );
            if let Some(i) = input {
                self.engine.take(i).unwrap();
            }
            self.drain();
        }

        fn drain(&mut self) {
            if self.engine.take_keyframe_wanted() {
                self.source.keyframe_wanted();
            }
            while let Some(out) = self.engine.poll(Instant::now()) {
                self.sink.write(out).unwrap();
            }
            self.sink.tick(&self.engine);
        }

        /// Until the pipeline has released everything (the detector is
        /// a thread; bounded).
        fn settle(&mut self) {
            for _ in 0..500 {
                self.drain();
                if self.engine.in_flight() == 0 {
                    return;
                }
                self.engine.wait(Duration::from_millis(20));
            }
            panic!("pipeline did not drain");
        }

        fn stat(&self, f: impl Fn(&SessionStats) -> &AtomicU64) -> u64 {
            f(&self.sink.stats).load(Ordering::Relaxed)
        }

        fn videos(&mut self) -> usize {
            std::iter::from_fn(|| self.to_pub.try_recv().ok())
                .filter(|c| matches!(c, Command::Video { .. }))
                .count()
        }

        fn keyframe_asks(&mut self) -> usize {
            std::iter::from_fn(|| self.to_sub.try_recv().ok())
                .filter(|c| matches!(c, Command::RequestKeyframe))
                .count()
        }
    }

    /// `serve --gpu`: NVDEC frames take the device path and every one is
    /// published (NVENC, or openh264 after one copy), decodable at its size.
    /// Skipped where no GPU is usable (`scripts/gpu-check.sh run` runs it,
    /// and fails it there when it skips).
    #[test]
    fn gpu_session_publishes_every_frame() {
        let p = crate::gpu::probe();
        if !p.usable() {
            assert!(
                std::env::var_os("LIVECENSOR_EXPECT_GPU").is_none(),
                "LIVECENSOR_EXPECT_GPU is set but no GPU is usable: {p}"
            );
            eprintln!("SKIPPED gpu_session_publishes_every_frame: no usable GPU ({p})");
            return;
        }
        let backend = Backend::open(&crate::config::GpuSection {
            enabled: true,
            device: 0,
        })
        .unwrap();
        let (w, h) = (320, 240);
        let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).unwrap();
        let aus: Vec<Vec<u8>> = (0..10)
            .map(|i| enc.encode(&pattern(w, h, i), i == 0).unwrap())
            .collect();
        let mut t = harness_on(&backend);
        for (i, au) in aus.iter().enumerate() {
            t.au(au, i as u64, true, Instant::now());
        }
        t.settle();
        assert_eq!(t.stat(|s| &s.frames_decoded), 10);
        assert_eq!(t.stat(|s| &s.fail_closed), 0);
        assert_eq!(t.stat(|s| &s.encode_errors), 0);
        let out: Vec<Vec<u8>> = std::iter::from_fn(|| t.to_pub.try_recv().ok())
            .filter_map(|c| match c {
                Command::Video { data, .. } => Some(data),
                _ => None,
            })
            .collect();
        assert_eq!(out.len(), 10);
        let mut dec = Decoder::new().unwrap();
        let frames: Vec<Frame> = out.iter().flat_map(|au| dec.decode(au).unwrap()).collect();
        assert_eq!(frames.len(), 10);
        assert!(frames.iter().all(|f| (f.width, f.height) == (w, h)));
        eprintln!(
            "gpu session: 10/10 published, decoder {:?}, encoder {}",
            t.engine.decoder_name(),
            t.engine.encoder_description()
        );
    }

    #[test]
    fn frames_waiting_for_a_key_frame_are_censored_whole_not_dropped() {
        let (w, h) = (64, 48);
        let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).unwrap();
        let aus: Vec<Vec<u8>> = (0..6)
            .map(|i| enc.encode(&pattern(w, h, i), false).unwrap())
            .collect();
        let mut t = harness();
        let now = Instant::now();

        // Before the first picture there is no size: nothing is shown, a
        // key frame is asked for.
        t.au(&aus[1], 0, true, now);
        assert_eq!(t.engine.in_flight(), 0);
        assert!(t.keyframe_asks() >= 1);

        t.au(&aus[0], 1, true, now);
        t.settle();
        assert_eq!(t.stat(|s| &s.frames_corrupt), 0);
        assert_eq!(t.stat(|s| &s.fail_closed), 0);
        assert_eq!(t.videos(), 1);

        // Loss: decoded pictures are pushed, marked corrupt.
        t.au(&aus[2], 2, false, now);
        t.au(&aus[3], 3, true, now);
        assert_eq!(t.stat(|s| &s.frames_corrupt), 2);
        assert!(t.keyframe_asks() >= 2);
        // A new input (no decoder): grey stand-ins of the last size.
        t.take(MediaIn::Reset);
        t.au(&aus[4], 4, true, now);
        // Far behind: not decoded, still shown (grey, censored whole).
        t.au(&aus[5], 5, true, now - Duration::from_secs(1));
        assert_eq!(t.stat(|s| &s.access_units_dropped), 1);
        assert_eq!(t.stat(|s| &s.frames_corrupt), 4);
        t.settle();
        assert_eq!(t.stat(|s| &s.frames_released), 5);
        assert_eq!(t.stat(|s| &s.fail_closed), 4);
        assert_eq!(t.videos(), 4, "every frame is published, censored whole");

        // The next IDR ends it.
        let idr = enc.encode(&pattern(w, h, 6), true).unwrap();
        assert!(is_keyframe(&idr));
        t.au(&idr, 6, true, Instant::now());
        t.settle();
        assert_eq!(t.stat(|s| &s.frames_released), 6);
        assert_eq!(t.stat(|s| &s.fail_closed), 4);
        assert_eq!(t.stat(|s| &s.frames_corrupt), 4);
        assert_eq!(t.videos(), 1);
        // Six frames are inside the estimate's warm-up: audio not held yet.
        assert_eq!(t.stat(|s| &s.audio_delay_us), 0);
    }

    #[test]
    fn a_backlog_is_decoded_but_not_published_then_fresh_frames_flow() {
        let (w, h) = (64, 48);
        let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).unwrap();
        let aus: Vec<Vec<u8>> = (0..4)
            .map(|i| enc.encode(&pattern(w, h, i), false).unwrap())
            .collect();
        let mut t = harness();
        let now = Instant::now();
        t.au(&aus[0], 0, true, now);
        t.settle();
        assert_eq!(t.videos(), 1);
        // Two access units that sat in our queue past MAX_QUEUE_WAIT.
        let old = now - MAX_QUEUE_WAIT - Duration::from_millis(50);
        t.au_queued(&aus[1], 1, true, now, old);
        t.au_queued(&aus[2], 2, true, now, old);
        assert_eq!(t.stat(|s| &s.frames_skipped), 2);
        assert_eq!(t.stat(|s| &s.frames_decoded), 3, "still decoded");
        // The next fresh one decodes on the kept reference chain and goes out
        // verified, not censored whole.
        t.au(&aus[3], 3, true, Instant::now());
        t.settle();
        assert_eq!(t.videos(), 1);
        assert_eq!(t.stat(|s| &s.frames_released), 2);
        assert_eq!(t.stat(|s| &s.fail_closed), 0);
        assert_eq!(t.stat(|s| &s.frames_corrupt), 0);
    }

    /// Far behind and queued here too long (this thread cannot keep up):
    /// not decoded and no grey stand-in either, so the backlog costs
    /// nothing and drains at once; the next key frame flows again.
    #[test]
    fn a_stale_backlog_is_dropped_without_stand_ins() {
        let (w, h) = (64, 48);
        let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).unwrap();
        let aus: Vec<Vec<u8>> = (0..4)
            .map(|i| enc.encode(&pattern(w, h, i), i == 3).unwrap())
            .collect();
        let mut t = harness();
        let now = Instant::now();
        t.au(&aus[0], 0, true, now);
        t.settle();
        assert_eq!(t.videos(), 1);
        let old = now - MAX_INPUT_AGE - Duration::from_millis(50);
        t.au_queued(&aus[1], 1, true, old, old);
        t.au_queued(&aus[2], 2, true, old, old);
        t.settle();
        assert_eq!(t.stat(|s| &s.access_units_dropped), 2);
        assert_eq!(t.stat(|s| &s.frames_decoded), 1, "not decoded");
        assert_eq!(t.stat(|s| &s.frames_released), 1, "no grey stand-ins");
        assert_eq!(t.videos(), 0);
        assert!(t.keyframe_asks() >= 1);
        t.au(&aus[3], 3, true, Instant::now());
        t.settle();
        assert_eq!(t.videos(), 1);
        assert_eq!(t.stat(|s| &s.frames_released), 2);
        assert_eq!(t.stat(|s| &s.fail_closed), 0);
    }

    /// A moderator's "censor whole" turns every following frame into a
    /// whole-frame censored one until resumed; the preview is of the
    /// censored output.
    #[test]
    fn censor_whole_until_resumed_and_a_preview_of_the_output() {
        let (w, h) = (64, 48);
        let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).unwrap();
        let aus: Vec<Vec<u8>> = (0..4)
            .map(|i| enc.encode(&pattern(w, h, i), i == 0).unwrap())
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut t = harness().moderated(rt.handle().clone());
        let moderate = |action| MediaIn::Moderate {
            action,
            label: "tester".into(),
        };
        t.au(&aus[0], 0, true, Instant::now());
        t.settle();
        assert_eq!(t.stat(|s| &s.fail_closed), 0);
        let p = t.sink.stats.preview.get().expect("a preview");
        assert_eq!((p.width, p.height), (w, h));
        t.take(moderate(Action::CensorWhole { duration_s: None }));
        t.au(&aus[1], 1, true, Instant::now());
        t.au(&aus[2], 2, true, Instant::now());
        t.settle();
        assert_eq!(t.stat(|s| &s.fail_closed), 2);
        let p = t.sink.stats.preview.get().expect("a preview");
        assert_eq!(p.masks.len(), 1, "the whole-frame mask is drawn");
        t.take(moderate(Action::Resume));
        t.au(&aus[3], 3, true, Instant::now());
        t.settle();
        assert_eq!(t.stat(|s| &s.fail_closed), 2);
        assert_eq!(t.videos(), 4);
    }

    #[test]
    fn the_output_timeline_goes_forward_across_a_reset() {
        let (pub_tx, _rx) = mpsc::unbounded_channel();
        let restarted = Rc::new(Cell::new(false));
        let mut sink = LiveSink::new(
            pub_tx,
            Arc::new(SessionStats::default()),
            restarted,
            Rc::default(),
        );
        let a = sink.output_ts(90_000);
        let b = sink.output_ts(93_000);
        assert_eq!(b - a, 3000);
        sink.ts_base = None;
        // A new broadcaster starts its own random timeline, far back.
        let c = sink.output_ts(5);
        assert_eq!(c, b + 3000);
    }
}
