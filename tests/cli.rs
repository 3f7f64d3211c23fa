//! The `livecensor` binary as a user meets it: a real clip censored and
//! audited with the real model, and bad input answered with clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_livecensor"));
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        c.env("ORT_DYLIB_PATH", models.join("libonnxruntime.so"));
    }
    c
}

/// `livecensor ARGS --input INPUT --output OUTPUT`.
fn on_files(args: &[&str], input: &Path, output: &Path) -> Output {
    bin()
        .args(args)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .output()
        .unwrap()
}

fn models_ready() -> bool {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let ok = m.join("320n.onnx").exists() && m.join("photos/astronaut.png").exists();
    if !ok {
        eprintln!("skipped: run `bash scripts/setup.sh` first");
    }
    ok
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn synth(dir: &Path, name: &str, scenario: &str) -> PathBuf {
    let p = dir.join(name);
    let o = bin()
        .args(["synth", "--scenario", scenario, "--frames", "24"])
        .args(["--width", "640", "--height", "360", "--output"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    p
}

#[test]
fn censor_then_audit_a_real_clip_in_every_container() {
    if !models_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (inp, out) in [
        ("in.mp4", "out.mp4"),
        ("in.h264", "out.h264"),
        ("in.y4m", "out.y4m"),
    ] {
        let input = synth(dir.path(), inp, "constant-pan");
        let output = dir.path().join(out);
        let o = on_files(
            &["censor", "--classes", "FACE_FEMALE,FACE_MALE"],
            &input,
            &output,
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("censored 24 frames"), "{}", text(&o));
        let side = std::fs::read_to_string(format!("{}.censor.jsonl", output.display())).unwrap();
        // The header, then one record per frame.
        assert_eq!(side.lines().count(), 25);
        assert!(side.starts_with("{\"header\":"), "{side}");
        assert!(
            side.contains("\"detected\""),
            "no detection masked in {inp}"
        );
        let o = on_files(
            &["audit", "--classes", "FACE_FEMALE,FACE_MALE"],
            &input,
            &output,
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("0 leaked frames"), "{}", text(&o));
    }
}

/// `censor --mode predictive` on a file: the detector sees every 3rd frame
/// and each frame waits for the detections before it (its own too), so
/// inference is reported and the face is masked on every frame from the
/// first detection on (before, every frame left before any answer came).
#[test]
fn predictive_censor_of_a_file_waits_for_the_detector() {
    if !models_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    let o = bin()
        .args(["synth", "--scenario", "constant-pan", "--frames", "36"])
        .args(["--width", "640", "--height", "360", "--output"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let output = dir.path().join("out.mp4");
    let o = on_files(
        &[
            "censor",
            "--mode",
            "predictive",
            "--classes",
            "FACE_FEMALE,FACE_MALE",
        ],
        &input,
        &output,
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("censored 36 frames") && t.contains("12 verified, 24 predicted, 0 fail-closed"),
        "{t}"
    );
    let infer: f64 = t
        .split("infer ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(infer > 0.0, "no inference time reported: {t}");
    let side = livecensor::pipeline::sidecar::read_sidecar(
        &livecensor::pipeline::sidecar::sidecar_path(&output),
    )
    .unwrap();
    let truth = std::fs::read_to_string(format!("{}.truth.jsonl", input.display())).unwrap();
    let side = side.records;
    assert_eq!(side.len(), 36);
    let first = side
        .iter()
        .position(|r| !r.detections.is_empty())
        .expect("the face is never detected");
    assert!(first <= 3, "first detection on frame {first}");
    for (r, line) in side.iter().zip(truth.lines()).skip(first) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for face in v["truth"].as_array().unwrap() {
            let b: Vec<f32> = serde_json::from_value(face["bbox"].clone()).unwrap();
            let bbox = livecensor::frame::BBox::new(b[0], b[1], b[2], b[3]);
            let c = livecensor::audit::coverage(&bbox, &r.masks);
            assert!(c >= 0.95, "frame {}: face {c:.2} covered: {r:?}", r.frame);
        }
    }
}

#[test]
fn audit_catches_an_uncensored_output() {
    if !models_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = synth(dir.path(), "in.y4m", "static");
    let output = dir.path().join("out.y4m");
    let o = on_files(&["censor", "--classes", "FACE_FEMALE"], &input, &output);
    assert!(o.status.success(), "{}", text(&o));
    // Swap the censored pixels for the raw ones, keep the sidecar: the pixel check must fire.
    std::fs::copy(&input, &output).unwrap();
    let o = on_files(&["audit", "--classes", "FACE_FEMALE"], &input, &output);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("LEAK frame 0"), "{}", text(&o));
}

fn sidecar_of(output: &Path) -> PathBuf {
    PathBuf::from(format!("{}.censor.jsonl", output.display()))
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `synth` writes the ground truth beside the clip, `censor` the policy
/// into the sidecar; `audit` with no flags judges by both, and fails,
/// naming the ground truth, on an output whose policy did not hide the face.
#[test]
fn audit_judges_ground_truth_by_the_sidecar_policy() {
    if !models_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = synth(dir.path(), "in.mp4", "constant-pan");
    let output = dir.path().join("out.mp4");
    let o = on_files(
        &["censor", "--classes", "FACE_FEMALE,FACE_MALE"],
        &input,
        &output,
    );
    assert!(o.status.success(), "{}", text(&o));
    // The moderation events beside the sidecar: the face in view all along
    // is one exposure, debounced, between the session's start and end.
    let events = std::fs::read_to_string(dir.path().join("out.mp4.events.jsonl")).unwrap();
    let kinds: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("\"session_started\""),
        "{events}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("\"session_ended\""),
        "{events}"
    );
    let starts = kinds
        .iter()
        .filter(|k| k.contains("exposure_started"))
        .count();
    let ends = kinds
        .iter()
        .filter(|k| k.contains("exposure_ended"))
        .count();
    assert!(starts >= 1 && starts == ends, "{events}");
    assert!(
        starts <= 3,
        "one exposure per face, not one per frame: {events}"
    );
    let json = dir.path().join("report.json");
    let o = bin()
        .args(["audit", "--json"])
        .arg(&json)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("policy: sidecar header (version 2, mode strict)"),
        "{t}"
    );
    assert!(t.contains("24 faces judged, 0 left visible"), "{t}");
    assert!(t.contains("audit passed"), "{t}");
    let r = report(&json);
    assert_eq!(r["policy_from_sidecar"], true);
    assert_eq!(
        r["policy"]["classes"],
        serde_json::json!(["FACE_FEMALE", "FACE_MALE"])
    );
    assert_eq!(r["truth"]["faces"], 24);
    assert_eq!(r["truth"]["left_visible"], serde_json::json!([]));
    assert_eq!(r["possible_misses"], serde_json::json!([]));
    assert_eq!(
        r["miss_threshold"].as_f64().map(|v| (v * 100.0).round()),
        Some(10.0)
    );
    assert!(r["regions"].as_u64().unwrap() > 0, "{r}");

    // The censor ran with a policy that does not censor faces: the detector
    // passes agree with that policy, the ground truth does not.
    let wrong = dir.path().join("wrong.mp4");
    let o = on_files(
        &["censor", "--classes", "FEMALE_BREAST_EXPOSED"],
        &input,
        &wrong,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = bin()
        .args(["audit", "--json"])
        .arg(&json)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&wrong)
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("TRUTH LEFT VISIBLE frame 0: face 0"), "{t}");
    assert!(t.contains("audit FAILED: ground truth left visible"), "{t}");
    let r = report(&json);
    assert_eq!(
        r["policy"]["classes"],
        serde_json::json!(["FEMALE_BREAST_EXPOSED"])
    );
    assert_eq!(
        r["truth"]["left_visible_frames"].as_array().unwrap().len(),
        24
    );
    // Flags override the header: judged as a face censor, the detector
    // passes see the faces too, on the input and on the output.
    let o = on_files(
        &["audit", "--classes", "FACE_FEMALE,FACE_MALE"],
        &input,
        &wrong,
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("overridden by --classes"), "{t}");
    assert!(
        t.contains("LEAK frame 0") && t.contains("POSSIBLE MISS frame 0"),
        "{t}"
    );

    // --truth elsewhere; a malformed one is an error naming it.
    let elsewhere = dir.path().join("faces.jsonl");
    std::fs::copy(format!("{}.truth.jsonl", input.display()), &elsewhere).unwrap();
    std::fs::remove_file(format!("{}.truth.jsonl", input.display())).unwrap();
    let o = on_files(&["audit"], &input, &output);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ground truth: none"), "{}", text(&o));
    let o = bin()
        .args(["audit", "--truth"])
        .arg(&elsewhere)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("faces.jsonl): 24 faces judged, 24 left visible"),
        "{}",
        text(&o)
    );
    std::fs::write(&elsewhere, "{\"frame\":0,\"truth\":[{\"bbox\":[1,2]}]}\n").unwrap();
    let o = bin()
        .args(["audit", "--truth"])
        .arg(&elsewhere)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success() && !t.contains("panicked"), "{t}");
    assert!(t.contains("faces.jsonl: line 1:"), "{t}");
}

