//! The webhook side of `serve`: LiveKit POSTs room events; a video track
//! published in `X-raw` starts a censoring session for `X`, and the track,
//! its participant or the room going away stops it. The decision is a pure
//! function of the event ([`decide`]); the HTTP layer (axum) only verifies
//! the signature and maps errors to status codes.

use super::session::{LiveKitSettings, Session, SessionStats};
use super::supervise::JobInput;
use super::token::RAW_SUFFIX;
use crate::error::LiveKitError;
use crate::metrics::{Exposition, Snapshot, CONTENT_TYPE};
use crate::pipeline::service::DetectService;
use crate::pipeline::stream::StreamOptions;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use livekit_api::access_token::TokenVerifier;
use livekit_api::webhooks::{WebhookError, WebhookReceiver};
use livekit_protocol as proto;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Identity of the censor's hidden subscriber (a worker's job adds a
/// suffix): its own comings and goings in the raw room must not stop the
/// session.
pub const INPUT_IDENTITY: &str = "livecensor-in";

/// What an event asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Start { room: String },
    Stop { room: String },
    Ignore,
}

/// The viewers' room for a raw room name (`demo-raw` -> `demo`).
fn base_room(raw: &str) -> Option<&str> {
    raw.strip_suffix(RAW_SUFFIX).filter(|b| !b.is_empty())
}

/// Maps one webhook event to a session action.
pub fn decide(ev: &proto::WebhookEvent) -> Action {
    let Some(room) = ev.room.as_ref().and_then(|r| base_room(&r.name)) else {
        return Action::Ignore;
    };
    let room = room.to_string();
    let is_video = ev
        .track
        .as_ref()
        .is_some_and(|t| t.r#type == proto::TrackType::Video as i32);
    let by_us = ev
        .participant
        .as_ref()
        .is_some_and(|p| p.identity.starts_with(INPUT_IDENTITY));
    match ev.event.as_str() {
        "track_published" if is_video && !by_us => Action::Start { room },
        "track_unpublished" if is_video && !by_us => Action::Stop { room },
        "participant_left" if !by_us => Action::Stop { room },
        "room_finished" => Action::Stop { room },
        _ => Action::Ignore,
    }
}

/// Verifies and decodes a webhook: a bad or forged signature is 401, a
/// body that is not a webhook event is 400.
pub fn verify(
    receiver: &WebhookReceiver,
    body: &str,
    auth: Option<&str>,
) -> Result<proto::WebhookEvent, (StatusCode, String)> {
    let Some(auth) = auth.filter(|a| !a.is_empty()) else {
        return Err((StatusCode::UNAUTHORIZED, "missing Authorization".into()));
    };
    let auth = auth.strip_prefix("Bearer ").unwrap_or(auth);
    receiver.receive(body, auth).map_err(|e| match e {
        WebhookError::InvalidData(_) => (StatusCode::BAD_REQUEST, e.to_string()),
        _ => (StatusCode::UNAUTHORIZED, e.to_string()),
    })
}

/// Events older than this (their `createdAt`) are stale: 401. LiveKit's
/// webhook tokens live 5 minutes; a replay inside that window is caught by
/// [`Replays`] instead.
pub const MAX_EVENT_AGE_S: i64 = 300;

/// Event ids seen recently: a webhook delivered twice (a retry, or a
/// captured request replayed with its still valid token) acts once.
#[derive(Debug, Default)]
pub struct Replays {
    ids: std::collections::VecDeque<String>,
}

impl Replays {
    const KEEP: usize = 4096;

    /// Whether this id is new (and remembers it). Events without an id
    /// cannot be told apart and always count as new.
    pub fn first_time(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        if self.ids.iter().any(|s| s == id) {
            return false;
        }
        if self.ids.len() == Self::KEEP {
            self.ids.pop_front();
        }
        self.ids.push_back(id.to_string());
        true
    }
}

/// A verified event older than [`MAX_EVENT_AGE_S`] at `now_unix` (or from
/// further than that in the future) is stale.
/// The age is computed without overflow: `createdAt` is any i64 the
/// sender wrote.
pub fn check_fresh(ev: &proto::WebhookEvent, now_unix: i64) -> Result<(), (StatusCode, String)> {
    if ev.created_at != 0 && now_unix.abs_diff(ev.created_at) > MAX_EVENT_AGE_S as u64 {
        return Err((
            StatusCode::UNAUTHORIZED,
            format!(
                "stale webhook: created at {} ({} s from now)",
                ev.created_at,
                i128::from(now_unix) - i128::from(ev.created_at)
            ),
        ));
    }
    Ok(())
}

/// Whether a failed start means LiveKit cannot be reached (worth retrying):
/// no signalling connection, or one closed while joining.
fn unreachable(e: &crate::error::Error) -> bool {
    matches!(
        e,
        crate::error::Error::LiveKit(LiveKitError::Connect { .. } | LiveKitError::Signal(_))
    )
}

/// Everything the webhook endpoint decides about one request before a
/// session starts or stops: verify, check freshness, act on a replay once,
/// map to an action. `Ok(None)` is a duplicate. The fuzz target calls this.
pub fn accept(
    receiver: &WebhookReceiver,
    replays: &std::sync::Mutex<Replays>,
    body: &str,
    auth: Option<&str>,
    now_unix: i64,
) -> Result<Option<Action>, (StatusCode, String)> {
    let ev = verify(receiver, body, auth)?;
    check_fresh(&ev, now_unix)?;
    tracing::debug!(event = %ev.event, "webhook");
    let first = replays.lock().map_or(true, |mut r| r.first_time(&ev.id));
    if !first {
        tracing::info!(id = %ev.id, event = %ev.event, "webhook delivered again; acted on once");
        return Ok(None);
    }
    Ok(Some(decide(&ev)))
}

/// Shared state of the webhook server.
pub struct Server {
    pub lk: LiveKitSettings,
    pub svc: Arc<DetectService>,
    pub opts: StreamOptions,
    receiver: WebhookReceiver,
    sessions: Mutex<HashMap<String, Session>>,
    /// Rooms started by `serve --room`: webhooks never stop them.
    pinned: std::sync::Mutex<Vec<String>>,
    /// Pinned rooms whose first join waits for LiveKit to be reachable, and
    /// the tasks retrying them.
    joining: std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    next_stream: AtomicU32,
    webhooks: AtomicU64,
    rejected: AtomicU64,
    /// Requests refused with 413 (body over [`MAX_BODY`]).
    too_large: AtomicU64,
    /// One "webhook rejected" warning per second: a flood of forged
    /// requests must not flood the log (each is counted).
    reject_log: std::sync::Mutex<super::timing::Throttle>,
    replays: std::sync::Mutex<Replays>,
    /// `--moderator-token`: the moderator page and its routes exist.
    moderator_token: Option<String>,
    /// Set by `worker`: /healthz answers its JSON and /metrics adds its
    /// gauges; `serve` leaves it empty.
    worker: std::sync::Mutex<Option<WorkerHealth>>,
}

/// A worker's state as `/healthz` (JSON) and `/metrics` show it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct WorkerHealth {
    pub registered: bool,
    pub worker_id: Option<String>,
    /// Jobs held or promised.
    pub sessions: usize,
    /// The worker's own load in [0, 1] (before the server's rescaling).
    pub load: f32,
    pub capacity: usize,
    /// `WS_AVAILABLE` or `WS_FULL`.
    pub status: String,
}

