//! One censoring session for room `X`: a hidden subscriber in `X-raw` takes
//! the broadcaster's H.264, a media thread decodes it, runs it through the
//! shared [`StreamPipeline`] (strict mode by default: nothing leaves before
//! the detector has seen it), encodes and hands the access units to a
//! visible publisher in `X`.
//!
//! Threads: the two connections are tokio tasks, each owned by a
//! supervisor that replaces it when it is lost (`supervise.rs`);
//! decode/censor/encode is CPU work and runs on its own OS thread, fed
//! through a channel. Audio is held back by the video's measured added
//! latency (lip sync). This file starts and stops a session.

use super::fault::FaultConfig;
use super::io::Command;
use super::media::{LiveSink, LiveSource, MediaIn, SharedModeration, MAX_IN_FLIGHT};
use super::moderate::LiveModeration;
use super::participant::{ParticipantConfig, PublishSpec};
use super::preview::SNAPSHOT_EVERY;
use super::supervise::{supervise_input, supervise_output, ConnSpec, JobInput, Side};
use super::token::RAW_SUFFIX;
use crate::backend::Backend;
use crate::engine::{drive, Engine, EngineOptions};
use crate::error::{Error, LiveKitError};
use crate::moderation::Action;
use crate::pipeline::service::DetectService;
use crate::pipeline::stream::{StreamOptions, StreamPipeline};
use std::cell::Cell;
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;
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
    /// Events, rules and actions (`None`: no moderation).
    pub moderation: Option<super::moderate::ModerationCtx>,
    /// Clean frames leave as the broadcaster's own access units.
    pub passthrough: crate::engine::PassthroughOptions,
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
    /// Censored frames not published: they would have left past the
    /// deadline (the session was behind).
    pub frames_late: AtomicU64,
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
    /// Whether each side's connection is up now (`/healthz`).
    pub input_connected: AtomicBool,
    pub output_connected: AtomicBool,
    /// Current audio hold (lip sync with the censored video), microseconds.
    pub audio_delay_us: AtomicU64,
    /// Added latency of each published frame (network arrival to send), ms.
    pub added_latency: crate::metrics::Histogram,
    /// Published frames per second over the last second, times 100.
    pub fps_x100: AtomicU64,
    /// Test only: RTP datagrams dropped or corrupted on purpose.
    pub fault_injected: Arc<AtomicU64>,
    /// The moderator's preview of the censored output.
    pub preview: super::preview::PreviewSlot,
    /// Exposures started (moderation events).
    pub exposures: AtomicU64,
    /// The output is censored whole by moderation right now.
    pub censored_whole: std::sync::atomic::AtomicBool,
    /// A job's session ended by itself (superseded by another worker, or
    /// its raw room closed); whoever started it stops it.
    pub ended: AtomicBool,
    /// Frames published as the broadcaster's own access units.
    pub frames_passed_through: AtomicU64,
    /// Switches from forwarding to our encoder (each an IDR).
    pub passthrough_switches: AtomicU64,
    /// The last published frame was the broadcaster's own.
    pub passthrough_active: std::sync::atomic::AtomicBool,
    /// Why passthrough is off for this session (`None`: on).
    pub passthrough_off: std::sync::Mutex<Option<String>>,
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
    /// The media thread's queue (moderation commands).
    media_tx: std_mpsc::Sender<MediaIn>,
    supervisors: [tokio::task::JoinHandle<()>; 2],
    media: Option<std::thread::JoinHandle<()>>,
}

/// The room a viewer-facing room's raw twin has (`demo` -> `demo-raw`).
pub fn raw_room(room: &str) -> String {
    format!("{room}{RAW_SUFFIX}")
}

impl Session {
    /// Joins both rooms and starts censoring `room` (viewers' room; the
    /// broadcaster publishes into `room-raw`).
    pub async fn start(
        room: &str,
        lk: &LiveKitSettings,
        svc: Arc<DetectService>,
        opts: StreamOptions,
        stream_id: u32,
        job: Option<JobInput>,
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
            job: job.clone(),
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
            job,
        };
        // The first connections are made here so a bad URL or key fails
        // the start; the supervisors make the later ones.
        let output = out_spec.connect(0).await?;
        let input = in_spec.connect(0).await?;
        stats.output_connected.store(true, Ordering::Relaxed);
        stats.input_connected.store(true, Ordering::Relaxed);
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
            media_tx.clone(),
            stats.clone(),
            stop.clone(),
        ));

        let media = {
            let stats = stats.clone();
            let stop = stop.clone();
            let to_pub = output_cmd.clone();
            let to_sub = input_cmd.clone();
            let fps = lk.fps;
            let passthrough = lk.passthrough;
            let room = room.to_string();
            let thread_room = room.clone();
            let backend = lk.backend.clone();
            let moderation_ctx = lk.moderation.clone();
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
                        passthrough,
                        fps,
                        encode: true,
                        max_in_flight: Some(MAX_IN_FLIGHT),
                        snapshot_every: Some(SNAPSHOT_EVERY),
                        late_margin: Some(crate::engine::LATE_MARGIN),
                    };
                    let restarted = Rc::new(Cell::new(false));
                    let moderation: SharedModeration = Rc::new(RefCell::new(
                        moderation_ctx.map(|c| LiveModeration::new(c, &thread_room, stats.clone())),
                    ));
                    let mut source = LiveSource {
                        rx: &media_rx,
                        stop: &stop,
                        to_sub,
                        restarted: restarted.clone(),
                        moderation: moderation.clone(),
                    };
                    let mut sink = LiveSink::new(to_pub, stats, restarted, moderation.clone());
                    let run = Engine::new(pipeline, &backend, opts)
                        .and_then(|mut e| drive(&mut e, &mut source, &mut sink));
                    if let Some(m) = moderation.borrow_mut().as_mut() {
                        m.finish();
                    }
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
            media_tx,
            supervisors: [input_sup, output_sup],
            media: Some(media),
        })
    }

    /// A moderator's action (censor whole, resume, mute, remove, end),
    /// recorded as an event with their `label`; a censor-whole takes effect
    /// on the next frame released.
    pub fn moderate(&self, action: Action, label: &str) {
        let _ = self.media_tx.send(MediaIn::Moderate {
            action,
            label: label.to_string(),
        });
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
