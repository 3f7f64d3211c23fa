//! Event webhooks: each event POSTed as JSON, signed with HMAC-SHA256 over
//! `TIMESTAMP.BODY` (header `X-Livecensor-Signature: t=TIMESTAMP,v1=HEX`, the
//! scheme Stripe uses, so receivers can reject replays by the timestamp),
//! retried with exponential backoff, then dropped and counted.

use super::deliver::EventQueue;
use crate::error::ModerationError;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The environment variable holding the signing secret.
pub const SECRET_ENV: &str = "LIVECENSOR_EVENTS_SECRET";
pub const SIGNATURE_HEADER: &str = "X-Livecensor-Signature";
/// The event's id, so a receiver can drop a retried duplicate.
pub const EVENT_ID_HEADER: &str = "X-Livecensor-Event-Id";
/// One POST may take this long before it counts as a failed attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One webhook endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookConfig {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    /// `url` signed with the secret from `LIVECENSOR_EVENTS_SECRET`.
    pub fn from_env(url: &str) -> Result<WebhookConfig, ModerationError> {
        let secret = std::env::var(SECRET_ENV).unwrap_or_default();
        if secret.is_empty() {
            return Err(ModerationError::MissingSecret { url: url.into() });
        }
        Ok(WebhookConfig {
            url: url.into(),
            secret: secret.into_bytes(),
        })
    }
}

fn mac(secret: &[u8], ts: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    m.update(ts.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The signature header's value for `body` sent at unix time `ts`.
pub fn sign(secret: &[u8], ts: u64, body: &[u8]) -> String {
    let tag = mac(secret, ts, body).finalize().into_bytes();
    let mut hex = String::with_capacity(tag.len() * 2);
    for b in tag {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("t={ts},v1={hex}")
}

/// Checks a signature header against `body`: a `v1` that matches (compared
/// in constant time) and a timestamp within `tolerance` of `now` (unix
/// seconds).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: Duration,
) -> Result<(), ModerationError> {
    let bad = |s: &str| ModerationError::Signature(s.into());
    let mut ts = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => ts = Some(v.parse::<u64>().map_err(|_| bad("bad timestamp"))?),
            Some(("v1", v)) => sigs.push(decode_hex(v).ok_or_else(|| bad("bad hex in v1"))?),
            _ => {}
        }
    }
    let ts = ts.ok_or_else(|| bad("no t= timestamp"))?;
    if sigs.is_empty() {
        return Err(bad("no v1= signature"));
    }
    if now.abs_diff(ts) > tolerance.as_secs() {
        return Err(bad("timestamp outside the tolerance"));
    }
    let expected = mac(secret, ts, body);
    if sigs
        .iter()
        .any(|s| expected.clone().verify_slice(s).is_ok())
    {
        Ok(())
    } else {
        Err(bad("no matching v1 signature"))
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Retry schedule: `initial`, doubling up to `max`, until `give_up_after`
/// has passed since the first attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub give_up_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            give_up_after: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (1 = the first retry), or
    /// `None` to give up: the retry would start past `give_up_after`.
    pub fn delay(&self, attempt: u32, elapsed: Duration) -> Option<Duration> {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let d = self.initial.saturating_mul(factor).min(self.max);
        (elapsed + d <= self.give_up_after).then_some(d)
    }
}

/// The HTTP client every webhook shares.
pub(crate) fn client() -> Result<reqwest::Client, ModerationError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| ModerationError::Webhook {
            url: String::new(),
            reason: e.to_string(),
        })
}

enum Outcome {
    Delivered,
    Retry(String),
    Reject(String),
}

async fn post(client: &reqwest::Client, cfg: &WebhookConfig, id: &str, body: &str) -> Outcome {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let res = client
        .post(&cfg.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sign(&cfg.secret, ts, body.as_bytes()))
        .header(EVENT_ID_HEADER, id)
        .body(body.to_string())
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        // 408 and 429 are "try later"; other 4xx will not change on a retry.
        Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 429) => {
            Outcome::Reject(format!("HTTP {}", r.status()))
        }
        Ok(r) => Outcome::Retry(format!("HTTP {}", r.status())),
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

