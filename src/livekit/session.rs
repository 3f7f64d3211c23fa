//! One censoring session for room `X`: a hidden subscriber in `X-raw` takes
//! the broadcaster's H.264, a media thread decodes it, runs it through the
//! shared [`StreamPipeline`] (strict mode by default: nothing leaves before
//! the detector has seen it), encodes and hands the access units to a
//! visible publisher in `X`.
//!
//! Threads: the two connections are tokio tasks, each owned by a
//! supervisor that replaces it when it is lost; decode/censor/encode is
//! CPU work and runs on its own OS thread, fed through a channel. Audio is
//! held back by the video's measured added latency (lip sync).

use super::fault::{FaultConfig, RtpFaults};
use super::io::{self, Command, Connection};
use super::participant::{ParticipantConfig, ParticipantEvent, PublishSpec};
use super::timing::{AudioDelayLine, Backoff, LatencyEstimate, MAX_AUDIO_DELAY};
use super::token::{self, RAW_SUFFIX};
use crate::codec::is_keyframe;
use crate::codec::{Decoder, EncoderConfig};
use crate::error::{Error, LiveKitError};
use crate::frame::Frame;
use crate::gpu::nvdec::NvDecoder;
use crate::gpu::nvenc::{GpuEncoder, Preset};
use crate::gpu::{DeviceFrame, GpuContext};
use crate::pipeline::service::DetectService;
use crate::pipeline::stream::Released;
use crate::pipeline::stream::{StreamOptions, StreamPipeline};
use crate::source::grey_frame;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Where the server is and how to sign tokens.
#[derive(Clone, Debug)]
pub struct LiveKitSettings {
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
    /// Local address for media sockets (127.0.0.1 for a server on this host).
    pub bind_ip: IpAddr,
    /// Frame rate assumed by the encoder's rate control.
    pub fps: f32,
    /// Relay the broadcaster's audio (Opus, passed through uninspected).
    pub audio: bool,
    /// Test only: RTP faults injected on the input connection.
    pub faults: FaultConfig,
    /// `serve --gpu`: NVDEC into device memory, the CUDA kernels, and NVENC
    /// where the GPU has it (else openh264 after one copy to the host).
    pub gpu: Option<Arc<GpuContext>>,
}

/// Counters of a session, shared with whoever reports them (/metrics).
#[derive(Debug, Default)]
pub struct SessionStats {
    pub access_units_in: AtomicU64,
    pub frames_decoded: AtomicU64,
    pub decode_errors: AtomicU64,
    /// Censored frames the encoder refused (not published).
    pub encode_errors: AtomicU64,
    /// Decoded frames not published because the session was behind.
    pub frames_skipped: AtomicU64,
    /// Access units not decoded to catch up (up to a key frame).
    pub access_units_dropped: AtomicU64,
    /// Frames pushed marked corrupt (censored whole) while waiting for a
    /// key frame after loss, a decoder error or a new input.
    pub frames_corrupt: AtomicU64,
    pub frames_released: AtomicU64,
    pub fail_closed: AtomicU64,
    pub access_units_out: AtomicU64,
    pub keyframes_forced: AtomicU64,
    /// Key frame requests (PLI) sent to the broadcaster.
    pub keyframe_requests: AtomicU64,
    /// New connections made after the first, per side.
    pub input_reconnects: AtomicU64,
    pub output_reconnects: AtomicU64,
    /// Current audio hold (lip sync with the censored video), microseconds.
    pub audio_delay_us: AtomicU64,
    /// Added latency of each published frame (network arrival to send), ms.
    pub added_latency: crate::metrics::Histogram,
    /// Published frames per second over the last second, times 100.
    pub fps_x100: AtomicU64,
    /// Test only: RTP datagrams dropped or corrupted on purpose.
    pub fault_injected: Arc<AtomicU64>,
}

/// A running session; `stop` ends it.
pub struct Session {
    pub room: String,
    pub stats: Arc<SessionStats>,
    stop: Arc<AtomicBool>,
    /// Commands for the current input / output connection (each through
    /// its supervisor, so senders survive reconnects).
    input_cmd: mpsc::UnboundedSender<Command>,
    output_cmd: mpsc::UnboundedSender<Command>,
    supervisors: [tokio::task::JoinHandle<()>; 2],
    media: Option<std::thread::JoinHandle<()>>,
}

/// Frames inside the pipeline beyond which new input frames are skipped:
/// ~270 ms at 30 fps, just above the strict-mode deadline (250 ms).
const MAX_IN_FLIGHT: usize = 8;

