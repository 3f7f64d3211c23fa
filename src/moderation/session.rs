//! One broadcaster's track under moderation: the exposure tracker, the rule
//! engine and the `censor_whole` state, behind one call per released frame.
//! Sans-IO: it returns events to emit and room calls to make.

use super::debounce::{DebounceConfig, ExposureTracker, FrameObservation};
use super::event::{Event, EventBody, Source};
use super::rules::{Action, Rule, RuleEngine};
use std::time::{Duration, Instant, SystemTime};

pub use crate::pipeline::stream::CensorWhole;

/// A room call the caller makes (`actions::perform`), then emits the
/// `action_taken` event it returns.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionRequest {
    pub action: Action,
    /// `rule:NAME` or `moderator:LABEL`.
    pub by: String,
    pub source: Source,
    pub stream_time: Option<f64>,
}

impl ActionRequest {
    /// The `action_taken` event for this request's outcome.
    pub fn taken(&self, wall: SystemTime, result: Result<(), String>) -> Event {
        action_taken(
            &self.action,
            &self.by,
            &self.source,
            wall,
            self.stream_time,
            result,
        )
    }
}

/// What one step decided: events to emit now, room calls to make.
#[derive(Debug, Default)]
pub struct Step {
    pub events: Vec<Event>,
    pub requests: Vec<ActionRequest>,
}

/// Moderation of one video track.
#[derive(Debug)]
pub struct SessionModeration {
    source: Source,
    tracker: ExposureTracker,
    rules: RuleEngine,
    censor_whole: CensorWhole,
    last_pts: Option<f64>,
}

impl SessionModeration {
    pub fn new(source: Source, debounce: DebounceConfig, rules: Vec<Rule>) -> SessionModeration {
        SessionModeration {
            tracker: ExposureTracker::new(source.clone(), debounce),
            rules: RuleEngine::new(rules),
            source,
            censor_whole: CensorWhole::Off,
            last_pts: None,
        }
    }

