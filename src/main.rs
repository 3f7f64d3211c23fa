use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use livecensor::audit::{audit, truth_beside, AuditFiles, AuditOptions, AuditReport};
use livecensor::config::Config;
use livecensor::detect::CLASSES;
use livecensor::frame::CensorMethod;
use livecensor::pipeline::{censor_file, sidecar::sidecar_path, Summary};
use livecensor::policy::{Policy, PolicyOverrides};
use livecensor::synth::{Scenario, Synth, SynthConfig};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Real-time video censoring: NudeNet detection, Kalman tracking, blur,
/// pixelation or fill. No uncensored frame leaves.
#[derive(Parser)]
#[command(name = "livecensor", version, about, long_about = None)]
struct Cli {
    /// TOML configuration file (env vars and flags override it).
    #[arg(long, short, global = true, env = "LIVECENSOR_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines on stderr as text or as JSON objects (one per line, for
    /// log collectors). RUST_LOG filters them (default: warn).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LIVECENSOR_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Censor a video file (.h264/.264, .mp4, .y4m in and out).
    Censor(CensorArgs),
    /// Check an output against its input, by the policy in the sidecar's
    /// header (policy flags override it, and stand alone for a sidecar
    /// without one, with a warning): every region the detector finds on an input frame must be
    /// masked and its detail gone; nothing of a censored class the detector
    /// finds on an output frame at --miss-threshold may be left unmasked;
    /// with ground truth (IN.truth.jsonl or --truth), every face must be
    /// hidden. Exits 1 on any of these, an undecodable output frame or a
    /// frame count or index mismatch.
    Audit(AuditArgs),
    /// Make a synthetic clip with ground truth (moving astronaut face).
    Synth(SynthArgs),
    /// Fetch nothing, build a 720p clip of a moving face, censor faces, audit.
    Demo(DemoArgs),
    /// Benchmark: N concurrent synthetic streams through the real pipeline
    /// (latency, fps held, stages, CPU, memory, coverage, audited leaks).
    Bench(livecensor::bench::BenchArgs),
    /// List the detector's classes (names for policies).
    Classes,
    /// What this machine can use, and which backend each stage takes.
    Doctor,
    /// TensorRT plans: `build` one from the ONNX model (on the GPU machine,
    /// needs feature `tensorrt`), or `info` on one (needs no TensorRT).
    #[command(subcommand)]
    Engine(EngineCmd),
    /// Censor a live LiveKit room: subscribe (hidden) to ROOM-raw, publish
    /// the censored video into ROOM. Needs LIVEKIT_URL / LIVEKIT_API_KEY /
    /// LIVEKIT_API_SECRET (env or [livekit] in the config).
    Serve(ServeArgs),
    /// Take censoring jobs from LiveKit's agent dispatch: register at the
    /// server's /agent endpoint as agent --agent-name, censor each room
    /// the server assigns (as `serve` does: hidden subscriber in ROOM-raw,
    /// publisher into ROOM), report WS_FULL at --max-sessions, and take
    /// over rooms whose worker died. Takes every `serve` flag but --room.
    Worker(WorkerArgs),
    /// Print a broadcaster's access token for ROOM-raw whose room dispatches
    /// a worker (a job for agent --agent-name when the room is created).
    Token(TokenArgs),
}

