//! Event delivery that never blocks media: `Moderation::emit` pushes to a
//! bounded queue per sink (a full queue drops its oldest event and counts
//! it) and to an in-process broadcast hub; a worker per sink drains its
//! queue: a thread for the JSON-lines file, a tokio task per webhook.

use super::event::Event;
use super::webhook::{self, Backoff, WebhookConfig};
use crate::error::ModerationError;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// Events a sink keeps queued before dropping the oldest.
pub const DEFAULT_CAPACITY: usize = 1024;
/// Events the hub buffers per subscriber; a slower subscriber sees
/// `RecvError::Lagged`.
pub const HUB_CAPACITY: usize = 1024;
/// Lines written between two fsyncs of the events file, at most.
const FILE_BATCH: usize = 256;

/// Counters one sink shares with the metrics.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Written or accepted (2xx).
    pub delivered: AtomicU64,
    /// Given up on: a write error, or a webhook still failing after its
    /// retries (or answering 4xx).
    pub failed: AtomicU64,
}

/// A snapshot of one sink's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkStats {
    /// `file:PATH` or `webhook:URL`.
    pub name: String,
    pub queued: usize,
    pub dropped: u64,
    pub delivered: u64,
    pub failed: u64,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Arc<Event>>,
    closed: bool,
}

/// A bounded FIFO with one consumer, blocking (file thread) or async
/// (webhook task). Pushing never waits beyond a short lock.
#[derive(Debug)]
pub struct EventQueue {
    state: Mutex<QueueState>,
    capacity: usize,
    cv: Condvar,
    notify: Notify,
    counters: Arc<SinkCounters>,
    /// The consumer holds an event it has not finished with (a webhook
    /// retrying), which an abort at shutdown would lose.
    busy: AtomicBool,
}

