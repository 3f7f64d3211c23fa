//! Criterion benchmarks of each pipeline stage alone (CPU build).
//!
//! `cargo bench --bench stages` measures everything (about 2-3 minutes on
//! 2 cores); `cargo bench --bench stages -- censor/` filters by name. Under
//! `cargo test --all-targets` criterion runs each benchmark once (no
//! `--bench` flag); the 1080p and detector cases are then skipped so the
//! test stays quick.
//!
//! Throughput is `Elements` = frames (or candidates/tracks/items where the
//! group says so), so criterion reports frames per second next to the time.
//! Frames are rendered by `livecensor::synth` (the constant-pan clip: the
//! astronaut photo over a background) when `models/photos` exists, else a
//! gradient pattern. The detector cases need `models/320n.onnx` and
//! `libonnxruntime.so` (`ORT_DYLIB_PATH` or next to the model); without them
//! they print a note and are skipped.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use livecensor::censor;
use livecensor::codec::{Decoder, Encoder, EncoderConfig};
use livecensor::detect::{
    self, Detector, DetectorConfig, Letterbox, LetterboxMode, ResizeFilter, OUTPUT_ROWS,
};
use livecensor::frame::{
    BBox, CensorMethod, Detection, Frame, Mask, MaskOrigin, MaskShape, PixelFormat,
};
use livecensor::pipeline::batcher::{Batcher, BatcherConfig};
use livecensor::synth::{default_photos_dir, Scenario, Synth, SynthConfig};
use livecensor::track::{Tracker, TrackerConfig};

/// `cargo bench` passes `--bench`; `cargo test` does not (criterion's test mode).
fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

const RESOLUTIONS: [(usize, usize); 2] = [(1280, 720), (1920, 1080)];

/// Resolutions measured in this mode (1080p only under `cargo bench`).
fn resolutions() -> &'static [(usize, usize)] {
    if bench_mode() {
        &RESOLUTIONS
    } else {
        &RESOLUTIONS[..1]
    }
}

fn fmt_name(f: PixelFormat) -> &'static str {
    match f {
        PixelFormat::I420 => "i420",
        PixelFormat::Nv12 => "nv12",
    }
}

/// `n` consecutive frames of the constant-pan clip (I420), or a moving
/// gradient when the photos are missing.
fn clip(width: usize, height: usize, n: usize) -> Vec<Frame> {
    let mut cfg = SynthConfig::new(default_photos_dir());
    cfg.width = width;
    cfg.height = height;
    cfg.frames = n;
    match Synth::new(Scenario::ConstantPan, cfg) {
        Ok(s) => (0..n).map(|i| s.frame(i).frame).collect(),
        Err(e) => {
            eprintln!("note: synth unavailable ({e}); benchmarking a gradient pattern");
            (0..n).map(|i| gradient(width, height, i)).collect()
        }
    }
}

fn gradient(width: usize, height: usize, t: usize) -> Frame {
    let mut f = Frame::new(PixelFormat::I420, width, height);
    for y in 0..height {
        for x in 0..width {
            f.data[y * width + x] = ((x + 2 * y + 3 * t) % 220 + 16) as u8;
        }
    }
    f
}

/// The first clip frame in `format`; rendered once per size.
fn frame(width: usize, height: usize, format: PixelFormat) -> Frame {
    static CACHE: Mutex<Vec<Frame>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let f = match cache
        .iter()
        .find(|f| (f.width, f.height) == (width, height))
    {
        Some(f) => f.clone(),
        None => {
            let f = clip(width, height, 1).remove(0);
            cache.push(f.clone());
            f
        }
    };
    if format == PixelFormat::I420 {
        f
    } else {
        f.converted(format)
    }
}

/// `n` masks of about 200x200 px at 720p (scaled with the height), spread
/// over the frame without overlapping.
fn masks(n: usize, width: usize, height: usize, shape: MaskShape) -> Vec<Mask> {
    let side = 200.0 * height as f32 / 720.0;
    let cols = 4;
    let (dx, dy) = (width as f32 / cols as f32, height as f32 / 2.0);
    (0..n)
        .map(|i| {
            let (c, r) = ((i % cols) as f32, ((i / cols) % 2) as f32);
            let (x0, y0) = (c * dx + 0.1 * dx, r * dy + 0.1 * dy);
            Mask {
                bbox: BBox::new(x0, y0, x0 + side, y0 + side),
                shape,
                origin: MaskOrigin::Detected,
                class: 1,
            }
        })
        .collect()
}

