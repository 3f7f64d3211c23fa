//! LiveKit agent dispatch, sans-IO: the worker side of the `/agent`
//! protocol ([`WorkerProtocol`]: register, accept or decline jobs by load,
//! report status) and the failover watch over raw rooms ([`LeaseWatch`]).
//! Both take `now`; the tokio/WebSocket driver is `worker.rs`.
//!
//! What livekit-server v1.13.5 does, read in its source (`pkg/agent`,
//! `pkg/service/agentservice.go`, `pkg/rtc/room.go`): it offers a job to
//! one WS_AVAILABLE worker, chosen at random weighted by `1 - load`, and to
//! the next when that one declines or does not answer in 10 s; a worker
//! whose WebSocket closes loses its jobs with no re-dispatch ("TODO update
//! dispatch state"), `AvailabilityRequest.resuming` is never set, and a
//! dispatch's restart policy is stored but not acted on. Failover is
//! therefore ours: the worker serving a raw room beats a lease in the
//! room's metadata, survivors that see it stop beating ask the server for a
//! new dispatch, and the viewers' room's publisher identity (one per room)
//! makes sure one session ends up publishing.

use super::token::RAW_SUFFIX;
use super::webhook::INPUT_IDENTITY;
use crate::error::LiveKitError;
use livekit_protocol as proto;
use proto::server_message::Message as Srv;
use proto::worker_message::Message as Wrk;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The name workers register under and broadcaster tokens dispatch.
pub const AGENT_NAME: &str = "livecensor";

/// How often the worker reports its status when nothing changes (the
/// Python SDK's period); a change is reported at once.
pub const STATUS_EVERY: Duration = Duration::from_millis(2500);

/// livekit-server's `agents.target_load` (default 0.7): a job request is
/// only taken by a node whose workers have load below it (its
/// `JobRequestAffinity` sums `target_load - load`), so a worker at 3 of 4
/// sessions reporting 0.75 would get nothing. Loads are reported on a
/// scale that reaches it only when full.
pub const SERVER_TARGET_LOAD: f32 = 0.7;

/// `--load-threshold`'s default: at this load the worker is full.
pub const LOAD_THRESHOLD: f32 = 0.7;

/// How often the worker pings the server (the Python SDK's period); the
/// server answers with a pong carrying both timestamps.
pub const PING_EVERY: Duration = Duration::from_secs(10);

/// An accepted job whose assignment has not come within this long is
/// forgotten (the server gave it to another worker after its own 10 s).
pub const ASSIGNMENT_WAIT: Duration = Duration::from_secs(15);

/// What a worker accepts.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub agent_name: String,
    /// Sessions this machine holds (`--max-sessions` or measured): at that
    /// many the sessions' share of the load reaches the threshold.
    pub max_sessions: usize,
    /// `--load-threshold`: at or above this load the worker reports
    /// WS_FULL and declines offers.
    pub load_threshold: f32,
    pub version: String,
}

/// Counter readings at one instant; two of them give the load's shares
/// over the interval between.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadCounters {
    /// Detector inference time summed over its contexts, microseconds.
    pub busy_us: u64,
    /// Detector contexts inferring in parallel.
    pub contexts: usize,
    /// Frames published by all sessions, and of them those failed closed.
    pub frames_released: u64,
    pub fail_closed: u64,
}

/// What limits this machine besides its session count, over the last
/// status interval, each in [0, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadSample {
    pub busy_share: f32,
    pub fail_closed_share: f32,
}

impl LoadSample {
    /// The shares between two readings `elapsed` apart. Counters that went
    /// down (a session ended and its counts left the sum) count as no
    /// change.
    pub fn between(prev: &LoadCounters, now: &LoadCounters, elapsed: Duration) -> LoadSample {
        let capacity_us = elapsed.as_micros() as f64 * now.contexts.max(1) as f64;
        let busy = now.busy_us.saturating_sub(prev.busy_us) as f64;
        let busy_share = if capacity_us > 0.0 {
            busy / capacity_us
        } else {
            0.0
        };
        let released = now.frames_released.saturating_sub(prev.frames_released);
        let failed = now.fail_closed.saturating_sub(prev.fail_closed);
        let fail_closed_share = if released > 0 {
            failed as f64 / released as f64
        } else {
            0.0
        };
        LoadSample {
            busy_share: busy_share.clamp(0.0, 1.0) as f32,
            fail_closed_share: fail_closed_share.clamp(0.0, 1.0) as f32,
        }
    }
}