#[derive(Args)]
struct WorkerArgs {
    /// The agent name to register under (broadcaster tokens name it).
    #[arg(long, default_value = livecensor::livekit::dispatch::AGENT_NAME)]
    agent_name: String,
    /// Censoring sessions at most (capacity); by default measured at start
    /// from the detector's speed at the output frame rate.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions: Option<u32>,
    /// Load in (0, 1] at which the worker reports WS_FULL and declines jobs;
    /// load = max(sessions / capacity scaled to this, detector busy share,
    /// fail-closed share of frames).
    #[arg(long, default_value_t = livecensor::livekit::dispatch::LOAD_THRESHOLD, value_parser = load_threshold)]
    load_threshold: f32,
    /// Do not re-dispatch rooms whose worker stopped beating its lease.
    #[arg(long)]
    no_takeover: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct TokenArgs {
    /// The viewers' room; the token joins ROOM-raw.
    room: String,
    /// The broadcaster's identity.
    #[arg(long, default_value = "broadcaster")]
    identity: String,
    /// The agent the room dispatches.
    #[arg(long, default_value = livecensor::livekit::dispatch::AGENT_NAME)]
    agent_name: String,
    /// No dispatch in the token (for `serve`, which webhooks start).
    #[arg(long)]
    no_dispatch: bool,
    /// Hours the token is valid.
    #[arg(long, default_value_t = 6.0)]
    hours: f64,
}

#[derive(Args)]
struct ServeArgs {
    /// Censor this room from the start (the broadcaster publishes into
    /// ROOM-raw). Without it, sessions start from webhooks only.
    #[arg(long)]
    room: Option<String>,
    /// HTTP address for POST /webhook, GET /healthz and GET /metrics.
    #[arg(long, default_value = "127.0.0.1:7890")]
    listen: std::net::SocketAddr,
    /// Local address for media (UDP) sockets and our ICE host candidates.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: std::net::IpAddr,
    /// Frame rate the encoder's rate control assumes.
    #[arg(long, default_value_t = 30.0)]
    out_fps: f32,
    /// Relay the broadcaster's audio into ROOM (Opus pass-through; audio
    /// is not inspected).
    #[arg(long)]
    audio: bool,
    /// Seconds between status lines on stderr (sessions, mean fps per
    /// session, p95 added latency over the interval, frames failed closed);
    /// GET /metrics has every counter.
    #[arg(long, default_value_t = 5.0)]
    stats_every: f64,
    /// Stop after this many seconds (default: until Ctrl-C / SIGTERM).
    #[arg(long)]
    seconds: Option<f64>,
    /// Test only (hidden): drop each RTP media datagram received on the
    /// input (subscriber) connection with probability P (0 to 1), to
    /// exercise loss handling against a real server.
    #[arg(long, value_name = "P", default_value_t = 0.0, hide = true, value_parser = probability_arg("--fault-rtp-drop"))]
    fault_rtp_drop: f64,
    /// Test only (hidden): flip bits in the payload of each RTP media
    /// datagram received on the input connection with probability P (0 to
    /// 1); SRTP authentication then rejects it, as real corruption.
    #[arg(long, value_name = "P", default_value_t = 0.0, hide = true, value_parser = probability_arg("--fault-rtp-corrupt"))]
    fault_rtp_corrupt: f64,
    #[command(flatten)]
    fault_detector: livecensor::pipeline::service::DetectorFaultArgs,
    /// Decode with NVDEC into device memory, preprocess and censor with the
    /// CUDA kernels and encode with NVENC where the GPU has it, else
    /// openh264 (feature `cuda`; config `[gpu] enabled`).
    #[arg(long)]
    gpu: bool,
    /// CUDA device for --gpu (config `[gpu] device`).
    #[arg(long)]
    gpu_device: Option<usize>,
    /// Append moderation events (exposures, fail-closed spans, rules,
    /// actions) to this JSON-lines file, fsync'd per batch.
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
    /// POST each moderation event as JSON to this URL (repeatable), signed
    /// with HMAC-SHA256 (`X-Livecensor-Signature: t=TS,v1=HEX` over
    /// `TS.BODY`, secret from LIVECENSOR_EVENTS_SECRET); retried 5 minutes.
    #[arg(long = "events-webhook", value_name = "URL")]
    events_webhook: Vec<String>,
    /// Serve the moderator page at / and its routes (GET /api/sessions,
    /// GET /events, GET /rooms/ROOM/preview.jpg, POST /rooms/ROOM/actions),
    /// each answering 401 without `Authorization: Bearer TOKEN`.
    #[arg(long, env = "LIVECENSOR_MODERATOR_TOKEN", hide_env_values = true)]
    moderator_token: Option<String>,
    #[command(flatten)]
    p: PolicyArgs,
}

/// A clap parser for a probability flag: a number in 0..=1, or a clear error.
fn probability_arg(name: &'static str) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |s: &str| {
        let p: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number"))?;
        livecensor::livekit::fault::probability(name, p).map_err(|e| e.to_string())
    }
}

#[derive(Subcommand)]
enum EngineCmd {
    /// ONNX -> TensorRT plan with one dynamic-batch optimisation profile per
    /// execution context (batch 1 to --max-batch), plus PLAN.json (sidecar).
    Build(EngineBuildArgs),
    /// What a plan is, checked against its sidecar.
    Info {
        /// The plan (default: detector.engine).
        plan: Option<PathBuf>,
    },
}