/// A decoded frame that waited longer than this in the media thread's
/// queue is not published (see `MediaLoop::take`).
const MAX_QUEUE_WAIT: Duration = Duration::from_millis(100);

/// Input older than this is dropped up to the next key frame.
const MAX_INPUT_AGE: Duration = Duration::from_millis(400);

/// Media thread input.
enum MediaIn {
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
    /// The remote track went away: decoder state is stale.
    Reset,
}

/// The room a viewer-facing room's raw twin has (`demo` -> `demo-raw`).
pub fn raw_room(room: &str) -> String {
    format!("{room}{RAW_SUFFIX}")
}

/// Identities of the censor's two participants.
const INPUT_IDENTITY: &str = super::webhook::INPUT_IDENTITY;
const OUTPUT_IDENTITY: &str = "livecensor";

impl Session {
    /// Joins both rooms and starts censoring `room` (viewers' room; the
    /// broadcaster publishes into `room-raw`).
    pub async fn start(
        room: &str,
        lk: &LiveKitSettings,
        svc: Arc<DetectService>,
        opts: StreamOptions,
        stream_id: u32,
    ) -> Result<Session, Error> {
        let stats = Arc::new(SessionStats::default());
        let out_spec = ConnSpec {
            side: Side::Output,
            lk: lk.clone(),
            token_room: room.to_string(),
            room: room.to_string(),
            cfg: ParticipantConfig {
                subscribe: false,
                from_identity: None,
                audio: lk.audio,
                publish: Some(PublishSpec {
                    cid: "livecensor-video".into(),
                    name: "censored".into(),
                    width: 1280,
                    height: 720,
                }),
            },
            fault_counter: stats.fault_injected.clone(),
        };
        let in_spec = ConnSpec {
            side: Side::Input,
            lk: lk.clone(),
            token_room: raw_room(room),
            room: room.to_string(),
            cfg: ParticipantConfig {
                subscribe: true,
                from_identity: None,
                audio: lk.audio,
                publish: None,
            },
            fault_counter: stats.fault_injected.clone(),
        };
        // The first connections are made here so a bad URL or key fails
        // the start; the supervisors make the later ones.
        let output = out_spec.connect(0).await?;
        let input = in_spec.connect(0).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let (media_tx, media_rx) = std_mpsc::channel::<MediaIn>();
        let (input_cmd, input_cmd_rx) = mpsc::unbounded_channel();
        let (output_cmd, output_cmd_rx) = mpsc::unbounded_channel();
        let input_sup = tokio::spawn(supervise_input(
            input,
            in_spec,
            input_cmd_rx,
            media_tx.clone(),
            output_cmd.clone(),
            stats.clone(),
            stop.clone(),
        ));
        let output_sup = tokio::spawn(supervise_output(
            output,
            out_spec,
            output_cmd_rx,
            media_tx,
            stats.clone(),
            stop.clone(),
        ));

        let media = {
            let stats = stats.clone();
            let stop = stop.clone();
            let to_pub = output_cmd.clone();
            let to_sub = input_cmd.clone();
            let fps = lk.fps;
            let room = room.to_string();
            let thread_room = room.clone();
            let gpu = lk.gpu.clone();
            // The session's own CUDA stream, opened here so that a GPU that
            // cannot give one fails the start rather than the media thread.
            let gpu_stream = gpu.as_ref().map(|c| c.stream()).transpose().map_err(|e| {
                LiveKitError::Session {
                    room: room.to_string(),
                    reason: format!("no CUDA stream for the session: {e}"),
                }
            })?;
            std::thread::Builder::new()
                .name(format!("censor-{room}"))
                .spawn(move || {
                    let mut pipeline = StreamPipeline::new(stream_id, svc, opts);
                    if let Some(st) = gpu_stream {
                        pipeline = pipeline.with_gpu(st);
                    }
                    let mut m = MediaLoop::new(pipeline, fps, stats, to_pub, to_sub).with_gpu(gpu);
                    if let Err(e) = m.run(&media_rx, &stop) {
                        tracing::error!(room = %thread_room, "media thread stopped: {e}");
                    }
                })
                .map_err(|e| LiveKitError::Session {
                    room: room.to_string(),
                    reason: format!("cannot start media thread: {e}"),
                })?
        };

        Ok(Session {
            room: room.to_string(),
            stats,
            stop,
            input_cmd,
            output_cmd,
            supervisors: [input_sup, output_sup],
            media: Some(media),
        })
    }

