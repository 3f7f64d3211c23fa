//! `livecensor engine` as a user meets it on a machine without TensorRT (CI):
//! `build` fails with one clear line and a non-zero exit, never a panic;
//! `info` needs no TensorRT and catches a truncated plan.

use std::path::Path;
use std::process::{Command, Output};

use livecensor::detect::tensorrt::{sidecar_path, write_plan, PlanMeta, TrtVersion, PLAN_FORMAT};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_livecensor"));
    // The one-line promise is about what users see without these.
    c.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tensorrt_here() -> bool {
    let found = livecensor::detect::tensorrt::find_nvinfer().is_ok();
    if found {
        eprintln!("skipped: this machine has libnvinfer");
    }
    found
}

/// A failure a user can read: not a panic, non-zero exit, one line.
fn assert_clear_failure(o: &Output) -> String {
    let e = stderr(o);
    assert!(!o.status.success(), "{e}");
    assert_ne!(o.status.code(), Some(101), "panicked: {e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    e
}

#[test]
fn engine_build_without_tensorrt_says_why_in_one_line() {
    if tensorrt_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("m.onnx");
    std::fs::write(&onnx, b"not a model").unwrap();
    let plan = dir.path().join("m.plan");
    let o = bin()
        .args([
            "engine",
            "build",
            "--max-batch",
            "8",
            "--contexts",
            "2",
            "--onnx",
        ])
        .arg(&onnx)
        .arg("-o")
        .arg(&plan)
        .output()
        .unwrap();
    let e = assert_clear_failure(&o);
    if cfg!(feature = "tensorrt") {
        // The shim (CI fetches the headers) or a stub naming the headers.
        assert!(
            e.contains("TensorRT: library not found") && e.contains("libnvinfer.so")
                || e.contains("without its shim"),
            "{e}"
        );
    } else {
        assert!(
            e.contains("TensorRT backend not built") && e.contains("--features tensorrt"),
            "{e}"
        );
    }
    assert!(!plan.exists() && !sidecar_path(&plan).exists());
}

#[test]
fn engine_build_rejects_bad_arguments_before_loading_anything() {
    let o = bin().args(["engine", "build", "--int8"]).output().unwrap();
    // clap: --int8 requires --calib.
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--calib"), "{}", stderr(&o));
    if tensorrt_here() || !cfg!(feature = "tensorrt") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("m.onnx");
    std::fs::write(&onnx, b"x").unwrap();
    let o = bin()
        .args(["engine", "build", "--contexts", "0", "--onnx"])
        .arg(&onnx)
        .output()
        .unwrap();
    let e = assert_clear_failure(&o);
    assert!(
        e.contains("--contexts 0 must be 1..=16") || e.contains("without its shim"),
        "{e}"
    );
}

#[test]
fn engine_info_checks_a_plan_without_tensorrt() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("320n.plan");
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let meta = PlanMeta {
        format: PLAN_FORMAT,
        tensorrt: TrtVersion::from_encoded(110400),
        plan_bytes: 0,
        plan_sha256: String::new(),
        onnx: "320n.onnx".into(),
        onnx_sha256: "c15d8273adad2d0a92f0".into(),
        input: "images".into(),
        input_size: 320,
        max_batch: 8,
        profiles: 2,
        precision: "fp32".into(),
        gpu: "NVIDIA H100 80GB HBM3".into(),
    };
    write_plan(&plan, &bytes, meta).unwrap();
    let o = bin().args(["engine", "info"]).arg(&plan).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("4096 bytes, sha256 ok") && out.contains("TensorRT 11.4.0 on NVIDIA H100"),
        "{out}"
    );
    assert!(out.contains("[1..=8, 3, 320, 320], 2 profile(s)"), "{out}");

    std::fs::write(&plan, &bytes[..1000]).unwrap();
    let o = bin().args(["engine", "info"]).arg(&plan).output().unwrap();
    let e = assert_clear_failure(&o);
    assert!(
        e.contains("320n.plan") && e.contains("1000 bytes, its sidecar says 4096"),
        "{e}"
    );

    let o = bin()
        .args(["engine", "info"])
        .arg(Path::new(dir.path()).join("absent.plan"))
        .output()
        .unwrap();
    let e = assert_clear_failure(&o);
    assert!(e.contains("absent.plan: not found"), "{e}");
}

#[test]
fn detector_flag_takes_only_onnx_or_tensorrt() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["censor", "--detector", "tpu", "-i"])
        .arg(dir.path().join("in.mp4"))
        .arg("-o")
        .arg(dir.path().join("out.mp4"))
        .output()
        .unwrap();
    let e = assert_clear_failure(&o);
    assert!(
        e.contains("--detector") && e.contains("onnx or tensorrt"),
        "{e}"
    );
}

/// `censor` and `bench` build their detectors through `detect::backends`: a
/// TensorRT detector that cannot run stops the job with one line and writes
/// no output (never a silent fallback, never a frame out unchecked).
#[test]
fn tensorrt_detector_that_cannot_run_stops_the_job_and_writes_nothing() {
    if tensorrt_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.y4m");
    let o = bin()
        .args(["synth", "--scenario", "static", "--frames", "4"])
        .args(["--width", "320", "--height", "180", "--output"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let output = dir.path().join("out.mp4");
    let plan = dir.path().join("absent.plan");
    let o = bin()
        .args(["censor", "--detector", "tensorrt", "--engine"])
        .arg(&plan)
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap();
    let e = assert_clear_failure(&o);
    assert!(
        e.to_lowercase().contains("tensorrt") || e.contains("absent.plan"),
        "{e}"
    );
    assert!(!output.exists(), "an output was written: {e}");
    let o = bin()
        .args([
            "bench",
            "--frames",
            "2",
            "--no-audit",
            "--detector",
            "tensorrt",
            "--engine",
        ])
        .arg(&plan)
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(
        e.to_lowercase().contains("tensorrt") || e.contains("absent.plan"),
        "{e}"
    );
}