/// The worker's own load in [0, 1]: the largest of the detector's busy
/// share, the fail-closed share of frames and the sessions' share. The
/// sessions' share is scaled so that `capacity` sessions reach
/// `threshold` exactly: `--max-sessions N` means N sessions, not fewer.
pub fn machine_load(sessions: usize, capacity: usize, threshold: f32, s: LoadSample) -> f32 {
    let share = threshold * sessions as f32 / capacity.max(1) as f32;
    share
        .max(s.busy_share)
        .max(s.fail_closed_share)
        .clamp(0.0, 1.0)
}

/// Sessions that fit, from the detector's per-image time measured at
/// start: `contexts` infer in parallel, a session needs `fps /
/// frames_per_inference` images a second, and capacity sessions keep the
/// detector busy `threshold` of the time (so the busy share and the
/// sessions' share reach the threshold together). At least 1. Decoding and
/// encoding are not measured: they scale with CPU cores, the detector is
/// what one machine runs out of first.
pub fn measured_capacity(
    per_image: Duration,
    contexts: usize,
    fps: f32,
    frames_per_inference: u32,
    threshold: f32,
) -> usize {
    let per_image = per_image.as_secs_f64();
    let need = fps.max(1.0) as f64 / frames_per_inference.max(1) as f64;
    if per_image <= 0.0 {
        return 1;
    }
    let rate = contexts.max(1) as f64 / per_image;
    // The epsilon keeps f32 rounding of the threshold from losing a session.
    let fit = (rate * threshold.clamp(0.0, 1.0) as f64 / need + 1e-6).floor();
    if fit.is_finite() && fit >= 1.0 {
        fit as usize
    } else {
        1
    }
}

/// What the server is told for a load: WS_FULL and 1 at or above the
/// threshold; below it the load rescaled from [0, threshold) onto
/// [0, [`SERVER_TARGET_LOAD`]), so an available worker is never skipped by
/// the server's target-load rule and full means "skip me" on both scales.
pub fn reported_load(load: f32, threshold: f32) -> (proto::WorkerStatus, f32) {
    if threshold.is_nan() || threshold <= 0.0 || load >= threshold {
        (proto::WorkerStatus::WsFull, 1.0)
    } else {
        (
            proto::WorkerStatus::WsAvailable,
            (load * (SERVER_TARGET_LOAD / threshold)).clamp(0.0, SERVER_TARGET_LOAD),
        )
    }
}

/// What the driver must do next.
#[derive(Debug, PartialEq)]
pub enum WorkerOutput {
    /// Send this message (binary protobuf) on the WebSocket.
    Send(Box<proto::WorkerMessage>),
    /// The server registered us.
    Registered { worker_id: String },
    /// Start censoring `room` (the viewers' room) with the job's input.
    Start {
        job_id: String,
        room: String,
        token: String,
        identity: String,
    },
    /// The server ended the job: stop its session.
    Stop { job_id: String, room: String },
    /// The reported status changed (logs, tests).
    Status {
        status: proto::WorkerStatus,
        load: f32,
        jobs: u32,
    },
}

/// The worker's side of the protocol for one WebSocket connection.
#[derive(Debug)]
pub struct WorkerProtocol {
    cfg: WorkerConfig,
    worker_id: Option<String>,
    /// Running jobs: id -> viewers' room.
    jobs: HashMap<String, String>,
    /// Accepted offers waiting for their assignment: id -> (room, identity, since).
    pending: HashMap<String, (String, String, Instant)>,
    out: VecDeque<WorkerOutput>,
    next_status: Option<Instant>,
    last_status: Option<(proto::WorkerStatus, u32)>,
    /// Detector and fail-closed shares of the last interval (the driver's).
    sample: LoadSample,
    next_ping: Option<Instant>,
    /// When the last pong came (the connection is alive).
    last_pong: Option<Instant>,
}

impl WorkerProtocol {
    /// A fresh connection: queues the registration. `running` are jobs
    /// kept from an earlier connection (their sessions go on); they count
    /// toward the load.
    pub fn new(cfg: WorkerConfig, running: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut p = WorkerProtocol {
            cfg,
            worker_id: None,
            jobs: running.into_iter().collect(),
            pending: HashMap::new(),
            out: VecDeque::new(),
            next_status: None,
            last_status: None,
            sample: LoadSample::default(),
            next_ping: None,
            last_pong: None,
        };
        p.send(Wrk::Register(proto::RegisterWorkerRequest {
            r#type: proto::JobType::JtRoom as i32,
            agent_name: p.cfg.agent_name.clone(),
            version: p.cfg.version.clone(),
            // Least privilege for the job's participant in the raw room:
            // a hidden subscriber.
            allowed_permissions: Some(proto::ParticipantPermission {
                can_subscribe: true,
                hidden: true,
                ..Default::default()
            }),
            ..Default::default()
        }));
        p
    }

    pub fn worker_id(&self) -> Option<&str> {
        self.worker_id.as_deref()
    }

    /// Jobs held or promised.
    pub fn jobs(&self) -> usize {
        self.load_count()
    }