impl EventQueue {
    pub fn new(capacity: usize) -> EventQueue {
        EventQueue {
            state: Mutex::new(QueueState::default()),
            capacity: capacity.max(1),
            cv: Condvar::new(),
            notify: Notify::new(),
            counters: Arc::new(SinkCounters::default()),
            busy: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panicking consumer cannot leave the deque inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `ev`, dropping (and counting) the oldest when full; a closed
    /// queue drops `ev` itself.
    pub fn push(&self, ev: Arc<Event>) {
        {
            let mut s = self.lock();
            if s.closed {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if s.items.len() >= self.capacity {
                s.items.pop_front();
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            s.items.push_back(ev);
        }
        self.cv.notify_one();
        self.notify.notify_one();
    }

    /// No more pushes; the consumer drains what is left, then stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
        self.notify.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counters(&self) -> &Arc<SinkCounters> {
        &self.counters
    }

    /// Up to `max` events, waiting for the first; `None` once closed and
    /// drained.
    fn take_batch_blocking(&self, max: usize) -> Option<Vec<Arc<Event>>> {
        let mut s = self.lock();
        while s.items.is_empty() && !s.closed {
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.items.is_empty() {
            return None;
        }
        let n = s.items.len().min(max);
        Some(s.items.drain(..n).collect())
    }

    /// The next event; `None` once closed and drained.
    pub(crate) async fn next(&self) -> Option<Arc<Event>> {
        loop {
            {
                let mut s = self.lock();
                if let Some(ev) = s.items.pop_front() {
                    return Some(ev);
                }
                if s.closed {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits, so a push
            // between the check and this await is not lost.
            self.notify.notified().await;
        }
    }

    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Relaxed);
    }

    /// Counts everything still held as dropped (the consumer was aborted).
    fn abandon(&self) {
        let held = {
            let mut s = self.lock();
            let n = s.items.len() as u64;
            s.items.clear();
            n
        } + u64::from(self.busy.swap(false, Ordering::Relaxed));
        self.counters.dropped.fetch_add(held, Ordering::Relaxed);
    }
}

#[derive(Debug)]
enum Worker {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

#[derive(Debug)]
struct Sink {
    name: String,
    queue: Arc<EventQueue>,
    worker: Option<Worker>,
}

/// What to deliver to; `build` opens the file and starts the workers.
#[derive(Clone, Debug)]
pub struct ModerationBuilder {
    capacity: usize,
    file: Option<PathBuf>,
    webhooks: Vec<WebhookConfig>,
    backoff: Backoff,
}

impl Default for ModerationBuilder {
    fn default() -> Self {
        ModerationBuilder {
            capacity: DEFAULT_CAPACITY,
            file: None,
            webhooks: Vec::new(),
            backoff: Backoff::default(),
        }
    }
}

impl ModerationBuilder {
    pub fn new() -> ModerationBuilder {
        ModerationBuilder::default()
    }

    /// Queue length per sink.
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n.max(1);
        self
    }

    /// JSON lines appended to `path` (`--events PATH`).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// A webhook (`--events-webhook URL`, repeatable).
    pub fn webhook(mut self, cfg: WebhookConfig) -> Self {
        self.webhooks.push(cfg);
        self
    }

    /// Retry schedule for every webhook (default: backoff up to 5 minutes).
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }

    /// Opens the events file (an error now, not on the first event) and
    /// starts the workers; webhooks need to run inside a tokio runtime.
    pub fn build(self) -> Result<Moderation, ModerationError> {
        let (hub, _) = broadcast::channel(HUB_CAPACITY);
        let mut m = Moderation {
            sinks: Vec::new(),
            hub,
        };
        if let Some(path) = &self.file {
            let file = open_append(path)?;
            let queue = Arc::new(EventQueue::new(self.capacity));
            let q = Arc::clone(&queue);
            let p = path.clone();
            let h = std::thread::Builder::new()
                .name("events-file".into())
                .spawn(move || file_worker(&q, file, &p))
                .map_err(|source| ModerationError::EventsFile {
                    path: path.clone(),
                    source,
                })?;
            m.sinks.push(Sink {
                name: format!("file:{}", path.display()),
                queue,
                worker: Some(Worker::Thread(h)),
            });
        }
        if !self.webhooks.is_empty() {
            let rt = tokio::runtime::Handle::try_current()
                .map_err(|e| ModerationError::NoRuntime(e.to_string()))?;
            let client = webhook::client()?;
            for cfg in self.webhooks {
                if cfg.secret.is_empty() {
                    return Err(ModerationError::MissingSecret { url: cfg.url });
                }
                let queue = Arc::new(EventQueue::new(self.capacity));
                let name = format!("webhook:{}", cfg.url);
                let task = rt.spawn(webhook::worker(
                    Arc::clone(&queue),
                    client.clone(),
                    cfg,
                    self.backoff,
                ));
                m.sinks.push(Sink {
                    name,
                    queue,
                    worker: Some(Worker::Task(task)),
                });
            }
        }
        Ok(m)
    }
}

fn open_append(path: &Path) -> Result<File, ModerationError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ModerationError::EventsFile {
            path: path.to_path_buf(),
            source,
        })
}

/// Drains batches into the file: one write and one fsync per batch, so a
/// burst costs one sync and a crash loses at most the batch in flight.
fn file_worker(queue: &EventQueue, mut file: File, path: &Path) {
    let counters = Arc::clone(queue.counters());
    while let Some(batch) = queue.take_batch_blocking(FILE_BATCH) {
        let mut buf = Vec::with_capacity(batch.len() * 256);
        for ev in &batch {
            buf.extend_from_slice(ev.to_json().as_bytes());
            buf.push(b'\n');
        }
        let n = batch.len() as u64;
        match file.write_all(&buf).and_then(|()| file.sync_data()) {
            Ok(()) => counters.delivered.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "events file write failed");
                counters.failed.fetch_add(n, Ordering::Relaxed)
            }
        };
    }
}

/// The moderation hub: every sink and the broadcast to SSE subscribers.
#[derive(Debug)]
pub struct Moderation {
    sinks: Vec<Sink>,
    hub: broadcast::Sender<Arc<Event>>,
}

impl Moderation {
    /// A hub with no sinks (subscribers only).
    pub fn hub_only() -> Moderation {
        let (hub, _) = broadcast::channel(HUB_CAPACITY);
        Moderation {
            sinks: Vec::new(),
            hub,
        }
    }

    /// Hands `ev` to every sink and subscriber; never blocks.
    pub fn emit(&self, ev: Event) {
        let ev = Arc::new(ev);
        for s in &self.sinks {
            s.queue.push(Arc::clone(&ev));
        }
        // No subscriber is not an error: the page may be closed.
        let _ = self.hub.send(ev);
    }