    /// Leaves both rooms and stops the media thread.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.input_cmd.send(Command::Leave);
        let _ = self.output_cmd.send(Command::Leave);
        for s in &mut self.supervisors {
            let _ = tokio::time::timeout(Duration::from_secs(3), &mut *s).await;
        }
        if let Some(h) = self.media.take() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// Which of the session's two connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The hidden subscriber in the raw room.
    Input,
    /// The visible publisher in the viewers' room.
    Output,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Input => "input",
            Side::Output => "output",
        }
    }
}

/// How to (re)connect one side.
struct ConnSpec {
    side: Side,
    lk: LiveKitSettings,
    /// The room joined (`X-raw` for the input, `X` for the output).
    token_room: String,
    /// The session's room, for logs.
    room: String,
    cfg: ParticipantConfig,
    fault_counter: Arc<AtomicU64>,
}

impl ConnSpec {
    /// One connection; `attempt` varies the fault injector's seed. A fresh
    /// token each time: a session may outlive one.
    async fn connect(&self, attempt: u64) -> Result<Connection, LiveKitError> {
        let (mint, identity) = match self.side {
            Side::Input => (token::subscriber_token as MintFn, INPUT_IDENTITY),
            Side::Output => (token::publisher_token as MintFn, OUTPUT_IDENTITY),
        };
        let token = mint(
            &self.lk.api_key,
            &self.lk.api_secret,
            &self.token_room,
            identity,
        )?;
        let faults = (self.side == Side::Input && self.lk.faults.is_active()).then(|| {
            let mut cfg = self.lk.faults;
            cfg.seed = cfg.seed.wrapping_add(attempt);
            RtpFaults::new(cfg, self.fault_counter.clone())
        });
        io::connect(
            &self.lk.url,
            &token,
            self.cfg.clone(),
            self.lk.bind_ip,
            faults,
        )
        .await
    }

    fn reconnects<'a>(&self, stats: &'a SessionStats) -> &'a AtomicU64 {
        match self.side {
            Side::Input => &stats.input_reconnects,
            Side::Output => &stats.output_reconnects,
        }
    }
}

type MintFn = fn(&str, &str, &str, &str) -> Result<String, LiveKitError>;

/// Runs `fut` while the connection is down: commands that arrive meanwhile
/// are discarded (media is not published, never queued for later). None
/// when a Leave arrived.
async fn while_down<F: std::future::Future>(
    fut: F,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return Some(r),
            c = commands.recv() => match c {
                Some(Command::Leave) | None => return None,
                Some(_) => {}
            },
        }
    }
}

/// A new connection for `spec`, after the backoff wait, retried until it
/// works; None once the session stops.
async fn reconnect(
    spec: &ConnSpec,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    backoff: &mut Backoff,
    stats: &SessionStats,
    stop: &AtomicBool,
) -> Option<Connection> {
    loop {
        let wait = backoff.next_wait();
        while_down(tokio::time::sleep(wait), commands).await?;
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let counter = spec.reconnects(stats);
        let attempt = counter.load(Ordering::Relaxed) + 1;
        match while_down(spec.connect(attempt), commands).await? {
            Ok(c) => {
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(room = %spec.room, side = spec.side.name(), reconnects = attempt, "reconnected");
                return Some(c);
            }
            Err(e) => {
                tracing::warn!(room = %spec.room, side = spec.side.name(), "reconnecting: {e}");
            }
        }
    }
}

/// Ends a connection (Leave, then up to 2 s for its task) and says why
/// its task failed, if it did.
async fn finish(mut conn: Connection) -> Option<String> {
    let _ = conn.commands.send(Command::Leave);
    match tokio::time::timeout(Duration::from_secs(2), &mut conn.task).await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(e.to_string()),
        Ok(Err(e)) => Some(format!("task failed: {e}")),
        Err(_) => {
            conn.task.abort();
            Some("did not end within 2 s".into())
        }
    }
}

