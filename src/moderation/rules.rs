//! Rules (`[[rules]]`): N hits of some classes within a window trigger an
//! action; a repeated trigger, after the cooldown, escalates to the next
//! action. The engine is sans-IO: the caller passes `now`.

use super::debounce::{FrameObservation, Region};
use super::event::{Event, EventBody, Source};
use crate::detect::class_index;
use crate::error::ConfigError;
use crate::pipeline::Status;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// A rules file, or the `rules` key of the main config.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

impl RulesFile {
    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Vec<Rule>, ConfigError> {
        let f: RulesFile = toml::from_str(text).map_err(|e| ConfigError::Value {
            key: "rules".into(),
            value: String::new(),
            reason: e.to_string(),
        })?;
        validate_rules(&f.rules)
    }

    pub fn load(path: &Path) -> Result<Vec<Rule>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let f: RulesFile = toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        validate_rules(&f.rules)
    }
}

/// One `[[rules]]` table as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub classes: Vec<String>,
    /// Detections below this score are not hits.
    #[serde(default)]
    pub min_score: f32,
    /// Hits (frames the detector saw a matching region on) ...
    pub hits: u32,
    /// ... within this many seconds trigger the rule.
    pub window_s: f64,
    /// No new trigger until this long after the last one.
    #[serde(default)]
    pub cooldown_s: f64,
    /// A trigger this long after the previous one starts the escalation
    /// again at the first action (default 600: strikes expire).
    #[serde(default)]
    pub reset_s: Option<f64>,
    /// Escalation order: the first trigger runs the first action.
    pub actions: Vec<ActionSpec>,
}

/// An action as written: `"notify"` or `{ action = "censor_whole", duration_s = 30 }`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ActionSpec {
    Name(String),
    Table(ActionTable),
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionTable {
    pub action: String,
    #[serde(default)]
    pub duration_s: Option<f64>,
}

/// What a trigger or a moderator does.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// The event is the action.
    Notify,
    /// The room's output censored whole for `duration_s`, or until resumed
    /// (`None`, moderators only).
    CensorWhole { duration_s: Option<f64> },
    /// Mute the broadcaster's published video (RoomService).
    Mute,
    /// Remove the broadcaster from the raw room.
    Remove,
    /// Delete both rooms.
    EndRoom,
    /// End a `censor_whole` early (moderators only).
    Resume,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Notify => "notify",
            Action::CensorWhole { .. } => "censor_whole",
            Action::Mute => "mute",
            Action::Remove => "remove",
            Action::EndRoom => "end_room",
            Action::Resume => "resume",
        }
    }

    /// Whether the action is a LiveKit call (run by `actions::perform`)
    /// rather than a change to the session's own state.
    pub fn is_room_call(&self) -> bool {
        matches!(self, Action::Mute | Action::Remove | Action::EndRoom)
    }
}

/// A validated rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    /// Indices into `detect::CLASSES`.
    pub classes: Vec<u8>,
    pub min_score: f32,
    pub hits: u32,
    pub window: Duration,
    pub cooldown: Duration,
    /// Escalation returns to the first action after this long without a
    /// trigger.
    pub reset: Duration,
    pub actions: Vec<Action>,
}

/// Strikes expire after ten minutes unless a rule says otherwise.
pub const DEFAULT_RESET_S: f64 = 600.0;

const RULE_ACTIONS: &str = "notify, censor_whole, mute, remove, end_room";