#[derive(Args)]
struct EngineBuildArgs {
    /// The ONNX model (default: detector.model).
    #[arg(long)]
    onnx: Option<PathBuf>,
    /// The plan to write (default: detector.engine); PLAN.json goes beside it.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Largest batch of every profile (default: batcher.max_batch).
    #[arg(long)]
    max_batch: Option<usize>,
    /// Optimisation profiles = execution contexts (default: batcher.contexts).
    #[arg(long)]
    contexts: Option<usize>,
    /// FP16 kernels (TensorRT 10; TensorRT 11 needs an fp16 ONNX model instead).
    #[arg(long)]
    fp16: bool,
    /// INT8 with calibration on the images in --calib (TensorRT 10 only).
    #[arg(long, requires = "calib")]
    int8: bool,
    /// Folder of .png/.jpg calibration images.
    #[arg(long, requires = "int8")]
    calib: Option<PathBuf>,
    /// Images per calibration batch.
    #[arg(long, default_value_t = 8)]
    calib_batch: usize,
    /// Builder workspace limit in MiB (0: TensorRT's default).
    #[arg(long, default_value_t = 0)]
    workspace_mib: usize,
    /// CUDA device to build on.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

#[derive(Args, Clone)]
struct PolicyArgs {
    /// Policy TOML (classes, thresholds, expansion, shape, method).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Censored classes, comma-separated (`all` for every class).
    #[arg(long)]
    classes: Option<String>,
    /// blur | pixelate | fill
    #[arg(long)]
    method: Option<String>,
    /// rect | ellipse
    #[arg(long)]
    shape: Option<String>,
    /// Minimum score for every censored class.
    #[arg(long)]
    threshold: Option<f32>,
    /// strict (default: nothing leaves unverified) | predictive (the detector
    /// sees every Nth frame, the tracker masks the rest; on a file each frame
    /// waits for the detections of the frames before it)
    #[arg(long)]
    mode: Option<String>,
    /// Predictive mode: detect every Nth frame.
    #[arg(long)]
    detect_every: Option<u32>,
    /// Frame rate for raw .h264 input (no timing in the bitstream).
    #[arg(long)]
    fps: Option<f64>,
    /// Detector model (ONNX).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Detector threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Detector: onnx (ONNX Runtime, CPU) or tensorrt (the --engine plan,
    /// feature `tensorrt`).
    #[arg(long)]
    detector: Option<String>,
    /// TensorRT plan for --detector tensorrt (`livecensor engine build`).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// Detector input: rect (padded to the next multiple of 32; 16:9 runs
    /// 320x192, ~40% less inference) or square (NudeNet's 320x320).
    /// TensorRT plans always take square.
    #[arg(long)]
    letterbox: Option<String>,
    /// How frames are resampled to the detector input: triangle
    /// (antialiased, the default) or linear (NudeNet's own 2x2 taps).
    #[arg(long)]
    resize: Option<String>,
    /// Re-encode every frame: clean frames no longer leave as the input's
    /// own access units (config `[output] passthrough`).
    #[arg(long)]
    no_passthrough: bool,
}

#[derive(Args)]
struct CensorArgs {
    #[arg(long, short)]
    input: PathBuf,
    #[arg(long, short)]
    output: PathBuf,
    /// Decode with NVDEC into device memory, preprocess and censor with the
    /// CUDA kernels and encode with NVENC where the GPU has it, else
    /// openh264 (feature `cuda`; config `[gpu] enabled`).
    #[arg(long)]
    gpu: bool,
    /// CUDA device for --gpu (config `[gpu] device`).
    #[arg(long)]
    gpu_device: Option<usize>,
    #[command(flatten)]
    p: PolicyArgs,
}

#[derive(Args)]
struct AuditArgs {
    #[arg(long, short)]
    input: PathBuf,
    #[arg(long, short)]
    output: PathBuf,
    /// Sidecar (default: OUTPUT.censor.jsonl).
    #[arg(long)]
    sidecar: Option<PathBuf>,
    /// Write the full report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Lowest score of the output pass: a censored class found on an output
    /// frame at this score or more, outside its masks, is a possible miss.
    #[arg(long, default_value_t = 0.1, value_name = "SCORE")]
    miss_threshold: f32,
    /// Ground truth, one line per frame as `synth` writes it (default:
    /// INPUT.truth.jsonl when it exists).
    #[arg(long, value_name = "PATH")]
    truth: Option<PathBuf>,
    #[command(flatten)]
    p: PolicyArgs,
}

#[derive(Args)]
struct SynthArgs {
    /// constant-pan, fast-pan, zoom, acceleration, stop-start, crossing,
    /// occlusion, hard-cut, static
    #[arg(long, default_value = "constant-pan")]
    scenario: String,
    #[arg(long, short)]
    output: PathBuf,
    #[arg(long, default_value_t = 90)]
    frames: usize,
    #[arg(long, default_value_t = 1280)]
    width: usize,
    #[arg(long, default_value_t = 720)]
    height: usize,
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Folder with the photos (scripts/setup.sh fills models/photos).
    #[arg(long)]
    photos: Option<PathBuf>,
}

#[derive(Args)]
struct DemoArgs {
    /// Where the clip, the censored output and its sidecar go.
    #[arg(long, default_value = "out/demo")]
    dir: PathBuf,
    #[arg(long, default_value_t = 150)]
    frames: usize,
}

fn repo_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("models").exists() {
        manifest
    } else {
        PathBuf::from(".")
    }
}

