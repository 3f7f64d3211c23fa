//! Small sans-IO timing helpers of the live session: the audio delay line
//! that keeps lip sync with the (delayed) censored video, the estimate of
//! that delay, the reconnect backoff and the key frame request throttle.
//! Each takes `now` as an argument; tests drive them on a synthetic clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Audio is never held longer than this: past it, lip sync matters less
/// than audio that keeps up (and the queue stays small).
pub const MAX_AUDIO_DELAY: Duration = Duration::from_millis(300);

/// How fast [`AudioDelayLine::steer`] moves the delay, in delay per second
/// of wall time (5%): a receiver's jitter buffer absorbs that gently, while
/// a jump would arrive as a burst (or a hole) it buffers for seconds.
const SLEW_PER_SEC: f64 = 0.05;

/// Packets held at most; beyond it the oldest leaves early rather than
/// memory growing (25 packets is 500 ms of 20 ms Opus frames).
const MAX_HELD: usize = 256;

/// Holds each audio packet until its own arrival plus the current video
/// delay, then releases it, always in arrival order: the delay may change
/// at any time, which only moves release times, never the order, and no
/// packet is dropped.
#[derive(Debug)]
pub struct AudioDelayLine<T> {
    held: VecDeque<(Instant, T)>,
    delay: Duration,
    steered: Option<Instant>,
}

impl<T> Default for AudioDelayLine<T> {
    fn default() -> Self {
        AudioDelayLine {
            held: VecDeque::new(),
            delay: Duration::ZERO,
            steered: None,
        }
    }
}

impl<T> AudioDelayLine<T> {
    /// Sets the delay at once (capped at [`MAX_AUDIO_DELAY`]).
    pub fn set_delay(&mut self, d: Duration) {
        self.delay = d.min(MAX_AUDIO_DELAY);
    }

    /// Moves the delay toward `target` (capped at [`MAX_AUDIO_DELAY`]) by
    /// at most [`SLEW_PER_SEC`] of the time since the last call: the video
    /// delay jumps (a slow start, a late batch), the audio follows smoothly.
    pub fn steer(&mut self, now: Instant, target: Duration) {
        let target = target.min(MAX_AUDIO_DELAY);
        let dt = self
            .steered
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.steered = Some(now);
        let step = dt.mul_f64(SLEW_PER_SEC);
        let next = if target > self.delay {
            (self.delay + step).min(target)
        } else {
            self.delay.saturating_sub(step).max(target)
        };
        self.set_delay(next);
    }

    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// A packet that arrived at `arrived`. Arrival times that go backwards
    /// are raised to the previous one so the queue stays sorted.
    pub fn push(&mut self, arrived: Instant, packet: T) {
        let arrived = self
            .held
            .back()
            .map_or(arrived, |(last, _)| arrived.max(*last));
        self.held.push_back((arrived, packet));
    }

    /// The next packet due at `now`, in order.
    pub fn poll(&mut self, now: Instant) -> Option<T> {
        let (arrived, _) = self.held.front()?;
        if self.held.len() > MAX_HELD || *arrived + self.delay <= now {
            return self.held.pop_front().map(|(_, p)| p);
        }
        None
    }

    /// When the next packet is due (None when nothing is held).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.front().map(|(a, _)| *a + self.delay)
    }

    /// Every held packet, in order, at once (the input connection is gone).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.held.drain(..).map(|(_, p)| p)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Frames the video delay estimate looks back over (3 s at 30 fps).
const LATENCY_WINDOW: usize = 90;

/// Frames of a new input stream the estimate ignores: its first second or
/// two is slow (first key frame, encoder start), and audio held for that
/// would stay late long after the video caught up.
const LATENCY_WARMUP: usize = 60;

/// The added video latency (arrival of an access unit to the send of its
/// censored one) as the lower quartile of the last frames: robust to runs
/// of slow frames (a late batch, a CPU spike) that a mean or even a median
/// would follow, and audio a little early is less noticeable than late.
#[derive(Debug, Default)]
pub struct LatencyEstimate {
    recent: VecDeque<Duration>,
    seen: usize,
}

impl LatencyEstimate {
    /// One frame's latency; returns the new estimate, or None while the
    /// stream is still warming up.
    pub fn push(&mut self, d: Duration) -> Option<Duration> {
        self.seen += 1;
        if self.seen <= LATENCY_WARMUP {
            return None;
        }
        if self.recent.len() == LATENCY_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(d);
        Some(self.get())
    }

    /// A new input stream: forget everything, warm up again.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.seen = 0;
    }

    /// The current estimate (zero before any frame past the warm-up).
    pub fn get(&self) -> Duration {
        let mut v: Vec<Duration> = self.recent.iter().copied().collect();
        v.sort_unstable();
        crate::stats::nearest_rank(v.len(), 25.0)
            .and_then(|i| v.get(i).copied())
            .unwrap_or_default()
    }
}

/// Waits between reconnect attempts: 250 ms doubling up to 2 s, back to
/// the start once a connection has stayed up for [`Backoff::STABLE`].
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(2);
    /// A connection that lived this long was a success.
    pub const STABLE: Duration = Duration::from_secs(5);

    /// The wait before the next attempt (and doubles the one after).
    pub fn next_wait(&mut self) -> Duration {
        let w = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        w
    }

    /// A connection that was up from `since` until `now` went away.
    pub fn connection_ended(&mut self, since: Instant, now: Instant) {
        if now.saturating_duration_since(since) >= Self::STABLE {
            self.next = Self::FIRST;
        }
    }
}

/// At most one event per `gap`; only an event that happened counts (a
/// request that could not be sent may be retried at once).
#[derive(Debug)]
pub struct Throttle {
    gap: Duration,
    last: Option<Instant>,
}

