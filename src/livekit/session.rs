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
use super::media::{LiveSink, LiveSource, MediaIn, MAX_IN_FLIGHT};
use super::participant::{ParticipantConfig, ParticipantEvent, PublishSpec};
use super::timing::{AudioDelayLine, Backoff};
use super::token::{self, RAW_SUFFIX};
use crate::backend::Backend;
use crate::engine::{drive, Engine, EngineOptions};
use crate::error::{Error, LiveKitError};
use crate::pipeline::service::DetectService;
use crate::pipeline::stream::{StreamOptions, StreamPipeline};
use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;
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
    /// where the GPU has it (the fallbacks of [`crate::backend`]).
    pub backend: Backend,
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
    /// 1 once NVENC failed and the session encodes with openh264 for good.
    pub encoder_fallbacks: AtomicU64,
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
            let backend = lk.backend.clone();
            // The session's lane (its own CUDA stream) is tried here so that
            // a GPU that cannot give one fails the start rather than the
            // media thread.
            backend.lane().map_err(|e| LiveKitError::Session {
                room: room.to_string(),
                reason: format!("no CUDA stream for the session: {e}"),
            })?;
            std::thread::Builder::new()
                .name(format!("censor-{room}"))
                .spawn(move || {
                    let pipeline = StreamPipeline::new(stream_id, svc, opts);
                    let opts = EngineOptions {
                        fps,
                        encode: true,
                        max_in_flight: Some(MAX_IN_FLIGHT),
                    };
                    let restarted = Rc::new(Cell::new(false));
                    let mut source = LiveSource {
                        rx: &media_rx,
                        stop: &stop,
                        to_sub,
                        restarted: restarted.clone(),
                    };
                    let mut sink = LiveSink::new(to_pub, stats, restarted);
                    let run = Engine::new(pipeline, &backend, opts)
                        .and_then(|mut e| drive(&mut e, &mut source, &mut sink));
                    if let Err(e) = run {
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