/// Checks every rule, naming the key of the first bad value
/// (`rules[1].actions[0]`).
pub fn validate_rules(cfgs: &[RuleConfig]) -> Result<Vec<Rule>, ConfigError> {
    let mut out: Vec<Rule> = Vec::with_capacity(cfgs.len());
    for (i, c) in cfgs.iter().enumerate() {
        let key = |k: &str| format!("rules[{i}].{k}");
        let bad = |k: &str, value: String, reason: &str| ConfigError::Value {
            key: key(k),
            value,
            reason: reason.into(),
        };
        if c.name.trim().is_empty() {
            return Err(bad("name", c.name.clone(), "must not be empty"));
        }
        if out.iter().any(|r| r.name == c.name) {
            return Err(bad("name", c.name.clone(), "another rule has this name"));
        }
        if c.classes.is_empty() {
            return Err(bad("classes", "[]".into(), "must name at least one class"));
        }
        let mut classes = Vec::with_capacity(c.classes.len());
        for (j, name) in c.classes.iter().enumerate() {
            let idx = class_index(name).ok_or_else(|| {
                bad(
                    &format!("classes[{j}]"),
                    name.clone(),
                    "unknown class (run `livecensor classes` for the list)",
                )
            })?;
            classes.push(idx);
        }
        if !(0.0..=1.0).contains(&c.min_score) {
            return Err(bad(
                "min_score",
                c.min_score.to_string(),
                "must be in [0, 1]",
            ));
        }
        if c.hits == 0 {
            return Err(bad("hits", "0".into(), "must be at least 1"));
        }
        if !(c.window_s.is_finite() && c.window_s > 0.0 && c.window_s <= 86_400.0) {
            return Err(bad(
                "window_s",
                c.window_s.to_string(),
                "must be more than 0 and at most 86400",
            ));
        }
        if !(c.cooldown_s.is_finite() && (0.0..=86_400.0).contains(&c.cooldown_s)) {
            return Err(bad(
                "cooldown_s",
                c.cooldown_s.to_string(),
                "must be 0..=86400",
            ));
        }
        let reset_s = c.reset_s.unwrap_or(DEFAULT_RESET_S.max(c.cooldown_s));
        if !(reset_s.is_finite() && reset_s > 0.0 && reset_s <= 86_400.0) {
            return Err(bad(
                "reset_s",
                reset_s.to_string(),
                "must be more than 0 and at most 86400",
            ));
        }
        if reset_s < c.cooldown_s {
            return Err(bad(
                "reset_s",
                reset_s.to_string(),
                "must not be less than cooldown_s (a reset before the cooldown ends never escalates)",
            ));
        }
        if c.actions.is_empty() {
            return Err(bad("actions", "[]".into(), "must list at least one action"));
        }
        let mut actions = Vec::with_capacity(c.actions.len());
        for (j, a) in c.actions.iter().enumerate() {
            actions.push(
                parse_action(a).map_err(|(k, value, reason)| {
                    bad(&format!("actions[{j}]{k}"), value, &reason)
                })?,
            );
        }
        out.push(Rule {
            name: c.name.clone(),
            classes,
            min_score: c.min_score,
            hits: c.hits,
            window: Duration::from_secs_f64(c.window_s),
            cooldown: Duration::from_secs_f64(c.cooldown_s),
            reset: Duration::from_secs_f64(reset_s),
            actions,
        });
    }
    Ok(out)
}

/// An action spec to an action; the error is (key suffix, value, reason).
fn parse_action(a: &ActionSpec) -> Result<Action, (&'static str, String, String)> {
    let (name, duration) = match a {
        ActionSpec::Name(n) => (n.as_str(), None),
        ActionSpec::Table(t) => (t.action.as_str(), t.duration_s),
    };
    let action = match name {
        "notify" => Action::Notify,
        "censor_whole" => {
            let Some(d) = duration else {
                return Err((
                    "",
                    name.into(),
                    "censor_whole needs a duration: { action = \"censor_whole\", duration_s = 30 }"
                        .into(),
                ));
            };
            if !(d.is_finite() && d > 0.0 && d <= 86_400.0) {
                return Err((
                    ".duration_s",
                    d.to_string(),
                    "must be more than 0 and at most 86400".into(),
                ));
            }
            return Ok(Action::CensorWhole {
                duration_s: Some(d),
            });
        }
        "mute" => Action::Mute,
        "remove" => Action::Remove,
        "end_room" => Action::EndRoom,
        other => {
            return Err((
                "",
                other.into(),
                format!("unknown action (expected one of {RULE_ACTIONS})"),
            ))
        }
    };
    if duration.is_some() {
        return Err((
            ".duration_s",
            name.into(),
            "only censor_whole takes a duration".into(),
        ));
    }
    Ok(action)
}

