//! `worker`: the thin tokio driver of [`super::dispatch`]. It keeps a
//! WebSocket to the server's `/agent` endpoint (reconnecting with backoff;
//! running sessions go on meanwhile), starts a censoring session (the same
//! [`Server`] as `serve`) for every job assigned, and reports jobs that end.
//! Beside it, the lease task beats the lease of every room served and
//! re-dispatches raw rooms whose lease stopped (failover).

use super::dispatch::{
    agent_url, api_url, decode, has_broadcast, lease_metadata, LeaseWatch, LoadSample, RoomView,
    WorkerConfig, WorkerOutput, WorkerProtocol, BEAT_EVERY, STATUS_EVERY,
};
use super::session::raw_room;
use super::supervise::JobInput;
use super::timing::Backoff;
use super::token;
use super::webhook::{Server, WorkerHealth};
use crate::error::LiveKitError;
use futures_util::{SinkExt, StreamExt};
use livekit_api::services::agent_dispatch::AgentDispatchClient;
use livekit_api::services::room::RoomClient;
use livekit_protocol as proto;
use prost::Message as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// What a worker registers as and how much it takes.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub agent_name: String,
    /// Sessions held at the load threshold (`--max-sessions` or measured).
    pub max_sessions: usize,
    /// `--load-threshold`: WS_FULL at or above this load.
    pub load_threshold: f32,
    /// Watch other workers' leases and re-dispatch their rooms when they
    /// stop.
    pub takeover: bool,
}

/// What the WebSocket loop and the lease task share.
#[derive(Debug, Default)]
struct Shared {
    worker_id: Option<String>,
    /// Running jobs: id -> viewers' room.
    jobs: HashMap<String, String>,
}

/// Runs the worker until the task is dropped.
pub async fn run(server: Arc<Server>, opts: WorkerOptions) {
    // /healthz is the worker's JSON (not registered yet) from the start.
    server.set_worker_health(WorkerHealth {
        capacity: opts.max_sessions,
        status: proto::WorkerStatus::WsAvailable.as_str_name().to_string(),
        ..Default::default()
    });
    let shared = Arc::new(Mutex::new(Shared::default()));
    let _lease = AbortOnDrop(tokio::spawn(lease_task(
        server.clone(),
        opts.clone(),
        shared.clone(),
    )));
    let mut backoff = Backoff::default();
    loop {
        let up = Instant::now();
        if let Err(e) = connection(&server, &opts, &shared).await {
            tracing::warn!("agent connection: {e}; reconnecting");
            eprintln!("worker: agent connection lost ({e}); reconnecting");
        }
        // Not registered until the next connection's registration (the
        // lease keeps beating: the sessions go on).
        let mut h = server.worker_health().unwrap_or_default();
        h.registered = false;
        h.worker_id = None;
        server.set_worker_health(h);
        backoff.connection_ended(up, Instant::now());
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// Seconds since the epoch, for log lines others line up with.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The lease task ends with the worker.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// One registration: from connect until the socket fails.
async fn connection(
    server: &Arc<Server>,
    opts: &WorkerOptions,
    shared: &Arc<Mutex<Shared>>,
) -> Result<(), LiveKitError> {
    let lk = &server.lk;
    let url = agent_url(&lk.url);
    let jwt = token::worker_token(&lk.api_key, &lk.api_secret)?;
    let connect_err = |reason: String| LiveKitError::Connect {
        url: url.clone(),
        reason,
    };
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| connect_err(e.to_string()))?;
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {jwt}")
            .parse()
            .map_err(|e| connect_err(format!("{e}")))?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let (mut sink, mut stream) = ws.split();
    let running: Vec<_> = lock(shared)
        .jobs
        .iter()
        .map(|(j, r)| (j.clone(), r.clone()))
        .collect();
    let mut p = WorkerProtocol::new(
        WorkerConfig {
            agent_name: opts.agent_name.clone(),
            max_sessions: opts.max_sessions,
            load_threshold: opts.load_threshold,
            version: env!("CARGO_PKG_VERSION").into(),
        },
        running,
    );
    // The load's detector and fail-closed shares, over each status period.
    let mut sample_tick = tokio::time::interval(STATUS_EVERY);
    let mut last_counters = (Instant::now(), server.load_counters().await);
    // Sessions that failed to start: (job, error).
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<(String, String)>();
    let mut reap = tokio::time::interval(Duration::from_millis(500));
    let ws_err = |e: tokio_tungstenite::tungstenite::Error| LiveKitError::Agent(e.to_string());
    loop {
        while let Some(o) = p.poll_output() {
            match o {
                WorkerOutput::Send(m) => sink
                    .send(Message::Binary(m.encode_to_vec().into()))
                    .await
                    .map_err(ws_err)?,
                WorkerOutput::Registered { worker_id } => {
                    eprintln!(
                        "worker registered as {worker_id} (agent {}, capacity {} sessions, load threshold {})",
                        opts.agent_name, opts.max_sessions, opts.load_threshold
                    );
                    lock(shared).worker_id = Some(worker_id);
                }
                WorkerOutput::Start {
                    job_id,
                    room,
                    token,
                    identity,
                } => {
                    eprintln!(
                        "worker: job {job_id} assigned at {:.3}: room {room}",
                        unix_now()
                    );
                    lock(shared).jobs.insert(job_id.clone(), room.clone());
                    let server = server.clone();
                    let failed = failed_tx.clone();
                    tokio::spawn(async move {
                        let t0 = Instant::now();
                        match server.start_job(&room, JobInput { token, identity }).await {
                            Ok(()) => eprintln!(
                                "worker: job {job_id} session started for room {room} in {:.0} ms",
                                t0.elapsed().as_secs_f64() * 1e3
                            ),
                            Err(e) => {
                                eprintln!("worker: job {job_id} failed to start: {e}");
                                let _ = failed.send((job_id, e.to_string()));
                            }
                        }
                    });
                }
                WorkerOutput::Stop { job_id, room } => {
                    eprintln!("worker: job {job_id} terminated by the server: room {room}");
                    lock(shared).jobs.remove(&job_id);
                    let server = server.clone();
                    tokio::spawn(async move { server.stop(&room).await });
                }
                WorkerOutput::Status { status, load, jobs } => {
                    eprintln!(
                        "worker status {} load {load:.2} jobs {jobs}",
                        status.as_str_name()
                    );
                }
            }
        }
        publish(server, &p, opts);
        let wake = p
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => p.handle_message(Instant::now(), decode(&b)?),
                Some(Ok(Message::Close(c))) => {
                    return Err(LiveKitError::Agent(format!("server closed the socket: {c:?}")));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_err(e)),
                None => return Err(LiveKitError::Agent("socket ended".into())),
            },
            Some((job, error)) = failed_rx.recv() => {
                lock(shared).jobs.remove(&job);
                p.job_ended(Instant::now(), &job, Some(&error));
            }
            _ = reap.tick() => {
                for room in server.reap_ended().await {
                    let job = {
                        let mut s = lock(shared);
                        let job = s.jobs.iter().find(|(_, r)| **r == room).map(|(j, _)| j.clone());
                        if let Some(j) = &job {
                            s.jobs.remove(j);
                        }
                        job
                    };
                    if let Some(job) = job {
                        eprintln!("worker: job {job} ended: room {room}");
                        p.job_ended(Instant::now(), &job, None);
                    }
                }
            }
            _ = sample_tick.tick() => {
                let now = Instant::now();
                let counters = server.load_counters().await;
                let (then, prev) = last_counters;
                p.set_sample(LoadSample::between(&prev, &counters, now.duration_since(then)));
                last_counters = (now, counters);
            }
            _ = tokio::time::sleep_until(wake.into()) => p.handle_timeout(Instant::now()),
        }
    }
}