impl Server {
    pub fn new(
        lk: LiveKitSettings,
        svc: Arc<DetectService>,
        opts: StreamOptions,
        moderator_token: Option<String>,
    ) -> Arc<Self> {
        let receiver =
            WebhookReceiver::new(TokenVerifier::with_api_key(&lk.api_key, &lk.api_secret));
        Arc::new(Server {
            lk,
            svc,
            opts,
            receiver,
            sessions: Mutex::new(HashMap::new()),
            pinned: std::sync::Mutex::new(Vec::new()),
            joining: std::sync::Mutex::new(HashMap::new()),
            next_stream: AtomicU32::new(1),
            webhooks: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            reject_log: std::sync::Mutex::new(super::timing::Throttle::new(
                std::time::Duration::from_secs(1),
            )),
            replays: std::sync::Mutex::new(Replays::default()),
            moderator_token: moderator_token.filter(|t| !t.is_empty()),
            worker: std::sync::Mutex::new(None),
        })
    }

    /// The worker's latest state (`worker` only).
    pub fn set_worker_health(&self, h: WorkerHealth) {
        if let Ok(mut w) = self.worker.lock() {
            *w = Some(h);
        }
    }

    pub fn worker_health(&self) -> Option<WorkerHealth> {
        self.worker.lock().ok().and_then(|w| w.clone())
    }

    /// The counters the worker's load is computed from: the detector's
    /// busy time and the frames all sessions released and failed closed.
    pub async fn load_counters(&self) -> super::dispatch::LoadCounters {
        let svc = self.svc.stats();
        let mut c = super::dispatch::LoadCounters {
            busy_us: svc.busy_us,
            contexts: svc.contexts,
            ..Default::default()
        };
        for s in self.sessions.lock().await.values() {
            c.frames_released += s.stats.frames_released.load(Relaxed);
            c.fail_closed += s.stats.fail_closed.load(Relaxed);
        }
        c
    }

    pub fn moderator_token(&self) -> Option<&str> {
        self.moderator_token.as_deref()
    }

    /// What the moderator page shows of each session.
    pub async fn session_views(&self) -> Vec<super::moderator::SessionView> {
        let sessions = self.sessions.lock().await;
        let mut v: Vec<_> = sessions
            .iter()
            .map(|(room, s)| super::moderator::SessionView {
                room: room.clone(),
                fps: s.stats.fps_x100.load(Relaxed) as f64 / 100.0,
                p95_ms: s.stats.added_latency.snapshot().quantile(0.95),
                fail_closed: s.stats.fail_closed.load(Relaxed),
                exposures: s.stats.exposures.load(Relaxed),
                censor_whole: s.stats.censored_whole.load(Relaxed),
                preview: s.stats.preview.get(),
            })
            .collect();
        v.sort_by(|a, b| a.room.cmp(&b.room));
        v
    }

    /// The room's latest censored preview.
    pub async fn preview(&self, room: &str) -> Option<super::preview::Preview> {
        self.sessions.lock().await.get(room)?.stats.preview.get()
    }

    /// A moderator's action on a room's session; false without one.
    pub async fn moderate(
        &self,
        room: &str,
        action: crate::moderation::Action,
        label: &str,
    ) -> bool {
        match self.sessions.lock().await.get(room) {
            Some(s) => {
                tracing::info!(%room, ?action, %label, "moderator action");
                s.moderate(action, label);
                true
            }
            None => false,
        }
    }

