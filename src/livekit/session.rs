//! One censoring session for room `X`: a hidden subscriber in `X-raw` takes
//! the broadcaster's H.264, a media thread decodes it, runs it through the
//! shared [`StreamPipeline`] (strict mode by default: nothing leaves before
//! the detector has seen it), encodes and hands the access units to a
//! visible publisher in `X`.
//!
//! Threads: the two connections are tokio tasks; decode/censor/encode is
//! CPU work and runs on its own OS thread, fed through a channel.

use super::io::{self, Command, Connection};
use super::participant::{ParticipantConfig, ParticipantEvent, PublishSpec};
use super::token::{self, RAW_SUFFIX};
use crate::codec::is_keyframe;
use crate::codec::{Decoder, Encoder, EncoderConfig};
use crate::error::{Error, LiveKitError};
use crate::pipeline::service::DetectService;
use crate::pipeline::stream::{StreamOptions, StreamPipeline};
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
    /// Access units dropped undecoded to catch up (up to a key frame).
    pub access_units_dropped: AtomicU64,
    pub frames_released: AtomicU64,
    pub fail_closed: AtomicU64,
    pub access_units_out: AtomicU64,
    pub keyframes_forced: AtomicU64,
}

/// A running session; `stop` ends it.
pub struct Session {
    pub room: String,
    pub stats: Arc<SessionStats>,
    stop: Arc<AtomicBool>,
    /// Commands for the current input connection (via the supervisor).
    input_cmd: mpsc::UnboundedSender<Command>,
    supervisor: tokio::task::JoinHandle<()>,
    output: Connection,
    media: Option<std::thread::JoinHandle<()>>,
    forwards: [tokio::task::JoinHandle<()>; 1],
}

/// Frames inside the pipeline beyond which new input frames are skipped:
/// ~270 ms at 30 fps, just above the strict-mode deadline (250 ms).
const MAX_IN_FLIGHT: usize = 8;

/// Input older than this is dropped up to the next key frame.
const MAX_INPUT_AGE: Duration = Duration::from_millis(400);