/// Sidecar records are matched by their frame index: reordered records
/// pass, a missing one fails; a sidecar without a header (older
/// livecensor) still loads, judged by the flags with a warning.
#[test]
fn audit_matches_sidecar_records_by_frame_and_reads_old_sidecars() {
    if !models_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = synth(dir.path(), "in.y4m", "static");
    let output = dir.path().join("out.y4m");
    let o = on_files(
        &["censor", "--classes", "FACE_FEMALE,FACE_MALE"],
        &input,
        &output,
    );
    assert!(o.status.success(), "{}", text(&o));
    let side = std::fs::read_to_string(sidecar_of(&output)).unwrap();
    let mut lines: Vec<&str> = side.lines().collect();
    let header = lines.remove(0);
    // Records in reverse order, the header still first.
    let reversed: Vec<&str> = std::iter::once(header)
        .chain(lines.iter().rev().copied())
        .collect();
    std::fs::write(sidecar_of(&output), reversed.join("\n")).unwrap();
    let o = on_files(&["audit"], &input, &output);
    assert!(o.status.success(), "{}", text(&o));
    // Frame 3's record gone, frame 5's twice.
    let mut broken: Vec<&str> = vec![header];
    for (i, l) in lines.iter().enumerate() {
        match i {
            3 => {}
            5 => broken.extend([*l, *l]),
            _ => broken.push(l),
        }
    }
    std::fs::write(sidecar_of(&output), broken.join("\n")).unwrap();
    let o = on_files(&["audit"], &input, &output);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("MISMATCH: sidecar has no record for frame 3"),
        "{t}"
    );
    assert!(
        t.contains("MISMATCH: sidecar has more than one record for frame 5"),
        "{t}"
    );
    // An old sidecar: records only.
    std::fs::write(sidecar_of(&output), lines.join("\n")).unwrap();
    let o = on_files(
        &["audit", "--classes", "FACE_FEMALE,FACE_MALE"],
        &input,
        &output,
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("warning:") && t.contains("has no header"), "{t}");
    assert!(t.contains("policy: configuration and flags"), "{t}");
}

