//! Moderation of one live session, on its media thread: each released
//! frame goes through the session's exposure tracker and rules
//! (`moderation::SessionModeration`, sans-IO); the events it decides go to
//! the shared delivery hub, LiveKit calls (mute, remove, end) run on the
//! server's async runtime, and a censor-whole state waits for the engine.

use super::session::SessionStats;
use crate::moderation::{
    perform, Action, CensorWhole, DebounceConfig, EventBody, FrameObservation, Moderation,
    RoomActions, Rule, SessionModeration, Source, Step,
};
use crate::pipeline::FrameRecord;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What every session of a server shares for moderation.
#[derive(Clone)]
pub struct ModerationCtx {
    pub hub: Arc<Moderation>,
    pub rules: Vec<Rule>,
    /// LiveKit's RoomService (mute, remove, end); `None` leaves those
    /// actions failed with a reason.
    pub actions: Option<Arc<dyn RoomActions>>,
    pub runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for ModerationCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModerationCtx")
            .field("rules", &self.rules.len())
            .field("actions", &self.actions.is_some())
            .finish()
    }
}

/// One session's moderation, owned by its media thread.
pub struct LiveModeration {
    session: SessionModeration,
    ctx: ModerationCtx,
    stats: Arc<SessionStats>,
    room: String,
    /// The censor-whole state the engine was last given.
    applied: CensorWhole,
    /// One the engine has not been given yet.
    pending: Option<CensorWhole>,
}

impl LiveModeration {
    /// Emits `session_started`.
    pub fn new(ctx: ModerationCtx, room: &str, stats: Arc<SessionStats>) -> LiveModeration {
        let source = Source {
            room: Some(room.to_string()),
            participant: None,
            track_sid: None,
        };
        let session = SessionModeration::new(source, DebounceConfig::default(), ctx.rules.clone());
        ctx.hub.emit(session.started(SystemTime::now()));
        LiveModeration {
            session,
            ctx,
            stats,
            room: room.to_string(),
            applied: CensorWhole::Off,
            pending: None,
        }
    }

    /// The broadcaster whose track is censored (for mute and remove).
    pub fn publisher(&mut self, identity: String, track_sid: String) {
        self.session
            .set_source(Source::live(&self.room, &identity, &track_sid));
    }

    /// A released frame (its RTP pts at 90 kHz).
    pub fn on_frame(&mut self, record: &FrameRecord, now: Instant) {
        let obs = FrameObservation::from_record(record, 90_000.0);
        let step = self.session.on_frame(&obs, now, SystemTime::now());
        self.apply(step);
    }

    /// A moderator's action from the page (`label` names them).
    pub fn moderator(&mut self, action: Action, label: &str, now: Instant) {
        let step = self
            .session
            .moderator_action(action, label, now, SystemTime::now());
        self.apply(step);
    }

    /// A censor-whole state for the engine, once per change.
    pub fn take_whole(&mut self) -> Option<CensorWhole> {
        self.pending.take()
    }

    pub fn censor_whole(&self) -> CensorWhole {
        self.applied
    }

    /// Emits what is still open, then `session_ended`.
    pub fn finish(&mut self) {
        for e in self.session.finish(SystemTime::now()) {
            self.ctx.hub.emit(e);
        }
    }

    fn apply(&mut self, step: Step) {
        for e in step.events {
            if matches!(e.body, EventBody::ExposureStarted(_)) {
                self.stats.exposures.fetch_add(1, Ordering::Relaxed);
            }
            self.ctx.hub.emit(e);
        }
        for r in step.requests {
            let hub = self.ctx.hub.clone();
            match self.ctx.actions.clone() {
                Some(actions) => {
                    self.ctx.runtime.spawn(async move {
                        let ev = perform(actions.as_ref(), &r).await;
                        hub.emit(ev);
                    });
                }
                None => hub.emit(r.taken(
                    SystemTime::now(),
                    Err("no LiveKit RoomService configured".into()),
                )),
            }
        }
        let state = self.session.censor_whole_state();
        if state != self.applied {
            self.applied = state;
            self.pending = Some(state);
        }
    }
}