/// The policy flags of a command line, parsed (bad values are errors
/// naming the flag).
fn policy_overrides(p: &PolicyArgs) -> Result<PolicyOverrides> {
    let mut o = PolicyOverrides::default();
    if let Some(pol) = &p.policy {
        let text = std::fs::read_to_string(pol)
            .with_context(|| format!("reading policy {}", pol.display()))?;
        o.file =
            Some(toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", pol.display()))?);
    }
    if let Some(c) = &p.classes {
        o.classes = Some(if c.trim().eq_ignore_ascii_case("all") {
            CLASSES.iter().map(|s| s.to_string()).collect()
        } else {
            c.split(',').map(|s| s.trim().to_string()).collect()
        });
    }
    if let Some(m) = &p.method {
        o.method = Some(match m.as_str() {
            "blur" => CensorMethod::default(),
            "pixelate" => CensorMethod::Pixelate { block: 0 },
            "fill" => CensorMethod::Fill {
                y: 16,
                u: 128,
                v: 128,
            },
            other => bail!("bad value for --method: {other:?} (blur, pixelate or fill)"),
        });
    }
    if let Some(s) = &p.shape {
        o.shape = Some(
            toml::Value::String(s.clone())
                .try_into()
                .map_err(|_| anyhow::anyhow!("bad value for --shape: {s:?} (rect or ellipse)"))?,
        );
    }
    o.threshold = p.threshold;
    Ok(o)
}

fn load_config(path: Option<&Path>, p: Option<&PolicyArgs>) -> Result<Config> {
    let mut cfg = Config::load(path)?;
    cfg.apply_env(|k| std::env::var(k).ok())?;
    cfg.resolve_paths(&repo_dir());
    if let Some(p) = p {
        policy_overrides(p)?.apply(&mut cfg.policy);
        if let Some(m) = &p.mode {
            cfg.scheduler.mode = m.clone();
        }
        if let Some(n) = p.detect_every {
            cfg.scheduler.detect_every = n;
        }
        if let Some(m) = &p.model {
            cfg.detector.model = m.clone();
        }
        if let Some(t) = p.threads {
            cfg.detector.threads = t;
            cfg.auto.threads = false;
        }
        if let Some(d) = &p.detector {
            cfg.detector.backend = d
                .parse()
                .map_err(|e| anyhow::anyhow!("bad value for --detector: {e}"))?;
        }
        if let Some(e) = &p.engine {
            cfg.detector.engine = e.clone();
        }
        if let Some(l) = &p.letterbox {
            cfg.detector.letterbox = l
                .parse()
                .map_err(|e| anyhow::anyhow!("bad value for --letterbox: {e}"))?;
        }
        if let Some(r) = &p.resize {
            cfg.detector.resize = r
                .parse()
                .map_err(|e| anyhow::anyhow!("bad value for --resize: {e}"))?;
        }
        if p.no_passthrough {
            cfg.output.passthrough = false;
        }
    }
    cfg.resolve_detector_defaults(livecensor::config::cores());
    cfg.validate()?;
    Ok(cfg)
}

fn progress_bar(label: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    if std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} frames  {per_sec}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        pb.set_style(style);
    } else {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_message(label.to_string());
    pb
}

fn run_censor(input: &Path, output: &Path, fps: Option<f64>, cfg: &Config) -> Result<Summary> {
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let pb = progress_bar("censor");
    let mut cb = |done: u64, total: Option<u64>| {
        if let Some(t) = total {
            pb.set_length(t);
        }
        pb.set_position(done);
    };
    let s = censor_file(input, output, fps, cfg, &mut cb)?;
    pb.finish_and_clear();
    let ms = |v: f64| 1e3 * v / s.frames.max(1) as f64;
    let t = &s.stage_totals;
    println!(
        "censored {} frames in {:.2} s ({:.1} fps): {} verified, {} predicted, {} fail-closed",
        s.frames,
        s.wall,
        s.fps(),
        s.verified,
        s.predicted,
        s.fail_closed
    );
    println!(
        "per frame (ms): decode {:.2}  preprocess {:.2}  queue {:.2}  infer {:.2}  track {:.3}  censor {:.2}  encode {:.2}",
        ms(t.decode),
        ms(t.preprocess),
        ms(t.queue_wait),
        ms(t.infer),
        ms(t.track),
        ms(t.censor),
        ms(t.encode)
    );
    println!(
        "added latency (ms): p50 {:.1}  p99 {:.1}  max {:.1}",
        s.latency_percentile(50.0),
        s.latency_percentile(99.0),
        s.latency_percentile(100.0)
    );
    println!(
        "output: {}  sidecar: {}  encoder: {}",
        output.display(),
        s.sidecar.display(),
        s.encoder
    );
    println!(
        "passthrough: {} ({} of {} frames left as the input's own access units)",
        s.passthrough, s.passed_through, s.frames
    );
    Ok(s)
}

/// What `audit` compares and how.
struct AuditRun<'a> {
    input: &'a Path,
    output: &'a Path,
    sidecar: Option<&'a Path>,
    truth: Option<&'a Path>,
    fps: Option<f64>,
    json: Option<&'a Path>,
    overrides: PolicyOverrides,
    miss_threshold: f32,
}

