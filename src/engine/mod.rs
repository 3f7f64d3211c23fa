//! One stream engine for every command: a [`Source`] (a file, a LiveKit
//! track, a synthetic clip) feeds access units or pictures; the engine
//! decodes them on its backend (openh264 or NVDEC), runs the stream
//! pipeline (detect, track, censor) and encodes what it releases (openh264
//! or NVENC, [`EncoderSlot`]); a [`Sink`] (a file muxer and sidecar, a
//! LiveKit publisher, the bench's collector) takes each [`Output`]. `censor`,
//! `bench` and `serve` supply only a source and a sink and call [`drive`].
//!
//! What the engine does the same for all of them: a frame that cannot be
//! decoded (a lost or corrupt access unit, a decoder error) leaves as a grey
//! picture censored whole, and so does every frame until the next key frame
//! decodes; the decoder concealing an error censors that frame whole too; a
//! failed encode is reported on its output and the encoder restarts with an
//! IDR; every fallback between GPU and CPU follows [`crate::backend`].
//!
//! On the CPU backend a worker thread per stream encodes ([`encode`]) while
//! the stream's thread works on the next frames; frames leave in order.
//! NVENC (and openh264 behind a CUDA lane) encodes inline: it works on the
//! lane's CUDA stream.
//!
//! A frame verified clean may leave as the input's own access unit instead
//! of being encoded again ([`passthrough`]): the engine knows which access
//! unit each picture came of, the input's parameter sets, and whether the
//! input can switch cleanly at all (no reordering, a profile that fits).

use crate::backend::{grey, Backend, Decoder, EncoderSlot, Lane, Picture};
use crate::codec::{is_keyframe, parse_sps, AccessUnitInfo, START_CODE};
use crate::error::Error;
use crate::frame::Frame;
use crate::pipeline::stream::{CensorWhole, Released, StageTimes, StreamPipeline};
use crate::pipeline::FrameRecord;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod encode;
pub mod passthrough;
#[cfg(test)]
pub(crate) mod test_util;

pub use encode::{EncodeWorker, FrameEncoder, MakeEncoder};
pub use passthrough::{Decision, FrameFacts, Passthrough, PassthroughOptions, Publish};

/// How a stream runs.
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    /// Clean frames leave as the input's own access units.
    pub passthrough: PassthroughOptions,
    /// The input's frame rate (the encoder's rate control).
    pub fps: f32,
    /// Encode released frames (an H.264 sink); `false` hands the sink host
    /// pictures (a Y4M file).
    pub encode: bool,
    /// Frames inside the pipeline beyond which new ones are decoded but
    /// skipped, never released (live: latency must not grow without bound).
    pub max_in_flight: Option<usize>,
    /// A host copy of a censored frame at most this often
    /// ([`Output::snapshot`]: the moderator's preview).
    pub snapshot_every: Option<Duration>,
    /// Live: a released frame that would leave (encode included) later
    /// than the pipeline's deadline plus this margin after it entered is
    /// dropped, not encoded: a machine behind real time sends fewer frames
    /// rather than later ones, so latency stays bounded ([`LATE_MARGIN`]).
    pub late_margin: Option<Duration>,
}

/// How far past the detection deadline a live frame may still leave: room
/// for censoring and encoding a frame released at its deadline (a detector
/// stall fails frames closed at the deadline; they still go out).
pub const LATE_MARGIN: Duration = Duration::from_millis(100);

/// What a source hands the engine.
#[derive(Debug)]
pub enum Input {
    /// One Annex-B access unit.
    AccessUnit {
        data: Arc<[u8]>,
        pts: i64,
        /// Clock of the added latency and of the strict deadline.
        arrival: Instant,
        /// When it reached us (live: network arrival), for the sink.
        origin: Instant,
        /// False after a gap (lost packets): wait for a key frame.
        contiguous: bool,
        /// False: decode it (references) but release nothing for it.
        show: bool,
        /// Too old to decode: a grey stand-in, then wait for a key frame.
        stale: bool,
    },
    /// A picture a source decoded itself (a file reader, Y4M).
    Picture {
        picture: Picture,
        pts: i64,
        arrival: Instant,
        origin: Instant,
        /// Decoded from damaged data: censored whole.
        corrupt: bool,
        /// Seconds spent decoding it.
        decode: f64,
        /// The access unit it alone came of, when the source knows.
        au: Option<Arc<[u8]>>,
    },
    /// The input restarted (a new broadcaster track): decoder state is stale.
    Reset,
    /// The next encoded frame must be an IDR (a new viewer).
    ForceKeyframe,
    /// Live: the output's negotiated `profile-level-id`, or why it cannot
    /// be read (then nothing passes through).
    PublishProfile(Result<(u8, u8, u8), String>),
    /// Moderation: censor the whole output (or resume with `Off`).
    CensorWhole(CensorWhole),
}

/// A released frame, encoded or as a host picture.
#[derive(Debug)]
pub struct Output {
    pub index: u64,
    pub pts: i64,
    pub record: FrameRecord,
    /// When it entered the pipeline (the latency clock).
    pub arrived: Instant,
    /// Its input's origin (see [`Input::AccessUnit`]).
    pub origin: Instant,
    /// When encoding finished (or the picture was ready).
    pub done: Instant,
    /// Stage times, encode included.
    pub times: StageTimes,
    /// The access unit (`encode`), or why there is none for this frame;
    /// the input's own when `record.passthrough`.
    pub encoded: Option<Result<Vec<u8>, String>>,
    /// The censored host picture (`encode = false`).
    pub picture: Option<Frame>,
    /// A host copy of the censored picture, every `snapshot_every`.
    pub snapshot: Option<Frame>,
    pub width: usize,
    pub height: usize,
}

/// Counters of one engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineCounters {
    pub access_units: u64,
    pub frames_decoded: u64,
    pub decode_errors: u64,
    pub frames_corrupt: u64,
    /// Decoded but not released (late or over `max_in_flight`).
    pub frames_skipped: u64,
    /// Released by the pipeline but not sent: past the output deadline
    /// ([`EngineOptions::late_margin`]).
    pub frames_late: u64,
    /// Access units not decoded (stale).
    pub access_units_dropped: u64,
    pub encode_errors: u64,
    pub keyframes_forced: u64,
    pub fail_closed: u64,
    pub released: u64,
    /// Streams that left NVENC for openh264 for good.
    pub encoder_fallbacks: u64,
    pub nvenc_errors: u64,
    /// Frames that left as the input's own access units.
    pub passed_through: u64,
    /// Switches from forwarding to our encoder (each one an IDR).
    pub passthrough_switches: u64,
}

/// A picture's input access unit, for passthrough.
#[derive(Debug)]
struct AuRef {
    /// Input access units are numbered in arrival order.
    seq: u64,
    data: Arc<[u8]>,
    idr: bool,
}