/// Delivers the queue's events in order, one at a time; while one is being
/// retried the queue fills and drops its oldest, so a dead endpoint costs a
/// bounded amount of memory.
pub(crate) async fn worker(
    queue: Arc<EventQueue>,
    client: reqwest::Client,
    cfg: WebhookConfig,
    backoff: Backoff,
) {
    let counters = Arc::clone(queue.counters());
    while let Some(ev) = queue.next().await {
        queue.set_busy(true);
        let body = ev.to_json();
        let start = tokio::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            match post(&client, &cfg, &ev.id, &body).await {
                Outcome::Delivered => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Outcome::Reject(reason) => {
                    tracing::warn!(url = %cfg.url, event = %ev.id, %reason, "webhook rejected event");
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Outcome::Retry(reason) => {
                    attempt += 1;
                    let Some(wait) = backoff.delay(attempt, start.elapsed()) else {
                        tracing::warn!(url = %cfg.url, event = %ev.id, %reason, attempt, "webhook gave up");
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    };
                    tracing::debug!(url = %cfg.url, %reason, ?wait, "webhook retry");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        queue.set_busy(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moderation::deliver::ModerationBuilder;
    use crate::moderation::event::{Event, EventBody, Source};
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::Mutex;

    const SECRET: &[u8] = b"whsec_test";
    const BODY: &[u8] = br#"{"id":"ev-1","kind":"session_started"}"#;

    #[test]
    fn known_vector() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test",
        //   b"1700000000." + b"{\"id\":\"ev-1\",\"kind\":\"session_started\"}",
        //   hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(SECRET, 1_700_000_000, BODY),
            "t=1700000000,v1=471048efac9f9415800a2e597478542ac69aa76d933a34e509014cc507a9f331"
        );
    }

    #[test]
    fn verify_checks_body_secret_and_time() {
        let h = sign(SECRET, 1_700_000_000, BODY);
        let tol = Duration::from_secs(300);
        assert!(verify(SECRET, &h, BODY, 1_700_000_100, tol).is_ok());
        assert!(verify(SECRET, &h, BODY, 1_699_999_800, tol).is_ok());
        assert!(verify(SECRET, &h, b"{}", 1_700_000_000, tol).is_err());
        assert!(verify(b"other", &h, BODY, 1_700_000_000, tol).is_err());
        assert!(verify(SECRET, &h, BODY, 1_700_000_301, tol).is_err());
        // A rotated secret: any v1 may match.
        let other = sign(b"old", 1_700_000_000, BODY);
        let both = format!("{h},{}", other.split(',').nth(1).unwrap());
        assert!(verify(b"old", &both, BODY, 1_700_000_000, tol).is_ok());
        for bad in [
            "",
            "t=x,v1=00",
            "t=1700000000",
            "v1=00",
            "t=1700000000,v1=zz",
        ] {
            assert!(
                verify(SECRET, bad, BODY, 1_700_000_000, tol).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn backoff_doubles_caps_and_gives_up() {
        let b = Backoff::default();
        let z = Duration::ZERO;
        assert_eq!(b.delay(1, z), Some(Duration::from_millis(500)));
        assert_eq!(b.delay(2, z), Some(Duration::from_secs(1)));
        assert_eq!(b.delay(4, z), Some(Duration::from_secs(4)));
        assert_eq!(b.delay(10, z), Some(Duration::from_secs(30)));
        assert_eq!(b.delay(100, z), Some(Duration::from_secs(30)));
        assert_eq!(
            b.delay(3, Duration::from_secs(298)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(b.delay(3, Duration::from_millis(298_001)), None);
        // Waits over 5 minutes of failures.
        let (mut elapsed, mut n) = (Duration::ZERO, 0u32);
        while let Some(d) = b.delay(n + 1, elapsed) {
            elapsed += d;
            n += 1;
        }
        assert!(elapsed <= Duration::from_secs(300) && elapsed > Duration::from_secs(270));
    }

    #[derive(Default)]
    struct Receiver {
        /// Answers 500 to this many requests first.
        fail_first: usize,
        got: Vec<(String, String)>,
        calls: usize,
    }

    async fn serve(state: Arc<Mutex<Receiver>>) -> String {
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = Arc::clone(&state);
                async move {
                    let mut s = state.lock().unwrap();
                    s.calls += 1;
                    if s.calls <= s.fail_first {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let sig = headers[SIGNATURE_HEADER].to_str().unwrap().to_string();
                    s.got.push((sig, body));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/hook")
    }

    fn ev(n: u64) -> Event {
        Event::new(
            EventBody::SessionStarted,
            &Source::live("demo", "alice", "TR"),
            SystemTime::now(),
            Some(n as f64),
        )
    }

    fn quick() -> Backoff {
        Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            give_up_after: Duration::from_millis(200),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_then_delivers_signed_events_in_order() {
        let state = Arc::new(Mutex::new(Receiver {
            fail_first: 2,
            ..Receiver::default()
        }));
        let url = serve(Arc::clone(&state)).await;
        let m = ModerationBuilder::new()
            .webhook(WebhookConfig {
                url,
                secret: SECRET.to_vec(),
            })
            .backoff(quick())
            .build()
            .unwrap();
        for n in 0..3 {
            m.emit(ev(n));
        }
        let counters = m.counters();
        m.shutdown(Duration::from_secs(10)).await;
        let s = state.lock().unwrap();
        assert_eq!(s.calls, 5);
        assert_eq!(s.got.len(), 3);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for (n, (sig, body)) in s.got.iter().enumerate() {
            verify(SECRET, sig, body.as_bytes(), now, Duration::from_secs(60)).unwrap();
            let e: Event = serde_json::from_str(body).unwrap();
            assert_eq!(e.stream_time, Some(n as f64));
        }
        let c = &counters[0].1;
        assert_eq!(c.delivered.load(Ordering::Relaxed), 3);
        assert_eq!(c.failed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_endpoint_drops_and_counts() {
        // Nothing listens on a port we bound and closed.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        drop(l);
        let m = ModerationBuilder::new()
            .capacity(4)
            .webhook(WebhookConfig {
                url,
                secret: SECRET.to_vec(),
            })
            .backoff(quick())
            .build()
            .unwrap();
        let t = std::time::Instant::now();
        for n in 0..1000 {
            m.emit(ev(n));
        }
        // Emitting never waits on the endpoint.
        assert!(t.elapsed() < Duration::from_secs(1));
        let stats = m.stats();
        assert!(stats[0].queued <= 4);
        let counters = m.counters();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while counters[0].1.failed.load(Ordering::Relaxed) == 0 {
            assert!(std::time::Instant::now() < deadline, "never gave up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        m.shutdown(Duration::from_secs(5)).await;
        let c = &counters[0].1;
        let (dropped, failed) = (
            c.dropped.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        );
        assert!(dropped >= 995, "{dropped}");
        assert_eq!(dropped + failed, 1000);
        assert_eq!(c.delivered.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_abandons_retries_and_counts_them() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        drop(l);
        let m = ModerationBuilder::new()
            .capacity(8)
            .webhook(WebhookConfig {
                url,
                secret: SECRET.to_vec(),
            })
            .backoff(Backoff {
                give_up_after: Duration::from_secs(3600),
                ..quick()
            })
            .build()
            .unwrap();
        for n in 0..5 {
            m.emit(ev(n));
        }
        let counters = m.counters();
        let t = std::time::Instant::now();
        m.shutdown(Duration::from_millis(100)).await;
        assert!(t.elapsed() < Duration::from_secs(2));
        let c = &counters[0].1;
        assert_eq!(c.dropped.load(Ordering::Relaxed), 5);
        assert_eq!(c.failed.load(Ordering::Relaxed), 0);
    }
}