fn run_audit(a: &AuditRun, cfg: &Config) -> Result<bool> {
    let side = a
        .sidecar
        .map(Path::to_path_buf)
        .unwrap_or_else(|| sidecar_path(a.output));
    let truth = a
        .truth
        .map(Path::to_path_buf)
        .or_else(|| truth_beside(a.input));
    let pb = progress_bar("audit");
    let mut cb = |done: u64, total: Option<u64>| {
        if let Some(t) = total {
            pb.set_length(t);
        }
        pb.set_position(done);
    };
    let files = AuditFiles {
        input: a.input,
        output: a.output,
        sidecar: &side,
        truth: truth.as_deref(),
        fps_hint: a.fps,
    };
    let opts = AuditOptions {
        miss_threshold: a.miss_threshold,
        ..AuditOptions::default()
    };
    let rep = audit(
        files,
        &cfg.policy,
        &a.overrides,
        &cfg.detector,
        opts,
        &mut cb,
    )?;
    pb.finish_and_clear();
    if !rep.policy_from_sidecar {
        eprintln!(
            "warning: {} has no header (written by an older livecensor): auditing with the \
             policy of the configuration and flags, which may not be what the censor applied",
            side.display()
        );
    }
    print_audit(&rep);
    if let Some(j) = a.json {
        std::fs::write(j, serde_json::to_string_pretty(&rep)?)
            .with_context(|| format!("writing {}", j.display()))?;
    }
    Ok(rep.passed())
}

/// The audit's terminal summary: each failure on its own line, then one
/// line per pass.
fn print_audit(rep: &AuditReport) {
    let bbox = |b: &[f32; 4]| format!("[{:.0},{:.0},{:.0},{:.0}]", b[0], b[1], b[2], b[3]);
    let p = &rep.policy;
    println!(
        "policy: {}: classes {}, threshold {}",
        rep.policy_source,
        p.classes.join(","),
        p.threshold
    );
    for l in &rep.leaks {
        println!(
            "LEAK frame {}: {} {:.2} at {} masked {:.0}% detail left {:.0}%",
            l.frame,
            l.class,
            l.score,
            bbox(&l.bbox),
            100.0 * l.mask_coverage,
            100.0 * l.detail_ratio
        );
    }
    for m in &rep.possible_misses {
        println!(
            "POSSIBLE MISS frame {}: {} {:.2} at {} on the output, masked {:.0}%",
            m.frame,
            m.class,
            m.score,
            bbox(&m.bbox),
            100.0 * m.mask_coverage
        );
    }
    if let Some(t) = &rep.truth {
        for l in &t.left_visible {
            println!(
                "TRUTH LEFT VISIBLE frame {}: face {} at {} ({:.0}% visible) masked {:.0}% detail left {:.0}%",
                l.frame,
                l.object,
                bbox(&l.bbox),
                100.0 * l.visible,
                100.0 * l.mask_coverage,
                100.0 * l.detail_ratio
            );
        }
    }
    for u in &rep.undecodable_frames {
        println!("UNDECODABLE output frame {}: {}", u.frame, u.reason);
    }
    for m in &rep.mismatches {
        println!("MISMATCH: {m}");
    }
    println!(
        "audit: {} frames, {} censored regions found by the detector, {} leaked frames ({} verified, {} predicted, {} fail-closed; mean masked area {:.1}%)",
        rep.input_frames,
        rep.regions,
        rep.leaked_frames.len(),
        rep.verified,
        rep.predicted,
        rep.fail_closed,
        100.0 * rep.mean_masked_area
    );
    println!(
        "output pass (score >= {}): {} censored-class detections on frames not censored whole, {} possible misses in {} frames",
        rep.miss_threshold,
        rep.output_regions,
        rep.possible_misses.len(),
        rep.miss_frames.len()
    );
    match &rep.truth {
        Some(t) => println!(
            "ground truth ({}): {} faces judged, {} left visible in {} frames",
            t.path.display(),
            t.faces,
            t.left_visible.len(),
            t.left_visible_frames.len()
        ),
        None => println!("ground truth: none (no --truth, no INPUT.truth.jsonl)"),
    }
    let failures = rep.failures();
    if failures.is_empty() {
        println!("audit passed");
    } else {
        println!("audit FAILED: {}", failures.join(", "));
    }
}

fn photos_dir(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_else(|| repo_dir().join("models/photos"))
}