/// How released frames are encoded.
enum Encoding {
    /// Not at all: the sink takes host pictures.
    Pictures,
    /// On the stream's thread (NVENC, or anything on a CUDA lane).
    Inline(EncoderSlot),
    /// On the stream's encoder thread.
    Thread(EncodeWorker),
}

/// A released frame on its way out, in release order.
struct Leaving {
    out: Output,
    /// Its encode is not back yet: it and every frame behind it wait.
    encoding: bool,
}

/// What the engine remembers of a frame inside the pipeline.
#[derive(Debug)]
struct InFlight {
    origin: Instant,
    au: Option<AuRef>,
}

pub struct Engine {
    pipeline: StreamPipeline,
    backend: Backend,
    opts: EngineOptions,
    decoder: Option<Decoder>,
    encoder: Encoding,
    /// Released frames not handed out yet (their encodes pending, or behind
    /// one that is).
    leaving: VecDeque<Leaving>,
    /// Until the next key frame decodes, frames are censored whole: after
    /// loss, a decoder error or a new input.
    waiting_for_keyframe: bool,
    /// A key frame is wanted from the source (live: a PLI).
    keyframe_wanted: bool,
    force_idr: bool,
    /// The last decoded picture's size: the grey stand-in's.
    last_size: Option<(usize, usize)>,
    /// The frames inside the pipeline, in push order (the pipeline
    /// releases in that order).
    in_flight: VecDeque<InFlight>,
    passthrough: Passthrough,
    /// Number of the next input access unit (or picture).
    next_au: u64,
    /// The input's last SPS and PPS NALs, put in front of a forwarded IDR
    /// that lacks them.
    input_sps: Vec<Vec<u8>>,
    input_pps: Vec<Vec<u8>>,
    /// Why passthrough went off has been written on a frame record.
    off_reported: bool,
    counters: EngineCounters,
    last_snapshot: Option<Instant>,
    /// Recent encode time (moving average), for the output deadline.
    encode_estimate: Duration,
}

impl Engine {
    /// A stream on `backend`: its pipeline gets the backend's lane.
    pub fn new(
        pipeline: StreamPipeline,
        backend: &Backend,
        opts: EngineOptions,
    ) -> Result<Engine, Error> {
        let pipeline = pipeline.with_lane(backend.lane()?);
        let mut passthrough = Passthrough::new(opts.passthrough);
        if !opts.encode {
            passthrough.turn_off("the output takes pictures, not H.264");
        }
        if matches!(
            pipeline.mode(),
            crate::pipeline::scheduler::Mode::Predictive { .. }
        ) {
            passthrough.turn_off("predictive mode never passes frames through");
        }
        Ok(Engine {
            pipeline,
            backend: backend.clone(),
            opts,
            decoder: None,
            encoder: match (opts.encode, backend) {
                (false, _) => Encoding::Pictures,
                (true, Backend::Cpu) => Encoding::Thread(EncodeWorker::openh264(opts.fps)),
                (true, _) => Encoding::Inline(backend.encoder(opts.fps)),
            },
            leaving: VecDeque::new(),
            waiting_for_keyframe: true,
            keyframe_wanted: false,
            force_idr: true,
            last_size: None,
            in_flight: VecDeque::new(),
            passthrough,
            next_au: 0,
            input_sps: Vec::new(),
            input_pps: Vec::new(),
            off_reported: false,
            counters: EngineCounters::default(),
            last_snapshot: None,
            encode_estimate: Duration::ZERO,
        })
    }

    pub fn counters(&self) -> EngineCounters {
        let mut c = self.counters;
        if let Encoding::Inline(e) = &self.encoder {
            c.encoder_fallbacks = e.fallbacks;
            c.nvenc_errors = e.nvenc_errors;
        }
        c
    }

    /// Encodes with the worker `make` opens encoders for (tests: a mock).
    #[cfg(test)]
    pub(crate) fn with_encoder(mut self, make: MakeEncoder) -> Self {
        self.encoder = Encoding::Thread(EncodeWorker::new(make));
        self
    }

    pub fn pipeline(&self) -> &StreamPipeline {
        &self.pipeline
    }

    /// What encodes (after the first frame) and why.
    pub fn encoder_description(&self) -> String {
        let d = match &self.encoder {
            Encoding::Inline(e) => e.description(),
            Encoding::Thread(w) => w.description(),
            Encoding::Pictures => return "none (pictures)".into(),
        };
        match d {
            "" => "not opened yet".into(),
            d => d.to_string(),
        }
    }