    /// The moderation events, for the page's stream.
    pub fn subscribe_events(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<Arc<crate::moderation::Event>>> {
        self.lk.moderation.as_ref().map(|m| m.hub.subscribe())
    }

    /// Starts a session for `room` unless one runs.
    pub async fn start(self: &Arc<Self>, room: &str) -> Result<(), LiveKitError> {
        self.try_start(room, None)
            .await
            .map_err(|e| LiveKitError::Session {
                room: room.to_string(),
                reason: e.to_string(),
            })
    }

    /// Starts the session of a dispatched job (`worker`): its input joins
    /// with the job's token; unless one runs for `room` already.
    pub async fn start_job(
        self: &Arc<Self>,
        room: &str,
        job: JobInput,
    ) -> Result<(), LiveKitError> {
        self.try_start(room, Some(job))
            .await
            .map_err(|e| LiveKitError::Session {
                room: room.to_string(),
                reason: e.to_string(),
            })
    }

    async fn try_start(
        self: &Arc<Self>,
        room: &str,
        job: Option<JobInput>,
    ) -> Result<(), crate::error::Error> {
        let mut sessions = self.sessions.lock().await;
        if sessions.contains_key(room) {
            return Ok(());
        }
        let id = self.next_stream.fetch_add(1, Relaxed);
        let s =
            Session::start(room, &self.lk, self.svc.clone(), self.opts.clone(), id, job).await?;
        tracing::info!(%room, "session started");
        sessions.insert(room.to_string(), s);
        Ok(())
    }

    /// Starts a session that only `stop_all` ends. True once joined; false
    /// when LiveKit cannot be reached yet: a task then retries (backoff
    /// 250 ms doubling to 2 s) until it can, and `/healthz` answers 503
    /// meanwhile. A server that refuses us (wrong key or secret) or any
    /// other error fails at once: retrying would not help.
    pub async fn start_pinned(self: &Arc<Self>, room: &str) -> Result<bool, LiveKitError> {
        if let Ok(mut p) = self.pinned.lock() {
            p.push(room.to_string());
        }
        match self.try_start(room, None).await {
            Ok(()) => return Ok(true),
            Err(e) if unreachable(&e) => {
                tracing::warn!(%room, "LiveKit not reachable; retrying: {e}");
            }
            Err(e) => {
                return Err(LiveKitError::Session {
                    room: room.to_string(),
                    reason: e.to_string(),
                })
            }
        }
        let s = self.clone();
        let r = room.to_string();
        // Held while spawning: the task's own removal waits for the insert.
        let mut joining = self.joining.lock().unwrap_or_else(|p| p.into_inner());
        let task = tokio::spawn(async move {
            let mut backoff = super::timing::Backoff::default();
            let mut attempt = 1u64;
            loop {
                tokio::time::sleep(backoff.next_wait()).await;
                attempt += 1;
                match s.try_start(&r, None).await {
                    Ok(()) => {
                        tracing::warn!(room = %r, attempt, "LiveKit reachable; serving the room");
                        break;
                    }
                    Err(e) if unreachable(&e) => {
                        tracing::warn!(room = %r, attempt, "LiveKit not reachable; retrying: {e}");
                    }
                    Err(e) => {
                        // Reachable now but refusing: say so and keep
                        // trying (the operator may fix the server's keys).
                        tracing::error!(room = %r, attempt, "cannot start session: {e}");
                    }
                }
            }
            if let Ok(mut j) = s.joining.lock() {
                j.remove(&r);
            }
        });
        joining.insert(room.to_string(), task);
        Ok(false)
    }

    /// Why the service is not connected (rooms still waiting for LiveKit,
    /// sessions with a connection down), or `Ok` when it is.
    pub async fn health(&self) -> Result<(), String> {
        let mut down: Vec<String> = self
            .joining
            .lock()
            .map(|j| {
                j.keys()
                    .map(|r| format!("{r} (LiveKit not reachable)"))
                    .collect()
            })
            .unwrap_or_default();
        down.sort();
        let sessions = self.sessions.lock().await;
        let mut rooms: Vec<_> = sessions.iter().collect();
        rooms.sort_by(|a, b| a.0.cmp(b.0));
        for (room, s) in rooms {
            let sides: Vec<&str> = [
                ("input", &s.stats.input_connected),
                ("output", &s.stats.output_connected),
            ]
            .into_iter()
            .filter(|(_, up)| !up.load(Relaxed))
            .map(|(side, _)| side)
            .collect();
            if !sides.is_empty() {
                down.push(format!("{room} ({} reconnecting)", sides.join(" and ")));
            }
        }
        if down.is_empty() {
            Ok(())
        } else {
            Err(down.join(", "))
        }
    }

    pub async fn stop(&self, room: &str) {
        let pinned = self
            .pinned
            .lock()
            .map(|p| p.iter().any(|r| r == room))
            .unwrap_or(false);
        if pinned {
            return;
        }
        let s = self.sessions.lock().await.remove(room);
        if let Some(s) = s {
            s.stop().await;
            tracing::info!(%room, "session stopped");
        }
    }

    /// The rooms with a session.
    pub async fn rooms(&self) -> Vec<String> {
        self.sessions.lock().await.keys().cloned().collect()
    }

    /// Stops the sessions that ended by themselves and names their rooms.
    pub async fn reap_ended(&self) -> Vec<String> {
        let ended: Vec<_> = {
            let mut sessions = self.sessions.lock().await;
            let rooms: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| s.stats.ended.load(Relaxed))
                .map(|(r, _)| r.clone())
                .collect();
            rooms
                .into_iter()
                .filter_map(|r| sessions.remove(&r).map(|s| (r, s)))
                .collect()
        };
        let mut rooms = Vec::with_capacity(ended.len());
        for (room, s) in ended {
            s.stop().await;
            tracing::info!(%room, "session ended");
            rooms.push(room);
        }
        rooms
    }

