//! Configuration: built-in defaults, overridden by a TOML file, overridden by
//! environment variables (the seed's names stay valid), overridden by flags.

use crate::detect::DetectorConfig;
use crate::error::ConfigError;
use crate::pipeline::batcher::BatcherConfig;
use crate::pipeline::scheduler::{Mode, SchedulerConfig};
use crate::policy::{Policy, PolicyFile};
use crate::track::TrackerConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[batcher]`: continuous batching shared by every stream.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatcherSection {
    /// BATCH_SIZE
    pub max_batch: usize,
    /// BATCH_MAX_WAIT_MS: how long a free context may wait to fill a batch
    /// while another context is busy; 0 = never wait.
    pub max_wait_ms: u64,
    pub capacity: usize,
    /// Execution contexts (concurrent batches).
    pub contexts: usize,
    /// Most frames of one live stream in a batch (0 = no limit; file jobs
    /// lift it).
    pub max_per_stream: usize,
}

impl Default for BatcherSection {
    fn default() -> Self {
        let b = BatcherConfig::default();
        BatcherSection {
            max_batch: b.max_batch,
            max_wait_ms: 0,
            capacity: b.capacity,
            contexts: b.contexts,
            max_per_stream: b.max_per_stream,
        }
    }
}

/// `[scheduler]`: when frames leave.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// `strict` or `predictive`.
    pub mode: String,
    /// Predictive mode: run the detector on every Nth frame.
    pub detect_every: u32,
    /// A frame not verified within this many ms is censored whole.
    pub deadline_ms: u64,
    /// The same for file jobs (`censor`), which are not live: it only
    /// catches a stalled detector, so a busy machine does not blank frames.
    pub file_deadline_ms: u64,
    pub max_pending: usize,
    /// Strict mode, live: frames a verified frame also waits for, so a
    /// region found a few frames later is masked on it too (each costs a
    /// frame interval of latency; 0 = none).
    pub lookahead: u32,
    /// The same for file jobs, where waiting costs nothing.
    pub file_lookahead: u32,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            mode: "strict".into(),
            detect_every: 3,
            deadline_ms: 250,
            file_deadline_ms: 10_000,
            max_pending: 32,
            lookahead: 0,
            file_lookahead: 5,
        }
    }
}

/// `[livekit]`: where the SFU is.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LiveKitSection {
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
}

/// `[gpu]`: the device path of `censor`, `serve` and `bench` (feature
/// `cuda`): NVDEC decodes into device memory, the CUDA kernels preprocess
/// and censor there, and NVENC encodes where the GPU has one (else each
/// censored frame is copied to the host once for openh264).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GpuSection {
    pub enabled: bool,
    /// CUDA device ordinal.
    pub device: usize,
}

/// `[output]`: what leaves.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// Strict mode: a frame verified clean, whose references since the last
    /// input IDR all left untouched too, leaves as the input's own access
    /// unit (no re-encode, no generation loss). `--no-passthrough`.
    pub passthrough: bool,
    /// Live: clean frames in a row while encoding after which the
    /// broadcaster is asked for a key frame (PLI, at most one per 2 s), so
    /// passthrough resumes sooner.
    pub passthrough_keyframe_after: u32,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            passthrough: true,
            passthrough_keyframe_after: 30,
        }
    }
}

impl OutputSection {
    /// The engine's options (`publish`: the profiles the output takes).
    pub fn passthrough_options(
        &self,
        publish: crate::engine::Publish,
    ) -> crate::engine::PassthroughOptions {
        crate::engine::PassthroughOptions {
            enabled: self.passthrough,
            keyframe_after: self.passthrough_keyframe_after.max(1),
            publish,
            ..crate::engine::PassthroughOptions::default()
        }
    }
}

/// Which detector sizes are left to the core count: those neither the
/// file nor a flag set ([`Config::resolve_detector_defaults`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorAuto {
    /// `[detector] threads` / `--threads`.
    pub threads: bool,
    /// `[batcher] contexts` / `--contexts`.
    pub contexts: bool,
}

/// The detector's threads x contexts for `cores` cores: one intra-op
/// thread per session and one session per core. On the CPU a frame is
/// small work for ONNX Runtime (~20 ms at 320x192), so threads inside one
/// inference mostly wait on each other; independent sessions keep every
/// core busy with whole frames, which is what throughput (streams per
/// machine) needs. The streams' own threads (decode, censor, encode) share
/// the same cores; measured on 2 cores in docs/BENCHMARKS.md.
/// `threads`: set by the user (contexts then fill the cores with it).
pub fn detector_defaults(cores: usize, threads: Option<usize>) -> (usize, usize) {
    let threads = threads.unwrap_or(1).clamp(1, 16);
    let contexts = (cores.max(1) / threads).clamp(1, 16);
    (threads, contexts)
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub detector: DetectorConfig,
    pub batcher: BatcherSection,
    pub scheduler: SchedulerSection,
    /// KALMAN_ENABLED: masks follow motion between detections.
    pub kalman: bool,
    pub tracker: TrackerConfig,
    pub policy: PolicyFile,
    pub livekit: LiveKitSection,
    pub gpu: GpuSection,
    pub output: OutputSection,
    /// `[[rules]]`: moderation rules (hits within a window run actions).
    pub rules: Vec<crate::moderation::RuleConfig>,
    /// Not in the file: which detector sizes follow the core count.
    #[serde(skip)]
    pub auto: DetectorAuto,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            detector: DetectorConfig::default(),
            batcher: BatcherSection::default(),
            scheduler: SchedulerSection::default(),
            kalman: true,
            tracker: TrackerConfig::default(),
            policy: PolicyFile::default(),
            livekit: LiveKitSection::default(),
            gpu: GpuSection::default(),
            output: OutputSection::default(),
            rules: Vec::new(),
            auto: DetectorAuto {
                threads: true,
                contexts: true,
            },
        }
    }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse::<T>().map_err(|e| ConfigError::Value {
        key: key.into(),
        value: value.into(),
        reason: e.to_string(),
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Value {
            key: key.into(),
            value: value.into(),
            reason: "expected true or false".into(),
        }),
    }
}

impl Config {
    /// Defaults, then the file if given.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Config::parse(&text, path)
    }

    /// A config file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |e: toml::de::Error| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut cfg: Config = toml::from_str(text).map_err(err)?;
        let table: toml::Table = toml::from_str(text).map_err(err)?;
        let has = |section: &str, key: &str| {
            table
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key))
        };
        cfg.auto = DetectorAuto {
            threads: !has("detector", "threads"),
            contexts: !has("batcher", "contexts"),
        };
        Ok(cfg)
    }

    /// Sets the detector's threads and contexts the file and flags left
    /// open from the core count ([`detector_defaults`]); a TensorRT
    /// detector keeps its contexts (GPU execution contexts, not cores).
    pub fn resolve_detector_defaults(&mut self, cores: usize) {
        let set = (!self.auto.threads).then_some(self.detector.threads);
        let (threads, contexts) = detector_defaults(cores, set);
        self.detector.threads = threads;
        if self.auto.contexts && self.detector.backend == crate::detect::DetectorBackend::Onnx {
            self.batcher.contexts = contexts;
        }
    }

    /// Where the detector's threads x contexts came from, for `doctor` and
    /// the bench.
    pub fn detector_sizes(&self) -> String {
        let from = |auto: bool| if auto { "from the core count" } else { "set" };
        format!(
            "{} thread(s) x {} context(s) ({}, {})",
            self.detector.threads,
            self.batcher.contexts,
            from(self.auto.threads),
            from(self.auto.contexts),
        )
    }

    /// Applies environment overrides from `get` (`std::env::var` in main).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("BATCH_SIZE") {
            self.batcher.max_batch = parse("BATCH_SIZE", &v)?;
        }
        if let Some(v) = get("BATCH_MAX_WAIT_MS") {
            self.batcher.max_wait_ms = parse("BATCH_MAX_WAIT_MS", &v)?;
        }
        if let Some(v) = get("CONFIDENCE_DECAY_RATE") {
            self.tracker.decay = parse("CONFIDENCE_DECAY_RATE", &v)?;
        }
        if let Some(v) = get("KALMAN_ENABLED") {
            self.kalman = parse_bool("KALMAN_ENABLED", &v)?;
        }
        if let Some(v) = get("LIVECENSOR_DETECTOR") {
            self.detector.backend = v.parse().map_err(|reason| ConfigError::Value {
                key: "detector.backend (LIVECENSOR_DETECTOR)".into(),
                value: v.clone(),
                reason,
            })?;
        }
        if let Some(v) = get("LIVECENSOR_ENGINE") {
            self.detector.engine = PathBuf::from(v);
        }
        if let Some(v) = get("LIVECENSOR_LETTERBOX") {
            self.detector.letterbox = v.parse().map_err(|reason| ConfigError::Value {
                key: "detector.letterbox (LIVECENSOR_LETTERBOX)".into(),
                value: v.clone(),
                reason,
            })?;
        }
        if let Some(v) = get("LIVECENSOR_RESIZE") {
            self.detector.resize = v.parse().map_err(|reason| ConfigError::Value {
                key: "detector.resize (LIVECENSOR_RESIZE)".into(),
                value: v.clone(),
                reason,
            })?;
        }
        if let Some(v) = get("LIVEKIT_URL") {
            self.livekit.url = v;
        }
        if let Some(v) = get("LIVEKIT_API_KEY") {
            self.livekit.api_key = v;
        }
        if let Some(v) = get("LIVEKIT_API_SECRET") {
            self.livekit.api_secret = v;
        }
        Ok(())
    }

    /// Checks every value a user can get wrong, naming the key.
    /// The moderation rules, validated (a bad class, a zero window or an
    /// unknown action is an error naming the key).
    pub fn rules(&self) -> Result<Vec<crate::moderation::Rule>, ConfigError> {
        crate::moderation::rules::validate_rules(&self.rules)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.rules()?;
        let bad = |key: &str, value: String, reason: &str| ConfigError::Value {
            key: key.into(),
            value,
            reason: reason.into(),
        };
        if !(1..=64).contains(&self.batcher.max_batch) {
            return Err(bad(
                "batcher.max_batch (BATCH_SIZE)",
                self.batcher.max_batch.to_string(),
                "must be 1..=64",
            ));
        }
        if self.batcher.max_wait_ms > 1000 {
            return Err(bad(
                "batcher.max_wait_ms (BATCH_MAX_WAIT_MS)",
                self.batcher.max_wait_ms.to_string(),
                "must be at most 1000",
            ));
        }
        if self.batcher.capacity < self.batcher.max_batch {
            return Err(bad(
                "batcher.capacity",
                self.batcher.capacity.to_string(),
                "must be at least max_batch",
            ));
        }
        if !(1..=16).contains(&self.batcher.contexts) {
            return Err(bad(
                "batcher.contexts",
                self.batcher.contexts.to_string(),
                "must be 1..=16",
            ));
        }
        let d = self.tracker.decay;
        if !(d.is_finite() && d > 0.0 && d <= 1.0) {
            return Err(bad(
                "tracker.decay (CONFIDENCE_DECAY_RATE)",
                d.to_string(),
                "must be in (0, 1]",
            ));
        }
        if !(1..=10_000).contains(&self.scheduler.deadline_ms) {
            return Err(bad(
                "scheduler.deadline_ms",
                self.scheduler.deadline_ms.to_string(),
                "must be 1..=10000",
            ));
        }
        if !(1..=600_000).contains(&self.scheduler.file_deadline_ms) {
            return Err(bad(
                "scheduler.file_deadline_ms",
                self.scheduler.file_deadline_ms.to_string(),
                "must be 1..=600000",
            ));
        }
        for (key, v) in [
            ("scheduler.lookahead", self.scheduler.lookahead),
            ("scheduler.file_lookahead", self.scheduler.file_lookahead),
        ] {
            if v > 30 {
                return Err(bad(key, v.to_string(), "must be 0..=30 frames"));
            }
        }
        if self.scheduler.max_pending == 0 {
            return Err(bad(
                "scheduler.max_pending",
                "0".into(),
                "must be at least 1",
            ));
        }
        if !(1..=16).contains(&self.detector.threads) {
            return Err(bad(
                "detector.threads",
                self.detector.threads.to_string(),
                "must be 1..=16",
            ));
        }
        self.tracker.validate()?;
        self.detector.zoom.validate()?;
        let mode = self.mode()?;
        if matches!(mode, Mode::Predictive { .. }) && !self.kalman {
            return Err(bad(
                "scheduler.mode",
                self.scheduler.mode.clone(),
                "predictive mode needs the tracker (KALMAN_ENABLED=true)",
            ));
        }
        self.policy()?;
        Ok(())
    }

    pub fn mode(&self) -> Result<Mode, ConfigError> {
        match self.scheduler.mode.to_ascii_lowercase().as_str() {
            "strict" => Ok(Mode::Strict),
            "predictive" => {
                if self.scheduler.detect_every == 0 {
                    return Err(ConfigError::Value {
                        key: "scheduler.detect_every".into(),
                        value: "0".into(),
                        reason: "must be at least 1".into(),
                    });
                }
                Ok(Mode::Predictive {
                    detect_every: self.scheduler.detect_every,
                })
            }
            other => Err(ConfigError::Value {
                key: "scheduler.mode".into(),
                value: other.into(),
                reason: "expected strict or predictive".into(),
            }),
        }
    }

    pub fn scheduler_config(&self) -> Result<SchedulerConfig, ConfigError> {
        Ok(SchedulerConfig {
            mode: self.mode()?,
            deadline: Duration::from_millis(self.scheduler.deadline_ms),
            max_pending: self.scheduler.max_pending,
            // Live by default; a job whose input outruns the detector (a
            // file, an unpaced bench stream) turns it on.
            await_detections: false,
            lookahead: self.scheduler.lookahead,
        })
    }

    pub fn batcher_config(&self) -> BatcherConfig {
        BatcherConfig {
            max_batch: self.batcher.max_batch,
            max_wait: Duration::from_millis(self.batcher.max_wait_ms),
            capacity: self.batcher.capacity,
            contexts: self.batcher.contexts,
            max_per_stream: self.batcher.max_per_stream,
        }
    }

    pub fn policy(&self) -> Result<Policy, ConfigError> {
        Policy::from_file(&self.policy)
    }

    /// The detector settings the pipeline runs with: candidates and NMS
    /// reach down to the policy's lowest keep threshold, so a masked region
    /// whose score sinks is still seen (see [`Policy::keeps`]).
    pub fn pipeline_detector(&self) -> Result<DetectorConfig, ConfigError> {
        let mut floor = self.policy()?.score_floor();
        if self.detector.zoom.enabled() {
            floor = floor.min(self.detector.zoom.probe);
        }
        let mut d = self.detector.clone();
        d.min_score = d.min_score.min(floor);
        d.nms_score = d.nms_score.min(floor);
        Ok(d)
    }

    /// Resolves relative model paths against `base` (the repository or the
    /// working directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.exists() {
                let q = base.join(&*p);
                if q.exists() {
                    *p = q;
                }
            }
        };
        fix(&mut self.detector.model);
        fix(&mut self.detector.engine);
        if let Some(l) = self.detector.ort_library.as_mut() {
            fix(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_in_the_config_are_validated_by_key() {
        let ok = "[[rules]]\nname = \"f\"\nclasses = [\"FACE_MALE\"]\nhits = 3\nwindow_s = 2\nactions = [\"notify\"]\n";
        let c: Config = toml::from_str(ok).unwrap();
        assert_eq!(c.rules().unwrap().len(), 1);
        let bad = ok.replace("window_s = 2", "window_s = 0");
        let c: Config = toml::from_str(&bad).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("rules[0].window_s"), "{e}");
    }
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "kalman = true\n[batcher]\nmax_batch = 4\n[scheduler]\nmode = \"predictive\"\n",
        )
        .unwrap();
        let mut c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.batcher.max_batch, 4);
        c.apply_env(env(&[
            ("BATCH_SIZE", "6"),
            ("BATCH_MAX_WAIT_MS", "30"),
            ("CONFIDENCE_DECAY_RATE", "0.9"),
        ]))
        .unwrap();
        assert_eq!(c.batcher.max_batch, 6);
        assert_eq!(c.batcher_config().max_wait, Duration::from_millis(30));
        assert!((c.tracker.decay - 0.9).abs() < 1e-6);
        assert!(matches!(
            c.mode().unwrap(),
            Mode::Predictive { detect_every: 3 }
        ));
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = Config::default();
        let e = c.apply_env(env(&[("BATCH_SIZE", "eight")])).unwrap_err();
        assert!(e.to_string().contains("BATCH_SIZE"), "{e}");
        let e = c
            .apply_env(env(&[("KALMAN_ENABLED", "maybe")]))
            .unwrap_err();
        assert!(e.to_string().contains("KALMAN_ENABLED"), "{e}");
        c.apply_env(env(&[("CONFIDENCE_DECAY_RATE", "1.5")]))
            .unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("CONFIDENCE_DECAY_RATE"), "{e}");
        let mut c = Config::default();
        c.scheduler.mode = "yolo".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("scheduler.mode"));
        let mut c = Config {
            kalman: false,
            ..Config::default()
        };
        c.scheduler.mode = "predictive".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn detector_backend_from_file_then_env() {
        use crate::detect::DetectorBackend;
        let c: Config =
            toml::from_str("[detector]\nbackend = \"tensorrt\"\nengine = \"m/x.plan\"\n").unwrap();
        assert_eq!(c.detector.backend, DetectorBackend::TensorRt);
        assert_eq!(c.detector.engine, PathBuf::from("m/x.plan"));
        assert!(toml::from_str::<Config>("[detector]\nbackend = \"cuda\"\n").is_err());
        use crate::detect::{LetterboxMode, ResizeFilter};
        let c: Config = toml::from_str("[detector]\nletterbox = \"square\"\n").unwrap();
        assert_eq!(c.detector.letterbox, LetterboxMode::Square);
        assert_eq!(Config::default().detector.letterbox, LetterboxMode::Rect);
        assert!(toml::from_str::<Config>("[detector]\nletterbox = \"round\"\n").is_err());
        let mut c = Config::default();
        c.apply_env(env(&[("LIVECENSOR_LETTERBOX", "square")]))
            .unwrap();
        assert_eq!(c.detector.letterbox, LetterboxMode::Square);
        let e = Config::default()
            .apply_env(env(&[("LIVECENSOR_LETTERBOX", "oval")]))
            .unwrap_err();
        assert!(e.to_string().contains("LIVECENSOR_LETTERBOX"), "{e}");
        let c: Config = toml::from_str("[detector]\nresize = \"linear\"\n").unwrap();
        assert_eq!(c.detector.resize, ResizeFilter::Linear);
        assert_eq!(Config::default().detector.resize, ResizeFilter::Triangle);
        let mut c = Config::default();
        c.apply_env(env(&[("LIVECENSOR_RESIZE", "linear")]))
            .unwrap();
        assert_eq!(c.detector.resize, ResizeFilter::Linear);
        let e = Config::default()
            .apply_env(env(&[("LIVECENSOR_RESIZE", "cubic")]))
            .unwrap_err();
        assert!(e.to_string().contains("LIVECENSOR_RESIZE"), "{e}");
        let mut c = Config::default();
        assert_eq!(c.detector.backend, DetectorBackend::Onnx);
        c.apply_env(env(&[
            ("LIVECENSOR_DETECTOR", "tensorrt"),
            ("LIVECENSOR_ENGINE", "/p/e.plan"),
        ]))
        .unwrap();
        assert_eq!(c.detector.backend, DetectorBackend::TensorRt);
        assert_eq!(c.detector.engine, PathBuf::from("/p/e.plan"));
        let e = c
            .apply_env(env(&[("LIVECENSOR_DETECTOR", "tpu")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("LIVECENSOR_DETECTOR") && e.contains("onnx or tensorrt"),
            "{e}"
        );
    }

    #[test]
    fn documented_example_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.example.toml");
        let c = Config::load(Some(&path)).unwrap();
        c.validate().unwrap();
        let p = c.policy().unwrap();
        let b = crate::detect::class_index("BUTTOCKS_EXPOSED").unwrap() as usize;
        assert!((p.threshold[b] - 0.4).abs() < 1e-6);
        assert_eq!(c.batcher_config().max_batch, 8);
    }

    #[test]
    fn unknown_key_and_missing_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[batcher]\nmax_bach = 4\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err();
        assert!(e.to_string().contains("max_bach"), "{e}");
        let e = Config::load(Some(&dir.path().join("none.toml"))).unwrap_err();
        assert!(e.to_string().contains("none.toml"), "{e}");
    }

    /// Threads x contexts follow the core count where neither the file nor
    /// a flag set them; a set thread count divides the cores; TensorRT
    /// keeps its contexts.
    #[test]
    fn detector_sizes_follow_the_core_count_unless_set() {
        assert_eq!(detector_defaults(2, None), (1, 2));
        assert_eq!(detector_defaults(16, None), (1, 16));
        assert_eq!(detector_defaults(64, None), (1, 16));
        assert_eq!(detector_defaults(1, None), (1, 1));
        assert_eq!(detector_defaults(16, Some(4)), (4, 4));
        assert_eq!(detector_defaults(2, Some(4)), (4, 1));

        let mut c = Config::load(None).unwrap();
        c.resolve_detector_defaults(8);
        assert_eq!((c.detector.threads, c.batcher.contexts), (1, 8));
        c.validate().unwrap();

        let p = Path::new("x.toml");
        let mut c = Config::parse("[detector]\nthreads = 2\n", p).unwrap();
        c.resolve_detector_defaults(8);
        assert_eq!((c.detector.threads, c.batcher.contexts), (2, 4));

        let mut c = Config::parse("[batcher]\ncontexts = 3\n", p).unwrap();
        c.resolve_detector_defaults(8);
        assert_eq!((c.detector.threads, c.batcher.contexts), (1, 3));
        assert!(c.detector_sizes().contains("from the core count, set"));

        let mut c = Config::parse("[detector]\nbackend = \"tensorrt\"\n", p).unwrap();
        c.resolve_detector_defaults(8);
        assert_eq!(c.batcher.contexts, BatcherConfig::default().contexts);
    }
}