fn write_synth(scenario: Scenario, cfg: SynthConfig, output: &Path) -> Result<()> {
    use livecensor::sink::{OutputInfo, VideoWriter};
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let synth = Synth::new(scenario, cfg.clone())?;
    let timescale = 90_000u32;
    let mut w = VideoWriter::create(
        output,
        &OutputInfo {
            width: cfg.width,
            height: cfg.height,
            fps: cfg.fps,
            timescale,
            bitrate_bps: Some(6_000_000),
        },
    )?;
    for i in 0..cfg.frames {
        let f = synth.frame(i);
        let pts = (i as f64 * timescale as f64 / cfg.fps).round() as i64;
        w.write(&f.frame, pts)?;
    }
    w.finish()?;
    let truth = livecensor::synth::truth_path(output);
    std::fs::write(&truth, synth.truth_json_lines())
        .with_context(|| format!("writing {}", truth.display()))?;
    println!(
        "wrote {} ({} frames {}x{} @ {} fps, scenario {}) and {}",
        output.display(),
        cfg.frames,
        cfg.width,
        cfg.height,
        cfg.fps,
        scenario.name(),
        truth.display()
    );
    Ok(())
}

fn doctor(cfg: &Config) {
    let findings = livecensor::doctor::gather(&cfg.detector);
    print!("{}", livecensor::doctor::decide(&findings));
    println!(
        "detector config  {}, {} on {} cores, batch up to {}",
        cfg.detector.backend,
        cfg.detector_sizes(),
        livecensor::config::cores(),
        cfg.batcher.max_batch
    );
}

/// `engine build` / `engine info`; defaults come from the configuration so
/// the plan fits the batcher.
fn run_engine(cmd: &EngineCmd, cfg: &Config) -> Result<()> {
    use livecensor::detect::tensorrt::{build_engine, plan_info, BuildOptions};
    match cmd {
        EngineCmd::Info { plan } => {
            println!(
                "{}",
                plan_info(plan.as_ref().unwrap_or(&cfg.detector.engine))?
            );
        }
        EngineCmd::Build(a) => {
            let opts = BuildOptions {
                onnx: a.onnx.clone().unwrap_or_else(|| cfg.detector.model.clone()),
                output: a
                    .output
                    .clone()
                    .unwrap_or_else(|| cfg.detector.engine.clone()),
                max_batch: a.max_batch.unwrap_or(cfg.batcher.max_batch),
                contexts: a.contexts.unwrap_or(cfg.batcher.contexts),
                fp16: a.fp16,
                int8: a.int8,
                calib: a.calib.clone(),
                calib_batch: a.calib_batch,
                input_size: cfg.detector.input_size,
                workspace_mib: a.workspace_mib,
                device: a.device,
            };
            let r = build_engine(&opts)?;
            println!(
                "wrote {} ({} bytes, TensorRT {}, {}, batch 1..={}, {} profile(s), on {}) and {} in {:.1} s",
                r.plan.display(),
                r.meta.plan_bytes,
                r.meta.tensorrt,
                r.meta.precision,
                r.meta.max_batch,
                r.meta.profiles,
                r.meta.gpu,
                r.sidecar.display(),
                r.seconds
            );
        }
    }
    Ok(())
}

/// `serve` (and `worker`, which adds LiveKit's agent dispatch): sessions
/// until Ctrl-C, SIGTERM or `--seconds`, with a stats line every
/// `--stats-every`.
/// `--load-threshold`: a load in (0, 1].
fn load_threshold(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("{s} is not a load in (0, 1]")),
    }
}

/// `--max-sessions`, or the sessions the detector's speed measured at
/// warm-up keeps up with at `fps`.
fn worker_capacity(
    w: &WorkerArgs,
    server: &livecensor::livekit::webhook::Server,
    cfg: &Config,
    fps: f32,
) -> usize {
    if let Some(n) = w.max_sessions {
        return n as usize;
    }
    let st = server.svc.stats();
    let per_image = std::time::Duration::from_micros(st.image_us);
    let every = match cfg.mode() {
        Ok(livecensor::pipeline::scheduler::Mode::Predictive { detect_every }) => detect_every,
        _ => 1,
    };
    let n = livecensor::livekit::dispatch::measured_capacity(
        per_image,
        st.contexts,
        fps,
        every,
        w.load_threshold,
    );
    eprintln!(
        "worker capacity {n} sessions (measured: {:.1} ms an image on {} detector contexts, {fps} fps, inferring 1 frame in {every}, load threshold {})",
        per_image.as_secs_f64() * 1e3,
        st.contexts,
        w.load_threshold
    );
    n
}