/// A damaged output frame is a failure of its own, and the audit goes on.
#[test]
fn audit_reports_an_undecodable_output_frame_and_goes_on() {
    if !models_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = synth(dir.path(), "in.h264", "static");
    let output = dir.path().join("out.h264");
    let o = on_files(
        &["censor", "--classes", "FACE_FEMALE,FACE_MALE"],
        &input,
        &output,
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut bytes = std::fs::read(&output).unwrap();
    let starts: Vec<usize> = (0..bytes.len().saturating_sub(4))
        .filter(|&i| bytes[i..i + 3] == [0, 0, 1] && matches!(bytes[i + 3] & 0x1f, 1 | 5))
        .collect();
    assert!(starts.len() >= 20, "{} slices", starts.len());
    let mid = starts.len() / 2;
    let at = starts[mid] + 5;
    let end = (at + 200).min(starts[mid + 1] - 1);
    for b in &mut bytes[at..end] {
        *b ^= 0xA5;
    }
    std::fs::write(&output, &bytes).unwrap();
    let json = dir.path().join("report.json");
    let o = bin()
        .args(["audit", "--json"])
        .arg(&json)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("UNDECODABLE output frame {mid}")),
        "{t}"
    );
    assert!(t.contains("audit: 24 frames"), "{t}");
    assert!(t.contains("audit FAILED: undecodable output frames"), "{t}");
    let r = report(&json);
    assert_eq!(r["output_frames"], 24);
    assert_eq!(r["undecodable_frames"][0]["frame"], mid);
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let empty = d.join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let random = d.join("random.h264");
    std::fs::write(
        &random,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let text_file = d.join("notes.txt");
    std::fs::write(&text_file, b"hello").unwrap();
    let missing = d.join("missing.mp4");
    for (input, needle) in [
        (&empty, "empty.mp4"),
        (&random, "random.h264"),
        (&text_file, "notes.txt"),
        (&missing, "missing.mp4"),
    ] {
        let o = bin()
            .args(["censor", "--input"])
            .arg(input)
            .arg("--output")
            .arg(d.join("o.mp4"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        let t = text(&o);
        assert!(t.contains(needle), "{t}");
        assert!(!t.contains("panicked"), "{t}");
    }
    let policy = d.join("p.toml");
    std::fs::write(&policy, "threshold = 7\n").unwrap();
    let o = bin()
        .args([
            "censor", "--input", "x.mp4", "--output", "y.mp4", "--policy",
        ])
        .arg(&policy)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("policy.threshold"), "{}", text(&o));
    let o = bin()
        .args([
            "censor",
            "--input",
            "x.mp4",
            "--output",
            "y.mp4",
            "--classes",
            "NOSE",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("NOSE"), "{}", text(&o));
    let o = bin()
        .env("BATCH_SIZE", "lots")
        .args(["censor", "--input", "x.mp4", "--output", "y.mp4"])
        .output()
        .unwrap();
    assert!(text(&o).contains("BATCH_SIZE"), "{}", text(&o));
    for (cmd, args) in [
        ("censor", vec!["--input", "x.mp4", "--output", "y.mp4"]),
        ("bench", vec!["--frames", "1"]),
    ] {
        let o = bin()
            .arg(cmd)
            .args(&args)
            .args(["--letterbox", "oval"])
            .output()
            .unwrap();
        assert!(!o.status.success());
        let t = text(&o);
        assert!(
            t.contains("--letterbox") && t.contains("oval"),
            "{cmd}: {t}"
        );
        assert!(!t.contains("panicked"), "{t}");
    }
}

#[test]
fn missing_model_names_the_setup_command() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["censor", "--input", "x.y4m", "--output", "y.y4m", "--model"])
        .arg(dir.path().join("none.onnx"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("scripts/setup.sh") && t.contains("none.onnx"),
        "{t}"
    );
}

#[test]
fn corrupt_frame_in_the_middle_is_censored_whole() {
    if !models_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = synth(dir.path(), "in.h264", "static");
    let mut bytes = std::fs::read(&input).unwrap();
    // Start codes of slice NALs (types 1 and 5); garble one in the middle.
    let starts: Vec<usize> = (0..bytes.len().saturating_sub(4))
        .filter(|&i| bytes[i..i + 3] == [0, 0, 1] && matches!(bytes[i + 3] & 0x1f, 1 | 5))
        .collect();
    assert!(starts.len() >= 20, "{} slices", starts.len());
    let mid = starts.len() / 2;
    let at = starts[mid] + 5;
    // Stay inside the NAL: the frame is damaged, the stream's framing is not.
    let end = (at + 200).min(starts[mid + 1] - 1);
    for b in &mut bytes[at..end] {
        *b ^= 0xA5;
    }
    let broken = dir.path().join("broken.h264");
    std::fs::write(&broken, &bytes).unwrap();
    let output = dir.path().join("out.h264");
    let o = on_files(&["censor", "--classes", "FACE_FEMALE"], &broken, &output);
    assert!(o.status.success(), "{}", text(&o));
    let side = std::fs::read_to_string(format!("{}.censor.jsonl", output.display())).unwrap();
    assert_eq!(side.lines().count(), 25, "a header and every frame");
    assert!(side.contains("fail_closed"), "no frame was censored whole");
    let o = on_files(&["audit", "--classes", "FACE_FEMALE"], &broken, &output);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn odd_dimensions_round_trip() {
    if !models_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("odd.y4m");
    let o = bin()
        .args(["synth", "--scenario", "static", "--frames", "6"])
        .args(["--width", "641", "--height", "359", "--output"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let output = dir.path().join("out.y4m");
    let o = bin()
        .args([
            "censor",
            "--classes",
            "FACE_FEMALE",
            "--method",
            "pixelate",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let head = std::fs::read(&output).unwrap();
    assert!(String::from_utf8_lossy(&head[..64]).contains("W641 H359"));
    let o = on_files(&["audit", "--classes", "FACE_FEMALE"], &input, &output);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn serve_without_api_secret_is_a_clear_error() {
    let o = bin()
        .args(["serve", "--room", "demo", "--seconds", "1"])
        .env("LIVEKIT_URL", "ws://127.0.0.1:1")
        .env("LIVEKIT_API_KEY", "devkey")
        .env_remove("LIVEKIT_API_SECRET")
        .env_remove("LIVECENSOR_CONFIG")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("LIVEKIT_API_SECRET"), "{t}");
}

/// `token` prints a broadcaster's JWT for ROOM-raw whose room dispatches
/// the worker agent; without the secret it is a clear error. `worker`
/// refuses `--room` (its rooms come from the dispatch).
#[test]
fn token_and_worker_flags() {
    use base64::Engine as _;
    let o = bin()
        .args(["token", "demo", "--identity", "alice"])
        .env("LIVEKIT_API_KEY", "devkey")
        .env("LIVEKIT_API_SECRET", "secret")
        .env_remove("LIVECENSOR_CONFIG")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let jwt = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["video"]["room"], "demo-raw");
    assert_eq!(claims["video"]["canPublish"], true);
    assert_eq!(
        claims["roomConfig"]["agents"][0]["agentName"], "livecensor",
        "{claims}"
    );
    let o = bin()
        .args(["token", "demo"])
        .env("LIVEKIT_API_KEY", "devkey")
        .env_remove("LIVEKIT_API_SECRET")
        .env_remove("LIVECENSOR_CONFIG")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("LIVEKIT_API_SECRET"), "{}", text(&o));
    let o = bin()
        .args(["worker", "--room", "demo", "--seconds", "1"])
        .env("LIVEKIT_URL", "ws://127.0.0.1:1")
        .env("LIVEKIT_API_KEY", "devkey")
        .env("LIVEKIT_API_SECRET", "secret")
        .env_remove("LIVECENSOR_CONFIG")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("--room is for serve"), "{}", text(&o));
    // A load threshold outside (0, 1] is refused before anything starts.
    let o = bin()
        .args(["worker", "--load-threshold", "1.5"])
        .env_remove("LIVECENSOR_CONFIG")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("not a load in (0, 1]"), "{}", text(&o));
}

/// `serve --room` while LiveKit cannot be reached stays up, retrying, and
/// `/healthz` says it is not connected; it ends cleanly at `--seconds`.
#[test]
fn serve_waits_for_an_unreachable_livekit_and_healthz_says_so() {
    if !models_ready() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let child = bin()
        .args(["serve", "--room", "demo", "--seconds", "4", "--listen"])
        .arg(listen.to_string())
        .env("LIVEKIT_URL", format!("ws://127.0.0.1:{port}"))
        .env("LIVEKIT_API_KEY", "devkey")
        .env("LIVEKIT_API_SECRET", "secret")
        .env_remove("LIVECENSOR_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Poll /healthz until it answers (the detector loads first).
    let mut answer = String::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if let Ok(mut c) = std::net::TcpStream::connect(listen) {
            use std::io::{Read, Write};
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let _ = c.read_to_string(&mut answer);
            if !answer.is_empty() {
                break;
            }
        }
    }
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("not reachable: retrying"), "{t}");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("not connected: demo (LiveKit not reachable)"),
        "{answer}"
    );
}

