//! LiveKit signalling messages: the connect URL, protobuf framing, ICE
//! candidate JSON, and the ping/pong keep-alive as a sans-IO timer. No
//! sockets here: the participant feeds bytes in and takes bytes out.

use crate::error::LiveKitError;
use livekit_protocol as proto;
use prost::Message;
use std::time::{Duration, Instant};

/// Signalling protocol version we declare. 17 keeps data channels
/// client-negotiated (18, the crate default, switches to negotiated data
/// channels we do not implement) and predates packet trailers.
pub const PROTOCOL_VERSION: u32 = 17;

/// The signalling WebSocket URL for `base` (`ws://`, `wss://`, `http://` or
/// `https://` host[:port]). `auto_subscribe=0`: the censor subscribes to the
/// one track it needs, never to everything in the room.
pub fn connect_url(base: &str, token: &str, auto_subscribe: bool) -> String {
    let base = ws_base(base);
    format!(
        "{base}/rtc?access_token={token}&protocol={PROTOCOL_VERSION}&auto_subscribe={}&sdk=rust&version={}",
        u8::from(auto_subscribe),
        env!("CARGO_PKG_VERSION")
    )
}

/// A server URL as a WebSocket base without a trailing slash (`http(s)://`
/// becomes `ws(s)://`).
pub fn ws_base(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        base.to_string()
    }
}

/// Encodes one request as the binary WebSocket message the server expects.
pub fn encode(msg: proto::signal_request::Message) -> Vec<u8> {
    proto::SignalRequest { message: Some(msg) }.encode_to_vec()
}

/// Decodes one binary WebSocket message from the server.
pub fn decode(bytes: &[u8]) -> Result<proto::signal_response::Message, LiveKitError> {
    let resp = proto::SignalResponse::decode(bytes)
        .map_err(|e| LiveKitError::Signal(format!("undecodable response: {e}")))?;
    resp.message
        .ok_or_else(|| LiveKitError::Signal("response without a message".into()))
}

/// The `candidateInit` JSON of a trickle message: only the candidate line
/// matters to us (one transport per peer connection, bundled).
pub fn parse_candidate_init(json: &str) -> Result<String, LiveKitError> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| LiveKitError::Signal(format!("bad candidateInit {json:?}: {e}")))?;
    let c = v
        .get("candidate")
        .and_then(|c| c.as_str())
        .ok_or_else(|| LiveKitError::Signal(format!("candidateInit without candidate: {json}")))?;
    Ok(c.trim().trim_start_matches("a=").to_string())
}

/// Builds a `candidateInit` JSON for one of our candidates.
pub fn candidate_init(candidate_line: &str) -> String {
    serde_json::json!({
        "candidate": candidate_line,
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    })
    .to_string()
}

/// Keep-alive: a ping every `interval`, the connection is dead when no pong
/// came for `timeout`. Sans-IO: driven by `now`.
#[derive(Debug, Clone)]
pub struct Keepalive {
    interval: Duration,
    timeout: Duration,
    next_ping: Option<Instant>,
    last_pong: Instant,
}

impl Keepalive {
    /// Before `JoinResponse` nothing is sent (the server sets the periods).
    pub fn new(now: Instant) -> Self {
        Keepalive {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            next_ping: None,
            last_pong: now,
        }
    }

    /// Starts pinging with the server's periods (seconds; 0 keeps defaults).
    pub fn start(&mut self, now: Instant, interval_s: i32, timeout_s: i32) {
        if interval_s > 0 {
            self.interval = Duration::from_secs(interval_s as u64);
        }
        if timeout_s > 0 {
            self.timeout = Duration::from_secs(timeout_s as u64);
        }
        self.last_pong = now;
        self.next_ping = Some(now + self.interval);
    }

    pub fn handle_pong(&mut self, now: Instant) {
        self.last_pong = now;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Returns the ping to send, if one is due; an error once the server
    /// has been silent for longer than its own timeout.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        epoch_ms: i64,
    ) -> Result<Option<proto::signal_request::Message>, LiveKitError> {
        let Some(due) = self.next_ping else {
            return Ok(None);
        };
        if now.saturating_duration_since(self.last_pong) > self.timeout {
            return Err(LiveKitError::PingTimeout(self.timeout));
        }
        if now < due {
            return Ok(None);
        }
        self.next_ping = Some(now + self.interval);
        Ok(Some(proto::signal_request::Message::Ping(epoch_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_has_protocol_17_and_no_auto_subscribe() {
        let u = connect_url("http://127.0.0.1:7880/", "T", false);
        assert_eq!(
            u,
            format!(
                "ws://127.0.0.1:7880/rtc?access_token=T&protocol=17&auto_subscribe=0&sdk=rust&version={}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn request_round_trip() {
        let bytes = encode(proto::signal_request::Message::Ping(42));
        let req = proto::SignalRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.message, Some(proto::signal_request::Message::Ping(42)));
        let resp = proto::SignalResponse {
            message: Some(proto::signal_response::Message::Pong(42)),
        }
        .encode_to_vec();
        assert_eq!(
            decode(&resp).unwrap(),
            proto::signal_response::Message::Pong(42)
        );
        assert!(decode(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn candidate_json() {
        let j = r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
        assert_eq!(
            parse_candidate_init(j).unwrap(),
            "candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host"
        );
        assert!(parse_candidate_init("{}").is_err());
        let back = candidate_init("candidate:x");
        assert_eq!(parse_candidate_init(&back).unwrap(), "candidate:x");
    }

    #[test]
    fn keepalive_pings_and_times_out() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(t0);
        assert!(k.handle_timeout(t0, 0).unwrap().is_none());
        k.start(t0, 5, 15);
        assert!(k
            .handle_timeout(t0 + Duration::from_secs(1), 0)
            .unwrap()
            .is_none());
        let p = k.handle_timeout(t0 + Duration::from_secs(5), 7).unwrap();
        assert_eq!(p, Some(proto::signal_request::Message::Ping(7)));
        k.handle_pong(t0 + Duration::from_secs(5));
        assert!(k.handle_timeout(t0 + Duration::from_secs(19), 0).is_ok());
        assert!(k.handle_timeout(t0 + Duration::from_secs(21), 0).is_err());
    }
}