fn run_serve(a: &ServeArgs, cfg: &Config, worker: Option<&WorkerArgs>) -> Result<()> {
    if worker.is_some() && a.room.is_some() {
        bail!("worker takes its rooms from LiveKit's dispatch: --room is for serve");
    }
    use livecensor::livekit::webhook::{self, Server};
    use livecensor::livekit::LiveKitSettings;
    use livecensor::pipeline::run::{start_service_with_faults, stream_options};
    // Without both, every token we mint is refused and every webhook fails
    // verification: say so now, not as a 401 per request.
    for (key, value) in [
        ("LIVEKIT_API_KEY", &cfg.livekit.api_key),
        ("LIVEKIT_API_SECRET", &cfg.livekit.api_secret),
    ] {
        if value.trim().is_empty() {
            return Err(livecensor::error::Error::from(livecensor::error::ConfigError::Value {
                key: key.into(),
                value: String::new(),
                reason: "serve needs the LiveKit API key and secret (env, or [livekit] api_key / api_secret in the config)".into(),
            })
            .into());
        }
    }
    // Before the detector starts: no GPU is a one-line error, not a
    // session that fails later.
    let backend = livecensor::backend::Backend::open(&cfg.gpu)?;
    let lk = LiveKitSettings {
        url: if cfg.livekit.url.is_empty() {
            "ws://127.0.0.1:7880".into()
        } else {
            cfg.livekit.url.clone()
        },
        api_key: cfg.livekit.api_key.clone(),
        api_secret: cfg.livekit.api_secret.clone(),
        bind_ip: a.bind_ip,
        fps: a.out_fps,
        audio: a.audio,
        faults: livecensor::livekit::fault::FaultConfig::new(
            a.fault_rtp_drop,
            a.fault_rtp_corrupt,
            // Different runs, different losses; the log says which.
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        )?,
        backend,
        moderation: None,
        // What the published track was negotiated for comes with the
        // publisher's SDP answer; until then nothing passes through.
        passthrough: cfg
            .output
            .passthrough_options(livecensor::engine::Publish::Awaited),
    };
    if lk.faults.is_active() {
        eprintln!(
            "fault injection on the input: drop {} corrupt {} (seed {})",
            lk.faults.drop, lk.faults.corrupt, lk.faults.seed
        );
    }
    let faults = a.fault_detector.faults();
    if faults.is_active() {
        eprintln!("fault injection on the detector: {faults}");
    }
    let svc = start_service_with_faults(cfg, faults)?;
    let opts = stream_options(cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let rules = cfg.rules()?;
    rt.block_on(async {
        // Events leave through bounded queues that never block media; the
        // page's SSE subscribes to the hub.
        let mut hub = livecensor::moderation::ModerationBuilder::new();
        if let Some(p) = &a.events {
            hub = hub.file(p);
        }
        for url in &a.events_webhook {
            hub = hub.webhook(livecensor::moderation::webhook::WebhookConfig::from_env(
                url,
            )?);
        }
        let actions: Arc<dyn livecensor::moderation::RoomActions> = Arc::new(
            livecensor::moderation::LiveKitRoomActions::new(&lk.url, &lk.api_key, &lk.api_secret)?,
        );
        let mut lk = lk.clone();
        lk.moderation = Some(livecensor::livekit::moderate::ModerationCtx {
            hub: Arc::new(hub.build()?),
            rules,
            actions: Some(actions),
            runtime: tokio::runtime::Handle::current(),
        });
        let server = Server::new(lk.clone(), svc, opts, a.moderator_token.clone());
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        let app = webhook::router(server.clone());
        let http = tokio::spawn(async move { axum::serve(listener, app).await });
        let worker_task = match worker {
            Some(w) => {
                let opts = livecensor::livekit::worker::WorkerOptions {
                    agent_name: w.agent_name.clone(),
                    max_sessions: worker_capacity(w, &server, cfg, a.out_fps),
                    load_threshold: w.load_threshold,
                    takeover: !w.no_takeover,
                };
                eprintln!(
                    "worker for agent {} via {} (http on {})",
                    opts.agent_name, lk.url, a.listen
                );
                Some(AbortOnDrop(tokio::spawn(livecensor::livekit::worker::run(
                    server.clone(),
                    opts,
                ))))
            }
            None => None,
        };
        if let Some(room) = &a.room {
            if server.start_pinned(room).await? {
                eprintln!("serving room {room} (input {room}-raw) via {}", lk.url);
            } else if worker.is_none() {
                eprintln!(
                    "LiveKit at {} not reachable: retrying, /healthz answers 503 until room {room} is joined",
                    lk.url
                );
            }
        } else if worker.is_none() {
            eprintln!("waiting for webhooks on http://{}/webhook", a.listen);
        }
        let t0 = std::time::Instant::now();
        let mut tick =
            tokio::time::interval(std::time::Duration::from_secs_f64(a.stats_every.max(0.1)));
        let mut last_latency = std::collections::HashMap::new();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    let st = server.status(&mut last_latency).await;
                    eprintln!("[{:.0}s] {st}", t0.elapsed().as_secs_f64());
                    if a.seconds.is_some_and(|s| t0.elapsed().as_secs_f64() >= s) {
                        break;
                    }
                }
            }
        }
        drop(worker_task);
        server.stop_all().await;
        http.abort();
        anyhow::Ok(())
    })?;
    Ok(())
}

