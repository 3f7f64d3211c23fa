//! Warm-up before the first frame: a backend's first run of an input shape
//! plans its memory, which would otherwise land on a live stream's first
//! frames. Each context runs the shapes live video uses at start.

use super::worker::InferEstimate;
use crate::detect::{DetectBackend, Letterbox, LetterboxMode};
use std::time::{Duration, Instant};

/// The input shapes warmed up at start, each with the largest batch run:
/// the service's main shape (square, or for a rectangular letterbox the
/// landscape 16:9 one, what live video is) at every batch size; the other
/// 16:9 shapes and a second look's crop once. Other shapes plan their
/// memory on their first batch.
fn warm_shapes(mode: LetterboxMode, size: usize, max_batch: usize) -> Vec<(Letterbox, usize)> {
    let square = Letterbox::new(size, size, size);
    if mode == LetterboxMode::Square {
        return vec![(square, max_batch)];
    }
    let mut shapes = vec![(Letterbox::rect(1280, 720, size), max_batch)];
    // Half the side: a second look's crop (detect::ZoomConfig::input).
    let half = (size / 2).div_ceil(crate::detect::STRIDE) * crate::detect::STRIDE;
    let crop = Letterbox::rect(half, half, half);
    for lb in [square, Letterbox::rect(720, 1280, size), crop] {
        if !shapes.iter().any(|(s, _)| s.dims() == lb.dims()) {
            shapes.push((lb, 1));
        }
    }
    shapes
}

/// Timed runs of the main shape after its memory is planned: the fastest
/// gives the per-image time `worker` sizes its capacity from.
const MEASURE_RUNS: usize = 3;

/// Runs every warm shape once per batch size up to its largest on a blank
/// input, then times the main shape at batch 1 and returns its per-image
/// time. A failure here is not fatal: the same error comes back on the
/// first job.
pub(super) fn warm_up(
    backend: &mut dyn DetectBackend,
    max_batch: usize,
    input: &mut Vec<f32>,
    estimate: &mut InferEstimate,
) -> Option<Duration> {
    let shapes = warm_shapes(backend.letterbox_mode(), backend.input_size(), max_batch);
    let main = shapes.first().map(|(lb, _)| *lb);
    for (lb, most) in shapes {
        for n in 1..=most {
            input.clear();
            input.resize(n * lb.len(), 0.5);
            let t0 = Instant::now();
            if let Err(e) = backend.detect(input, n, &vec![lb; n]) {
                tracing::warn!("detector warm-up at batch {n}: {e}");
                return None;
            }
            // The main shape's last runs seed the estimate (first runs of a
            // shape plan memory and are slow).
            if n == most && n > 1 {
                estimate.observe(n, t0, t0.elapsed());
            }
        }
    }
    let lb = main?;
    input.clear();
    input.resize(lb.len(), 0.5);
    (0..MEASURE_RUNS)
        .filter_map(|_| {
            let t0 = Instant::now();
            backend.detect(input, 1, &[lb]).ok().map(|_| t0.elapsed())
        })
        .min()
}
