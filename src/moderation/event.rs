//! Moderation events: what happened on a stream, in one JSON shape for every
//! sink (JSON lines, webhooks, the moderator page's SSE).

use crate::frame::BBox;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where events come from: the room, the broadcaster and its video track.
/// `None` where there is no such thing (`censor` on a file has no room).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_sid: Option<String>,
}

impl Source {
    pub fn live(room: &str, participant: &str, track_sid: &str) -> Source {
        Source {
            room: Some(room.to_string()),
            participant: Some(participant.to_string()),
            track_sid: Some(track_sid.to_string()),
        }
    }
}

/// One moderation event. The kind and its fields are flattened into the
/// object, so a line reads `{"id":..,"kind":"exposure_started","class":..}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique across processes: a random per-process prefix and a counter.
    pub id: String,
    #[serde(flatten)]
    pub body: EventBody,
    #[serde(flatten)]
    pub source: Source,
    /// RFC 3339, UTC, milliseconds.
    pub wall_time: String,
    /// Stream time (pts) in seconds, where the event belongs to a frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_time: Option<f64>,
}

/// The kind-specific part of an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    SessionStarted,
    SessionEnded,
    ExposureStarted(Exposure),
    ExposureEnded(Exposure),
    FailClosedStarted {
        reason: String,
    },
    FailClosedEnded {
        reason: String,
        frames: u64,
        duration_s: f64,
    },
    RuleTriggered {
        rule: String,
        hits: u32,
        window_s: f64,
        /// The action this trigger runs (escalation level applied).
        action: String,
        /// 0 for the rule's first action, 1 for the next, ...
        level: usize,
    },
    ActionTaken {
        action: String,
        /// `rule:NAME` or `moderator:LABEL`.
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_s: Option<f64>,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A `censor_whole` ended: its duration ran out (`by` "expired") or a
    /// moderator resumed the stream (`moderator:LABEL`).
    CensorWholeEnded {
        by: String,
    },
}

/// One exposure: a region of a censored class, from its first frame to its
/// last. `exposure_started` carries the values known at the start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    /// The `id` of the exposure's `exposure_started` event, so a start and
    /// its end pair up.
    pub exposure_id: String,
    pub class: String,
    /// The tracker's id for the region, when the caller had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<u64>,
    /// Over the frames the detector scored; `None` if it scored none (only
    /// tracker predictions).
    pub max_score: Option<f32>,
    pub mean_score: Option<f32>,
    pub frames: u64,
    pub duration_s: f64,
    pub first_pts: f64,
    pub last_pts: f64,
    /// The box on the frame with the highest score (else the first box).
    pub peak_box: BBox,
}

impl EventBody {
    /// The `kind` string, for SSE event names and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::SessionStarted => "session_started",
            EventBody::SessionEnded => "session_ended",
            EventBody::ExposureStarted(_) => "exposure_started",
            EventBody::ExposureEnded(_) => "exposure_ended",
            EventBody::FailClosedStarted { .. } => "fail_closed_started",
            EventBody::FailClosedEnded { .. } => "fail_closed_ended",
            EventBody::RuleTriggered { .. } => "rule_triggered",
            EventBody::ActionTaken { .. } => "action_taken",
            EventBody::CensorWholeEnded { .. } => "censor_whole_ended",
        }
    }
}

impl Event {
    /// A new event with a fresh id.
    pub fn new(
        body: EventBody,
        source: &Source,
        wall: SystemTime,
        stream_time: Option<f64>,
    ) -> Event {
        Event {
            id: new_id(),
            body,
            source: source.clone(),
            wall_time: rfc3339(wall),
            stream_time,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }

    /// The JSON object every sink sends.
    pub fn to_json(&self) -> String {
        // Serializing plain structs and enums with string keys cannot fail;
        // an empty object is a safe fallback that keeps the signature simple.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// A process-unique event id: `ev-<16 hex random>-<counter>`. The random
/// prefix keeps ids unique across restarts without a clock or a crate.
pub fn new_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("ev-{prefix:016x}-{n}")
}

/// RFC 3339 in UTC with milliseconds (`2024-05-01T12:34:56.789Z`); times
/// before 1970 print as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // date -u -d @1709251199 -> 2024-02-29 23:59:59 (a leap day)
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_250);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.250Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_800); // 2100-01-01
        assert_eq!(rfc3339(t), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn ids_are_unique() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(a.starts_with("ev-"));
    }

    #[test]
    fn json_is_flat_and_round_trips() {
        let src = Source::live("demo", "alice", "TR_1");
        let ev = Event::new(
            EventBody::FailClosedStarted {
                reason: "deadline".into(),
            },
            &src,
            UNIX_EPOCH,
            Some(1.5),
        );
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["kind"], "fail_closed_started");
        assert_eq!(v["reason"], "deadline");
        assert_eq!(v["room"], "demo");
        assert_eq!(v["participant"], "alice");
        assert_eq!(v["track_sid"], "TR_1");
        assert_eq!(v["stream_time"], 1.5);
        assert_eq!(v["wall_time"], "1970-01-01T00:00:00.000Z");
        let back: Event = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(back, ev);

        let ev = Event::new(
            EventBody::SessionStarted,
            &Source::default(),
            UNIX_EPOCH,
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["kind"], "session_started");
        assert!(v.get("room").is_none() && v.get("stream_time").is_none());
        let back: Event = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(back, ev);
    }
}
