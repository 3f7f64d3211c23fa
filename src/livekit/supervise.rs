//! The session's two connections, each owned by a supervisor task for its
//! whole life: it relays commands and events while the connection is up
//! and replaces it (with backoff) when it is lost, until the session
//! stops. Starting and stopping a session is `session.rs`.

use super::fault::RtpFaults;
use super::io::{self, Command, Connection};
use super::media::MediaIn;
use super::participant::{ParticipantConfig, ParticipantEvent};
use super::session::{LiveKitSettings, SessionStats};
use super::timing::{AudioDelayLine, Backoff};
use super::token;
use crate::error::LiveKitError;
use livekit_protocol::DisconnectReason;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Identities of the censor's two participants.
const INPUT_IDENTITY: &str = super::webhook::INPUT_IDENTITY;
const OUTPUT_IDENTITY: &str = "livecensor";

/// Which of the session's two connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
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
pub(super) struct ConnSpec {
    pub(super) side: Side,
    pub(super) lk: LiveKitSettings,
    /// The room joined (`X-raw` for the input, `X` for the output).
    pub(super) token_room: String,
    /// The session's room, for logs.
    pub(super) room: String,
    pub(super) cfg: ParticipantConfig,
    pub(super) fault_counter: Arc<AtomicU64>,
    /// A dispatched job's input: its token and identity.
    pub(super) job: Option<JobInput>,
}

/// How a job session's input joins the raw room: first with the token the
/// server assigned (the job's participant), later with one we sign for the
/// same identity (the job's token expires after an hour).
#[derive(Clone, Debug)]
pub struct JobInput {
    pub token: String,
    pub identity: String,
}

impl ConnSpec {
    /// One connection; `attempt` varies the fault injector's seed. A fresh
    /// token each time: a session may outlive one.
    pub(super) async fn connect(&self, attempt: u64) -> Result<Connection, LiveKitError> {
        let (mint, identity) = match self.side {
            Side::Input => (token::subscriber_token as MintFn, INPUT_IDENTITY),
            Side::Output => (token::publisher_token as MintFn, OUTPUT_IDENTITY),
        };
        let token = match (&self.job, self.side) {
            (Some(job), Side::Input) if attempt == 0 => job.token.clone(),
            (Some(job), Side::Input) => token::job_subscriber_token(
                &self.lk.api_key,
                &self.lk.api_secret,
                &self.token_room,
                &job.identity,
            )?,
            _ => mint(
                &self.lk.api_key,
                &self.lk.api_secret,
                &self.token_room,
                identity,
            )?,
        };
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

    /// Whether a Leave with `code` ends a job's session instead of a
    /// reconnect: another worker's session took our identity in the
    /// viewers' room (it serves the room now), or the raw room closed.
    /// Sessions of `serve` always reconnect.
    fn ends_session(&self, code: DisconnectReason) -> bool {
        self.job.is_some() && ends_job_session(self.side, code)
    }

    fn reconnects<'a>(&self, stats: &'a SessionStats) -> &'a AtomicU64 {
        match self.side {
            Side::Input => &stats.input_reconnects,
            Side::Output => &stats.output_reconnects,
        }
    }

    fn connected<'a>(&self, stats: &'a SessionStats) -> &'a AtomicBool {
        match self.side {
            Side::Input => &stats.input_connected,
            Side::Output => &stats.output_connected,
        }
    }
}

type MintFn = fn(&str, &str, &str, &str) -> Result<String, LiveKitError>;

/// The Leaves that end a job's session on `side` (see
/// `ConnSpec::ends_session`).
fn ends_job_session(side: Side, code: DisconnectReason) -> bool {
    match side {
        Side::Output => code == DisconnectReason::DuplicateIdentity,
        Side::Input => matches!(
            code,
            DisconnectReason::RoomClosed
                | DisconnectReason::RoomDeleted
                | DisconnectReason::DuplicateIdentity
        ),
    }
}

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
                spec.connected(stats).store(true, Ordering::Relaxed);
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
pub(super) async fn supervise_input(
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
                    Some(ParticipantEvent::Subscribing { track_sid, identity }) => {
                        let _ = media_tx.send(MediaIn::Publisher { identity, track_sid });
                    }
                    Some(ParticipantEvent::RemoteTrackGone { track_sid }) => {
                        tracing::info!(room = %spec.room, track = %track_sid, "broadcast track gone; new input connection");
                        break false;
                    }
                    Some(ParticipantEvent::Left { reason, code }) if spec.ends_session(code) => {
                        tracing::info!(room = %spec.room, %reason, "input connection ended by the server; the job's session ends");
                        stats.ended.store(true, Ordering::SeqCst);
                        stop.store(true, Ordering::SeqCst);
                        break true;
                    }
                    Some(ParticipantEvent::Left { reason, .. }) => {
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
        spec.connected(&stats).store(false, Ordering::Relaxed);
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
pub(super) async fn supervise_output(
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
                    Some(ParticipantEvent::PublishProfile(p)) => {
                        let _ = media_tx.send(MediaIn::PublishProfile(p));
                    }
                    Some(ParticipantEvent::Left { reason, code }) if spec.ends_session(code) => {
                        tracing::info!(room = %spec.room, %reason, "output connection ended by the server; the job's session ends");
                        stats.ended.store(true, Ordering::SeqCst);
                        stop.store(true, Ordering::SeqCst);
                        break true;
                    }
                    Some(ParticipantEvent::Left { reason, .. }) => {
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
        spec.connected(&stats).store(false, Ordering::Relaxed);
        if let Some(why) = finish(conn).await {
            tracing::warn!(room = %spec.room, "output connection: {why}");
        }
        if leaving || stop.load(Ordering::Relaxed) {
            return;
        }
        backoff.connection_ended(up_since, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_session_ends_when_superseded_or_its_room_closes() {
        use DisconnectReason as R;
        // Another worker's publisher took `livecensor` in the viewers' room.
        assert!(ends_job_session(Side::Output, R::DuplicateIdentity));
        // A removal, a lost signal or ICE: reconnect.
        for code in [R::ParticipantRemoved, R::UnknownReason, R::SignalClose] {
            assert!(!ends_job_session(Side::Output, code));
            assert!(!ends_job_session(Side::Input, code));
        }
        // The raw room closed (its broadcaster left): the job is over.
        assert!(ends_job_session(Side::Input, R::RoomClosed));
        assert!(ends_job_session(Side::Input, R::RoomDeleted));
        // Viewers' room closing is not the job's end (we keep it open).
        assert!(!ends_job_session(Side::Output, R::RoomClosed));
    }
}