const METHODS: [(&str, CensorMethod); 3] = [
    ("blur", CensorMethod::Blur { strength: 0.25 }),
    ("pixelate", CensorMethod::Pixelate { block: 0 }),
    (
        "fill",
        CensorMethod::Fill {
            y: 16,
            u: 128,
            v: 128,
        },
    ),
];

fn censor_masks(c: &mut Criterion) {
    let mut g = c.benchmark_group("censor");
    g.throughput(Throughput::Elements(1));
    for &(w, h) in resolutions() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let base = frame(w, h, format);
            for (mname, method) in METHODS {
                for (sname, shape) in [("rect", MaskShape::Rect), ("ellipse", MaskShape::Ellipse)] {
                    for n in [4, 8] {
                        let ms = masks(n, w, h, shape);
                        let mut f = base.clone();
                        let id = BenchmarkId::new(
                            format!("{mname}-{sname}-{n}masks"),
                            format!("{w}x{h}-{}", fmt_name(format)),
                        );
                        // In place on the same frame: the cost of every method
                        // does not depend on the pixel values.
                        g.bench_function(id, |b| {
                            b.iter(|| censor::apply(black_box(&mut f), &ms, &method))
                        });
                    }
                }
            }
        }
    }
    g.finish();

    let mut g = c.benchmark_group("censor_full");
    g.throughput(Throughput::Elements(1));
    for &(w, h) in resolutions() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let mut f = frame(w, h, format);
            for (mname, method) in METHODS {
                let id = BenchmarkId::new(mname, format!("{w}x{h}-{}", fmt_name(format)));
                g.bench_function(id, |b| {
                    b.iter(|| censor::censor_full(black_box(&mut f), &method))
                });
            }
            // The full-resolution blur the decimated one replaces (what
            // the CUDA plan does for a full-frame mask).
            let (_, blur) = METHODS[0];
            let id = BenchmarkId::new("blur-exact", format!("{w}x{h}-{}", fmt_name(format)));
            g.bench_function(id, |b| {
                b.iter(|| censor::censor_full_exact(black_box(&mut f), &blur))
            });
        }
    }
    g.finish();
}

fn preprocess(c: &mut Criterion) {
    let mut g = c.benchmark_group("preprocess");
    g.throughput(Throughput::Elements(1));
    let size = 320;
    let mut out = vec![0f32; 3 * size * size];
    for &(w, h) in resolutions() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let f = frame(w, h, format);
            let id = BenchmarkId::new(format!("to{size}"), format!("{w}x{h}-{}", fmt_name(format)));
            g.bench_function(id, |b| {
                b.iter(|| detect::preprocess_frame(black_box(&f), size, &mut out))
            });
            // The rectangular letterbox (the default): 320x192 for 16:9.
            let id = BenchmarkId::new(
                format!("rect{size}"),
                format!("{w}x{h}-{}", fmt_name(format)),
            );
            g.bench_function(id, |b| {
                b.iter(|| {
                    detect::preprocess_frame_as(black_box(&f), LetterboxMode::Rect, size, &mut out)
                })
            });
            // The pipeline's default: rect letterbox, antialiased (triangle).
            let id = BenchmarkId::new(
                format!("rect{size}-triangle"),
                format!("{w}x{h}-{}", fmt_name(format)),
            );
            g.bench_function(id, |b| {
                b.iter(|| {
                    detect::preprocess_frame_with(
                        black_box(&f),
                        LetterboxMode::Rect,
                        ResizeFilter::Triangle,
                        size,
                        &mut out,
                    )
                })
            });
        }
    }
    g.finish();
}

/// Random candidates in a 1280x720 frame: boxes 20-200 px, scores 0.2-1,
/// clustered around 20 centres so NMS has overlaps to suppress.
fn candidates(n: usize, rng: &mut SmallRng) -> Vec<Detection> {
    let centres: Vec<(f32, f32)> = (0..20)
        .map(|_| {
            (
                rng.random_range(100.0..1180.0),
                rng.random_range(100.0..620.0),
            )
        })
        .collect();
    (0..n)
        .map(|i| {
            let (cx, cy) = centres[i % centres.len()];
            let (cx, cy) = (
                cx + rng.random_range(-30.0..30.0),
                cy + rng.random_range(-30.0..30.0),
            );
            let (hw, hh) = (rng.random_range(10.0..100.0), rng.random_range(10.0..100.0));
            Detection {
                bbox: BBox::new(cx - hw, cy - hh, cx + hw, cy + hh).clipped(1280, 720),
                class: rng.random_range(0..18u8),
                score: rng.random_range(0.2..1.0),
            }
        })
        .collect()
}