    fn load_count(&self) -> usize {
        self.jobs.len() + self.pending.len()
    }

    /// When the server last answered a ping.
    pub fn last_pong(&self) -> Option<Instant> {
        self.last_pong
    }

    /// The detector and fail-closed shares of the interval just ended; the
    /// next status report uses them.
    pub fn set_sample(&mut self, sample: LoadSample) {
        self.sample = sample;
    }

    /// The worker's own load ([`machine_load`]).
    pub fn load(&self) -> f32 {
        machine_load(
            self.load_count(),
            self.cfg.max_sessions,
            self.cfg.load_threshold,
            self.sample,
        )
    }

    /// What the server is told ([`reported_load`]); always WS_FULL at
    /// `max_sessions` jobs.
    pub fn status(&self) -> (proto::WorkerStatus, f32) {
        if self.load_count() >= self.cfg.max_sessions.max(1) {
            return (proto::WorkerStatus::WsFull, 1.0);
        }
        reported_load(self.load(), self.cfg.load_threshold)
    }

    /// One server message.
    pub fn handle_message(&mut self, now: Instant, msg: proto::ServerMessage) {
        match msg.message {
            Some(Srv::Register(r)) => {
                self.worker_id = Some(r.worker_id.clone());
                self.out.push_back(WorkerOutput::Registered {
                    worker_id: r.worker_id,
                });
                self.report(now);
                self.next_ping = Some(now + PING_EVERY);
            }
            Some(Srv::Availability(req)) => self.handle_offer(now, req),
            Some(Srv::Assignment(a)) => {
                let Some(job) = a.job else { return };
                let Some((room, identity, _)) = self.pending.remove(&job.id) else {
                    // Not offered to us or given up on: say so, the server
                    // then counts it as ended.
                    self.job_status(&job.id, proto::JobStatus::JsFailed, "not accepted");
                    return;
                };
                self.jobs.insert(job.id.clone(), room.clone());
                self.out.push_back(WorkerOutput::Start {
                    job_id: job.id,
                    room,
                    token: a.token,
                    identity,
                });
                self.report(now);
            }
            Some(Srv::Termination(t)) => {
                if let Some(room) = self.jobs.remove(&t.job_id) {
                    self.out.push_back(WorkerOutput::Stop {
                        job_id: t.job_id,
                        room,
                    });
                    self.report(now);
                }
            }
            Some(Srv::Pong(_)) => self.last_pong = Some(now),
            Some(Srv::GoAway(_)) | None => {}
        }
    }

    fn handle_offer(&mut self, now: Instant, req: proto::AvailabilityRequest) {
        let Some(job) = req.job else { return };
        let room = job
            .room
            .as_ref()
            .and_then(|r| r.name.strip_suffix(RAW_SUFFIX))
            .filter(|b| !b.is_empty())
            .map(str::to_string);
        let serving = |r: &str| {
            self.jobs.values().any(|j| j == r) || self.pending.values().any(|(j, _, _)| j == r)
        };
        let accept = match &room {
            Some(r) => {
                self.worker_id.is_some()
                    && self.status().0 == proto::WorkerStatus::WsAvailable
                    && !serving(r)
            }
            None => false,
        };
        // One identity per job: a session that replaces a dead worker's
        // does not share its input's identity, whose late removal would
        // otherwise end the new job (the server keys agent jobs by identity).
        let identity = format!("{INPUT_IDENTITY}-{}", job.id);
        self.send(Wrk::Availability(proto::AvailabilityResponse {
            job_id: job.id.clone(),
            available: accept,
            participant_identity: if accept {
                identity.clone()
            } else {
                String::new()
            },
            participant_name: if accept {
                "livecensor".into()
            } else {
                String::new()
            },
            ..Default::default()
        }));
        if let (true, Some(room)) = (accept, room) {
            self.pending.insert(job.id, (room, identity, now));
            // Load counts the promise at once: offers that follow in the
            // next instants see it.
            self.report(now);
        }
    }

    /// The session of `job_id` ended by itself (superseded, room closed,
    /// failed to start).
    pub fn job_ended(&mut self, now: Instant, job_id: &str, error: Option<&str>) {
        if self.jobs.remove(job_id).is_some() {
            match error {
                Some(e) => self.job_status(job_id, proto::JobStatus::JsFailed, e),
                None => self.job_status(job_id, proto::JobStatus::JsSuccess, ""),
            }
            self.report(now);
        }
    }