    pub async fn stop_all(&self) {
        if let Ok(mut j) = self.joining.lock() {
            for (_, t) in j.drain() {
                t.abort();
            }
        }
        let all: Vec<_> = self.sessions.lock().await.drain().collect();
        for (_, s) in all {
            s.stop().await;
        }
    }

    /// Prometheus text: per-room session counters, webhook counts and the
    /// detector's.
    pub async fn metrics(&self) -> Result<String, std::fmt::Error> {
        let mut m = Exposition::default();
        {
            let sessions = self.sessions.lock().await;
            m.gauge(
                "livecensor_sessions",
                "Censoring sessions running",
                &[],
                sessions.len() as f64,
            );
            m.counter(
                "livecensor_webhooks",
                "Webhook requests received",
                &[],
                self.webhooks.load(Relaxed),
            );
            m.counter(
                "livecensor_webhooks_rejected",
                "Webhook requests refused (signature, age or body)",
                &[],
                self.rejected.load(Relaxed),
            );
            m.counter(
                "livecensor_http_too_large",
                "HTTP requests refused with 413 (body over the limit), unread",
                &[],
                self.too_large.load(Relaxed),
            );
            for (room, s) in sessions.iter() {
                session_metrics(&mut m, room, &s.stats);
            }
        }
        if let Some(w) = self.worker_health() {
            worker_metrics(&mut m, &w);
        }
        if let Some(hub) = self.lk.moderation.as_ref().map(|c| &c.hub) {
            for (sink, c) in hub.counters() {
                let labels = [("sink", sink.as_str())];
                for (name, help, v) in [
                    (
                        "livecensor_events_delivered",
                        "Moderation events written or accepted, per sink",
                        &c.delivered,
                    ),
                    (
                        "livecensor_events_dropped",
                        "Moderation events dropped (queue full, or left at shutdown), per sink",
                        &c.dropped,
                    ),
                    (
                        "livecensor_events_failed",
                        "Moderation events given up on (write error, webhook failing after 5 minutes of retries), per sink",
                        &c.failed,
                    ),
                ] {
                    m.counter(name, help, &labels, v.load(Relaxed));
                }
            }
        }
        m.append(self.svc.metrics());
        m.render()
    }

    /// What `serve` prints each tick. `last` holds each room's latency
    /// histogram at the previous call, so p95 covers the interval since.
    pub async fn status(&self, last: &mut HashMap<String, Snapshot>) -> Status {
        let sessions = self.sessions.lock().await;
        let mut st = Status {
            sessions: sessions.len(),
            ..Status::default()
        };
        let mut latency: Option<Snapshot> = None;
        for (room, s) in sessions.iter() {
            st.fps += s.stats.fps_x100.load(Relaxed) as f64 / 100.0;
            st.fail_closed += s.stats.fail_closed.load(Relaxed);
            let now = s.stats.added_latency.snapshot();
            let d = match last.get(room) {
                Some(prev) => now.since(prev),
                None => now.clone(),
            };
            match &mut latency {
                Some(l) => l.merge(&d),
                None => latency = Some(d),
            }
            last.insert(room.clone(), now);
        }
        last.retain(|room, _| sessions.contains_key(room));
        if st.sessions > 0 {
            st.fps /= st.sessions as f64;
        }
        st.p95_ms = latency.and_then(|l| l.quantile(0.95));
        st
    }
}

/// One line of `serve`'s status: sessions, mean fps per session, p95 added
/// latency over the last interval, frames failed closed (all sessions).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub sessions: usize,
    pub fps: f64,
    pub p95_ms: Option<f64>,
    pub fail_closed: u64,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sessions {}  fps {:.1}  p95 ", self.sessions, self.fps)?;
        match self.p95_ms {
            Some(p) => write!(f, "+{p:.0} ms")?,
            None => f.write_str("-")?,
        }
        write!(f, "  fail-closed {}", self.fail_closed)
    }
}