/// `censor --gpu` where the device path cannot run (no `cuda` feature, or
/// no driver) stops with one clear line and writes no output: it never
/// falls back silently and never lets a frame out unchecked.
#[test]
fn censor_gpu_without_a_gpu_is_a_clear_error_and_writes_nothing() {
    if livecensor::gpu::probe().usable() {
        eprintln!("skipped: this machine has a usable GPU (tests/gpu_device.rs covers it)");
        return;
    }
    if !models_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["in.mp4", "in.y4m"] {
        let input = synth(dir.path(), name, "static");
        let out = dir.path().join(format!("out-{name}.mp4"));
        let o = bin()
            .env_remove("RUST_BACKTRACE")
            .args(["censor", "--gpu", "--gpu-device", "0"])
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        let t = assert_refused_for_cuda(&o);
        assert_eq!(
            String::from_utf8_lossy(&o.stderr)
                .trim_end()
                .lines()
                .count(),
            1,
            "{t}"
        );
        assert!(!out.exists(), "{t}");
    }
    let o = bin()
        .env_remove("RUST_BACKTRACE")
        .args(["bench", "--gpu", "--frames", "2", "--no-audit"])
        .output()
        .unwrap();
    assert_refused_for_cuda(&o);
    // `serve --gpu` stops before the detector starts or any room is joined
    // (nothing listens on this URL: reaching it would be another error).
    let o = bin()
        .env_remove("RUST_BACKTRACE")
        .env("LIVEKIT_API_KEY", "k")
        .env("LIVEKIT_API_SECRET", "s")
        .env("LIVEKIT_URL", "ws://127.0.0.1:9")
        .args(["serve", "--gpu", "--room", "r", "--seconds", "1"])
        .output()
        .unwrap();
    let t = assert_refused_for_cuda(&o);
    assert!(!t.contains("127.0.0.1:9"), "{t}");
}

/// A non-zero exit, not a panic, whose message is about CUDA; its text.
fn assert_refused_for_cuda(o: &Output) -> String {
    let t = text(o);
    assert!(!o.status.success(), "{t}");
    assert_ne!(o.status.code(), Some(101), "panicked: {t}");
    assert!(
        t.contains("cuda") || t.contains("CUDA") || t.contains("libcuda"),
        "{t}"
    );
    t
}