/// A `[22, anchors]` output. `dense`: every class score uniform in [0, 1)
/// (about 70% of anchors pass 0.2, the worst case); otherwise scores stay
/// below 0.15 except one in 2000 raised by 0.5 (about 1% of anchors pass,
/// closer to a real frame).
fn raw_output(anchors: usize, dense: bool, rng: &mut SmallRng) -> Vec<f32> {
    let mut out = vec![0f32; OUTPUT_ROWS * anchors];
    for (r, row) in out.chunks_exact_mut(anchors).enumerate() {
        for v in row {
            *v = match r {
                0 | 1 => rng.random_range(0.0..320.0),
                2 | 3 => rng.random_range(4.0..160.0),
                _ if dense => rng.random::<f32>(),
                _ => {
                    let u = rng.random::<f32>();
                    u * u * u * 0.15 + if rng.random_ratio(1, 2000) { 0.5 } else { 0.0 }
                }
            };
        }
    }
    out
}

fn postprocess(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut g = c.benchmark_group("nms");
    for n in [100usize, 1000] {
        let cands = candidates(n, &mut rng);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &cands, |b, cands| {
            b.iter_batched(
                || cands.clone(),
                |d| detect::nms(d, 0.45, 0.25),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    let anchors = 2100;
    let lb = Letterbox::new(1280, 720, 320);
    for (name, dense) in [("dense", true), ("sparse", false)] {
        let out = raw_output(anchors, dense, &mut rng);
        let kept = detect::decode(&out, anchors, &lb, 0.2).len();
        eprintln!("decode/{name}: {kept} of {anchors} anchors pass 0.2");
        g.bench_function(BenchmarkId::new(name, format!("22x{anchors}")), |b| {
            b.iter(|| detect::decode(black_box(&out), anchors, &lb, 0.2))
        });
        g.bench_function(
            BenchmarkId::new(format!("{name}+nms"), format!("22x{anchors}")),
            |b| {
                b.iter(|| {
                    let d = detect::decode(black_box(&out), anchors, &lb, 0.2);
                    detect::nms(d, 0.45, 0.25)
                })
            },
        );
    }
    g.finish();
}

/// `n` objects on a grid over 1920x1080, each swaying on its own phase.
fn objects_at(n: usize, frame: u64) -> Vec<Detection> {
    let cols = (n as f32).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let (dx, dy) = (1920.0 / cols as f32, 1080.0 / rows as f32);
    (0..n)
        .map(|i| {
            let (c, r) = ((i % cols) as f32, (i / cols) as f32);
            let t = frame as f32 * 0.1 + i as f32;
            let (x0, y0) = (
                c * dx + 0.2 * dx + 0.1 * dx * t.sin(),
                r * dy + 0.2 * dy + 0.1 * dy * t.cos(),
            );
            Detection {
                bbox: BBox::new(x0, y0, x0 + 0.5 * dx, y0 + 0.5 * dy),
                class: 1,
                score: 0.8,
            }
        })
        .collect()
}

fn tracker(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker");
    g.throughput(Throughput::Elements(1));
    for n in [10usize, 100] {
        // 64 precomputed frames of detections, cycled; the tracks stay
        // matched (confirmed) the whole time.
        let frames: Vec<Vec<Detection>> = (0..64).map(|f| objects_at(n, f)).collect();
        let mut t = Tracker::new(TrackerConfig::default());
        let mut fno = 0u64;
        for d in &frames {
            t.update(fno, d);
            fno += 1;
        }
        let live = t.predict(fno).len();
        assert_eq!(live, n, "every object should be tracked");
        g.bench_function(
            BenchmarkId::new("update+predict", format!("{n}tracks")),
            |b| {
                b.iter(|| {
                    let d = &frames[(fno % 64) as usize];
                    t.update(fno, d);
                    let p = t.predict(fno + 1);
                    fno += 1;
                    p
                })
            },
        );
    }
    g.finish();
}

fn batcher(c: &mut Criterion) {
    let mut g = c.benchmark_group("batcher");
    for (batch, contexts) in [(1usize, 1usize), (8, 1), (8, 2)] {
        let mut bt: Batcher<u64> = Batcher::new(BatcherConfig {
            max_batch: batch,
            max_wait: Duration::ZERO,
            capacity: 64,
            contexts,
            max_per_stream: 0,
        });
        let now = Instant::now();
        let mut item = 0u64;
        g.throughput(Throughput::Elements(batch as u64));
        // One cycle: push `batch` frames, dispatch every ready batch, complete them.
        let id = BenchmarkId::new("push+poll+complete", format!("batch{batch}-ctx{contexts}"));
        g.bench_function(id, |b| {
            b.iter(|| {
                for _ in 0..batch {
                    bt.push(now, item).expect("queue has room");
                    item += 1;
                }
                while let Some(batch) = bt.poll_batch(now) {
                    black_box(&batch.items);
                    bt.complete(batch.id);
                }
            })
        });
    }
    g.finish();
}

fn codec(c: &mut Criterion) {
    let (w, h) = (1280, 720);
    // 60 frames = one keyframe interval at 30 fps, so a cycle has the real
    // I/P mix (1 IDR + 59 P).
    let n = if bench_mode() { 60 } else { 4 };
    let frames = clip(w, h, n);
    let mut g = c.benchmark_group("h264");
    g.throughput(Throughput::Elements(1));

    let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).expect("encoder");
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("encode", format!("{w}x{h}")), |b| {
        b.iter(|| {
            let au = enc.encode(&frames[i % n], i % n == 0).expect("encode");
            i += 1;
            au
        })
    });

    let mut enc = Encoder::new(EncoderConfig::new(w, h, 30.0)).expect("encoder");
    let aus: Vec<Vec<u8>> = frames
        .iter()
        .enumerate()
        .map(|(k, f)| enc.encode(f, k == 0).expect("encode"))
        .collect();
    let bytes: usize = aus.iter().map(Vec::len).sum();
    eprintln!(
        "h264: {n} frames of {w}x{h} encode to {} kB ({:.2} Mbit/s at 30 fps)",
        bytes / 1000,
        bytes as f64 * 8.0 * 30.0 / n as f64 / 1e6
    );
    let mut dec = Decoder::new().expect("decoder");
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("decode", format!("{w}x{h}")), |b| {
        b.iter(|| {
            let f = dec.decode(&aus[i % n]).expect("decode");
            i += 1;
            f
        })
    });
    g.finish();
}