/// One session's counters, gauges and latency histogram, labelled by room.
pub fn session_metrics(m: &mut Exposition, room: &str, s: &SessionStats) {
    let counters = [
        (
            "livecensor_access_units_in",
            "Access units received",
            &s.access_units_in,
        ),
        (
            "livecensor_frames_decoded",
            "Frames decoded",
            &s.frames_decoded,
        ),
        (
            "livecensor_decode_errors",
            "Access units the decoder refused",
            &s.decode_errors,
        ),
        (
            "livecensor_encode_errors",
            "Censored frames the encoder refused",
            &s.encode_errors,
        ),
        (
            "livecensor_frames_skipped",
            "Decoded frames not published to catch up",
            &s.frames_skipped,
        ),
        (
            "livecensor_frames_late",
            "Censored frames not published: they would have left past the deadline",
            &s.frames_late,
        ),
        (
            "livecensor_access_units_dropped",
            "Access units not decoded to catch up",
            &s.access_units_dropped,
        ),
        (
            "livecensor_frames_corrupt",
            "Frames censored whole while waiting for a key frame",
            &s.frames_corrupt,
        ),
        (
            "livecensor_frames_released",
            "Frames the pipeline released censored, for encoding",
            &s.frames_released,
        ),
        (
            "livecensor_fail_closed",
            "Frames censored whole (fail-closed)",
            &s.fail_closed,
        ),
        (
            "livecensor_access_units_out",
            "Access units published",
            &s.access_units_out,
        ),
        (
            "livecensor_keyframes_forced",
            "Key frames forced on the encoder (new encoder, encode error)",
            &s.keyframes_forced,
        ),
        (
            "livecensor_encoder_fallbacks",
            "Sessions that left NVENC for openh264 for good after errors",
            &s.encoder_fallbacks,
        ),
        (
            "livecensor_exposures",
            "Exposures started (moderation events)",
            &s.exposures,
        ),
        (
            "livecensor_frames_passed_through",
            "Frames published as the broadcaster's own access units (verified clean)",
            &s.frames_passed_through,
        ),
        (
            "livecensor_passthrough_switches",
            "Switches from the broadcaster's access units to our encoder (each an IDR)",
            &s.passthrough_switches,
        ),
        (
            "livecensor_keyframe_requests",
            "Key frame requests (PLI) sent to the broadcaster",
            &s.keyframe_requests,
        ),
        (
            "livecensor_fault_injected",
            "RTP datagrams dropped or corrupted on purpose (tests)",
            &*s.fault_injected,
        ),
    ];
    let room_label = [("room", room)];
    for (name, help, v) in counters {
        m.counter(name, help, &room_label, v.load(Relaxed));
    }
    for (side, v) in [
        ("input", &s.input_reconnects),
        ("output", &s.output_reconnects),
    ] {
        m.counter(
            "livecensor_reconnects",
            "New connections after the first, per side",
            &[("room", room), ("side", side)],
            v.load(Relaxed),
        );
    }
    for (side, v) in [
        ("input", &s.input_connected),
        ("output", &s.output_connected),
    ] {
        m.gauge(
            "livecensor_connected",
            "Whether the connection is up (1) or being replaced (0), per side",
            &[("room", room), ("side", side)],
            if v.load(Relaxed) { 1.0 } else { 0.0 },
        );
    }
    m.gauge(
        "livecensor_audio_delay_ms",
        "Audio hold for lip sync with the censored video",
        &room_label,
        s.audio_delay_us.load(Relaxed) as f64 / 1e3,
    );
    let off = s.passthrough_off.lock().ok().and_then(|w| w.clone());
    let state = match (&off, s.passthrough_active.load(Relaxed)) {
        (Some(_), _) => "off",
        (None, true) => "forwarding",
        (None, false) => "encoding",
    };
    let reason = off.unwrap_or_default();
    m.gauge(
        "livecensor_passthrough",
        "1 for the session's passthrough state (forwarding, encoding, or off with the reason)",
        &[
            ("room", room),
            ("state", state),
            ("reason", reason.as_str()),
        ],
        1.0,
    );
    m.gauge(
        "livecensor_fps",
        "Frames published per second over the last second",
        &room_label,
        s.fps_x100.load(Relaxed) as f64 / 100.0,
    );
    m.histogram(
        "livecensor_added_latency_ms",
        "Added latency of each published frame, network arrival to send",
        &room_label,
        &s.added_latency,
    );
}

/// The worker's gauges; WS_FULL is its own 0/1 gauge so alerts need no
/// label matching.
fn worker_metrics(m: &mut Exposition, w: &WorkerHealth) {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    m.gauge(
        "livecensor_worker_registered",
        "1 while the worker is registered with livekit-server",
        &[],
        flag(w.registered),
    );
    m.gauge(
        "livecensor_worker_load",
        "The worker's own load in [0, 1]: max of sessions, detector busy and fail-closed shares",
        &[],
        w.load as f64,
    );
    m.gauge(
        "livecensor_worker_capacity",
        "Sessions this worker holds at its load threshold",
        &[],
        w.capacity as f64,
    );
    m.gauge(
        "livecensor_worker_jobs",
        "Jobs held or promised",
        &[],
        w.sessions as f64,
    );
    m.gauge(
        "livecensor_worker_full",
        "1 while the worker reports WS_FULL and declines jobs",
        &[],
        flag(w.status == "WS_FULL"),
    );
}

/// The HTTP routes: POST /webhook, GET /healthz, GET /metrics, and with a
/// moderator token the moderator page and its routes (`moderator`).
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/webhook", post(webhook))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(super::moderator::routes(server.moderator_token.clone()))
        // A body without a length (chunked) is cut at the limit too.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(server.clone(), refuse_large))
        .with_state(server)
}

/// The largest request body any route reads. LiveKit's webhooks are a few
/// KB and the moderator's actions less; 256 KiB leaves room for large
/// participant metadata.
pub const MAX_BODY: usize = 256 * 1024;

/// 413 at once for a declared body over [`MAX_BODY`], before any of it is
/// read (the connection is then closed, not drained); counts every 413.
async fn refuse_large(
    State(s): State<Arc<Server>>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        s.too_large.fetch_add(1, Relaxed);
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY} bytes\n"),
        )
            .into_response();
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        s.too_large.fetch_add(1, Relaxed);
    }
    resp
}