/// A rule fired: run `action` on behalf of `rule`.
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    pub rule: String,
    pub action: Action,
    /// Escalation level: index of `action` in the rule's list.
    pub level: usize,
    /// Hits in the window when it fired.
    pub hits: u32,
    pub window_s: f64,
}

impl Trigger {
    /// The `rule_triggered` event.
    pub fn event(&self, source: &Source, wall: SystemTime, stream_time: Option<f64>) -> Event {
        Event::new(
            EventBody::RuleTriggered {
                rule: self.rule.clone(),
                hits: self.hits,
                window_s: self.window_s,
                action: self.action.name().to_string(),
                level: self.level,
            },
            source,
            wall,
            stream_time,
        )
    }

    /// `rule:NAME`, the `by` of the action's event.
    pub fn by(&self) -> String {
        format!("rule:{}", self.rule)
    }
}

#[derive(Debug)]
struct RuleState {
    rule: Rule,
    hits: VecDeque<Instant>,
    last_trigger: Option<Instant>,
    level: usize,
}

/// Counts hits per rule and decides triggers.
#[derive(Debug, Default)]
pub struct RuleEngine {
    rules: Vec<RuleState>,
}

impl RuleEngine {
    pub fn new(rules: Vec<Rule>) -> RuleEngine {
        RuleEngine {
            rules: rules
                .into_iter()
                .map(|rule| RuleState {
                    rule,
                    hits: VecDeque::new(),
                    last_trigger: None,
                    level: 0,
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// One released frame. Only the detector's own findings count (a
    /// prediction has no score, a fail-closed frame saw nothing); each rule
    /// counts at most one hit per frame.
    pub fn observe(&mut self, f: &FrameObservation, now: Instant) -> Vec<Trigger> {
        if f.status == Status::FailClosed {
            return Vec::new();
        }
        self.hits(&f.regions, now)
    }

    /// Regions seen at `now` (for callers that do not have frames).
    pub fn hits(&mut self, regions: &[Region], now: Instant) -> Vec<Trigger> {
        let mut out = Vec::new();
        for st in &mut self.rules {
            let hit = regions.iter().any(|r| {
                st.rule.classes.contains(&r.class)
                    && r.score.is_some_and(|s| s >= st.rule.min_score)
            });
            if hit {
                if let Some(t) = st.hit(now) {
                    out.push(t);
                }
            }
        }
        out
    }
}

impl RuleState {
    fn hit(&mut self, now: Instant) -> Option<Trigger> {
        let window = self.rule.window;
        while self
            .hits
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > window)
        {
            self.hits.pop_front();
        }
        self.hits.push_back(now);
        let count = u32::try_from(self.hits.len()).unwrap_or(u32::MAX);
        if count < self.rule.hits {
            return None;
        }
        if self
            .last_trigger
            .is_some_and(|t| now.saturating_duration_since(t) < self.rule.cooldown)
        {
            return None;
        }
        if self
            .last_trigger
            .is_some_and(|t| now.saturating_duration_since(t) >= self.rule.reset)
        {
            self.level = 0;
        }
        let level = self.level.min(self.rule.actions.len().saturating_sub(1));
        let action = *self.rule.actions.get(level)?;
        self.level = level + 1;
        self.last_trigger = Some(now);
        // The next trigger needs hits of its own, not this window's again.
        self.hits.clear();
        Some(Trigger {
            rule: self.rule.name.clone(),
            action,
            level,
            hits: count,
            window_s: window.as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BBox;

    const RULES: &str = r#"
[[rules]]
name = "faces"
classes = ["FACE_FEMALE", "face_male"]
min_score = 0.5
hits = 3
window_s = 2
cooldown_s = 10
actions = ["notify", { action = "censor_whole", duration_s = 30 }, "remove"]
"#;

    fn engine() -> RuleEngine {
        RuleEngine::new(RulesFile::parse(RULES).unwrap())
    }

    fn face(score: f32) -> Vec<Region> {
        vec![Region {
            class: class_index("FACE_MALE").unwrap(),
            score: Some(score),
            bbox: BBox::new(0.0, 0.0, 1.0, 1.0),
            track: None,
        }]
    }

    fn at(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    /// Hits at the given seconds; the triggers' (second, action, level).
    fn drive(e: &mut RuleEngine, times: &[f64]) -> Vec<(f64, &'static str, usize)> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        for &s in times {
            for t in e.hits(&face(0.9), at(t0, s)) {
                out.push((s, t.action.name(), t.level));
            }
        }
        out
    }

    #[test]
    fn parses_and_validates() {
        let rules = RulesFile::parse(RULES).unwrap();
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(r.classes, [1, 12]);
        assert_eq!(r.window, Duration::from_secs(2));
        assert_eq!(
            r.actions,
            [
                Action::Notify,
                Action::CensorWhole {
                    duration_s: Some(30.0)
                },
                Action::Remove
            ]
        );
    }

    fn err(text: &str) -> String {
        RulesFile::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = err(&RULES.replace("face_male", "FACE_CAT"));
        assert!(
            e.contains("rules[0].classes[1]") && e.contains("FACE_CAT"),
            "{e}"
        );
        let e = err(&RULES.replace("window_s = 2", "window_s = 0"));
        assert!(e.contains("rules[0].window_s"), "{e}");
        let e = err(&RULES.replace("\"remove\"", "\"ban\""));
        assert!(
            e.contains("rules[0].actions[2]") && e.contains("ban"),
            "{e}"
        );
        assert!(e.contains("unknown action"), "{e}");
        let e = err(&RULES.replace(
            r#"actions = ["notify", { action = "censor_whole", duration_s = 30 }, "remove"]"#,
            "actions = []",
        ));
        assert!(e.contains("rules[0].actions"), "{e}");
        let e = err(&RULES.replace("hits = 3", "hits = 0"));
        assert!(e.contains("rules[0].hits"), "{e}");
        let e = err(&RULES.replace("duration_s = 30", "duration_s = -1"));
        assert!(e.contains("rules[0].actions[1].duration_s"), "{e}");
        let e = err(&RULES.replace("\"notify\"", "\"censor_whole\""));
        assert!(
            e.contains("rules[0].actions[0]") && e.contains("duration"),
            "{e}"
        );
        let e = err(&RULES.replace("min_score = 0.5", "min_score = 1.5"));
        assert!(e.contains("rules[0].min_score"), "{e}");
        let e = err(&format!("{RULES}{RULES}"));
        assert!(e.contains("rules[1].name"), "{e}");
        let e = err(&RULES.replace("hits = 3", "hits = 3\nhitz = 4"));
        assert!(e.contains("hitz"), "{e}");
        assert!(RulesFile::parse("").unwrap().is_empty());
    }

    #[test]
    fn window_counts_only_recent_hits() {
        let mut e = engine();
        // Hits 1.5 s apart never have 3 within 2 s; then three in 1 s do.
        assert_eq!(drive(&mut e, &[0.0, 1.5, 3.0, 4.5]), []);
        let mut e = engine();
        assert_eq!(drive(&mut e, &[0.0, 1.5, 3.0, 3.5]), [(3.5, "notify", 0)]);
        let mut e = engine();
        assert_eq!(drive(&mut e, &[0.0, 0.5, 1.0]), [(1.0, "notify", 0)]);
    }

    #[test]
    fn cooldown_then_escalation_stays_at_the_last_action() {
        let mut e = engine();
        let times: Vec<f64> = (0..100).map(|i| f64::from(i) * 0.5).collect();
        // Continuous hits every 0.5 s: first trigger at 1.0, then one per
        // 10 s cooldown, escalating and staying at `remove`.
        assert_eq!(
            drive(&mut e, &times),
            [
                (1.0, "notify", 0),
                (11.0, "censor_whole", 1),
                (21.0, "remove", 2),
                (31.0, "remove", 2),
                (41.0, "remove", 2),
            ]
        );
    }

    #[test]
    fn escalation_starts_again_after_a_quiet_reset_period() {
        let mut e = RuleEngine::new(
            RulesFile::parse(&RULES.replace("cooldown_s = 10", "cooldown_s = 10\nreset_s = 60"))
                .unwrap(),
        );
        // Two strikes escalate; after 60 s without a trigger the next one
        // is a first strike again; 59 s is not enough.
        let mut times: Vec<f64> = vec![0.0, 0.5, 1.0, 11.0, 11.5, 12.0];
        times.extend([72.0, 72.5, 73.0, 83.0, 83.5, 84.0]);
        times.extend([142.0, 142.5, 143.0]);
        assert_eq!(
            drive(&mut e, &times),
            [
                (1.0, "notify", 0),
                (12.0, "censor_whole", 1),
                (73.0, "notify", 0),
                (84.0, "censor_whole", 1),
                (143.0, "remove", 2),
            ]
        );
        // The default reset is ten minutes.
        let r = &RulesFile::parse(RULES).unwrap()[0];
        assert_eq!(r.reset, Duration::from_secs(600));
        let mut e = engine();
        let late = [0.0, 0.5, 1.0, 599.0, 599.5, 600.0, 1300.0, 1300.5, 1301.0];
        assert_eq!(
            drive(&mut e, &late),
            [
                (1.0, "notify", 0),
                (600.0, "censor_whole", 1),
                (1301.0, "notify", 0)
            ]
        );
    }

    #[test]
    fn a_reset_shorter_than_the_cooldown_is_refused() {
        let e = RulesFile::parse(&RULES.replace("cooldown_s = 10", "cooldown_s = 10\nreset_s = 5"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rules[0].reset_s") && e.contains("cooldown"),
            "{e}"
        );
        let e = RulesFile::parse(&RULES.replace("cooldown_s = 10", "cooldown_s = 10\nreset_s = 0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rules[0].reset_s"), "{e}");
    }

    #[test]
    fn hits_need_score_and_class_and_a_verified_frame() {
        let mut e = engine();
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(e.hits(&face(0.4), at(t0, f64::from(i) * 0.1)).is_empty());
        }
        let mut other = face(0.9);
        other[0].class = class_index("FEET_EXPOSED").unwrap();
        let mut predicted = face(0.9);
        predicted[0].score = None;
        for i in 0..10 {
            assert!(e.hits(&other, at(t0, f64::from(i) * 0.1)).is_empty());
            assert!(e.hits(&predicted, at(t0, f64::from(i) * 0.1)).is_empty());
        }
        let fc = FrameObservation {
            pts_s: 0.0,
            status: Status::FailClosed,
            reason: None,
            regions: face(0.9),
        };
        for i in 0..10 {
            assert!(e.observe(&fc, at(t0, f64::from(i) * 0.1)).is_empty());
        }
        let ok = FrameObservation {
            status: Status::Verified,
            ..fc
        };
        let fired: Vec<_> = (0..3)
            .flat_map(|i| e.observe(&ok, at(t0, f64::from(i) * 0.1)))
            .collect();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].hits, 3);
        assert_eq!(fired[0].by(), "rule:faces");
        let ev = fired[0].event(&Source::default(), SystemTime::UNIX_EPOCH, Some(0.2));
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["kind"], "rule_triggered");
        assert_eq!(v["rule"], "faces");
        assert_eq!(v["action"], "notify");
        assert_eq!(v["window_s"], 2.0);
    }
}