/// Media thread input.
enum MediaIn {
    AccessUnit {
        data: Arc<[u8]>,
        rtp_time: u64,
        contiguous: bool,
        arrived: Instant,
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
        let raw = raw_room(room);
        let sub_token =
            token::subscriber_token(&lk.api_key, &lk.api_secret, &raw, "livecensor-in")?;
        let pub_token = token::publisher_token(&lk.api_key, &lk.api_secret, room, "livecensor")?;
        let mut output = io::connect(
            &lk.url,
            &pub_token,
            ParticipantConfig {
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
            lk.bind_ip,
        )
        .await?;
        let input_cfg = ParticipantConfig {
            subscribe: true,
            from_identity: None,
            audio: lk.audio,
            publish: None,
        };
        // The first connection is made here so a bad URL or key fails the
        // start; the supervisor makes the later ones.
        let input = io::connect(&lk.url, &sub_token, input_cfg.clone(), lk.bind_ip).await?;
        let stats = Arc::new(SessionStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (media_tx, media_rx) = std_mpsc::channel::<MediaIn>();
        let (input_cmd, input_cmd_rx) = mpsc::unbounded_channel();
        let supervisor = tokio::spawn(supervise_input(
            input,
            InputSpec {
                url: lk.url.clone(),
                token: sub_token,
                cfg: input_cfg,
                bind_ip: lk.bind_ip,
                room: room.to_string(),
            },
            input_cmd_rx,
            media_tx.clone(),
            // Audio needs no processing: it goes straight to the publisher.
            output.commands.clone(),
            stop.clone(),
        ));

        let media = {
            let stats = stats.clone();
            let stop = stop.clone();
            let to_pub = output.commands.clone();
            let to_sub = input_cmd.clone();
            let fps = lk.fps;
            let room = room.to_string();
            let thread_room = room.clone();
            std::thread::Builder::new()
                .name(format!("censor-{room}"))
                .spawn(move || {
                    let pipeline = StreamPipeline::new(stream_id, svc, opts);
                    let mut m = MediaLoop {
                        pipeline,
                        decoder: None,
                        encoder: None,
                        fps,
                        waiting_for_keyframe: true,
                        force_idr: true,
                        ts_base: None,
                        last_out_ts: 0,
                        stats,
                        to_pub,
                        to_sub,
                    };
                    if let Err(e) = m.run(&media_rx, &stop) {
                        tracing::error!(room = %thread_room, "media thread stopped: {e}");
                    }
                })
                .map_err(|e| LiveKitError::Session {
                    room: room.to_string(),
                    reason: format!("cannot start media thread: {e}"),
                })?
        };

        // Publisher events: a key frame request or a (re)connected
        // transport forces an IDR, so viewers can start decoding at once.
        let mut out_events = std::mem::replace(&mut output.events, mpsc::unbounded_channel().1);
        let room_name = room.to_string();
        let forward_out = tokio::spawn(async move {
            while let Some(ev) = out_events.recv().await {
                let msg = match ev {
                    ParticipantEvent::KeyframeRequested | ParticipantEvent::PublisherConnected => {
                        MediaIn::ForceKeyframe
                    }
                    other => {
                        tracing::info!(room = %room_name, event = ?other, "output");
                        continue;
                    }
                };
                if media_tx.send(msg).is_err() {
                    break;
                }
            }
        });

        Ok(Session {
            room: room.to_string(),
            stats,
            stop,
            input_cmd,
            supervisor,
            output,
            media: Some(media),
            forwards: [forward_out],
        })
    }

    /// Leaves both rooms and stops the media thread.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.input_cmd.send(Command::Leave);
        let _ = self.output.commands.send(Command::Leave);
        let _ = tokio::time::timeout(Duration::from_secs(3), &mut self.supervisor).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.output.task).await;
        for f in &self.forwards {
            f.abort();
        }
        if let Some(h) = self.media.take() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// How to (re)connect the hidden subscriber.
struct InputSpec {
    url: String,
    token: String,
    cfg: ParticipantConfig,
    bind_ip: IpAddr,
    room: String,
}

/// Owns the hidden subscriber: forwards its media, and when the broadcast
/// track goes away (the broadcaster left) replaces the connection with a
/// fresh one, so a broadcaster who comes back is picked up on a clean
/// transport (re-using the old one left the new stream undelivered).
async fn supervise_input(
    first: Connection,
    spec: InputSpec,
    mut commands: mpsc::UnboundedReceiver<Command>,
    media_tx: std_mpsc::Sender<MediaIn>,
    audio_out: mpsc::UnboundedSender<Command>,
    stop: Arc<AtomicBool>,
) {
    let mut current = Some(first);
    loop {
        let mut conn = match current.take() {
            Some(c) => c,
            None => match io::connect(&spec.url, &spec.token, spec.cfg.clone(), spec.bind_ip).await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(room = %spec.room, "reconnecting the input: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                }
            },
        };
        let leaving = loop {
            tokio::select! {
                ev = conn.events.recv() => match ev {
                    Some(ParticipantEvent::AccessUnit { data, rtp_time, contiguous, arrived }) => {
                        let _ = media_tx.send(MediaIn::AccessUnit { data, rtp_time, contiguous, arrived });
                    }
                    Some(ParticipantEvent::AudioPacket { data, rtp_time, .. }) => {
                        let _ = audio_out.send(Command::Audio { rtp_time_48k: rtp_time, data: data.to_vec() });
                    }
                    Some(ParticipantEvent::RemoteTrackGone { track_sid }) => {
                        tracing::info!(room = %spec.room, track = %track_sid, "broadcast track gone; new input connection");
                        let _ = media_tx.send(MediaIn::Reset);
                        break false;
                    }
                    Some(ParticipantEvent::Left { reason }) => {
                        tracing::warn!(room = %spec.room, %reason, "input connection lost; reconnecting");
                        let _ = media_tx.send(MediaIn::Reset);
                        break false;
                    }
                    Some(other) => tracing::debug!(room = %spec.room, event = ?other, "input"),
                    None => break false,
                },
                c = commands.recv() => match c {
                    Some(Command::Leave) | None => break true,
                    Some(c) => { let _ = conn.commands.send(c); }
                },
            }
        };
        let _ = conn.commands.send(Command::Leave);
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut conn.task).await;
        if leaving || stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

struct MediaLoop {
    pipeline: StreamPipeline,
    decoder: Option<Decoder>,
    encoder: Option<Encoder>,
    fps: f32,
    waiting_for_keyframe: bool,
    force_idr: bool,
    /// Input timestamp and output timestamp of the first frame of the
    /// current input stream: a broadcaster that comes back starts a new
    /// random RTP timeline, while our track's must keep going forward or
    /// receivers drop the frames as old.
    ts_base: Option<(i64, u64)>,
    last_out_ts: u64,
    stats: Arc<SessionStats>,
    to_pub: mpsc::UnboundedSender<Command>,
    to_sub: mpsc::UnboundedSender<Command>,
}

impl MediaLoop {
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
                    self.take(m)?;
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

    fn take(&mut self, m: MediaIn) -> Result<(), Error> {
        match m {
            MediaIn::ForceKeyframe => self.force_idr = true,
            MediaIn::Reset => {
                self.decoder = None;
                self.waiting_for_keyframe = true;
                self.ts_base = None;
            }
            MediaIn::AccessUnit {
                data,
                rtp_time,
                contiguous,
                arrived,
            } => {
                self.stats.access_units_in.fetch_add(1, Ordering::Relaxed);
                if !contiguous {
                    self.waiting_for_keyframe = true;
                }
                let key = is_keyframe(&data);
                // Far behind (input queued for longer than MAX_INPUT_AGE):
                // decoding the backlog would only publish stale frames.
                // Drop up to the next key frame, which we ask for now.
                if !key && arrived.elapsed() > MAX_INPUT_AGE {
                    self.stats
                        .access_units_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    self.waiting_for_keyframe = true;
                }
                if self.waiting_for_keyframe && !key {
                    let _ = self.to_sub.send(Command::RequestKeyframe);
                    return Ok(());
                }
                self.waiting_for_keyframe = false;
                if self.decoder.is_none() {
                    self.decoder = Some(Decoder::new()?);
                }
                let Some(dec) = self.decoder.as_mut() else {
                    return Ok(());
                };
                let t0 = Instant::now();
                match dec.decode(&data) {
                    Ok(frames) => {
                        let dt = t0.elapsed().as_secs_f64();
                        for f in frames {
                            self.stats.frames_decoded.fetch_add(1, Ordering::Relaxed);
                            // Behind real time: skip (never publish) this
                            // frame rather than let latency grow without
                            // bound. The decoder still saw it, so the
                            // following frames decode correctly.
                            if self.pipeline.in_flight() >= MAX_IN_FLIGHT {
                                self.stats.frames_skipped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            self.pipeline
                                .push(Instant::now(), rtp_time as i64, f, false, dt);
                        }
                    }
                    Err(e) => {
                        self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("decode error, waiting for a key frame: {e}");
                        self.waiting_for_keyframe = true;
                        self.decoder = None;
                        let _ = self.to_sub.send(Command::RequestKeyframe);
                    }
                }
            }
        }
        Ok(())
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

    /// Encodes one censored frame, (re)creating the encoder for a new size.
    fn encode(&mut self, frame: &crate::frame::Frame) -> Result<Vec<u8>, Error> {
        let size = (frame.width, frame.height);
        let recreate = self
            .encoder
            .as_ref()
            .is_none_or(|e| (e.config().width, e.config().height) != size);
        if recreate {
            self.encoder = None;
            self.encoder = Some(Encoder::new(EncoderConfig::new(size.0, size.1, self.fps))?);
            self.force_idr = true;
        }
        let Some(enc) = self.encoder.as_mut() else {
            return Ok(Vec::new());
        };
        let force = std::mem::take(&mut self.force_idr);
        if force {
            self.stats.keyframes_forced.fetch_add(1, Ordering::Relaxed);
        }
        match enc.encode(frame, force) {
            Ok(au) => Ok(au),
            Err(e) => {
                self.force_idr = true;
                Err(e.into())
            }
        }
    }

    fn drain(&mut self) -> Result<(), Error> {
        while let Some(r) = self.pipeline.poll_output(Instant::now()) {
            self.stats.frames_released.fetch_add(1, Ordering::Relaxed);
            if r.record.status == crate::pipeline::sidecar::Status::FailClosed {
                self.stats.fail_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(frame = r.index, reason = ?r.record.reason, "fail-closed");
            }
            let au = match self.encode(&r.frame) {
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