    /// The decoder in use, once one was opened.
    pub fn decoder_name(&self) -> Option<&'static str> {
        self.decoder.as_ref().map(Decoder::name)
    }

    /// Frames inside the pipeline or waiting for their encode.
    pub fn in_flight(&self) -> usize {
        self.pipeline.in_flight() + self.leaving.len()
    }

    fn encodes_pending(&self) -> usize {
        match &self.encoder {
            Encoding::Thread(w) => w.pending(),
            _ => 0,
        }
    }

    /// Puts the encoder thread's oldest result on its frame (at once, or
    /// after at most `wait`); false when none came back.
    fn take_encoded(&mut self, wait: Option<Duration>) -> bool {
        let Encoding::Thread(w) = &mut self.encoder else {
            return false;
        };
        let Some(done) = w.take(wait) else {
            return false;
        };
        // Results come back in the order the frames were sent.
        let Some(l) = self.leaving.iter_mut().find(|l| l.encoding) else {
            return true;
        };
        l.encoding = false;
        l.out.times.encode = done.seconds;
        self.encode_estimate = moving_average(self.encode_estimate, done.seconds);
        l.out.encoded = Some(match done.result {
            Ok((au, forced)) => {
                self.counters.keyframes_forced += u64::from(forced);
                Ok(au)
            }
            Err(e) => {
                self.counters.encode_errors += 1;
                Err(e)
            }
        });
        true
    }

    /// Device pictures that have left, when the source decoded them (the
    /// engine's own decoder takes its own back).
    pub fn take_spent(&mut self) -> Vec<Picture> {
        match self.decoder {
            Some(_) => Vec::new(),
            None => self.pipeline.lane_mut().take_spent(),
        }
    }

    /// Whether the source should be asked for a key frame (cleared): to
    /// recover from loss, or to switch back to passthrough sooner.
    pub fn take_keyframe_wanted(&mut self) -> bool {
        let pass = self.passthrough.take_keyframe_wanted();
        std::mem::take(&mut self.keyframe_wanted) || pass
    }

    /// `None` while clean frames may pass through, else why they do not.
    pub fn passthrough_off(&self) -> Option<&str> {
        self.passthrough.off_reason()
    }

    /// Whether the last frame that left was the input's own.
    pub fn passthrough_active(&self) -> bool {
        self.passthrough.forwarding()
    }

    /// Reads an input access unit's parameter sets: keeps them for
    /// forwarded IDRs, and turns passthrough off for a stream that cannot
    /// switch cleanly (reordered pictures) or does not fit what we
    /// publish. Whether it is an IDR.
    fn inspect(&mut self, data: &[u8]) -> bool {
        let info = AccessUnitInfo::of(data);
        for nal in &info.sps {
            let why = match parse_sps(nal) {
                None => Some("the input's SPS cannot be read".to_string()),
                Some(s) if !s.decode_order_output() => Some(format!(
                    "the input may reorder pictures (B-frames: profile {}, pic_order_cnt_type {})",
                    s.profile_level_id(),
                    s.pic_order_cnt_type
                )),
                Some(s) => match self.passthrough.options().publish {
                    Publish::Negotiated(p) => s.fits(p).err(),
                    Publish::Any | Publish::Awaited => None,
                },
            };
            if let Some(why) = why {
                self.turn_passthrough_off(why);
            }
        }
        if !info.sps.is_empty() {
            self.input_sps = info.sps;
        }
        if !info.pps.is_empty() {
            self.input_pps = info.pps;
        }
        info.idr
    }

    fn turn_passthrough_off(&mut self, why: String) {
        if self.passthrough.off_reason().is_none() {
            tracing::info!("passthrough off for this stream: {why}");
        }
        self.passthrough.turn_off(why);
    }

    /// The output's profile is known: the input's parameter sets seen so far
    /// must fit it; when it cannot be read, nothing passes through.
    fn publish_profile(&mut self, profile: Result<(u8, u8, u8), String>) {
        match profile {
            Ok(p) => {
                self.passthrough.set_publish(p);
                let unfit = self
                    .input_sps
                    .iter()
                    .filter_map(|nal| parse_sps(nal))
                    .find_map(|s| s.fits(p).err());
                if let Some(why) = unfit {
                    self.turn_passthrough_off(why);
                }
            }
            Err(why) => self.turn_passthrough_off(format!(
                "the published profile-level-id cannot be read: {why}"
            )),
        }
    }

    /// The bytes a forwarded access unit leaves as: an IDR gets the input's
    /// parameter sets in front when it does not carry them itself.
    fn forwarded(&self, au: &AuRef) -> Vec<u8> {
        if !au.idr {
            return au.data.to_vec();
        }
        let info = AccessUnitInfo::of(&au.data);
        let mut out = Vec::with_capacity(au.data.len() + 64);
        if info.sps.is_empty() || info.pps.is_empty() {
            for nal in self.input_sps.iter().chain(&self.input_pps) {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(nal);
            }
        }
        out.extend_from_slice(&au.data);
        out
    }

    /// Takes one input.
    pub fn take(&mut self, input: Input) -> Result<(), Error> {
        match input {
            Input::Reset => {
                self.decoder = None;
                self.waiting_for_keyframe = true;
            }
            Input::ForceKeyframe => {
                self.force_idr = true;
                self.passthrough.break_chain();
            }
            Input::PublishProfile(p) => self.publish_profile(p),
            Input::CensorWhole(w) => self.pipeline.set_censor_whole(w),
            Input::Picture {
                picture,
                pts,
                arrival,
                origin,
                corrupt,
                decode,
                au,
            } => {
                self.last_size = Some(picture.size());
                self.counters.frames_decoded += 1;
                let seq = self.next_au;
                self.next_au += 1;
                let au = au.map(|data| AuRef {
                    seq,
                    idr: self.inspect(&data),
                    data,
                });
                let picture = self.on_device(picture);
                self.push(picture, pts, arrival, origin, corrupt, decode, au);
            }
            Input::AccessUnit {
                data,
                pts,
                arrival,
                origin,
                contiguous,
                show,
                stale,
            } => self.access_unit(data, pts, arrival, origin, contiguous, show, stale)?,
        }
        Ok(())
    }

    /// A host picture on a GPU backend goes to the device on the lane's own
    /// stream (so the kernels after it are ordered behind the copy); if it
    /// cannot, it stays on the host, which the pipeline also takes.
    fn on_device(&mut self, picture: Picture) -> Picture {
        match (&picture, self.backend.is_gpu()) {
            (Picture::Host(f), true) => match self.pipeline.lane_mut().upload(f) {
                Ok(d) => Picture::Device(d),
                Err(e) => {
                    tracing::debug!("upload: {e}; the picture stays on the host");
                    picture
                }
            },
            _ => picture,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn access_unit(
        &mut self,
        data: Arc<[u8]>,
        pts: i64,
        arrival: Instant,
        origin: Instant,
        contiguous: bool,
        show: bool,
        stale: bool,
    ) -> Result<(), Error> {
        self.counters.access_units += 1;
        let seq = self.next_au;
        self.next_au += 1;
        if !contiguous {
            self.waiting_for_keyframe = true;
        }
        let key = is_keyframe(&data);
        let idr = !stale && self.inspect(&data);
        let stale = stale && !key;
        if stale {
            self.counters.access_units_dropped += 1;
            self.waiting_for_keyframe = true;
        }
        if key {
            self.waiting_for_keyframe = false;
        }
        if self.waiting_for_keyframe {
            self.keyframe_wanted = true;
        }
        if self.decoder.is_none() && !self.waiting_for_keyframe {
            self.decoder = Some(self.backend.decoder()?);
        }
        let dec = match self.decoder.as_mut() {
            Some(d) if !stale => d,
            _ => {
                // Not shown (this thread is behind): a stand-in would only
                // add censor and encode work to the backlog.
                if show {
                    self.push_grey(pts, arrival, origin);
                }
                return Ok(());
            }
        };
        for p in self.pipeline.lane_mut().take_spent() {
            dec.recycle(p);
        }
        let t0 = Instant::now();
        match dec.decode(&data, pts) {
            Ok(frames) => {
                let dt = t0.elapsed().as_secs_f64();
                if frames.iter().any(|f| f.damaged) {
                    self.keyframe_wanted = true;
                }
                // The unit's own picture: the only one out, with its timestamp.
                tracing::trace!(
                    seq,
                    idr,
                    key,
                    contiguous,
                    show,
                    pictures = frames.len(),
                    parameter_sets = {
                        let i = AccessUnitInfo::of(&data);
                        i.sps.len() + i.pps.len()
                    },
                    same_pts = frames.first().is_some_and(|f| f.pts == pts),
                    "access unit"
                );
                let mut au = match frames.as_slice() {
                    [f] if f.pts == pts => Some(AuRef { seq, data, idr }),
                    _ => None,
                };
                for f in frames {
                    self.counters.frames_decoded += 1;
                    self.last_size = Some(f.picture.size());
                    if !show {
                        self.counters.frames_skipped += 1;
                        if let Some(d) = self.decoder.as_mut() {
                            d.recycle(f.picture);
                        }
                        continue;
                    }
                    let corrupt = self.waiting_for_keyframe || f.damaged;
                    let au = au.take();
                    self.push(f.picture, f.pts, arrival, origin, corrupt, dt, au);
                }
            }
            Err(e) => {
                self.counters.decode_errors += 1;
                tracing::warn!("decode error, censoring until a key frame: {e}");
                self.waiting_for_keyframe = true;
                self.decoder = None;
                self.keyframe_wanted = true;
                self.push_grey(pts, arrival, origin);
            }
        }
        Ok(())
    }

    /// A grey picture of the last decoded size, censored whole, standing in
    /// for an access unit that cannot be shown (nothing before the first
    /// picture: there is no size yet, and nothing was shown to freeze).
    fn push_grey(&mut self, pts: i64, arrival: Instant, origin: Instant) {
        if let Some((w, h)) = self.last_size {
            let grey = Picture::Host(grey(w, h));
            self.push(grey, pts, arrival, origin, true, 0.0, None);
        }
    }

    /// Into the pipeline, unless it is full (`max_in_flight`): behind real
    /// time this frame is skipped rather than let latency grow.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        picture: Picture,
        pts: i64,
        arrival: Instant,
        origin: Instant,
        corrupt: bool,
        decode: f64,
        au: Option<AuRef>,
    ) {
        if self
            .opts
            .max_in_flight
            .is_some_and(|m| self.pipeline.in_flight() >= m)
        {
            self.counters.frames_skipped += 1;
            self.recycle(picture);
            return;
        }
        if corrupt {
            self.counters.frames_corrupt += 1;
        }
        self.in_flight.push_back(InFlight { origin, au });
        self.pipeline.push(arrival, pts, picture, corrupt, decode);
    }

    fn recycle(&mut self, picture: Picture) {
        match self.decoder.as_mut() {
            Some(d) => d.recycle(picture),
            None => self.pipeline.lane_mut().spend(picture),
        }
    }

    /// The input ended: the decoder's held pictures go in, and frames held
    /// for lookahead stop waiting for later ones.
    pub fn finish(&mut self, now: Instant) {
        if let Some(dec) = self.decoder.as_mut() {
            match dec.flush() {
                Ok(frames) => {
                    for f in frames {
                        self.counters.frames_decoded += 1;
                        let corrupt = self.waiting_for_keyframe || f.damaged;
                        self.push(f.picture, f.pts, now, now, corrupt, 0.0, None);
                    }
                }
                Err(e) => tracing::warn!("decoder flush: {e}"),
            }
        }
        self.pipeline.finish();
    }

    /// Blocks until a detection comes back, the next deadline, or `max`;
    /// while encodes are pending, until the oldest is back (the next frame
    /// to leave waits for it) or `max`.
    pub fn wait(&mut self, max: Duration) {
        if self.encodes_pending() > 0 {
            self.take_encoded(Some(max));
            self.pipeline.pump(Instant::now());
        } else {
            self.pipeline.wait(max);
        }
    }

    /// The next released frame, encoded (or as a host picture), if one may
    /// leave now: frames leave in release order, each once its encode is
    /// back.
    pub fn poll(&mut self, now: Instant) -> Option<Output> {
        loop {
            while self.take_encoded(None) {}
            if self.leaving.front().is_some_and(|l| !l.encoding) {
                return self.leaving.pop_front().map(|l| {
                    let mut out = l.out;
                    out.done = Instant::now();
                    out
                });
            }
            if self.encodes_pending() >= encode::DEPTH {
                // The encoder is behind: its oldest result before more
                // frames are released to it.
                if self.take_encoded(Some(encode::STUCK)) {
                    continue;
                }
                return None;
            }
            let r = self.pipeline.poll_output(now)?;
            let f = self.in_flight.pop_front().unwrap_or(InFlight {
                origin: r.arrived,
                au: None,
            });
            if self.too_late(&r) {
                // Passthrough sees the gap in access units: the next frame
                // to leave is a key frame (ours, or a qualifying input IDR).
                tracing::trace!(frame = r.index, "past the output deadline: dropped");
                self.counters.frames_late += 1;
                self.recycle(r.picture);
                continue;
            }
            self.counters.released += 1;
            if r.record.status == crate::pipeline::Status::FailClosed {
                self.counters.fail_closed += 1;
            }
            let l = self.output(now, r, f);
            self.leaving.push_back(l);
        }
    }

    /// Whether a released frame would leave past the output deadline: its
    /// age now, plus the encodes queued ahead of it and its own.
    fn too_late(&self, r: &Released) -> bool {
        let Some(margin) = self.opts.late_margin else {
            return false;
        };
        let limit = self.pipeline.deadline() + margin;
        let queued = u32::try_from(self.encodes_pending()).unwrap_or(u32::MAX);
        let ahead = self
            .encode_estimate
            .saturating_mul(queued.saturating_add(1));
        Instant::now().saturating_duration_since(r.arrived) + ahead > limit
    }

    fn output(&mut self, now: Instant, r: Released, f: InFlight) -> Leaving {
        let Released {
            index,
            pts,
            picture,
            mut record,
            arrived,
            mut times,
            clean,
        } = r;
        let (width, height) = picture.size();
        let snapshot = self.snapshot(&picture);
        let t0 = Instant::now();
        let was_forwarding = self.passthrough.forwarding();
        let decision = match self.encoder {
            Encoding::Inline(_) | Encoding::Thread(_) => self.passthrough.decide(
                now,
                FrameFacts {
                    clean,
                    au: f.au.as_ref().map(|a| a.seq),
                    idr: f.au.as_ref().is_some_and(|a| a.idr),
                },
            ),
            Encoding::Pictures => Decision::Encode { idr: false },
        };
        tracing::trace!(
            frame = index,
            clean,
            au = ?f.au.as_ref().map(|a| (a.seq, a.idr)),
            ?decision,
            "passthrough decision"
        );
        if !self.off_reported {
            if let Some(why) = self.passthrough.off_reason() {
                record.passthrough_off = Some(why.to_string());
                self.off_reported = true;
            }
        }
        let forward = match (&self.encoder, decision, f.au.as_ref()) {
            (Encoding::Pictures, _, _) => None,
            (_, Decision::Forward, Some(au)) => Some(self.forwarded(au)),
            _ => None,
        };
        let mut encoding = false;
        let (encoded, host) = match (&mut self.encoder, forward) {
            (Encoding::Pictures, _) => (None, Some(self.pipeline.lane_mut().to_host(picture))),
            (_, Some(bytes)) => {
                if !was_forwarding {
                    tracing::debug!(frame = index, "passthrough: forwarding from here");
                }
                self.recycle(picture);
                record.passthrough = true;
                self.counters.passed_through += 1;
                (Some(Ok(bytes)), None)
            }
            (enc, None) => {
                if let Decision::Encode { idr: true } = decision {
                    self.force_idr = true;
                }
                if was_forwarding {
                    self.counters.passthrough_switches += 1;
                    tracing::debug!(frame = index, clean, "passthrough: encoding from here");
                }
                let lane = self.pipeline.lane_mut();
                match enc {
                    Encoding::Thread(w) => {
                        let host = lane.to_host(picture);
                        match w.submit(host, std::mem::take(&mut self.force_idr)) {
                            Ok(()) => {
                                encoding = true;
                                (None, None)
                            }
                            Err(e) => {
                                self.counters.encode_errors += 1;
                                (Some(Err(e)), None)
                            }
                        }
                    }
                    Encoding::Inline(slot) => {
                        let au = encode_picture(
                            slot,
                            lane,
                            picture,
                            (width, height),
                            &mut self.force_idr,
                        );
                        if au.is_err() {
                            self.counters.encode_errors += 1;
                        }
                        if let Ok(true) = au.as_ref().map(|(_, forced)| *forced) {
                            self.counters.keyframes_forced += 1;
                        }
                        (Some(au.map(|(au, _)| au).map_err(|e| e.to_string())), None)
                    }
                    Encoding::Pictures => (None, Some(lane.to_host(picture))),
                }
            }
        };
        let done = Instant::now();
        times.encode = done.duration_since(t0).as_secs_f64();
        if matches!(self.encoder, Encoding::Inline(_)) && !record.passthrough {
            self.encode_estimate = moving_average(self.encode_estimate, times.encode);
        }
        Leaving {
            out: Output {
                index,
                pts,
                record,
                arrived,
                origin: f.origin,
                done,
                times,
                encoded,
                picture: host,
                snapshot,
                width,
                height,
            },
            encoding,
        }
    }

    /// A host copy of a censored picture when one is due.
    fn snapshot(&mut self, picture: &Picture) -> Option<Frame> {
        let every = self.opts.snapshot_every?;
        let now = Instant::now();
        if self
            .last_snapshot
            .is_some_and(|t| now.duration_since(t) < every)
        {
            return None;
        }
        let copy = self.pipeline.lane_mut().copy_to_host(picture)?;
        self.last_snapshot = Some(now);
        Some(copy)
    }
}