/// Shows the protocol's state on /healthz and /metrics.
fn publish(server: &Server, p: &WorkerProtocol, opts: &WorkerOptions) {
    let (status, _) = p.status();
    server.set_worker_health(WorkerHealth {
        registered: p.worker_id().is_some(),
        worker_id: p.worker_id().map(str::to_string),
        sessions: p.jobs(),
        load: p.load(),
        capacity: opts.max_sessions,
        status: status.as_str_name().to_string(),
    });
}

/// Beats the lease of every room served and, with `takeover`, asks the
/// server for a new dispatch of each raw room whose lease stopped.
async fn lease_task(server: Arc<Server>, opts: WorkerOptions, shared: Arc<Mutex<Shared>>) {
    let lk = &server.lk;
    let api = api_url(&lk.url);
    let rooms = RoomClient::with_api_key(&api, &lk.api_key, &lk.api_secret);
    let dispatch = AgentDispatchClient::with_api_key(&api, &lk.api_key, &lk.api_secret);
    let mut watch = LeaseWatch::default();
    let mut tick = tokio::time::interval(BEAT_EVERY);
    let mut beat = 0u64;
    loop {
        tick.tick().await;
        let Some(worker_id) = lock(&shared).worker_id.clone() else {
            continue;
        };
        let ours = server.rooms().await;
        beat += 1;
        let meta = lease_metadata(&worker_id, beat);
        let beats = ours.iter().map(|room| {
            let rooms = &rooms;
            let meta = &meta;
            async move {
                if let Err(e) = rooms.update_room_metadata(&raw_room(room), meta).await {
                    tracing::warn!(%room, "lease beat: {e}");
                }
            }
        });
        futures_util::future::join_all(beats).await;
        if !opts.takeover {
            continue;
        }
        let list = match rooms.list_rooms(Vec::new()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("listing rooms: {e}");
                continue;
            }
        };
        let views: Vec<RoomView> = list
            .into_iter()
            .map(|r| RoomView {
                name: r.name,
                metadata: r.metadata,
                publishers: r.num_publishers,
            })
            .collect();
        for raw in watch.observe(Instant::now(), &views, &ours) {
            match rooms.list_participants(&raw).await {
                Ok(ps) if has_broadcast(&ps) => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(room = %raw, "listing participants: {e}");
                    continue;
                }
            }
            eprintln!(
                "worker: room {raw} has a broadcaster and no live censor; dispatching it again"
            );
            let req = proto::CreateAgentDispatchRequest {
                agent_name: opts.agent_name.clone(),
                room: raw.clone(),
                ..Default::default()
            };
            if let Err(e) = dispatch.create_dispatch(req).await {
                eprintln!("worker: dispatching {raw}: {e}");
            }
        }
    }
}