fn detector(c: &mut Criterion) {
    if !bench_mode() {
        eprintln!("note: detector benchmarks run only under `cargo bench`");
        return;
    }
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/320n.onnx");
    let base = DetectorConfig {
        model,
        ..DetectorConfig::default()
    };
    let library = base.library_path();
    if !base.model.is_file() || !library.is_file() {
        eprintln!(
            "note: skipping detector benchmarks: need {} and {} (run scripts/setup.sh)",
            base.model.display(),
            library.display()
        );
        return;
    }
    let size = base.input_size;
    let f = frame(1280, 720, PixelFormat::I420);
    let mut input = vec![0f32; 3 * size * size];
    let lb = detect::preprocess_frame(&f, size, &mut input);
    let rect = Letterbox::rect(f.width, f.height, size);
    let mut rect_input = vec![0f32; rect.len()];
    detect::preprocess_frame_as(&f, LetterboxMode::Rect, size, &mut rect_input);
    let mut g = c.benchmark_group("detector");
    g.throughput(Throughput::Elements(1));
    for threads in [1usize, 2] {
        let mut d = match Detector::new(&DetectorConfig {
            threads,
            ..base.clone()
        }) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("note: skipping detector benchmarks: {e}");
                return;
            }
        };
        // Inference + decode + NMS on a preprocessed 720p frame (batch 1).
        let id = BenchmarkId::new("320n-batch1", format!("threads{threads}"));
        g.bench_function(id, |b| {
            b.iter(|| d.detect(black_box(&input), 1, &[lb]).expect("detect"))
        });
        // The same frame through the rectangular letterbox (320x192).
        let id = BenchmarkId::new("320n-rect-batch1", format!("threads{threads}"));
        g.bench_function(id, |b| {
            b.iter(|| {
                d.detect(black_box(&rect_input), 1, &[rect])
                    .expect("detect")
            })
        });
        // The same plus preprocessing, as the detect lane runs it per frame.
        let id = BenchmarkId::new("320n-frame720p", format!("threads{threads}"));
        g.bench_function(id, |b| {
            b.iter(|| d.detect_frame(black_box(&f)).expect("detect"))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700))
        .nresamples(2000)
        .without_plots()
}

criterion_group! {
    name = stages;
    config = config();
    targets = censor_masks, preprocess, postprocess, tracker, batcher, codec, detector
}
criterion_main!(stages);