/// An exponential moving average of encode times (1/8 weight to the new
/// one), so one slow encode does not drop the frames after it.
fn moving_average(avg: Duration, seconds: f64) -> Duration {
    let new = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO);
    if avg.is_zero() {
        return new;
    }
    (avg * 7 + new) / 8
}

/// Encodes one picture, (re)opening the encoder for its size; an error
/// makes the next frame an IDR (the encoder is reopened at the next size
/// change or kept; openh264 and NVENC both restart cleanly on an IDR).
/// `Ok((au, forced))`.
fn encode_picture(
    slot: &mut EncoderSlot,
    lane: &mut Lane,
    picture: Picture,
    size: (usize, usize),
    force_idr: &mut bool,
) -> Result<(Vec<u8>, bool), Error> {
    let opened = match slot.prepare(size, lane) {
        Ok(o) => o,
        Err(e) => {
            lane.spend(picture);
            *force_idr = true;
            return Err(e);
        }
    };
    let force = std::mem::take(force_idr) || opened;
    match slot.encode(lane, picture, force) {
        Ok(au) => Ok((au, force)),
        Err(e) => {
            *force_idr = true;
            slot.reset();
            Err(e)
        }
    }
}

/// What a source says when asked for input.
#[derive(Debug)]
pub enum Feed {
    Input(Input),
    /// Nothing yet: wait for detections at most this long, then ask again.
    Wait(Duration),
    /// Nothing now, and the source already waited: ask again.
    Idle,
    /// No more input.
    End,
}

