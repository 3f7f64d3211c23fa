//! The per-context worker loop: each execution context waits on the shared
//! batcher, drops the frames its batch cannot finish in time (by its
//! running inference estimate), lays the rest out as one tensor, runs the
//! backend and sends each frame's result back to its stream.

use super::fault::FaultAction;
use super::warm::warm_up;
use super::{Completion, Shared};
use crate::detect::{DetectBackend, DetectInput, Letterbox};
use crate::error::DetectError;
use crate::frame::Detection;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lays the jobs' tensors out as one batch of the largest rows and columns
/// among them. Padding is black at the bottom/right in every letterbox, so
/// a tensor padded further equals that frame preprocessed at the larger
/// shape: mixing shapes in a batch changes no pixel the model sees.
/// `None` when a tensor does not match its letterbox.
fn gather(jobs: &[(&[f32], Letterbox)], input: &mut Vec<f32>) -> Option<Vec<Letterbox>> {
    let rows = jobs.iter().map(|(_, lb)| lb.rows).max()?;
    let cols = jobs.iter().map(|(_, lb)| lb.cols).max()?;
    input.clear();
    input.reserve(jobs.len() * 3 * rows * cols);
    let mut lbs = Vec::with_capacity(jobs.len());
    for (t, lb) in jobs {
        if t.len() != lb.len() || lb.is_empty() {
            return None;
        }
        if lb.dims() == (rows, cols) {
            input.extend_from_slice(t);
        } else {
            for plane in t.chunks_exact(lb.rows * lb.cols) {
                for row in plane.chunks_exact(lb.cols) {
                    input.extend_from_slice(row);
                    input.resize(input.len() + cols - lb.cols, 0.0);
                }
                input.resize(input.len() + (rows - lb.rows) * cols, 0.0);
            }
        }
        lbs.push(Letterbox { rows, cols, ..*lb });
    }
    Some(lbs)
}

/// A context's running estimate of its inference time, per image of a
/// batch (an EWMA): on the CPU a batch costs its images one after another,
/// so `n` images are predicted to take `n` times it (conservative where
/// batching is cheaper, as on a GPU: a frame dropped too eagerly is
/// censored whole, never shown unverified).
///
/// It only predicts while fresh (a batch timed within [`Self::STALE`]):
/// after a stall every frame looked hopeless, none was inferred, and a
/// stuck estimate failed every later frame closed for good. A stale
/// estimate lets the next batch run, and that batch's time replaces it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct InferEstimate {
    per_image_s: Option<f64>,
    /// When the last timed batch ended.
    at: Option<Instant>,
}

impl InferEstimate {
    const WEIGHT: f64 = 0.2;
    const STALE: Duration = Duration::from_millis(500);

    fn fresh(&self, now: Instant) -> bool {
        self.at
            .is_some_and(|t| now.saturating_duration_since(t) < Self::STALE)
    }

    /// A batch of `images` started at `started` took `took`.
    pub(super) fn observe(&mut self, images: usize, started: Instant, took: Duration) {
        if images == 0 {
            return;
        }
        let v = took.as_secs_f64() / images as f64;
        self.per_image_s = Some(match self.per_image_s {
            Some(p) if self.fresh(started) => p + Self::WEIGHT * (v - p),
            _ => v,
        });
        self.at = Some(started + took);
    }

    /// `None` until a batch was timed, or when the estimate is stale.
    fn predict(&self, images: usize, now: Instant) -> Option<Duration> {
        if !self.fresh(now) {
            return None;
        }
        self.per_image_s
            .map(|p| Duration::from_secs_f64((p * images as f64).min(3600.0)))
    }
}

/// Why a picked frame is answered without inference: its deadline has
/// passed, or the batch would end after it (inferring it would only delay
/// the frames that can still be verified; it is censored whole at once).
fn hopeless(expires: Instant, start: Instant, batch: Option<Duration>) -> Option<&'static str> {
    if expires <= start {
        return Some("deadline passed before inference");
    }
    match batch {
        Some(d) if start + d > expires => Some("cannot be inferred before its deadline"),
        _ => None,
    }
}