    /// Who later events and room calls name (the broadcaster's identity
    /// and track become known after the session starts).
    pub fn set_source(&mut self, source: Source) {
        self.tracker.set_source(source.clone());
        self.source = source;
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The `session_started` event.
    pub fn started(&self, wall: SystemTime) -> Event {
        Event::new(EventBody::SessionStarted, &self.source, wall, None)
    }

    /// One released frame: exposure and fail-closed events, then rule
    /// triggers and what their actions decide.
    pub fn on_frame(&mut self, f: &FrameObservation, now: Instant, wall: SystemTime) -> Step {
        self.last_pts = Some(f.pts_s);
        let mut step = Step {
            events: self.tracker.observe(f, wall),
            requests: Vec::new(),
        };
        if matches!(self.censor_whole, CensorWhole::Until(t) if now >= t) {
            self.censor_whole = CensorWhole::Off;
            step.events.push(Event::new(
                EventBody::CensorWholeEnded {
                    by: "expired".into(),
                },
                &self.source,
                wall,
                Some(f.pts_s),
            ));
        }
        for t in self.rules.observe(f, now) {
            step.events.push(t.event(&self.source, wall, Some(f.pts_s)));
            self.apply(t.action, t.by(), now, wall, Some(f.pts_s), &mut step);
        }
        step
    }

    /// A moderator's action (`POST /rooms/{room}/actions`), recorded as
    /// `moderator:LABEL`.
    pub fn moderator_action(
        &mut self,
        action: Action,
        label: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Step {
        let mut step = Step::default();
        let pts = self.last_pts;
        self.apply(
            action,
            format!("moderator:{label}"),
            now,
            wall,
            pts,
            &mut step,
        );
        step
    }

    /// Whether frames released at `now` must be censored whole.
    pub fn censor_whole(&self, now: Instant) -> bool {
        self.censor_whole.active(now)
    }

    pub fn censor_whole_state(&self) -> CensorWhole {
        self.censor_whole
    }

    /// The stream ended: closes open exposures and fail-closed spans, then
    /// `session_ended`.
    pub fn finish(&mut self, wall: SystemTime) -> Vec<Event> {
        let mut out = self.tracker.finish(wall);
        out.push(Event::new(
            EventBody::SessionEnded,
            &self.source,
            wall,
            self.last_pts,
        ));
        out
    }

    fn apply(
        &mut self,
        action: Action,
        by: String,
        now: Instant,
        wall: SystemTime,
        pts: Option<f64>,
        step: &mut Step,
    ) {
        if action.is_room_call() {
            step.requests.push(ActionRequest {
                action,
                by,
                source: self.source.clone(),
                stream_time: pts,
            });
            return;
        }
        match action {
            Action::CensorWhole {
                duration_s: Some(d),
            } => {
                let until = now + Duration::from_secs_f64(d.clamp(0.0, 86_400.0));
                self.censor_whole = match self.censor_whole {
                    CensorWhole::UntilResumed => CensorWhole::UntilResumed,
                    CensorWhole::Until(t) if t > until => CensorWhole::Until(t),
                    _ => CensorWhole::Until(until),
                };
            }
            Action::CensorWhole { duration_s: None } => {
                self.censor_whole = CensorWhole::UntilResumed;
            }
            Action::Resume => {
                let was = std::mem::replace(&mut self.censor_whole, CensorWhole::Off);
                step.events
                    .push(action_taken(&action, &by, &self.source, wall, pts, Ok(())));
                if was.active(now) {
                    step.events.push(Event::new(
                        EventBody::CensorWholeEnded { by },
                        &self.source,
                        wall,
                        pts,
                    ));
                }
                return;
            }
            _ => {}
        }
        step.events
            .push(action_taken(&action, &by, &self.source, wall, pts, Ok(())));
    }
}

fn action_taken(
    action: &Action,
    by: &str,
    source: &Source,
    wall: SystemTime,
    stream_time: Option<f64>,
    result: Result<(), String>,
) -> Event {
    let duration_s = match action {
        Action::CensorWhole { duration_s } => *duration_s,
        _ => None,
    };
    Event::new(
        EventBody::ActionTaken {
            action: action.name().to_string(),
            by: by.to_string(),
            duration_s,
            ok: result.is_ok(),
            error: result.err(),
        },
        source,
        wall,
        stream_time,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::class_index;
    use crate::frame::BBox;
    use crate::moderation::debounce::Region;
    use crate::moderation::rules::RulesFile;
    use crate::pipeline::Status;

    const RULES: &str = r#"
[[rules]]
name = "faces"
classes = ["FACE_FEMALE"]
hits = 30
window_s = 2
cooldown_s = 5
actions = [{ action = "censor_whole", duration_s = 3 }, "mute"]
"#;

    /// 25 fps (40 ms, exact in nanoseconds) with a face from 0 s to 10 s; (second, kinds, requests).
    fn run() -> (SessionModeration, Vec<(f64, String, usize)>, Instant) {
        let mut s = SessionModeration::new(
            Source::live("demo", "alice", "TR_v"),
            DebounceConfig::default(),
            RulesFile::parse(RULES).unwrap(),
        );
        let t0 = Instant::now();
        let mut log = Vec::new();
        for n in 0..360u32 {
            let pts = f64::from(n) / 25.0;
            let regions = if pts < 10.0 {
                vec![Region {
                    class: class_index("FACE_FEMALE").unwrap(),
                    score: Some(0.8),
                    bbox: BBox::new(0.0, 0.0, 10.0, 10.0),
                    track: None,
                }]
            } else {
                vec![]
            };
            let f = FrameObservation {
                pts_s: pts,
                status: Status::Verified,
                reason: None,
                regions,
            };
            let now = t0 + Duration::from_millis(40 * u64::from(n));
            let step = s.on_frame(&f, now, SystemTime::UNIX_EPOCH);
            for e in &step.events {
                log.push((pts, e.kind().to_string(), 0));
            }
            for r in &step.requests {
                log.push((pts, r.action.name().to_string(), 1));
            }
        }
        (s, log, t0)
    }

    #[test]
    fn rules_escalate_from_censor_whole_to_a_room_call() {
        let (mut s, log, t0) = run();
        let kinds: Vec<_> = log.iter().map(|(_, k, r)| (k.as_str(), *r)).collect();
        assert_eq!(
            kinds,
            [
                ("exposure_started", 0),
                ("rule_triggered", 0),
                ("action_taken", 0),
                ("censor_whole_ended", 0),
                ("rule_triggered", 0),
                ("mute", 1),
                ("exposure_ended", 0),
            ]
        );
        // 30 hits at 0..=1.16 s; the next trigger 5 s later.
        assert!((log[1].0 - 1.16).abs() < 1e-9);
        // The 3 s censor ends by itself, once, with an event.
        assert!((log[3].0 - 4.16).abs() < 1e-9);
        assert!((log[4].0 - 6.16).abs() < 1e-9);
        assert_eq!(s.censor_whole_state(), CensorWhole::Off);
        assert!(!s.censor_whole(t0 + Duration::from_millis(1160)));
        let end = s.finish(SystemTime::UNIX_EPOCH);
        assert_eq!(end.last().map(Event::kind), Some("session_ended"));
    }

    #[test]
    fn moderator_censors_until_resumed() {
        let (mut s, _, t0) = run();
        let step = s.moderator_action(
            Action::CensorWhole { duration_s: None },
            "ops",
            t0,
            SystemTime::UNIX_EPOCH,
        );
        assert!(step.requests.is_empty());
        let EventBody::ActionTaken { by, ok, .. } = &step.events[0].body else {
            panic!("{:?}", step.events)
        };
        assert_eq!((by.as_str(), *ok), ("moderator:ops", true));
        assert!(s.censor_whole(t0 + Duration::from_secs(3600)));
        // A rule's timed censor does not shorten a moderator's.
        s.apply(
            Action::CensorWhole {
                duration_s: Some(1.0),
            },
            "rule:x".into(),
            t0,
            SystemTime::UNIX_EPOCH,
            None,
            &mut Step::default(),
        );
        assert_eq!(s.censor_whole_state(), CensorWhole::UntilResumed);
        let step = s.moderator_action(Action::Resume, "ops", t0, SystemTime::UNIX_EPOCH);
        assert!(!s.censor_whole(t0));
        let kinds: Vec<_> = step.events.iter().map(Event::kind).collect();
        assert_eq!(kinds, ["action_taken", "censor_whole_ended"]);
        let EventBody::CensorWholeEnded { by } = &step.events[1].body else {
            panic!("{:?}", step.events)
        };
        assert_eq!(by, "moderator:ops");
        // Resuming a stream that is not censored whole ends nothing.
        let step = s.moderator_action(Action::Resume, "ops", t0, SystemTime::UNIX_EPOCH);
        assert_eq!(step.events.len(), 1);
        let step = s.moderator_action(Action::Remove, "ops", t0, SystemTime::UNIX_EPOCH);
        assert!(step.events.is_empty());
        let ev = step.requests[0].taken(SystemTime::UNIX_EPOCH, Err("gone".into()));
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["kind"], "action_taken");
        assert_eq!(v["action"], "remove");
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "gone");
        assert_eq!(v["room"], "demo");
    }
}
