//! The moderator's HTTP side of `serve` (with `--moderator-token`): the page
//! at `/` (plain HTML and JavaScript embedded in the binary; it keeps the
//! token in memory after its login form), and the routes it calls, every one
//! answering 401 without `Authorization: Bearer TOKEN`:
//! - `GET /api/sessions`: live sessions (fps, p95 added latency,
//!   fail-closed, exposures, censored whole, the preview's masks);
//! - `GET /rooms/{room}/preview.jpg`: the censored output, twice a second
//!   (raw frames never leave the process);
//! - `POST /rooms/{room}/actions`: `{"action": "censor_whole" | "resume" |
//!   "mute" | "remove" | "end_room", "label": "...", "duration_s": N}`,
//!   recorded as an event with the moderator's label;
//! - `GET /events`: the event stream (Server-Sent Events).

use super::webhook::Server;
use crate::moderation::Action;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

const PAGE: &str = include_str!("moderator.html");

/// What the page shows of one session.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    pub room: String,
    pub fps: f64,
    pub p95_ms: Option<f64>,
    pub fail_closed: u64,
    pub exposures: u64,
    pub censor_whole: bool,
    pub preview: Option<super::preview::Preview>,
}

/// A moderator's action as posted.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub action: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
}

impl ActionRequest {
    /// The action it names; moderators may censor whole until resumed.
    pub fn action(&self) -> Result<Action, String> {
        Ok(match self.action.as_str() {
            "notify" => Action::Notify,
            "censor_whole" => match self.duration_s {
                Some(d) if !(d.is_finite() && d > 0.0) => {
                    return Err(format!("duration_s {d} must be a positive number"))
                }
                d => Action::CensorWhole { duration_s: d },
            },
            "resume" => Action::Resume,
            "mute" => Action::Mute,
            "remove" => Action::Remove,
            "end_room" | "end" => Action::EndRoom,
            other => {
                return Err(format!(
                "unknown action {other:?} (censor_whole, resume, mute, remove, end_room, notify)"
            ))
            }
        })
    }
}

/// The moderator routes; `None` token: none of them exists.
pub fn routes(token: Option<String>) -> Router<Arc<Server>> {
    if token.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/sessions", get(sessions))
        .route("/rooms/{room}/preview.jpg", get(preview))
        .route("/rooms/{room}/actions", post(action))
        .route("/events", get(events))
}

/// Whether the request carries the moderator's token (compared in
/// constant time; the token is never logged).
pub fn authorised(expected: &str, headers: &HeaderMap) -> bool {
    let Some(got) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (got.as_bytes(), expected.as_bytes());
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "moderator token required\n",
    )
        .into_response()
}

/// `Some(401 response)` unless the request carries the token.
fn check(s: &Server, headers: &HeaderMap) -> Option<Response> {
    match s.moderator_token() {
        Some(t) if authorised(t, headers) => None,
        _ => Some(refuse()),
    }
}

async fn sessions(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Some(r) = check(&s, &headers) {
        return r;
    }
    Json(s.session_views().await).into_response()
}

async fn preview(
    State(s): State<Arc<Server>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check(&s, &headers) {
        return r;
    }
    match s.preview(&room).await {
        Some(p) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            p.jpeg,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no preview for this room yet\n").into_response(),
    }
}

async fn action(
    State(s): State<Arc<Server>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(r) = check(&s, &headers) {
        return r;
    }
    let req: ActionRequest = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad action: {e}\n")).into_response(),
    };
    let a = match req.action() {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let label = req.label.as_deref().unwrap_or("moderator");
    if s.moderate(&room, a, label).await {
        (StatusCode::ACCEPTED, "accepted\n").into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            format!("no session for room {room:?}\n"),
        )
            .into_response()
    }
}

async fn events(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Some(r) = check(&s, &headers) {
        return r;
    }
    let Some(rx) = s.subscribe_events() else {
        return (StatusCode::NOT_FOUND, "no moderation hub\n").into_response();
    };
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let item: Result<SseEvent, std::convert::Infallible> =
                        Ok(SseEvent::default().event(ev.kind()).data(ev.to_json()));
                    return Some((item, rx));
                }
                // A slow page skips what it missed rather than hold memory.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_authorised() {
        let mut h = HeaderMap::new();
        assert!(!authorised("s3cret", &h));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorised("s3cret", &h));
        assert!(!authorised("s3cre", &h));
        assert!(!authorised("s3creT", &h));
        assert!(!authorised("", &h));
        h.insert(header::AUTHORIZATION, "s3cret".parse().unwrap());
        assert!(!authorised("s3cret", &h));
    }

    #[test]
    fn actions_are_parsed_and_bad_ones_refused() {
        let r = |a: &str, d: Option<f64>| ActionRequest {
            action: a.into(),
            label: None,
            duration_s: d,
        };
        assert_eq!(
            r("censor_whole", None).action(),
            Ok(Action::CensorWhole { duration_s: None })
        );
        assert_eq!(
            r("censor_whole", Some(5.0)).action(),
            Ok(Action::CensorWhole {
                duration_s: Some(5.0)
            })
        );
        assert!(r("censor_whole", Some(-1.0)).action().is_err());
        assert_eq!(r("end", None).action(), Ok(Action::EndRoom));
        assert!(r("explode", None)
            .action()
            .unwrap_err()
            .contains("unknown action"));
    }
}