    /// Periodic status and ping; offers accepted long ago without an
    /// assignment are forgotten.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_ping.is_some_and(|t| now >= t) {
            self.send(Wrk::Ping(proto::WorkerPing {
                timestamp: unix_ms(),
            }));
            self.next_ping = Some(now + PING_EVERY);
        }
        let before = self.pending.len();
        self.pending
            .retain(|_, (_, _, since)| now.duration_since(*since) < ASSIGNMENT_WAIT);
        if self.pending.len() != before || self.next_status.is_some_and(|t| now >= t) {
            self.report(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self
            .pending
            .values()
            .map(|(_, _, since)| *since + ASSIGNMENT_WAIT)
            .min();
        [self.next_status, expiry, self.next_ping]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn poll_output(&mut self) -> Option<WorkerOutput> {
        self.out.pop_front()
    }

    /// Sends the status now (only once registered) and schedules the next.
    fn report(&mut self, now: Instant) {
        if self.worker_id.is_none() {
            return;
        }
        let (status, load) = self.status();
        let jobs = self.load_count() as u32;
        self.send(Wrk::UpdateWorker(proto::UpdateWorkerStatus {
            status: Some(status as i32),
            load,
            job_count: jobs,
            ..Default::default()
        }));
        if self.last_status != Some((status, jobs)) {
            self.last_status = Some((status, jobs));
            self.out
                .push_back(WorkerOutput::Status { status, load, jobs });
        }
        self.next_status = Some(now + STATUS_EVERY);
    }

    fn job_status(&mut self, job_id: &str, status: proto::JobStatus, error: &str) {
        self.send(Wrk::UpdateJob(proto::UpdateJobStatus {
            job_id: job_id.to_string(),
            status: status as i32,
            error: error.to_string(),
        }));
    }

    fn send(&mut self, m: Wrk) {
        self.out
            .push_back(WorkerOutput::Send(Box::new(proto::WorkerMessage {
                message: Some(m),
            })));
    }
}

/// Milliseconds since the epoch, the ping's timestamp.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Decodes one binary message from the server.
pub fn decode(bytes: &[u8]) -> Result<proto::ServerMessage, LiveKitError> {
    use prost::Message;
    proto::ServerMessage::decode(bytes)
        .map_err(|e| LiveKitError::Agent(format!("undecodable server message: {e}")))
}

/// The `/agent` WebSocket URL for a server URL (`ws(s)://` or `http(s)://`).
pub fn agent_url(base: &str) -> String {
    format!("{}/agent?protocol=1", super::signal::ws_base(base))
}

/// The HTTP(S) URL of the server's API (Twirp) for its WebSocket URL.
pub fn api_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        base.to_string()
    }
}

/// The lease's key in a raw room's metadata (JSON object).
pub const LEASE_KEY: &str = "livecensor_lease";

/// How often the serving worker beats a room's lease.
pub const BEAT_EVERY: Duration = Duration::from_millis(500);

/// A lease that has not changed for this long (as seen by the watcher's
/// own clock: no clocks are compared across machines) is dead.
pub const LEASE_STALE: Duration = Duration::from_millis(1500);

/// A room with a broadcaster and no lease ever seen is taken over only
/// after this long: its first job (dispatched when the room was created)
/// normally starts well within it.
pub const UNLEASED_GRACE: Duration = Duration::from_secs(8);

/// After a takeover, the same watcher leaves the room alone this long
/// (the new job's first beat comes within it, or the dispatch failed).
pub const TAKEOVER_BACKOFF: Duration = Duration::from_secs(5);

/// The metadata a serving worker writes: its id and a beat counter.
pub fn lease_metadata(worker_id: &str, beat: u64) -> String {
    serde_json::json!({ LEASE_KEY: { "worker": worker_id, "beat": beat } }).to_string()
}

/// The lease in a room's metadata, as an opaque value that changes with
/// every beat (None: no lease).
pub fn lease_of(metadata: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(metadata).ok()?;
    v.get(LEASE_KEY).map(|l| l.to_string())
}

/// What the watcher sees of one room per poll.
#[derive(Clone, Debug)]
pub struct RoomView {
    pub name: String,
    pub metadata: String,
    /// Participants publishing (the broadcaster).
    pub publishers: u32,
}

#[derive(Debug)]
struct Seen {
    lease: Option<String>,
    /// When the lease was last seen changing (or the room first seen).
    changed: Instant,
    ever_leased: bool,
    hold_until: Option<Instant>,
}

/// Failover: which raw rooms with a broadcaster have no live censor.
#[derive(Debug, Default)]
pub struct LeaseWatch {
    rooms: HashMap<String, Seen>,
}