/// `serve`: 200 "ok" when every room is served with both connections up;
/// 503 "not connected: ..." naming what is down (a load balancer's
/// readiness). `worker`: its JSON state, 503 while not registered.
async fn healthz(State(s): State<Arc<Server>>) -> axum::response::Response {
    if let Some(w) = s.worker_health() {
        let code = if w.registered {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return match serde_json::to_string(&w) {
            Ok(body) => (code, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => {
                (StatusCode::INTERNAL_SERVER_ERROR, format!("healthz: {e}\n")).into_response()
            }
        };
    }
    match s.health().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not connected: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<Arc<Server>>) -> impl IntoResponse {
    match s.metrics().await {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}\n")).into_response(),
    }
}

async fn webhook(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    s.webhooks.fetch_add(1, Relaxed);
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let action = match accept(&s.receiver, &s.replays, &body, auth, now_unix) {
        Ok(Some(a)) => a,
        Ok(None) => return (StatusCode::OK, "duplicate\n".into()),
        Err((code, msg)) => {
            let n = s.rejected.fetch_add(1, Relaxed) + 1;
            let now = std::time::Instant::now();
            let loud = s.reject_log.lock().is_ok_and(|mut t| {
                let ready = t.ready(now);
                if ready {
                    t.mark(now);
                }
                ready
            });
            if loud {
                tracing::warn!(%code, rejected_total = n, "webhook rejected: {msg}");
            } else {
                tracing::debug!(%code, "webhook rejected: {msg}");
            }
            return (code, msg);
        }
    };
    match action {
        Action::Start { room } => {
            // Joining takes a round trip to the server that is sending this
            // webhook: answer first, join in the background.
            let s2 = s.clone();
            tokio::spawn(async move {
                if let Err(e) = s2.start(&room).await {
                    tracing::error!(%room, "cannot start session: {e}");
                }
            });
        }
        Action::Stop { room } => {
            let s2 = s.clone();
            tokio::spawn(async move { s2.stop(&room).await });
        }
        Action::Ignore => {}
    }
    (StatusCode::OK, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use livekit_api::access_token::AccessToken;
    use sha2::{Digest, Sha256};

    fn event(kind: &str, room: &str, video: bool, identity: &str) -> proto::WebhookEvent {
        proto::WebhookEvent {
            event: kind.into(),
            room: Some(proto::Room {
                name: room.into(),
                ..Default::default()
            }),
            participant: Some(proto::ParticipantInfo {
                identity: identity.into(),
                ..Default::default()
            }),
            track: Some(proto::TrackInfo {
                r#type: if video {
                    proto::TrackType::Video as i32
                } else {
                    proto::TrackType::Audio as i32
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn session_text(room: &str, s: &SessionStats) -> String {
        let mut m = Exposition::default();
        m.gauge(
            "livecensor_sessions",
            "Censoring sessions running",
            &[],
            1.0,
        );
        session_metrics(&mut m, room, s);
        m.render().unwrap()
    }

    #[test]
    fn session_metrics_name_every_counter_and_the_side_of_reconnects() {
        let s = SessionStats::default();
        s.output_reconnects.store(2, Relaxed);
        s.audio_delay_us.store(41_500, Relaxed);
        s.fault_injected.store(3, Relaxed);
        s.fps_x100.store(2987, Relaxed);
        s.added_latency.observe(33.0);
        let m = session_text("demo", &s);
        for line in [
            "# TYPE livecensor_reconnects_total counter",
            "livecensor_reconnects_total{room=\"demo\",side=\"input\"} 0",
            "livecensor_reconnects_total{room=\"demo\",side=\"output\"} 2",
            "# TYPE livecensor_audio_delay_ms gauge",
            "livecensor_audio_delay_ms{room=\"demo\"} 41.5",
            "livecensor_fault_injected_total{room=\"demo\"} 3",
            "livecensor_keyframe_requests_total{room=\"demo\"} 0",
            "livecensor_frames_corrupt_total{room=\"demo\"} 0",
            "livecensor_fps{room=\"demo\"} 29.87",
            "# TYPE livecensor_added_latency_ms histogram",
            "livecensor_added_latency_ms_bucket{room=\"demo\",le=\"30\"} 0",
            "livecensor_added_latency_ms_bucket{room=\"demo\",le=\"40\"} 1",
            "livecensor_added_latency_ms_count{room=\"demo\"} 1",
        ] {
            assert!(m.lines().any(|l| l == line), "{line} missing from\n{m}");
        }
    }

    #[test]
    fn metrics_of_a_room_with_quotes_and_backslashes_parse_and_round_trip() {
        use openmetrics_parser::{prometheus::parse_prometheus, PrometheusType, PrometheusValue};
        let room = "a\"b\\c";
        let s = SessionStats::default();
        s.fail_closed.store(4, Relaxed);
        s.fps_x100.store(3000, Relaxed);
        s.added_latency.observe(12.0);
        let text = session_text(room, &s);
        let parsed = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        for (family, kind) in [
            ("livecensor_sessions", PrometheusType::Gauge),
            ("livecensor_fail_closed_total", PrometheusType::Counter),
            ("livecensor_reconnects_total", PrometheusType::Counter),
            ("livecensor_fps", PrometheusType::Gauge),
            ("livecensor_added_latency_ms", PrometheusType::Histogram),
        ] {
            let f = parsed
                .families
                .get(family)
                .unwrap_or_else(|| panic!("{family} missing from\n{text}"));
            assert_eq!(f.family_type, kind, "{family}");
            assert!(!f.help.is_empty(), "{family} has no HELP");
        }
        let fail = &parsed.families["livecensor_fail_closed_total"];
        let sample = fail.iter_samples().next().expect("one sample");
        let labels = sample.get_labelset().expect("labels");
        assert_eq!(labels.get_label_value("room"), Some(room));
        assert!(matches!(&sample.value, PrometheusValue::Counter(c) if c.value.as_f64() == 4.0));
        let lat = &parsed.families["livecensor_added_latency_ms"];
        let sample = lat.iter_samples().next().expect("one histogram");
        assert_eq!(
            sample
                .get_labelset()
                .expect("labels")
                .get_label_value("room"),
            Some(room)
        );
        assert!(matches!(&sample.value, PrometheusValue::Histogram(h) if h.count == Some(1)));
    }

    #[test]
    fn status_line_reports_the_interval_p95() {
        let st = Status {
            sessions: 2,
            fps: 29.84,
            p95_ms: Some(41.2),
            fail_closed: 0,
        };
        assert_eq!(
            st.to_string(),
            "sessions 2  fps 29.8  p95 +41 ms  fail-closed 0"
        );
        let idle = Status::default().to_string();
        assert_eq!(idle, "sessions 0  fps 0.0  p95 -  fail-closed 0");
    }

    #[test]
    fn stale_or_future_events_are_401_and_fresh_or_undated_pass() {
        let mut ev = event("track_published", "demo-raw", true, "alice");
        let now = 1_800_000_000;
        for (created, ok) in [
            (0, true),
            (now, true),
            (now - 299, true),
            (now - 301, false),
            (now + 301, false),
            // Far enough in the past that `now - created_at` overflows i64.
            (i64::MIN, false),
            (i64::MIN + now - 1, false),
            (i64::MAX, false),
        ] {
            ev.created_at = created;
            let r = check_fresh(&ev, now);
            assert_eq!(r.is_ok(), ok, "created_at {created}: {r:?}");
            if let Err((code, msg)) = r {
                assert_eq!(code, StatusCode::UNAUTHORIZED);
                assert!(msg.contains("stale"), "{msg}");
            }
        }
    }

    #[test]
    fn a_replayed_event_id_acts_once_and_memory_is_bounded() {
        let mut r = Replays::default();
        assert!(r.first_time("EV_1"));
        assert!(!r.first_time("EV_1"));
        assert!(r.first_time("EV_2"));
        assert!(r.first_time(""), "no id: cannot dedupe");
        assert!(r.first_time(""));
        for i in 0..10_000 {
            r.first_time(&format!("EV_x{i}"));
        }
        assert_eq!(r.ids.len(), Replays::KEEP);
        assert!(r.first_time("EV_1"), "long forgotten");
    }

    #[test]
    fn decisions() {
        let start = Action::Start {
            room: "demo".into(),
        };
        let stop = Action::Stop {
            room: "demo".into(),
        };
        assert_eq!(
            decide(&event("track_published", "demo-raw", true, "b")),
            start
        );
        assert_eq!(
            decide(&event("track_published", "demo-raw", false, "b")),
            Action::Ignore
        );
        assert_eq!(
            decide(&event("track_published", "demo", true, "b")),
            Action::Ignore
        );
        assert_eq!(
            decide(&event("track_published", "-raw", true, "b")),
            Action::Ignore
        );
        assert_eq!(
            decide(&event("track_unpublished", "demo-raw", true, "b")),
            stop
        );
        assert_eq!(
            decide(&event("participant_left", "demo-raw", true, "b")),
            stop
        );
        assert_eq!(
            decide(&event("participant_left", "demo-raw", true, INPUT_IDENTITY)),
            Action::Ignore
        );
        assert_eq!(decide(&event("room_finished", "demo-raw", false, "")), stop);
        assert_eq!(
            decide(&event("participant_joined", "demo-raw", true, "b")),
            Action::Ignore
        );
    }

    /// A server whose LiveKit is at `url`, with a detector that finds
    /// nothing.
    fn server_for(url: &str) -> Arc<Server> {
        use crate::engine::test_util::Nothing;
        use crate::pipeline::batcher::BatcherConfig;
        let svc = DetectService::start(vec![Box::new(Nothing)], BatcherConfig::default())
            .expect("a detector service");
        let lk = LiveKitSettings {
            url: url.into(),
            api_key: "devkey".into(),
            api_secret: "secret".into(),
            bind_ip: "127.0.0.1".parse().unwrap(),
            fps: 30.0,
            audio: false,
            faults: Default::default(),
            backend: crate::backend::Backend::Cpu,
            moderation: None,
            passthrough: Default::default(),
        };
        let opts = StreamOptions {
            policy: Default::default(),
            scheduler: Default::default(),
            tracker: None,
            resize: Default::default(),
            zoom: Default::default(),
        };
        Server::new(lk, Arc::new(svc), opts, None)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A port nothing listens on (bound, then closed).
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[test]
    fn a_pinned_room_waits_for_livekit_and_healthz_says_so() {
        runtime().block_on(async {
            let s = server_for(&format!("ws://127.0.0.1:{}", closed_port()));
            assert_eq!(s.health().await, Ok(()));
            assert!(!s.start_pinned("demo").await.expect("retrying, not failing"));
            let why = s.health().await.unwrap_err();
            assert_eq!(why, "demo (LiveKit not reachable)");
            // Still retrying a while later, and stop_all ends that.
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
            assert!(s.health().await.is_err());
            s.stop_all().await;
            assert_eq!(s.health().await, Ok(()));
        });
    }

    #[test]
    fn a_server_refusing_our_key_fails_the_start() {
        runtime().block_on(async {
            // Answers every WebSocket upgrade as LiveKit does a bad token.
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok((mut c, _)) = l.accept().await {
                    let mut buf = [0u8; 4096];
                    let _ = c.read(&mut buf).await;
                    let _ = c
                        .write_all(
                            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 13\r\n\r\ninvalid token",
                        )
                        .await;
                }
            });
            let s = server_for(&format!("ws://127.0.0.1:{port}"));
            let e = s.start_pinned("demo").await.unwrap_err().to_string();
            assert!(
                e.contains("refused us (401)") && e.contains("invalid token"),
                "{e}"
            );
            assert_eq!(s.health().await, Ok(()), "nothing left retrying");
        });
    }

    /// Raw HTTP/1.1 to `addr`: the request head, then `body` unless the
    /// server has answered within 200 ms; returns the status (0: no answer
    /// within 5 s).
    async fn post_raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(200), c.read(&mut buf)).await;
        let n = match early {
            Ok(r) => r.unwrap(),
            Err(_) => {
                // Not answered yet: send the body (a refusal may cut it).
                let _ = c.write_all(body).await;
                let read = c.read(&mut buf);
                match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
                    Ok(r) => r.unwrap_or(0),
                    Err(_) => 0,
                }
            }
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn oversized_bodies_are_413_and_declared_ones_before_any_is_sent() {
        runtime().block_on(async {
            let s = server_for(&format!("ws://127.0.0.1:{}", closed_port()));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let app = router(s.clone());
            tokio::spawn(async move { axum::serve(l, app).await });
            let head = |len: &str| {
                format!("POST /webhook HTTP/1.1\r\nhost: x\r\nauthorization: forged\r\n{len}\r\n")
            };
            // 100 MB declared: answered before a byte of it is sent.
            let big = head("content-length: 100000000\r\n");
            let t = std::time::Instant::now();
            assert_eq!(post_raw(addr, &big, &[]).await, 413);
            assert!(t.elapsed() < std::time::Duration::from_millis(200));
            // Just over the limit, chunked (no length): cut at the limit.
            let n = MAX_BODY + 1;
            let mut chunked = format!("{n:x}\r\n").into_bytes();
            chunked.extend(std::iter::repeat_n(b'x', n));
            chunked.extend(b"\r\n0\r\n\r\n");
            let te = head("transfer-encoding: chunked\r\n");
            assert_eq!(post_raw(addr, &te, &chunked).await, 413);
            // Within the limit: read, and refused for its signature.
            let small = head("content-length: 2\r\n");
            assert_eq!(post_raw(addr, &small, b"{}").await, 401);
            let m = s.metrics().await.unwrap();
            assert!(m.contains("livecensor_http_too_large_total 2"), "{m}");
            assert!(m.contains("livecensor_webhooks_rejected_total 1"), "{m}");
        });
    }

    fn sign(body: &str, secret: &str) -> String {
        let hash = Sha256::digest(body.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(hash);
        AccessToken::with_api_key("devkey", secret)
            .with_sha256(&b64)
            .to_jwt()
            .unwrap()
    }

    #[test]
    fn signatures() {
        let rx = WebhookReceiver::new(TokenVerifier::with_api_key("devkey", "secret"));
        let body =
            r#"{"event":"track_published","room":{"name":"demo-raw"},"track":{"type":"VIDEO"}}"#;
        let ev = verify(&rx, body, Some(&sign(body, "secret"))).unwrap();
        assert_eq!(
            decide(&ev),
            Action::Start {
                room: "demo".into()
            }
        );
        // Forged (other secret), tampered body, missing header: 401.
        let forged = sign(body, "other");
        assert_eq!(
            verify(&rx, body, Some(&forged)).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        let tampered = body.replace("demo", "evil");
        assert_eq!(
            verify(&rx, &tampered, Some(&sign(body, "secret")))
                .unwrap_err()
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            verify(&rx, body, None).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            verify(&rx, body, Some("garbage")).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        // Correctly signed but not an event: 400.
        let junk = "{not json";
        assert_eq!(
            verify(&rx, junk, Some(&sign(junk, "secret")))
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn worker_health_is_json_and_gauges() {
        let w = WorkerHealth {
            registered: true,
            worker_id: Some("AW_1".into()),
            sessions: 2,
            load: 0.5,
            capacity: 3,
            status: "WS_FULL".into(),
        };
        let j: serde_json::Value = serde_json::to_value(&w).unwrap();
        assert_eq!(j["registered"], true);
        assert_eq!(j["worker_id"], "AW_1");
        assert_eq!(j["sessions"], 2);
        assert_eq!(j["load"], 0.5);
        assert_eq!(j["capacity"], 3);
        assert_eq!(j["status"], "WS_FULL");
        let mut m = Exposition::default();
        worker_metrics(&mut m, &w);
        let text = m.render().unwrap();
        let value = |name: &str| -> Option<f64> {
            text.lines().find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name).then(|| v.parse().ok())?
            })
        };
        assert_eq!(value("livecensor_worker_registered"), Some(1.0), "{text}");
        assert_eq!(value("livecensor_worker_load"), Some(0.5), "{text}");
        assert_eq!(value("livecensor_worker_capacity"), Some(3.0), "{text}");
        assert_eq!(value("livecensor_worker_jobs"), Some(2.0), "{text}");
        assert_eq!(value("livecensor_worker_full"), Some(1.0), "{text}");
    }
}
