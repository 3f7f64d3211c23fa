//! The bench harness end to end on the real pipeline: one small unpaced
//! strict-mode stream (decode, detector service, stream pipeline, encode,
//! audit). Needs the model (`scripts/setup.sh`) and ORT_DYLIB_PATH, which
//! `scripts/test.sh` sets.

use livecensor::bench::{self, BenchOptions};
use livecensor::config::Config;
use livecensor::pipeline::run::start_service;
use livecensor::synth::Scenario;
use std::path::Path;

#[test]
fn one_small_strict_stream_drops_nothing_and_leaks_nothing() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut cfg = Config::default();
    cfg.detector.model = models.join("320n.onnx");
    cfg.scheduler.mode = "strict".into();
    // A loaded CI machine must not fail frames closed on time alone.
    cfg.scheduler.deadline_ms = 10_000;
    let cfg = bench::bench_config(cfg).unwrap();
    let o = BenchOptions {
        streams: 1,
        frames: 20,
        width: 320,
        height: 240,
        fps: 30.0,
        scenarios: vec![Scenario::ConstantPan],
        paced: false,
        live: false,
        window: 0,
        // Unpaced frames queue up behind each other; latency is not judged.
        latency_budget_ms: 10_000.0,
        audit: true,
        photos: models.join("photos"),
    };
    let clips = bench::prepare_clips(&o, 1).unwrap();
    let svc = start_service(&cfg).unwrap();
    let (r, runs) = bench::run(&cfg, &o, &clips, &svc).unwrap();
    let table = r.table();
    assert_eq!(r.frames_in, 20, "{table}");
    assert_eq!(r.frames_out, 20, "{table}");
    assert_eq!(r.dropped, 0, "{table}");
    assert_eq!(r.verified, 20, "{table}");
    assert!(r.audited, "{table}");
    assert_eq!(r.leaked_regions, 0, "{table}");
    assert!(r.fps_total > 0.0, "{table}");
    assert!(r.latency_ms.max > 0.0, "{table}");
    let idx: Vec<u64> = runs[0].samples.iter().map(|s| s.index).collect();
    assert_eq!(idx, (0..20).collect::<Vec<u64>>(), "frames out of order");
    assert!(runs[0]
        .samples
        .iter()
        .all(|s| s.score.audited && !s.au.is_empty()));
    assert_eq!(r.scenarios.len(), 1);
    // The plot renders from the same data.
    let svg = bench::plot::render_svg(&r, &runs).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("latency"),
        "{}",
        &svg[..80]
    );
}