impl LeaseWatch {
    /// One poll of the server's rooms at `now`; `ours` are the viewers'
    /// rooms this worker serves. Returns the raw rooms to re-dispatch.
    pub fn observe(&mut self, now: Instant, rooms: &[RoomView], ours: &[String]) -> Vec<String> {
        self.rooms
            .retain(|name, _| rooms.iter().any(|r| &r.name == name));
        let mut take = Vec::new();
        for r in rooms {
            let Some(base) = r.name.strip_suffix(RAW_SUFFIX).filter(|b| !b.is_empty()) else {
                continue;
            };
            let lease = lease_of(&r.metadata);
            let seen = self.rooms.entry(r.name.clone()).or_insert(Seen {
                lease: None,
                changed: now,
                ever_leased: false,
                hold_until: None,
            });
            if lease != seen.lease {
                seen.ever_leased |= lease.is_some();
                seen.lease = lease;
                seen.changed = now;
            }
            let idle = now.duration_since(seen.changed);
            let limit = if seen.ever_leased {
                LEASE_STALE
            } else {
                UNLEASED_GRACE
            };
            let held = seen.hold_until.is_some_and(|t| now < t);
            if r.publishers > 0 && idle >= limit && !held && !ours.iter().any(|o| o == base) {
                seen.hold_until = Some(now + TAKEOVER_BACKOFF);
                take.push(r.name.clone());
            }
        }
        take
    }
}