/// A task that ends when its owner drops it (the worker at shutdown).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `token`: a broadcaster's token, printed on stdout.
fn run_token(a: &TokenArgs, cfg: &Config) -> Result<()> {
    if !(a.hours > 0.0 && a.hours.is_finite()) {
        bail!("--hours must be a positive number, not {}", a.hours);
    }
    let t = livecensor::livekit::token::broadcaster_token(
        &cfg.livekit.api_key,
        &cfg.livekit.api_secret,
        &a.room,
        &a.identity,
        (!a.no_dispatch).then_some(a.agent_name.as_str()),
        std::time::Duration::from_secs_f64(a.hours * 3600.0),
    )?;
    println!("{t}");
    Ok(())
}

/// Logs on stderr, filtered by RUST_LOG (default: warn).
fn init_logging(format: LogFormat) {
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let cfg_path = cli.config.as_deref();
    match cli.cmd {
        Cmd::Censor(a) => {
            let mut cfg = load_config(cfg_path, Some(&a.p))?;
            cfg.gpu.enabled |= a.gpu;
            if let Some(d) = a.gpu_device {
                cfg.gpu.device = d;
            }
            run_censor(&a.input, &a.output, a.p.fps, &cfg)?;
        }
        Cmd::Audit(a) => {
            let cfg = load_config(cfg_path, Some(&a.p))?;
            let passed = run_audit(
                &AuditRun {
                    input: &a.input,
                    output: &a.output,
                    sidecar: a.sidecar.as_deref(),
                    truth: a.truth.as_deref(),
                    fps: a.p.fps,
                    json: a.json.as_deref(),
                    overrides: policy_overrides(&a.p)?,
                    miss_threshold: a.miss_threshold,
                },
                &cfg,
            )?;
            if !passed {
                std::process::exit(1);
            }
        }
        Cmd::Synth(a) => {
            let scenario: Scenario = a.scenario.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            let cfg = SynthConfig {
                width: a.width,
                height: a.height,
                fps: a.fps,
                frames: a.frames,
                ..SynthConfig::new(photos_dir(a.photos))
            };
            write_synth(scenario, cfg, &a.output)?;
        }
        Cmd::Demo(a) => {
            let mut cfg = load_config(cfg_path, None)?;
            cfg.policy.classes = vec!["FACE_FEMALE".into(), "FACE_MALE".into()];
            cfg.policy.shape = livecensor::frame::MaskShape::Ellipse;
            cfg.policy.expand = 0.25;
            cfg.validate()?;
            let input = a.dir.join("input.mp4");
            let output = a.dir.join("censored.mp4");
            let synth = SynthConfig {
                frames: a.frames,
                ..SynthConfig::new(photos_dir(None))
            };
            write_synth(Scenario::ConstantPan, synth, &input)?;
            run_censor(&input, &output, None, &cfg)?;
            let passed = run_audit(
                &AuditRun {
                    input: &input,
                    output: &output,
                    sidecar: None,
                    truth: None,
                    fps: None,
                    json: None,
                    overrides: PolicyOverrides::default(),
                    miss_threshold: AuditOptions::default().miss_threshold,
                },
                &cfg,
            )?;
            println!(
                "\ndemo: input {}  censored {}  (faces censored, ellipse blur)",
                input.display(),
                output.display()
            );
            if !passed {
                bail!("the audit found leaks");
            }
        }
        Cmd::Bench(a) => {
            let cfg = load_config(cfg_path, None)?;
            let rep = livecensor::bench::main(cfg, &a, photos_dir(None))?;
            let failures = livecensor::bench::gate(&rep);
            for f in &failures {
                eprintln!("bench: {f}");
            }
            if !failures.is_empty() {
                std::process::exit(1);
            }
        }
        Cmd::Classes => {
            let default = Policy::default();
            for (i, c) in CLASSES.iter().enumerate() {
                let mark = if default.censored[i] {
                    "  (censored by default)"
                } else {
                    ""
                };
                println!("{i:2} {c}{mark}");
            }
        }
        Cmd::Doctor => {
            let cfg = load_config(cfg_path, None)?;
            doctor(&cfg);
        }
        Cmd::Engine(c) => {
            let cfg = load_config(cfg_path, None)?;
            run_engine(&c, &cfg)?;
        }
        Cmd::Serve(a) => {
            let mut cfg = load_config(cfg_path, Some(&a.p))?;
            cfg.gpu.enabled |= a.gpu;
            if let Some(d) = a.gpu_device {
                cfg.gpu.device = d;
            }
            run_serve(&a, &cfg, None)?;
        }
        Cmd::Worker(w) => {
            let mut cfg = load_config(cfg_path, Some(&w.serve.p))?;
            cfg.gpu.enabled |= w.serve.gpu;
            if let Some(d) = w.serve.gpu_device {
                cfg.gpu.device = d;
            }
            run_serve(&w.serve, &cfg, Some(&w))?;
        }
        Cmd::Token(a) => {
            let cfg = load_config(cfg_path, None)?;
            run_token(&a, &cfg)?;
        }
    }
    Ok(())
}