    /// Events from now on, for `GET /events`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.hub.subscribe()
    }

    pub fn stats(&self) -> Vec<SinkStats> {
        self.sinks
            .iter()
            .map(|s| {
                let c = s.queue.counters();
                SinkStats {
                    name: s.name.clone(),
                    queued: s.queue.len(),
                    dropped: c.dropped.load(Ordering::Relaxed),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Each sink's live counters, for a metrics collector to read.
    pub fn counters(&self) -> Vec<(String, Arc<SinkCounters>)> {
        self.sinks
            .iter()
            .map(|s| (s.name.clone(), Arc::clone(s.queue.counters())))
            .collect()
    }

    /// Stops taking events, lets the workers drain (webhooks still retrying)
    /// for up to `grace`, then abandons what is left, counted as dropped.
    pub async fn shutdown(mut self, grace: Duration) {
        for s in &self.sinks {
            s.queue.close();
        }
        let deadline = tokio::time::Instant::now() + grace;
        for s in &mut self.sinks {
            let Some(w) = s.worker.take() else { continue };
            match w {
                Worker::Task(mut t) => {
                    if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                        t.abort();
                        s.queue.abandon();
                    }
                }
                Worker::Thread(h) => {
                    // The thread exits once its queue is drained; joining it
                    // off the runtime keeps the deadline.
                    let j = tokio::task::spawn_blocking(move || h.join());
                    let _ = tokio::time::timeout_at(deadline, j).await;
                }
            }
        }
    }
}

impl Drop for Moderation {
    /// Workers exit once their queues drain; nothing waits here.
    fn drop(&mut self) {
        for s in &self.sinks {
            s.queue.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moderation::event::{EventBody, Source};
    use std::time::SystemTime;

    fn ev(n: u64) -> Event {
        Event::new(
            EventBody::FailClosedStarted {
                reason: format!("r{n}"),
            },
            &Source::default(),
            SystemTime::UNIX_EPOCH,
            Some(n as f64),
        )
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts() {
        let q = EventQueue::new(3);
        for n in 0..5 {
            q.push(Arc::new(ev(n)));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.counters().dropped.load(Ordering::Relaxed), 2);
        let batch = q.take_batch_blocking(10).unwrap();
        let times: Vec<_> = batch.iter().map(|e| e.stream_time).collect();
        assert_eq!(times, [Some(2.0), Some(3.0), Some(4.0)]);
        q.close();
        assert!(q.take_batch_blocking(10).is_none());
        q.push(Arc::new(ev(9)));
        assert_eq!(q.counters().dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn file_sink_appends_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"old\":1}\n").unwrap();
        let m = ModerationBuilder::new().file(&path).build().unwrap();
        let mut sub = m.subscribe();
        for n in 0..10 {
            m.emit(ev(n));
        }
        assert_eq!(sub.try_recv().unwrap().stream_time, Some(0.0));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let stats_before = m.stats();
        assert_eq!(stats_before[0].name, format!("file:{}", path.display()));
        let counters = m.counters();
        rt.block_on(m.shutdown(Duration::from_secs(10)));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[0], "{\"old\":1}");
        for (n, l) in lines[1..].iter().enumerate() {
            let e: Event = serde_json::from_str(l).unwrap();
            assert_eq!(e.stream_time, Some(n as f64));
        }
        assert_eq!(counters[0].1.delivered.load(Ordering::Relaxed), 10);
        assert_eq!(counters[0].1.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn unopenable_file_is_an_error_naming_it() {
        let e = ModerationBuilder::new()
            .file("/nonexistent-dir/events.jsonl")
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent-dir/events.jsonl"), "{e}");
    }

    #[test]
    fn webhooks_need_a_runtime_and_a_secret() {
        let cfg = WebhookConfig {
            url: "http://127.0.0.1:9/".into(),
            secret: Vec::new(),
        };
        let e = ModerationBuilder::new()
            .webhook(cfg.clone())
            .build()
            .unwrap_err();
        assert!(matches!(e, ModerationError::NoRuntime(_)), "{e}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(async { ModerationBuilder::new().webhook(cfg).build() })
            .unwrap_err();
        assert!(matches!(e, ModerationError::MissingSecret { .. }), "{e}");
    }

    #[test]
    fn emit_without_sinks_or_subscribers_is_fine() {
        let m = Moderation::hub_only();
        m.emit(ev(1));
        let mut sub = m.subscribe();
        m.emit(ev(2));
        assert_eq!(sub.try_recv().unwrap().stream_time, Some(2.0));
        assert!(m.stats().is_empty());
    }
}