impl Throttle {
    pub fn new(gap: Duration) -> Self {
        Throttle { gap, last: None }
    }

    /// Whether an event may happen at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.gap)
    }

    /// An event happened at `now`.
    pub fn mark(&mut self, now: Instant) {
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn audio_leaves_at_arrival_plus_delay_in_order() {
        let t0 = Instant::now();
        let mut d = AudioDelayLine::default();
        d.set_delay(ms(40));
        for i in 0..5u32 {
            d.push(t0 + ms(20 * i as u64), i);
        }
        assert_eq!(d.next_deadline(), Some(t0 + ms(40)));
        assert_eq!(d.poll(t0 + ms(39)), None);
        assert_eq!(d.poll(t0 + ms(40)), Some(0));
        assert_eq!(d.poll(t0 + ms(40)), None);
        assert_eq!(d.next_deadline(), Some(t0 + ms(60)));
        // Late polling releases everything due, still in order.
        let got: Vec<u32> = std::iter::from_fn(|| d.poll(t0 + ms(200))).collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert!(d.is_empty());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn delay_changes_neither_reorder_nor_drop() {
        let t0 = Instant::now();
        let mut d = AudioDelayLine::default();
        d.set_delay(ms(100));
        let mut out = Vec::new();
        let mut now = t0;
        for i in 0..200u32 {
            now = t0 + ms(10 * i as u64);
            d.push(now, i);
            // The delay jumps around: up, down, to zero and back.
            d.set_delay(ms([100, 5, 300, 0, 60][(i / 7) as usize % 5]));
            while let Some(p) = d.poll(now) {
                out.push(p);
            }
        }
        while let Some(p) = d.poll(now + ms(1000)) {
            out.push(p);
        }
        assert_eq!(out, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn arrival_going_backwards_keeps_the_order() {
        let t0 = Instant::now();
        let mut d = AudioDelayLine::default();
        d.set_delay(ms(10));
        d.push(t0 + ms(50), 'a');
        d.push(t0, 'b');
        assert_eq!(d.poll(t0 + ms(10)), None);
        assert_eq!(d.poll(t0 + ms(60)), Some('a'));
        assert_eq!(d.poll(t0 + ms(60)), Some('b'));
    }

    #[test]
    fn steering_follows_the_target_at_the_slew_rate_only() {
        let t0 = Instant::now();
        let mut d: AudioDelayLine<u32> = AudioDelayLine::default();
        d.steer(t0, ms(400));
        assert_eq!(d.delay(), Duration::ZERO, "no time has passed yet");
        d.steer(t0 + ms(1000), ms(400));
        assert_eq!(d.delay(), ms(50));
        // The target drops below the delay: it comes down at the same rate,
        // and never past the target.
        d.steer(t0 + ms(1200), ms(40));
        assert_eq!(d.delay(), ms(40));
        d.steer(t0 + ms(1400), ms(0));
        assert_eq!(d.delay(), ms(30));
        d.steer(t0 + ms(100_000), Duration::from_secs(10));
        assert_eq!(d.delay(), MAX_AUDIO_DELAY);
    }

    #[test]
    fn delay_and_memory_are_bounded() {
        let t0 = Instant::now();
        let mut d = AudioDelayLine::default();
        d.set_delay(Duration::from_secs(10));
        assert_eq!(d.delay(), MAX_AUDIO_DELAY);
        d.push(t0, 0u32);
        assert_eq!(d.poll(t0 + MAX_AUDIO_DELAY), Some(0));
        // Nobody polls on time: the queue never grows past its cap, and
        // what leaves early still leaves in order.
        let mut out = Vec::new();
        for i in 0..1000u32 {
            d.push(t0, i);
            while let Some(p) = d.poll(t0) {
                out.push(p);
            }
            assert!(d.len() <= MAX_HELD);
        }
        out.extend(d.drain());
        assert_eq!(out, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn latency_estimate_skips_the_warm_up_and_is_the_recent_lower_quartile() {
        let mut e = LatencyEstimate::default();
        assert_eq!(e.get(), Duration::ZERO);
        // A slow start is ignored.
        for _ in 0..LATENCY_WARMUP {
            assert_eq!(e.push(ms(450)), None);
        }
        assert_eq!(e.push(ms(30)), Some(ms(30)));
        for _ in 0..40 {
            e.push(ms(30));
        }
        // A run of slow frames shorter than three quarters of the window
        // does not move it.
        for _ in 0..30 {
            assert_eq!(e.push(ms(400)), Some(ms(30)));
        }
        // A lasting change does, within the window.
        for _ in 0..LATENCY_WINDOW {
            e.push(ms(80));
        }
        assert_eq!(e.get(), ms(80));
        e.reset();
        assert_eq!(e.get(), Duration::ZERO);
        assert_eq!(e.push(ms(10)), None);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_after_a_stable_connection() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let waits: Vec<_> = (0..6).map(|_| b.next_wait()).collect();
        assert_eq!(
            waits,
            vec![ms(250), ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]
        );
        // A connection kicked at once does not reset it.
        b.connection_ended(t0, t0 + ms(300));
        assert_eq!(b.next_wait(), ms(2000));
        b.connection_ended(t0, t0 + Backoff::STABLE);
        assert_eq!(b.next_wait(), ms(250));
    }

    #[test]
    fn throttle_allows_one_per_gap() {
        let t0 = Instant::now();
        let mut t = Throttle::new(ms(250));
        let mut sent = Vec::new();
        for at in (0..20).map(|i| i * 50) {
            // The event at 500 ms fails: it does not count.
            if t.ready(t0 + ms(at)) && at != 500 {
                t.mark(t0 + ms(at));
                sent.push(at);
            }
        }
        assert_eq!(sent, vec![0, 250, 550, 800]);
    }
}