/// Where a stream's input comes from.
pub trait Source {
    /// The next input; `in_flight` frames are inside the pipeline.
    fn next(&mut self, in_flight: usize) -> Result<Feed, Error>;

    /// The engine needs a key frame (a PLI for a live track).
    fn keyframe_wanted(&mut self) {}

    /// A device picture the source decoded has left: back to its pool.
    fn recycle(&mut self, _picture: Picture) {}
}

/// Where a stream's output goes.
pub trait Sink {
    fn write(&mut self, out: Output) -> Result<(), Error>;

    /// After each step of [`drive`] (live: publish the counters).
    fn tick(&mut self, _engine: &Engine) {}
}

/// Runs `source` through `engine` into `sink` until the source ends and
/// every frame has left.
pub fn drive(
    engine: &mut Engine,
    source: &mut dyn Source,
    sink: &mut dyn Sink,
) -> Result<(), Error> {
    let mut ended = false;
    loop {
        if !ended {
            match source.next(engine.in_flight())? {
                Feed::Input(i) => engine.take(i)?,
                Feed::Wait(d) => engine.wait(d),
                Feed::Idle => {}
                Feed::End => {
                    ended = true;
                    engine.finish(Instant::now());
                }
            }
        }
        if engine.take_keyframe_wanted() {
            source.keyframe_wanted();
        }
        for p in engine.take_spent() {
            source.recycle(p);
        }
        while let Some(out) = engine.poll(Instant::now()) {
            sink.write(out)?;
        }
        sink.tick(engine);
        if ended {
            if engine.in_flight() == 0 {
                return Ok(());
            }
            engine.wait(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_util::pattern;
    use crate::codec::{Decoder as H264Decoder, Encoder, EncoderConfig};
    use crate::pipeline::Status;
    use test_util::engine_finding_nothing;

    fn engine(encode: bool) -> Engine {
        engine_with(encode, PassthroughOptions::off())
    }

    fn engine_with(encode: bool, passthrough: PassthroughOptions) -> Engine {
        engine_finding_nothing(
            &Backend::Cpu,
            EngineOptions {
                passthrough,
                fps: 30.0,
                encode,
                max_in_flight: None,
                snapshot_every: None,
                late_margin: None,
            },
        )
    }

    /// Feeds `inputs` and collects every output, as `drive` does.
    struct Feed(VecDeque<Input>);
    struct Collect(Vec<Output>, usize);

    impl Source for Feed {
        /// A control input (a key frame due, the output's profile) waits
        /// until every frame before it has left, so that what it applies to
        /// does not depend on how fast detections come back.
        fn next(&mut self, in_flight: usize) -> Result<super::Feed, Error> {
            let control = matches!(
                self.0.front(),
                Some(Input::ForceKeyframe | Input::PublishProfile(_))
            );
            if control && in_flight > 0 {
                return Ok(super::Feed::Wait(Duration::from_millis(5)));
            }
            Ok(match self.0.pop_front() {
                Some(i) => super::Feed::Input(i),
                None => super::Feed::End,
            })
        }
        fn keyframe_wanted(&mut self) {}
    }

    impl Sink for Collect {
        fn write(&mut self, out: Output) -> Result<(), Error> {
            self.0.push(out);
            Ok(())
        }
        fn tick(&mut self, engine: &Engine) {
            self.1 = self.1.max(engine.counters().decode_errors as usize);
        }
    }

    fn clip(n: usize) -> Vec<Vec<u8>> {
        let mut enc = Encoder::new(EncoderConfig::new(64, 48, 30.0)).unwrap();
        (0..n)
            .map(|i| enc.encode(&pattern(64, 48, i), i == 0).unwrap())
            .collect()
    }

    fn au(data: &[u8], k: usize) -> Input {
        let now = Instant::now();
        Input::AccessUnit {
            data: data.into(),
            pts: k as i64 * 3000,
            arrival: now,
            origin: now,
            contiguous: true,
            show: true,
            stale: false,
        }
    }

    fn run(mut e: Engine, inputs: Vec<Input>) -> (Vec<Output>, Engine) {
        let mut sink = Collect(Vec::new(), 0);
        drive(&mut e, &mut Feed(inputs.into()), &mut sink).unwrap();
        (sink.0, e)
    }

    /// `censor` hands the engine pictures its reader decoded, `bench` and
    /// `serve` access units: the same frames come out the same.
    #[test]
    fn access_units_and_decoded_pictures_give_the_same_output() {
        let aus = clip(6);
        let (from_aus, _) = run(
            engine(true),
            aus.iter().enumerate().map(|(k, a)| au(a, k)).collect(),
        );
        let mut dec = H264Decoder::new().unwrap();
        let now = Instant::now();
        let pictures = aus
            .iter()
            .flat_map(|a| dec.decode(a).unwrap())
            .enumerate()
            .map(|(k, f)| Input::Picture {
                picture: Picture::Host(f),
                pts: k as i64 * 3000,
                arrival: now,
                origin: now,
                corrupt: false,
                decode: 0.0,
                au: None,
            })
            .collect();
        let (from_pictures, _) = run(engine(true), pictures);
        assert_eq!(from_aus.len(), 6);
        assert_eq!(from_pictures.len(), 6);
        for (a, p) in from_aus.iter().zip(&from_pictures) {
            assert_eq!((a.index, a.pts), (p.index, p.pts));
            assert_eq!(a.record.status, Status::Verified);
            assert_eq!(a.record.status, p.record.status);
            let (Some(Ok(x)), Some(Ok(y))) = (&a.encoded, &p.encoded) else {
                panic!("frame {} not encoded", a.index);
            };
            assert_eq!(x, y, "frame {}", a.index);
        }
    }

    /// Passthrough with a detector that finds nothing: every frame leaves
    /// as the input's own access unit until a new viewer wants a key frame;
    /// then our encoder sends an IDR with its parameter sets and keeps
    /// encoding until the next input IDR, which is forwarded again (with the
    /// input's parameter sets put back in front when it lacks them).
    #[test]
    fn clean_frames_leave_as_the_input_and_switch_at_idrs() {
        let mut cfg = EncoderConfig::new(64, 48, 30.0);
        cfg.keyframe_interval = 12;
        let mut enc = Encoder::new(cfg).unwrap();
        let mut aus: Vec<Vec<u8>> = (0..20)
            .map(|i| enc.encode(&pattern(64, 48, i), i == 0).unwrap())
            .collect();
        // The second IDR without its parameter sets (sent once, out of band).
        assert!(is_keyframe(&aus[12]));
        let bare: Vec<u8> = crate::codec::split_nals(&aus[12])
            .filter(|n| !matches!(crate::codec::nal_type(n), 7 | 8))
            .flat_map(|n| START_CODE.iter().chain(n).copied().collect::<Vec<u8>>())
            .collect();
        aus[12] = bare;
        let mut inputs: Vec<Input> = Vec::new();
        for (k, a) in aus.iter().enumerate() {
            if k == 11 {
                inputs.push(Input::ForceKeyframe);
            }
            inputs.push(au(a, k));
        }
        let (out, e) = run(engine_with(true, PassthroughOptions::default()), inputs);
        assert_eq!(out.len(), 20);
        let pass: Vec<bool> = out.iter().map(|o| o.record.passthrough).collect();
        // The key frame is due on the next frame out after the request,
        // which came before frame 11 went in (the input's IDRs are 0 and 12:
        // a key frame due on 0 would be the input's own).
        let k0 = pass.iter().position(|&p| !p).unwrap();
        assert_eq!(k0, 11, "{pass:?}");
        let want: Vec<bool> = (0..20).map(|k| !(k0..12).contains(&k)).collect();
        assert_eq!(pass, want);
        let bytes = |o: &Output| match &o.encoded {
            Some(Ok(b)) => b.clone(),
            other => panic!("frame {}: {other:?}", o.index),
        };
        for (k, o) in out.iter().enumerate() {
            let b = bytes(o);
            if k == 12 {
                let info = AccessUnitInfo::of(&b);
                assert!(info.idr && !info.sps.is_empty() && !info.pps.is_empty());
                assert!(b.ends_with(&aus[12]));
            } else if pass[k] {
                assert_eq!(b, aus[k], "frame {k}");
            }
        }
        let idr = AccessUnitInfo::of(&bytes(&out[k0]));
        assert!(idr.idr && !idr.sps.is_empty() && !idr.pps.is_empty());
        // The output decodes to the input's pictures where it was forwarded.
        let mut din = H264Decoder::new().unwrap();
        let mut dout = H264Decoder::new().unwrap();
        for (k, o) in out.iter().enumerate() {
            let a = din.decode(&aus[k]).unwrap();
            let b = dout.decode(&bytes(o)).unwrap();
            assert_eq!(b.len(), 1, "frame {k}");
            if pass[k] {
                assert!(a == b, "frame {k} is not bit-exact");
            }
        }
        let c = e.counters();
        assert_eq!(c.passed_through as usize, 20 - (12 - k0));
        assert_eq!(c.passthrough_switches, 1);
        assert!(e.passthrough_off().is_none());
    }

    /// Live, a censored frame that would leave past the deadline plus the
    /// margin is not sent; the frames after it still decode, the first of
    /// them a key frame when the dropped one was forwarded (the viewer
    /// lacks its reference). Files (no margin) send every frame.
    #[test]
    fn a_frame_past_the_output_deadline_is_dropped_and_the_stream_goes_on() {
        let aus = clip(6);
        let inputs = || -> Vec<Input> {
            aus.iter()
                .enumerate()
                .map(|(k, a)| {
                    let mut i = au(a, k);
                    if let (
                        2,
                        Input::AccessUnit {
                            arrival, origin, ..
                        },
                    ) = (k, &mut i)
                    {
                        *arrival -= Duration::from_secs(5);
                        *origin -= Duration::from_secs(5);
                    }
                    i
                })
                .collect()
        };
        let (all, e) = run(engine_with(true, PassthroughOptions::default()), inputs());
        assert_eq!(all.len(), 6);
        assert_eq!(e.counters().frames_late, 0);

        let mut live = engine_with(true, PassthroughOptions::default());
        live.opts.late_margin = Some(LATE_MARGIN);
        let (out, e) = run(live, inputs());
        let pts: Vec<i64> = out.iter().map(|o| o.pts).collect();
        assert_eq!(pts, [0, 3000, 9000, 12000, 15000]);
        assert_eq!(e.counters().frames_late, 1);
        assert_eq!(e.counters().released, 5);
        let pass: Vec<bool> = out.iter().map(|o| o.record.passthrough).collect();
        assert_eq!(pass, [true, true, false, false, false]);
        let mut dec = H264Decoder::new().unwrap();
        for (k, o) in out.iter().enumerate() {
            let Some(Ok(b)) = &o.encoded else {
                panic!("frame {k}: {:?}", o.encoded);
            };
            if k == 2 {
                let info = AccessUnitInfo::of(b);
                assert!(info.idr && !info.sps.is_empty(), "the switch is an IDR");
            }
            assert_eq!(dec.decode(b).unwrap().len(), 1, "frame {k} decodes");
        }
    }

    /// Finds a region on every bright picture (a luma mean above 0.55 of
    /// the input tensor), nothing on the others.
    struct Bright;

    impl crate::detect::DetectBackend for Bright {
        fn input_size(&self) -> usize {
            32
        }
        fn detect(
            &mut self,
            tensors: &[f32],
            batch: usize,
            _: &[crate::detect::Letterbox],
        ) -> Result<Vec<Vec<crate::frame::Detection>>, crate::error::DetectError> {
            let per = (tensors.len() / batch.max(1)).max(1);
            Ok(tensors
                .chunks(per)
                .take(batch)
                .map(|t| {
                    let mean = t.iter().sum::<f32>() / t.len() as f32;
                    (mean > 0.55)
                        .then(|| crate::frame::Detection {
                            bbox: crate::frame::BBox::new(8.0, 8.0, 40.0, 40.0),
                            class: crate::detect::class_index("FEMALE_BREAST_EXPOSED").unwrap_or(3),
                            score: 0.9,
                        })
                        .into_iter()
                        .collect()
                })
                .collect())
        }
    }

    /// Stands in for openh264 on the encoder thread: the access unit is the
    /// picture's luma behind a marker; the third call fails, the seventh
    /// panics (the thread dies). Every call's `idr` is kept.
    struct Mock(Arc<std::sync::Mutex<Vec<bool>>>);

    const MOCK: &[u8] = b"MOCK";

    impl FrameEncoder for Mock {
        fn encode(&mut self, frame: Frame, idr: bool) -> Result<(Vec<u8>, bool), Error> {
            let call = {
                let mut calls = self.0.lock().map_err(|_| Error::Gpu("poisoned".into()))?;
                calls.push(idr);
                calls.len()
            };
            match call {
                3 => Err(Error::Gpu("mock encoder failure".into())),
                7 => panic!("mock encoder crash"),
                _ => Ok(([MOCK, frame.y()].concat(), idr)),
            }
        }
        fn description(&self) -> String {
            "mock".into()
        }
    }

    /// Encoding on the encoder thread, with passthrough and a content mix:
    /// every frame leaves once, in order; a frame with a region leaves with
    /// its mask filled in the pixels the encoder got, never forwarded; an
    /// encode that fails or a thread that dies leaves that frame as an error
    /// (not published), and the fresh thread starts with an IDR.
    #[test]
    fn the_encoder_thread_keeps_order_and_masks_and_fails_closed() {
        let n = 16;
        let dirty = [2, 3, 5, 6, 9, 13, 14];
        let mut cfg = EncoderConfig::new(64, 48, 30.0);
        cfg.keyframe_interval = 4;
        let mut enc = Encoder::new(cfg).unwrap();
        let aus: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut f = pattern(64, 48, i);
                if dirty.contains(&i) {
                    f.planes_mut().0.fill(235);
                }
                enc.encode(&f, i == 0).unwrap()
            })
            .collect();
        let policy = crate::policy::Policy {
            method: crate::frame::CensorMethod::Fill {
                y: 0,
                u: 128,
                v: 128,
            },
            ..Default::default()
        };
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = calls.clone();
        let e = test_util::engine_with_detector(
            &Backend::Cpu,
            EngineOptions {
                passthrough: PassthroughOptions::default(),
                fps: 30.0,
                encode: true,
                max_in_flight: None,
                snapshot_every: None,
                late_margin: None,
            },
            Box::new(Bright),
            policy,
        )
        .with_encoder(Arc::new(move || Box::new(Mock(seen.clone()))));
        let inputs = aus.iter().enumerate().map(|(k, a)| au(a, k)).collect();
        let (out, e) = run(e, inputs);
        let index: Vec<u64> = out.iter().map(|o| o.index).collect();
        assert_eq!(index, (0..n as u64).collect::<Vec<_>>());
        assert!(out.windows(2).all(|w| w[0].pts < w[1].pts));
        let mut failed = Vec::new();
        for (k, o) in out.iter().enumerate() {
            let is_dirty = dirty.contains(&k);
            assert_eq!(!o.record.masks.is_empty(), is_dirty, "frame {k}");
            if is_dirty {
                assert!(!o.record.passthrough, "frame {k} forwarded");
            }
            match &o.encoded {
                Some(Ok(b)) if o.record.passthrough => assert_eq!(b, &aus[k], "frame {k}"),
                Some(Ok(b)) => {
                    let y = b.strip_prefix(MOCK).expect("our encoder's output");
                    assert_eq!(y.len(), 64 * 48);
                    // Inside the mask: filled; outside: the picture.
                    assert_eq!(y[24 * 64 + 24] == 0, is_dirty, "frame {k}");
                    assert_ne!(y[2 * 64 + 60], 0, "frame {k}");
                }
                Some(Err(_)) => failed.push(k),
                None => panic!("frame {k} left without an access unit"),
            }
        }
        let calls = calls.lock().unwrap().clone();
        // Encoded: the dirty frames and the clean ones up to the next
        // input IDR (every 4th).
        let encoded: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.record.passthrough)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(encoded, [2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15]);
        // Frame 5's encode failed, frame 10's crashed the thread, and frame
        // 11 fails too when it was queued behind it (at most DEPTH were).
        assert!(failed == [5, 10] || failed == [5, 10, 11], "{failed:?}");
        assert_eq!(calls.len(), encoded.len() - (failed.len() - 2));
        // The first encode after forwarding is an IDR, and so is the first
        // on the fresh thread after the crash.
        assert!(calls[0] && calls[2] && calls[5] && calls[7], "{calls:?}");
        assert!(!calls[1]);
        assert_eq!(e.counters().encode_errors, failed.len() as u64);
        assert_eq!(e.in_flight(), 0);
    }

    /// An encoder slower than the frames: the stream thread keeps working
    /// while at most `encode::DEPTH` encodes are queued (back-pressure, not
    /// an unbounded queue), and every frame still leaves, in order, with
    /// its own picture.
    #[test]
    fn a_slow_encoder_holds_at_most_depth_encodes_queued() {
        struct Slow;
        impl FrameEncoder for Slow {
            fn encode(&mut self, frame: Frame, idr: bool) -> Result<(Vec<u8>, bool), Error> {
                std::thread::sleep(Duration::from_millis(40));
                Ok(([MOCK, frame.y()].concat(), idr))
            }
            fn description(&self) -> String {
                "slow".into()
            }
        }
        struct Watch(Vec<Output>, usize, usize);
        impl Sink for Watch {
            fn write(&mut self, out: Output) -> Result<(), Error> {
                self.0.push(out);
                Ok(())
            }
            fn tick(&mut self, engine: &Engine) {
                self.1 = self.1.max(engine.encodes_pending());
                self.2 = self.2.max(engine.leaving.len());
            }
        }
        let n = 12;
        let aus = clip(n);
        let mut e = engine(true).with_encoder(Arc::new(|| Box::new(Slow)));
        let mut sink = Watch(Vec::new(), 0, 0);
        let inputs: VecDeque<Input> = aus.iter().enumerate().map(|(k, a)| au(a, k)).collect();
        drive(&mut e, &mut Feed(inputs), &mut sink).unwrap();
        let (out, most_queued, most_leaving) = (sink.0, sink.1, sink.2);
        // `poll` waits inside while DEPTH encodes are queued, so between
        // polls fewer are: without back-pressure all 12 would be.
        assert!(
            (1..encode::DEPTH).contains(&most_queued),
            "{most_queued} encodes queued between polls"
        );
        assert!(
            most_leaving < encode::DEPTH,
            "{most_leaving} frames waiting to leave"
        );
        let pts: Vec<i64> = out.iter().map(|o| o.pts).collect();
        assert_eq!(pts, (0..n as i64).map(|k| k * 3000).collect::<Vec<_>>());
        let mut dec = H264Decoder::new().unwrap();
        for (k, (o, a)) in out.iter().zip(&aus).enumerate() {
            let Some(Ok(b)) = &o.encoded else {
                panic!("frame {k}: {:?}", o.encoded);
            };
            let y = b.strip_prefix(MOCK).expect("the slow encoder's output");
            let want = dec.decode(a).unwrap();
            // Frames held up behind the encoder may miss the detection
            // deadline: those leave censored whole, the others as they are.
            match o.record.status {
                Status::Verified => assert_eq!(y, want[0].y(), "frame {k} carries its own picture"),
                status => {
                    assert_eq!(status, Status::FailClosed, "frame {k}");
                    assert_ne!(y, want[0].y(), "frame {k} failed closed, yet as it was");
                }
            }
        }
        assert!(out.iter().any(|o| o.record.status == Status::Verified));
        assert_eq!(e.counters().encode_errors, 0);
    }

    /// Live: nothing passes through until the output's negotiated profile
    /// is known; then only an input that fits it does, and a profile that
    /// cannot be read turns passthrough off with the reason.
    #[test]
    fn passthrough_waits_for_the_published_profile_and_checks_the_fit() {
        let awaited = PassthroughOptions {
            publish: Publish::Awaited,
            ..PassthroughOptions::default()
        };
        let mut enc = Encoder::new(EncoderConfig::new(64, 48, 30.0)).unwrap();
        let aus: Vec<Vec<u8>> = (0..4)
            .map(|i| enc.encode(&pattern(64, 48, i), i == 0 || i == 2).unwrap())
            .collect();
        let inputs = |profile: Result<(u8, u8, u8), String>| {
            let mut v = vec![au(&aus[0], 0), au(&aus[1], 1)];
            v.push(Input::PublishProfile(profile));
            v.push(Input::ForceKeyframe);
            v.extend([au(&aus[2], 2), au(&aus[3], 3)]);
            v
        };
        let passed = |out: &[Output]| out.iter().filter(|o| o.record.passthrough).count();
        // Baseline level 3.1 published: openh264's constrained baseline fits.
        let (out, e) = run(engine_with(true, awaited), inputs(Ok((0x42, 0x00, 0x1f))));
        assert_eq!(out.len(), 4);
        assert!(e.passthrough_off().is_none());
        // Frames decided before the answer are encoded; the input's IDR
        // after it meets the key frame due and passes through, and so does
        // the frame after.
        let pass: Vec<bool> = out.iter().map(|o| o.record.passthrough).collect();
        assert_eq!(pass, [false, false, true, true]);
        let (out, e) = run(engine_with(true, awaited), inputs(Ok((0x42, 0xe0, 0x09))));
        assert_eq!(passed(&out), 0);
        let why = e.passthrough_off().unwrap_or_default().to_string();
        assert!(why.contains("is above the published 42e009"), "{why}");
        let (out, e) = run(
            engine_with(true, awaited),
            inputs(Err("no profile-level-id".into())),
        );
        assert_eq!(passed(&out), 0);
        let why = e.passthrough_off().unwrap_or_default();
        assert!(why.contains("cannot be read: no profile-level-id"), "{why}");
    }

    /// A corrupt access unit becomes a grey frame censored whole, the
    /// frames after it too until a key frame, and a key frame is asked for;
    /// a picture sink gets host pictures of the stream's size.
    #[test]
    fn a_corrupt_access_unit_censors_until_the_next_key_frame() {
        let aus = clip(4);
        let mut junk = aus[1].clone();
        junk.truncate(8);
        junk.extend_from_slice(&[0xff; 16]);
        let mut idr_enc = Encoder::new(EncoderConfig::new(64, 48, 30.0)).unwrap();
        let idr = idr_enc.encode(&pattern(64, 48, 9), true).unwrap();
        let inputs = vec![au(&aus[0], 0), au(&junk, 1), au(&aus[2], 2), au(&idr, 3)];
        let (out, e) = run(engine(false), inputs);
        let status: Vec<Status> = out.iter().map(|o| o.record.status).collect();
        assert_eq!(out.len(), 4, "{status:?}");
        assert_eq!(status[0], Status::Verified);
        assert_eq!(status[1], Status::FailClosed);
        assert_eq!(status[2], Status::FailClosed);
        assert_eq!(status[3], Status::Verified);
        assert!(out.iter().all(|o| o
            .picture
            .as_ref()
            .is_some_and(|f| (f.width, f.height) == (64, 48))));
        let c = e.counters();
        assert_eq!(c.fail_closed, 2);
        assert!(c.decode_errors >= 1 || c.frames_corrupt >= 2, "{c:?}");
    }
}