/// Whether a raw room's participants include a broadcaster: someone
/// other than a censor's input with a video track published. Checked
/// before a takeover (a room's publisher count lags behind departures).
pub fn has_broadcast(participants: &[proto::ParticipantInfo]) -> bool {
    participants.iter().any(|p| {
        !p.identity.starts_with(INPUT_IDENTITY)
            && p.state != proto::participant_info::State::Disconnected as i32
            && p.tracks
                .iter()
                .any(|t| t.r#type == proto::TrackType::Video as i32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: usize) -> WorkerConfig {
        WorkerConfig {
            agent_name: AGENT_NAME.into(),
            max_sessions: max,
            load_threshold: LOAD_THRESHOLD,
            version: "t".into(),
        }
    }

    fn drain(p: &mut WorkerProtocol) -> Vec<WorkerOutput> {
        std::iter::from_fn(|| p.poll_output()).collect()
    }

    fn sent(out: &[WorkerOutput]) -> Vec<&Wrk> {
        out.iter()
            .filter_map(|o| match o {
                WorkerOutput::Send(m) => m.message.as_ref(),
                _ => None,
            })
            .collect()
    }

    fn srv(m: Srv) -> proto::ServerMessage {
        proto::ServerMessage { message: Some(m) }
    }

    fn offer(id: &str, room: &str) -> proto::ServerMessage {
        srv(Srv::Availability(proto::AvailabilityRequest {
            job: Some(proto::Job {
                id: id.into(),
                room: Some(proto::Room {
                    name: room.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            resuming: false,
        }))
    }

    fn assign(id: &str) -> proto::ServerMessage {
        srv(Srv::Assignment(proto::JobAssignment {
            job: Some(proto::Job {
                id: id.into(),
                ..Default::default()
            }),
            url: None,
            token: format!("tok-{id}"),
        }))
    }

    fn registered(max: usize, t: Instant) -> WorkerProtocol {
        let mut p = WorkerProtocol::new(cfg(max), []);
        p.handle_message(
            t,
            srv(Srv::Register(proto::RegisterWorkerResponse {
                worker_id: "AW_1".into(),
                ..Default::default()
            })),
        );
        p
    }

    fn answer(out: &[WorkerOutput]) -> Option<&proto::AvailabilityResponse> {
        sent(out).into_iter().find_map(|m| match m {
            Wrk::Availability(a) => Some(a),
            _ => None,
        })
    }

    #[test]
    fn registers_as_a_hidden_subscribing_room_agent() {
        let mut p = WorkerProtocol::new(cfg(2), []);
        let out = drain(&mut p);
        let Wrk::Register(r) = sent(&out)[0] else {
            panic!("{out:?}")
        };
        assert_eq!(r.agent_name, AGENT_NAME);
        assert_eq!(r.r#type, proto::JobType::JtRoom as i32);
        let perm = r.allowed_permissions.as_ref().unwrap();
        assert!(perm.hidden && perm.can_subscribe && !perm.can_publish && !perm.can_publish_data);
        // Nothing is offered before the server registered us.
        p.handle_message(Instant::now(), offer("AJ_0", "a-raw"));
        assert!(!answer(&drain(&mut p)).unwrap().available);
    }

    #[test]
    fn accepts_until_full_then_reports_ws_full_and_declines() {
        let t = Instant::now();
        let mut p = registered(2, t);
        let out = drain(&mut p);
        assert!(out.contains(&WorkerOutput::Registered {
            worker_id: "AW_1".into()
        }));
        p.handle_message(t, offer("AJ_1", "a-raw"));
        let out = drain(&mut p);
        let a = answer(&out).unwrap();
        assert!(a.available);
        assert_eq!(a.participant_identity, "livecensor-in-AJ_1");
        // The promise counts at once: half the sessions, still available,
        // load below the server's target.
        assert!(out.contains(&WorkerOutput::Status {
            status: proto::WorkerStatus::WsAvailable,
            load: SERVER_TARGET_LOAD / 2.0,
            jobs: 1
        }));
        p.handle_message(t, assign("AJ_1"));
        let out = drain(&mut p);
        assert!(out.contains(&WorkerOutput::Start {
            job_id: "AJ_1".into(),
            room: "a".into(),
            token: "tok-AJ_1".into(),
            identity: "livecensor-in-AJ_1".into(),
        }));
        // The same room again is declined (one session per room).
        p.handle_message(t, offer("AJ_2", "a-raw"));
        assert!(!answer(&drain(&mut p)).unwrap().available);
        // A room that is not a raw room is declined.
        p.handle_message(t, offer("AJ_3", "plain"));
        assert!(!answer(&drain(&mut p)).unwrap().available);
        p.handle_message(t, offer("AJ_4", "b-raw"));
        let out = drain(&mut p);
        assert!(answer(&out).unwrap().available);
        let full = sent(&out).into_iter().any(|m| {
            matches!(m, Wrk::UpdateWorker(u) if u.status == Some(proto::WorkerStatus::WsFull as i32) && u.load == 1.0 && u.job_count == 2)
        });
        assert!(full, "{out:?}");
        p.handle_message(t, offer("AJ_5", "c-raw"));
        assert!(!answer(&drain(&mut p)).unwrap().available);
        // A job that ends frees a slot: available again.
        p.handle_message(t, assign("AJ_4"));
        drain(&mut p);
        p.job_ended(t, "AJ_4", None);
        let out = drain(&mut p);
        assert!(sent(&out).iter().any(|m| matches!(m, Wrk::UpdateJob(u) if u.job_id == "AJ_4" && u.status == proto::JobStatus::JsSuccess as i32)));
        assert!(out.contains(&WorkerOutput::Status {
            status: proto::WorkerStatus::WsAvailable,
            load: SERVER_TARGET_LOAD / 2.0,
            jobs: 1
        }));
        // One short of full stays under the server's target.
        let mut p = registered(4, t);
        for (i, r) in ["a-raw", "b-raw", "c-raw"].iter().enumerate() {
            p.handle_message(t, offer(&format!("AJ_{i}"), r));
        }
        let (status, load) = p.status();
        assert_eq!(status, proto::WorkerStatus::WsAvailable);
        assert!(load < SERVER_TARGET_LOAD, "{load}");
    }

    #[test]
    fn termination_stops_the_job_and_unknown_assignments_fail() {
        let t = Instant::now();
        let mut p = registered(4, t);
        p.handle_message(t, offer("AJ_1", "a-raw"));
        p.handle_message(t, assign("AJ_1"));
        drain(&mut p);
        p.handle_message(
            t,
            srv(Srv::Termination(proto::JobTermination {
                job_id: "AJ_1".into(),
            })),
        );
        let out = drain(&mut p);
        assert!(out.contains(&WorkerOutput::Stop {
            job_id: "AJ_1".into(),
            room: "a".into()
        }));
        p.handle_message(t, assign("AJ_9"));
        let out = drain(&mut p);
        assert!(!out.iter().any(|o| matches!(o, WorkerOutput::Start { .. })));
        assert!(sent(&out).iter().any(|m| matches!(m, Wrk::UpdateJob(u) if u.job_id == "AJ_9" && u.status == proto::JobStatus::JsFailed as i32)));
    }

    #[test]
    fn status_is_repeated_and_stale_promises_expire() {
        let t = Instant::now();
        let mut p = registered(1, t);
        p.handle_message(t, offer("AJ_1", "a-raw"));
        drain(&mut p);
        assert_eq!(p.status().0, proto::WorkerStatus::WsFull);
        let t1 = t + STATUS_EVERY;
        assert!(p.poll_timeout().unwrap() <= t1);
        p.handle_timeout(t1);
        assert!(sent(&drain(&mut p))
            .iter()
            .any(|m| matches!(m, Wrk::UpdateWorker(_))));
        // No assignment: the promise lapses and the worker is available.
        p.handle_timeout(t + ASSIGNMENT_WAIT);
        assert_eq!(p.status(), (proto::WorkerStatus::WsAvailable, 0.0));
        // Jobs kept from an earlier connection count toward the load.
        let p = WorkerProtocol::new(cfg(1), [("AJ_7".to_string(), "x".to_string())]);
        assert_eq!(p.status().0, proto::WorkerStatus::WsFull);
    }

    fn room(name: &str, meta: &str, publishers: u32) -> RoomView {
        RoomView {
            name: name.into(),
            metadata: meta.into(),
            publishers,
        }
    }

    #[test]
    fn a_lease_that_stops_beating_is_taken_over_once() {
        let t = Instant::now();
        let mut w = LeaseWatch::default();
        let ms = Duration::from_millis;
        let mut now = t;
        for beat in 0..6 {
            let m = lease_metadata("AW_dead", beat);
            assert!(w.observe(now, &[room("a-raw", &m, 1)], &[]).is_empty());
            now += ms(500);
        }
        let last = lease_metadata("AW_dead", 5);
        // Stopped beating: taken over once LEASE_STALE has passed.
        assert!(w
            .observe(now + LEASE_STALE - ms(600), &[room("a-raw", &last, 1)], &[])
            .is_empty());
        let at = now + LEASE_STALE;
        assert_eq!(
            w.observe(at, &[room("a-raw", &last, 1)], &[]),
            vec!["a-raw"]
        );
        // Not again while the takeover is given time.
        assert!(w
            .observe(at + ms(500), &[room("a-raw", &last, 1)], &[])
            .is_empty());
        // A room we serve, a room without a broadcaster, a room that is
        // not a raw room: never.
        let mut w = LeaseWatch::default();
        let rooms = [
            room("b-raw", &last, 1),
            room("c-raw", &last, 0),
            room("d", "", 1),
        ];
        w.observe(t, &rooms, &["b".into()]);
        assert!(w.observe(t + ms(10_000), &rooms, &["b".into()]).is_empty());
    }

    #[test]
    fn a_room_never_leased_waits_for_its_first_dispatch() {
        let t = Instant::now();
        let mut w = LeaseWatch::default();
        let r = [room("a-raw", "", 1)];
        assert!(w.observe(t, &r, &[]).is_empty());
        assert!(w.observe(t + LEASE_STALE * 2, &r, &[]).is_empty());
        assert_eq!(w.observe(t + UNLEASED_GRACE, &r, &[]), vec!["a-raw"]);
        assert_eq!(lease_of("not json"), None);
        assert_eq!(lease_of("{}"), None);
    }

    #[test]
    fn a_broadcast_is_a_video_track_of_someone_else() {
        let p = |identity: &str, kind: proto::TrackType, state: proto::participant_info::State| {
            proto::ParticipantInfo {
                identity: identity.into(),
                state: state as i32,
                tracks: vec![proto::TrackInfo {
                    r#type: kind as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }
        };
        use proto::participant_info::State::{Active, Disconnected};
        use proto::TrackType::{Audio, Video};
        assert!(has_broadcast(&[p("bc", Video, Active)]));
        assert!(!has_broadcast(&[p("bc", Audio, Active)]));
        assert!(!has_broadcast(&[p("bc", Video, Disconnected)]));
        assert!(!has_broadcast(&[p("livecensor-in-AJ_1", Video, Active)]));
        assert!(!has_broadcast(&[]));
    }

    #[test]
    fn urls() {
        assert_eq!(agent_url("ws://h:7880/"), "ws://h:7880/agent?protocol=1");
        assert_eq!(agent_url("https://h"), "wss://h/agent?protocol=1");
        assert_eq!(api_url("wss://h"), "https://h");
        assert_eq!(api_url("http://h:1"), "http://h:1");
    }

    #[test]
    fn load_shares_come_from_counter_deltas_over_the_interval() {
        let prev = LoadCounters {
            busy_us: 1_000_000,
            contexts: 2,
            frames_released: 100,
            fail_closed: 10,
        };
        let now = LoadCounters {
            busy_us: 3_500_000,
            contexts: 2,
            frames_released: 200,
            fail_closed: 30,
        };
        // 2.5 s busy out of 2 contexts x 2.5 s; 20 of 100 frames failed closed.
        let s = LoadSample::between(&prev, &now, STATUS_EVERY);
        assert!((s.busy_share - 0.5).abs() < 1e-6, "{s:?}");
        assert!((s.fail_closed_share - 0.2).abs() < 1e-6, "{s:?}");
        // A session that ended took its counts away: no negative share.
        let s = LoadSample::between(&now, &prev, STATUS_EVERY);
        assert_eq!(s, LoadSample::default());
        // No time, no frames: nothing divides by zero.
        let s = LoadSample::between(&prev, &prev, Duration::ZERO);
        assert_eq!(s, LoadSample::default());
        // Busy beyond the wall time (clock jitter) is capped at 1.
        let s = LoadSample::between(&prev, &now, Duration::from_millis(100));
        assert_eq!(s.busy_share, 1.0);
    }

    #[test]
    fn load_is_the_largest_limit_and_full_at_the_threshold() {
        let idle = LoadSample::default();
        assert_eq!(machine_load(0, 4, 0.7, idle), 0.0);
        // Sessions reach the threshold exactly at capacity.
        assert!((machine_load(2, 4, 0.7, idle) - 0.35).abs() < 1e-6);
        assert!((machine_load(4, 4, 0.7, idle) - 0.7).abs() < 1e-6);
        let busy = LoadSample {
            busy_share: 0.9,
            fail_closed_share: 0.1,
        };
        assert!((machine_load(1, 4, 0.7, busy) - 0.9).abs() < 1e-6);
        let failing = LoadSample {
            busy_share: 0.2,
            fail_closed_share: 0.8,
        };
        assert!((machine_load(1, 4, 0.7, failing) - 0.8).abs() < 1e-6);
        // Reported: below the threshold rescaled under the server's target.
        let (st, l) = reported_load(0.35, 0.5);
        assert_eq!(st, proto::WorkerStatus::WsAvailable);
        assert!((l - 0.49).abs() < 1e-6 && l < SERVER_TARGET_LOAD, "{l}");
        assert_eq!(reported_load(0.5, 0.5), (proto::WorkerStatus::WsFull, 1.0));
        assert_eq!(reported_load(0.9, 0.7), (proto::WorkerStatus::WsFull, 1.0));
        let (st, l) = reported_load(0.69, 0.7);
        assert_eq!(st, proto::WorkerStatus::WsAvailable);
        assert!(l < SERVER_TARGET_LOAD);
    }

    #[test]
    fn a_busy_detector_makes_the_worker_full_and_decline_offers() {
        let t = Instant::now();
        let mut p = registered(4, t);
        drain(&mut p);
        p.set_sample(LoadSample {
            busy_share: 0.8,
            fail_closed_share: 0.0,
        });
        assert_eq!(p.status(), (proto::WorkerStatus::WsFull, 1.0));
        p.handle_message(t, offer("AJ_1", "a-raw"));
        assert!(!answer(&drain(&mut p)).unwrap().available);
        // The next interval is quiet again: offers are taken.
        p.set_sample(LoadSample::default());
        p.handle_message(t, offer("AJ_2", "a-raw"));
        assert!(answer(&drain(&mut p)).unwrap().available);
    }

    #[test]
    fn pings_periodically_once_registered() {
        let t = Instant::now();
        let mut p = WorkerProtocol::new(cfg(2), []);
        drain(&mut p);
        // Not registered: no ping scheduled.
        p.handle_timeout(t + PING_EVERY);
        assert!(!sent(&drain(&mut p))
            .iter()
            .any(|m| matches!(m, Wrk::Ping(_))));
        let mut p = registered(2, t);
        drain(&mut p);
        assert!(p.poll_timeout().is_some_and(|w| w <= t + PING_EVERY));
        p.handle_timeout(t + PING_EVERY);
        let pings = |out: &[WorkerOutput]| {
            sent(out)
                .iter()
                .filter(|m| matches!(m, Wrk::Ping(w) if w.timestamp > 0))
                .count()
        };
        assert_eq!(pings(&drain(&mut p)), 1);
        // Not again before the next period.
        p.handle_timeout(t + PING_EVERY + Duration::from_secs(1));
        assert_eq!(pings(&drain(&mut p)), 0);
        p.handle_timeout(t + PING_EVERY * 2);
        assert_eq!(pings(&drain(&mut p)), 1);
        assert_eq!(p.last_pong(), None);
        let at = t + PING_EVERY * 2 + Duration::from_millis(20);
        p.handle_message(
            at,
            srv(Srv::Pong(proto::WorkerPong {
                last_timestamp: 1,
                timestamp: 2,
            })),
        );
        assert_eq!(p.last_pong(), Some(at));
    }

    #[test]
    fn capacity_is_the_streams_the_detector_keeps_up_with_at_the_threshold() {
        let ms = Duration::from_millis;
        // 20 ms an image: 50 images/s; 30 fps inferring every 3rd frame is
        // 10 a session; 0.7 of 50 is 35 -> 3 sessions.
        assert_eq!(measured_capacity(ms(20), 1, 30.0, 3, 0.7), 3);
        // Two contexts double it.
        assert_eq!(measured_capacity(ms(20), 2, 30.0, 3, 0.7), 7);
        // Every frame inferred: 35 / 30 -> 1.
        assert_eq!(measured_capacity(ms(20), 1, 30.0, 1, 0.7), 1);
        // Too slow for one stream still takes one (never 0).
        assert_eq!(measured_capacity(ms(500), 1, 30.0, 1, 0.7), 1);
        // A fast GPU: 2 ms -> 500/s * 0.7 / 10 = 35.
        assert_eq!(measured_capacity(ms(2), 1, 30.0, 3, 0.7), 35);
        // Unmeasured (zero) falls back to one.
        assert_eq!(measured_capacity(Duration::ZERO, 1, 30.0, 3, 0.7), 1);
    }
}