/// Owns the hidden subscriber: forwards its video to the media thread,
/// holds its audio in the delay line (lip sync with the censored video),
/// and when the broadcast track goes away (the broadcaster left) or the
/// connection is lost (kicked, ICE, signalling, task error) replaces it
/// with a fresh one: a broadcaster who comes back is then picked up on a
/// clean transport (re-using the old one left the new stream undelivered).
async fn supervise_input(
    first: Connection,
    spec: ConnSpec,
    mut commands: mpsc::UnboundedReceiver<Command>,
    media_tx: std_mpsc::Sender<MediaIn>,
    audio_out: mpsc::UnboundedSender<Command>,
    stats: Arc<SessionStats>,
    stop: Arc<AtomicBool>,
) {
    let mut current = Some(first);
    let mut backoff = Backoff::default();
    let mut audio: AudioDelayLine<(u64, Arc<[u8]>)> = AudioDelayLine::default();
    let send_audio = |(rtp_time_48k, data): (u64, Arc<[u8]>)| {
        let _ = audio_out.send(Command::Audio {
            rtp_time_48k,
            data: data.to_vec(),
        });
    };
    loop {
        let mut conn = match current.take() {
            Some(c) => c,
            None => match reconnect(&spec, &mut commands, &mut backoff, &stats, &stop).await {
                Some(c) => c,
                None => return,
            },
        };
        let up_since = Instant::now();
        let leaving = loop {
            let now = Instant::now();
            audio.steer(
                now,
                Duration::from_micros(stats.audio_delay_us.load(Ordering::Relaxed)),
            );
            while let Some(p) = audio.poll(now) {
                send_audio(p);
            }
            let wake = audio
                .next_deadline()
                .unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                ev = conn.events.recv() => match ev {
                    Some(ParticipantEvent::AccessUnit { data, rtp_time, contiguous, arrived }) => {
                        let queued = Instant::now();
                        let _ = media_tx.send(MediaIn::AccessUnit { data, rtp_time, contiguous, arrived, queued });
                    }
                    Some(ParticipantEvent::AudioPacket { data, rtp_time, arrived }) => {
                        audio.push(arrived, (rtp_time, data));
                    }
                    Some(ParticipantEvent::KeyframeRequestSent) => {
                        stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(ParticipantEvent::RemoteTrackGone { track_sid }) => {
                        tracing::info!(room = %spec.room, track = %track_sid, "broadcast track gone; new input connection");
                        break false;
                    }
                    Some(ParticipantEvent::Left { reason }) => {
                        tracing::warn!(room = %spec.room, %reason, "input connection lost; reconnecting");
                        break false;
                    }
                    Some(other) => tracing::debug!(room = %spec.room, event = ?other, "input"),
                    None => {
                        tracing::warn!(room = %spec.room, "input connection ended; reconnecting");
                        break false;
                    }
                },
                c = commands.recv() => match c {
                    Some(Command::Leave) | None => break true,
                    Some(c) => { let _ = conn.commands.send(c); }
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        };
        // Audio of a connection that is gone leaves now, in order.
        audio.drain().for_each(send_audio);
        if !leaving {
            let _ = media_tx.send(MediaIn::Reset);
        }
        if let Some(why) = finish(conn).await {
            tracing::warn!(room = %spec.room, "input connection: {why}");
        }
        if leaving || stop.load(Ordering::Relaxed) {
            return;
        }
        backoff.connection_ended(up_since, Instant::now());
    }
}

/// Owns the visible publisher: forwards the censored video (and relayed
/// audio) to the current connection, turns its key frame requests and
/// (re)connections into forced IDRs, and when the SFU drops it (a Leave,
/// e.g. after RemoveParticipant, ICE or signalling lost, its task ending)
/// joins again, with backoff, until the session stops. While it is down,
/// media is discarded: nothing is published, nothing uncensored exists.
async fn supervise_output(
    first: Connection,
    spec: ConnSpec,
    mut commands: mpsc::UnboundedReceiver<Command>,
    media_tx: std_mpsc::Sender<MediaIn>,
    stats: Arc<SessionStats>,
    stop: Arc<AtomicBool>,
) {
    let mut current = Some(first);
    let mut backoff = Backoff::default();
    loop {
        let mut conn = match current.take() {
            Some(c) => c,
            None => match reconnect(&spec, &mut commands, &mut backoff, &stats, &stop).await {
                Some(c) => c,
                None => return,
            },
        };
        let up_since = Instant::now();
        let leaving = loop {
            tokio::select! {
                ev = conn.events.recv() => match ev {
                    // Viewers can start decoding at once.
                    Some(ParticipantEvent::KeyframeRequested | ParticipantEvent::PublisherConnected) => {
                        let _ = media_tx.send(MediaIn::ForceKeyframe);
                    }
                    Some(ParticipantEvent::Left { reason }) => {
                        tracing::warn!(room = %spec.room, %reason, "output connection lost; reconnecting");
                        break false;
                    }
                    Some(other) => tracing::info!(room = %spec.room, event = ?other, "output"),
                    None => {
                        tracing::warn!(room = %spec.room, "output connection ended; reconnecting");
                        break false;
                    }
                },
                c = commands.recv() => match c {
                    Some(Command::Leave) | None => break true,
                    Some(c) => { let _ = conn.commands.send(c); }
                },
            }
        };
        if let Some(why) = finish(conn).await {
            tracing::warn!(room = %spec.room, "output connection: {why}");
        }
        if leaving || stop.load(Ordering::Relaxed) {
            return;
        }
        backoff.connection_ended(up_since, Instant::now());
    }
}

/// The session's decoder: openh264 into host frames, or NVDEC into device
/// frames (`serve --gpu`).
enum LiveDecoder {
    Cpu(Decoder),
    Gpu(Box<NvDecoder>),
}

/// One decoded picture: on the host, or on the device (with NVDEC's
/// verdict on whether it decoded cleanly).
enum Decoded {
    Host(Frame),
    Device { frame: DeviceFrame, damaged: bool },
}

impl Decoded {
    fn size(&self) -> (usize, usize) {
        match self {
            Decoded::Host(f) => (f.width, f.height),
            Decoded::Device { frame, .. } => (frame.width(), frame.height()),
        }
    }
}

impl LiveDecoder {
    /// NVDEC on `gpu` when it opens, else openh264 (the same pictures, on
    /// the host; the pipeline takes both).
    fn open(gpu: Option<&GpuContext>) -> Result<LiveDecoder, Error> {
        if let Some(ctx) = gpu {
            match NvDecoder::new(ctx) {
                Ok(d) => return Ok(LiveDecoder::Gpu(Box::new(d))),
                Err(e) => tracing::warn!("NVDEC unavailable, decoding on the CPU: {e}"),
            }
        }
        Ok(LiveDecoder::Cpu(Decoder::new()?))
    }

    fn decode(
        &mut self,
        pipeline: &mut StreamPipeline,
        data: &[u8],
        pts: i64,
    ) -> Result<Vec<Decoded>, Error> {
        match self {
            LiveDecoder::Cpu(d) => Ok(d.decode(data)?.into_iter().map(Decoded::Host).collect()),
            LiveDecoder::Gpu(d) => {
                for f in pipeline.take_spent_device_frames() {
                    d.recycle(f);
                }
                let frames = d.decode(data, pts)?;
                for e in d.take_errors() {
                    tracing::warn!("NVDEC: {e}");
                }
                Ok(frames
                    .into_iter()
                    .map(|f| Decoded::Device {
                        frame: f.frame,
                        damaged: f.damaged,
                    })
                    .collect())
            }
        }
    }

    /// A device frame that will not enter the pipeline goes back to NVDEC.
    fn recycle(&mut self, d: Decoded) {
        if let (LiveDecoder::Gpu(dec), Decoded::Device { frame, .. }) = (self, d) {
            dec.recycle(frame);
        }
    }
}

struct MediaLoop {
    pipeline: StreamPipeline,
    decoder: Option<LiveDecoder>,
    /// NVENC, or openh264 (`GpuEncoder::Cpu`, also the CPU path's).
    encoder: Option<GpuEncoder>,
    gpu: Option<Arc<GpuContext>>,
    fps: f32,
    /// Until the next key frame decodes, frames are pushed marked corrupt
    /// (censored whole): after loss, a decoder error or a new input.
    waiting_for_keyframe: bool,
    force_idr: bool,
    /// Size of the last decoded picture: the grey stand-in's size.
    last_size: Option<(usize, usize)>,
    /// Input timestamp and output timestamp of the first frame of the
    /// current input stream: a broadcaster that comes back starts a new
    /// random RTP timeline, while our track's must keep going forward or
    /// receivers drop the frames as old.
    ts_base: Option<(i64, u64)>,
    last_out_ts: u64,
    /// Network arrival of each frame inside the pipeline, in push order
    /// (the pipeline releases in that order): the added latency of a
    /// released frame, which sets the audio delay.
    arrivals: VecDeque<(i64, Instant)>,
    latency: LatencyEstimate,
    /// Start and frame count of the current one-second fps window.
    fps_window: (Instant, u64),
    stats: Arc<SessionStats>,
    to_pub: mpsc::UnboundedSender<Command>,
    to_sub: mpsc::UnboundedSender<Command>,
}

impl MediaLoop {
    fn new(
        pipeline: StreamPipeline,
        fps: f32,
        stats: Arc<SessionStats>,
        to_pub: mpsc::UnboundedSender<Command>,
        to_sub: mpsc::UnboundedSender<Command>,
    ) -> Self {
        MediaLoop {
            pipeline,
            decoder: None,
            encoder: None,
            gpu: None,
            fps,
            waiting_for_keyframe: true,
            force_idr: true,
            last_size: None,
            ts_base: None,
            last_out_ts: 0,
            arrivals: VecDeque::new(),
            latency: LatencyEstimate::default(),
            fps_window: (Instant::now(), 0),
            stats,
            to_pub,
            to_sub,
        }
    }

    /// The device path: NVDEC, the kernels on the pipeline's CUDA stream
    /// (see [`StreamPipeline::with_gpu`]) and NVENC where there is one.
    fn with_gpu(mut self, gpu: Option<Arc<GpuContext>>) -> Self {
        self.gpu = gpu;
        self
    }

    /// One input message at a time, then whatever the pipeline can
    /// release: taking every queued access unit first would starve the
    /// publish lane whenever input arrives faster than it is processed.
    fn run(&mut self, rx: &std_mpsc::Receiver<MediaIn>, stop: &AtomicBool) -> Result<(), Error> {
        while !stop.load(Ordering::Relaxed) {
            let wait = if self.pipeline.in_flight() > 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(50)
            };
            let got = match rx.recv_timeout(wait) {
                Ok(m) => {
                    self.take(Instant::now(), m)?;
                    true
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => false,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            };
            self.drain()?;
            if !got && self.pipeline.in_flight() > 0 {
                // Nothing new: sleep until a detection, a deadline or 5 ms.
                self.pipeline.wait(Duration::from_millis(5));
                self.drain()?;
            }
        }
        Ok(())
    }

    fn take(&mut self, now: Instant, m: MediaIn) -> Result<(), Error> {
        match m {
            MediaIn::ForceKeyframe => self.force_idr = true,
            MediaIn::Reset => {
                self.decoder = None;
                self.waiting_for_keyframe = true;
                self.ts_base = None;
                self.latency.reset();
            }
            MediaIn::AccessUnit {
                data,
                rtp_time,
                contiguous,
                arrived,
                queued,
            } => {
                self.stats.access_units_in.fetch_add(1, Ordering::Relaxed);
                // Waited too long in our own queue (this thread fell behind,
                // e.g. a slow start or a CPU spike): decode it, to keep the
                // reference chain, but do not publish it, so the backlog
                // drains at decode speed instead of at full processing speed.
                let late = now.saturating_duration_since(queued) > MAX_QUEUE_WAIT;
                if !contiguous {
                    self.waiting_for_keyframe = true;
                }
                let key = is_keyframe(&data);
                let pts = rtp_time as i64;
                // Far behind (input queued for longer than MAX_INPUT_AGE):
                // decoding the backlog would only publish stale frames.
                // Skip decoding up to the next key frame, which we ask for
                // now; the viewer sees grey frames censored whole, not a
                // freeze.
                let stale = !key && now.saturating_duration_since(arrived) > MAX_INPUT_AGE;
                if stale {
                    self.stats
                        .access_units_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    self.waiting_for_keyframe = true;
                }
                if key {
                    self.waiting_for_keyframe = false;
                }
                if self.waiting_for_keyframe {
                    let _ = self.to_sub.send(Command::RequestKeyframe);
                }
                if self.decoder.is_none() && !self.waiting_for_keyframe {
                    self.decoder = Some(LiveDecoder::open(self.gpu.as_deref())?);
                }
                let dec = match self.decoder.as_mut() {
                    Some(d) if !stale => d,
                    _ => {
                        self.push_grey(pts, arrived);
                        return Ok(());
                    }
                };
                let t0 = Instant::now();
                match dec.decode(&mut self.pipeline, &data, pts) {
                    Ok(frames) => {
                        let dt = t0.elapsed().as_secs_f64();
                        // NVDEC concealed an error: these frames are censored
                        // whole until a clean key frame, so ask for one.
                        if frames
                            .iter()
                            .any(|f| matches!(f, Decoded::Device { damaged: true, .. }))
                        {
                            let _ = self.to_sub.send(Command::RequestKeyframe);
                        }
                        for f in frames {
                            self.stats.frames_decoded.fetch_add(1, Ordering::Relaxed);
                            self.last_size = Some(f.size());
                            if late {
                                self.stats.frames_skipped.fetch_add(1, Ordering::Relaxed);
                                if let Some(d) = self.decoder.as_mut() {
                                    d.recycle(f);
                                }
                                continue;
                            }
                            self.push(pts, arrived, f, self.waiting_for_keyframe, dt);
                        }
                    }
                    Err(e) => {
                        self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("decode error, waiting for a key frame: {e}");
                        self.waiting_for_keyframe = true;
                        self.decoder = None;
                        let _ = self.to_sub.send(Command::RequestKeyframe);
                        self.push_grey(pts, arrived);
                    }
                }
            }
        }
        Ok(())
    }

    /// A grey picture of the last decoded size, censored whole, standing in
    /// for an access unit that cannot be shown (nothing before the first
    /// picture: there is no size yet, and nothing was shown to freeze).
    fn push_grey(&mut self, pts: i64, arrived: Instant) {
        if let Some((w, h)) = self.last_size {
            self.push(pts, arrived, Decoded::Host(grey_frame(w, h)), true, 0.0);
        }
    }

    /// Into the pipeline, unless it is full: behind real time, skip (never
    /// publish) this frame rather than let latency grow without bound. The
    /// decoder has seen it, so the following frames decode correctly.
    fn push(&mut self, pts: i64, arrived: Instant, f: Decoded, corrupt: bool, decode_s: f64) {
        if self.pipeline.in_flight() >= MAX_IN_FLIGHT {
            self.stats.frames_skipped.fetch_add(1, Ordering::Relaxed);
            if let Some(d) = self.decoder.as_mut() {
                d.recycle(f);
            }
            return;
        }
        let corrupt = corrupt || matches!(f, Decoded::Device { damaged: true, .. });
        if corrupt {
            self.stats.frames_corrupt.fetch_add(1, Ordering::Relaxed);
        }
        self.arrivals.push_back((pts, arrived));
        let now = Instant::now();
        match f {
            Decoded::Host(f) => self.pipeline.push(now, pts, f, corrupt, decode_s),
            Decoded::Device { frame, .. } => self
                .pipeline
                .push_device(now, pts, frame, corrupt, decode_s),
        }
    }

    /// Network arrival of the frame the pipeline just released (one entry
    /// per pushed frame, popped per released one, so the queue stays as
    /// short as the pipeline).
    fn arrival_of(&mut self, pts: i64) -> Option<Instant> {
        self.arrivals
            .pop_front()
            .and_then(|(p, arrived)| (p == pts).then_some(arrived))
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

    /// Encodes one censored frame, (re)creating the encoder for a new size:
    /// NVENC on the device path when the GPU has it (the censored picture
    /// then stays on the device), else openh264.
    fn encode(&mut self, r: &mut Released) -> Result<Vec<u8>, Error> {
        let size = r
            .device
            .as_ref()
            .map(|d| (d.width(), d.height()))
            .unwrap_or((r.frame.width, r.frame.height));
        let recreate = self.encoder.as_ref().is_none_or(|e| {
            let c = e.config();
            (c.width, c.height) != size
        });
        if recreate {
            self.encoder = None;
            let stream = self.gpu.as_ref().map(|c| c.stream()).transpose()?;
            let config = EncoderConfig::new(size.0, size.1, self.fps);
            let (enc, why) = GpuEncoder::new(stream.as_ref(), config, Preset::P1)?;
            if self.gpu.is_some() {
                tracing::info!("encoder for {}x{}: {why}", size.0, size.1);
            }
            self.pipeline.set_keep_on_device(enc.is_nvenc());
            self.encoder = Some(enc);
            self.force_idr = true;
        }
        let Some(enc) = self.encoder.as_mut() else {
            return Ok(Vec::new());
        };
        let force = std::mem::take(&mut self.force_idr);
        if force {
            self.stats.keyframes_forced.fetch_add(1, Ordering::Relaxed);
        }
        let au = self.pipeline.encode_device(enc, r, force);
        if au.is_err() {
            self.force_idr = true;
        }
        au
    }

    fn drain(&mut self) -> Result<(), Error> {
        while let Some(mut r) = self.pipeline.poll_output(Instant::now()) {
            let arrived = self.arrival_of(r.pts);
            self.stats.frames_released.fetch_add(1, Ordering::Relaxed);
            if r.record.status == crate::pipeline::sidecar::Status::FailClosed {
                self.stats.fail_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(frame = r.index, reason = ?r.record.reason, "fail-closed");
            }
            let au = match self.encode(&mut r) {
                Ok(au) => au,
                Err(e) => {
                    // One bad frame (e.g. a tiny placeholder picture when
                    // the broadcaster leaves) must not end the session:
                    // this frame is not published, the next one restarts
                    // the encoder with an IDR.
                    self.stats.encode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        width = r.frame.width,
                        height = r.frame.height,
                        "frame not published: {e}"
                    );
                    self.encoder = None;
                    continue;
                }
            };
            if au.is_empty() {
                continue;
            }
            if let Some(a) = arrived {
                self.sent(a);
            }
            self.stats.access_units_out.fetch_add(1, Ordering::Relaxed);
            let rtp_time_90k = self.output_ts(r.pts);
            let _ = self.to_pub.send(Command::Video {
                rtp_time_90k,
                data: au,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_util::pattern;
    use crate::codec::Encoder;
    use crate::detect::DetectBackend;
    use crate::detect::Letterbox;
    use crate::error::DetectError;
    use crate::frame::Detection;
    use crate::pipeline::batcher::BatcherConfig;
    use crate::pipeline::scheduler::SchedulerConfig;
    use crate::policy::Policy;

    /// A detector that finds nothing: every intact frame is verified.
    struct Nothing;

    impl DetectBackend for Nothing {
        fn input_size(&self) -> usize {
            32
        }
        fn detect(
            &mut self,
            _: &[f32],
            batch: usize,
            _: &[Letterbox],
        ) -> Result<Vec<Vec<Detection>>, DetectError> {
            Ok(vec![Vec::new(); batch])
        }
    }

    struct Harness {
        m: MediaLoop,
        to_pub: mpsc::UnboundedReceiver<Command>,
        to_sub: mpsc::UnboundedReceiver<Command>,
    }

    fn harness() -> Harness {
        harness_with(None)
    }

    fn harness_with(gpu: Option<Arc<GpuContext>>) -> Harness {
        let svc = Arc::new(
            DetectService::start(vec![Box::new(Nothing)], BatcherConfig::default()).unwrap(),
        );
        let opts = StreamOptions {
            policy: Policy::default(),
            scheduler: SchedulerConfig::default(),
            tracker: None,
            resize: Default::default(),
            zoom: Default::default(),
        };
        let (pub_tx, to_pub) = mpsc::unbounded_channel();
        let (sub_tx, to_sub) = mpsc::unbounded_channel();
        let mut pipeline = StreamPipeline::new(1, svc, opts);
        if let Some(c) = &gpu {
            pipeline = pipeline.with_gpu(c.stream().unwrap());
        }
        let m = MediaLoop::new(
            pipeline,
            30.0,
            Arc::new(SessionStats::default()),
            pub_tx,
            sub_tx,
        )
        .with_gpu(gpu);
        Harness { m, to_pub, to_sub }
    }

    impl Harness {
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
            self.m.take(arrived.max(Instant::now()), m).unwrap();
        }

        /// Until the pipeline has released everything (the detector is
        /// a thread; bounded).
        fn settle(&mut self) {
            for _ in 0..500 {
                self.m.drain().unwrap();
                if self.m.pipeline.in_flight() == 0 {
                    return;
                }
                self.m.pipeline.wait(Duration::from_millis(20));
            }
            panic!("pipeline did not drain");
        }

        fn stat(&self, f: impl Fn(&SessionStats) -> &AtomicU64) -> u64 {
            f(&self.m.stats).load(Ordering::Relaxed)
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
    /// Skipped where no GPU is usable (`scripts/gpu-check.sh run` runs it).
    #[test]
    fn gpu_session_publishes_every_frame() {
        let p = crate::gpu::probe();
        if !p.usable() {
            eprintln!("SKIPPED gpu_session_publishes_every_frame: no usable GPU ({p})");
            return;
        }
        let ctx = Arc::new(GpuContext::new(0).unwrap());
        let (w, h) = (320, 240);
        let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).unwrap();
        let aus: Vec<Vec<u8>> = (0..10)
            .map(|i| enc.encode(&pattern(w, h, i), i == 0).unwrap())
            .collect();
        let mut t = harness_with(Some(ctx));
        for (i, au) in aus.iter().enumerate() {
            t.au(au, i as u64, true, Instant::now());
            t.m.drain().unwrap();
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
        let nvenc = t.m.encoder.as_ref().is_some_and(|e| e.is_nvenc());
        eprintln!("gpu session: 10/10 published, encoder nvenc={nvenc}");
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
        assert_eq!(t.m.pipeline.in_flight(), 0);
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
        t.m.take(now, MediaIn::Reset).unwrap();
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
        assert_eq!(t.m.arrivals.len(), 0);
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
}