pub(super) fn worker(
    shared: Arc<Shared>,
    mut backend: Box<dyn DetectBackend>,
    max_batch: usize,
    ready: Sender<()>,
) {
    let mut input: Vec<f32> = Vec::new();
    let mut estimate = InferEstimate::default();
    if let Some(t) = warm_up(backend.as_mut(), max_batch, &mut input, &mut estimate) {
        shared.counters.record_image_time(t);
    }
    let _ = ready.send(());
    drop(ready);
    loop {
        let (batch, fault) = {
            let Ok(mut st) = shared.state.lock() else {
                return;
            };
            loop {
                if st.shutdown {
                    return;
                }
                let now = Instant::now();
                if let Some(b) = st.batcher.poll_batch(now) {
                    let f = st.faults.on_batch(now);
                    break (b, f);
                }
                let wait = st
                    .batcher
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(Duration::from_millis(100))
                    .max(Duration::from_micros(50));
                st = match shared.cv.wait_timeout(st, wait) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                };
            }
        };
        let start = Instant::now();
        let predicted = estimate.predict(batch.items.len(), start);
        let mut live = Vec::with_capacity(batch.items.len());
        for q in batch.items {
            let Some(why) = hopeless(q.item.expires, start, predicted) else {
                live.push(q);
                continue;
            };
            let c = Completion {
                key: q.item.key,
                result: Err(why.into()),
                queue_wait: start.saturating_duration_since(q.enqueued),
                infer: Duration::ZERO,
                batch_size: 0,
                spent: q.item.input.device_only(),
            };
            let _ = q.item.reply.send(c);
        }
        let n = live.len();
        if n == 0 {
            if let Ok(mut st) = shared.state.lock() {
                st.batcher.complete(batch.id);
            }
            shared.cv.notify_all();
            continue;
        }
        // Test-only faults: a stall counts as inference time (the estimate
        // sees it, as it would a slow detector's), a failure replaces it.
        if fault != FaultAction::default() {
            shared.counters.record_fault(&fault, n);
        }
        if !fault.stall.is_zero() {
            std::thread::sleep(fault.stall);
        }
        let host: Option<Vec<(&[f32], Letterbox)>> = live
            .iter()
            .map(|q| q.item.input.host().map(|t| (t, q.item.letterbox)))
            .collect();
        let result = match host {
            _ if fault.fail => Err(DetectError::Injected("--fault-detector-fail-every")),
            Some(jobs) => match gather(&jobs, &mut input) {
                Some(lbs) => backend.detect(&input, n, &lbs),
                None => Err(DetectError::Runtime(format!(
                    "a tensor of this batch does not match its letterbox: {:?}",
                    jobs.iter()
                        .map(|(t, lb)| (t.len(), lb.dims()))
                        .collect::<Vec<_>>()
                ))),
            },
            None => {
                let inputs: Vec<&DetectInput> = live.iter().map(|q| &q.item.input).collect();
                let lbs: Vec<Letterbox> = live.iter().map(|q| q.item.letterbox).collect();
                backend.detect_inputs(&inputs, &lbs)
            }
        };
        let infer = start.elapsed();
        if result.is_ok() {
            estimate.observe(n, start, infer);
        }
        shared.counters.record_batch(
            n,
            infer,
            live.iter()
                .map(|q| start.saturating_duration_since(q.enqueued)),
        );
        if let Ok(mut st) = shared.state.lock() {
            st.batcher.complete(batch.id);
        }
        shared.cv.notify_all();
        let mut per_image: Vec<Result<Vec<Detection>, String>> = match result {
            Ok(v) if v.len() == n => v.into_iter().map(Ok).collect(),
            Ok(v) => vec![Err(format!("detector returned {} results for {n}", v.len())); n],
            Err(e) => vec![Err(e.to_string()); n],
        };
        for (q, r) in live.into_iter().zip(per_image.drain(..)) {
            let c = Completion {
                key: q.item.key,
                result: r,
                queue_wait: start.saturating_duration_since(q.enqueued),
                infer,
                batch_size: n,
                spent: q.item.input.device_only(),
            };
            // A stream that went away no longer needs its result.
            let _ = q.item.reply.send(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::LetterboxMode;

    /// A frame padded further by `gather` is that frame preprocessed at the
    /// larger shape, bit for bit.
    #[test]
    fn gather_pads_smaller_inputs_exactly() {
        use crate::detect::{preprocess_frame, preprocess_frame_as};
        use crate::frame::{Frame, PixelFormat};
        let (w, h, s) = (192, 108, 96);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let f = Frame::from_rgb(PixelFormat::I420, w, h, &rgb);
        let rect = Letterbox::rect(w, h, s);
        assert_eq!(rect.dims(), (64, 96));
        let mut a = vec![0.0; rect.len()];
        preprocess_frame_as(&f, LetterboxMode::Rect, s, &mut a);
        let mut sq = vec![0.0; 3 * s * s];
        let square = preprocess_frame(&f, s, &mut sq);
        let mut input = Vec::new();
        let lbs = gather(&[(&a, rect), (&sq, square)], &mut input).expect("gathered");
        assert_eq!(lbs, vec![square, square]);
        assert_eq!(input.len(), 2 * sq.len());
        assert_eq!(&input[..sq.len()], &sq[..]);
        assert_eq!(&input[sq.len()..], &sq[..]);
        // One shape: copied as is; a tensor that does not fit its letterbox: refused.
        let lbs = gather(&[(&a, rect), (&a, rect)], &mut input).expect("one shape");
        assert_eq!((lbs[0].dims(), input.len()), ((64, 96), 2 * a.len()));
        assert!(gather(&[(&a[1..], rect)], &mut input).is_none());
        assert!(gather(&[], &mut input).is_none());
    }

    #[test]
    fn estimate_is_per_image_and_follows_the_backend() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut e = InferEstimate::default();
        assert_eq!(e.predict(4, t), None);
        e.observe(0, t, ms(50));
        assert_eq!(e.predict(1, t), None);
        e.observe(2, t, ms(20));
        assert_eq!(e.predict(3, t + ms(20)), Some(ms(30)));
        // A slower backend moves it a fifth of the way per batch.
        e.observe(1, t + ms(20), ms(20));
        let p = e.predict(1, t + ms(40)).unwrap().as_secs_f64() * 1e3;
        assert!((p - 12.0).abs() < 1e-9, "{p}");
        let mut now = t + ms(40);
        for _ in 0..50 {
            e.observe(1, now, ms(20));
            now += ms(20);
        }
        let p = e.predict(1, now).unwrap().as_secs_f64() * 1e3;
        assert!((p - 20.0).abs() < 0.01, "{p}");
    }

    /// After a stall the estimate says every frame is hopeless, so nothing
    /// is inferred to correct it: once stale it predicts nothing, the next
    /// batch runs, and its time replaces the stall's.
    #[test]
    fn a_stale_estimate_lets_a_batch_run_and_is_replaced_by_it() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut e = InferEstimate::default();
        e.observe(1, t, ms(8));
        let mut now = t + ms(10);
        for _ in 0..5 {
            e.observe(1, now, ms(500));
            now += ms(500);
        }
        let after_stall = now;
        let p = e.predict(1, after_stall).unwrap();
        assert!(
            hopeless(after_stall + ms(250), after_stall, Some(p)).is_some(),
            "{p:?}: the stall makes the next frame look hopeless"
        );
        let later = after_stall + InferEstimate::STALE;
        assert_eq!(e.predict(1, later), None);
        assert_eq!(hopeless(later + ms(250), later, None), None);
        e.observe(1, later, ms(8));
        assert_eq!(e.predict(1, later + ms(8)), Some(ms(8)));
    }

    #[test]
    fn hopeless_frames_are_those_the_batch_would_finish_after() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            hopeless(t, t, None),
            Some("deadline passed before inference")
        );
        assert_eq!(hopeless(t + ms(5), t, None), None);
        assert_eq!(hopeless(t + ms(5), t, Some(ms(5))), None);
        assert_eq!(
            hopeless(t + ms(5), t, Some(ms(6))),
            Some("cannot be inferred before its deadline")
        );
        assert_eq!(hopeless(t + ms(250), t, Some(ms(40))), None);
    }
}
