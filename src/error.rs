//! One error enum for the crate; each subsystem has its own enum converted
//! with `From`, so a message always names the stage, the path and the reason.

use std::path::PathBuf;

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    LiveKit(#[from] LiveKitError),
    #[error(transparent)]
    Moderation(#[from] ModerationError),
    #[error("{0} is not compiled into this binary (rebuild with `--features {1}`)")]
    NotCompiled(&'static str, &'static str),
    #[error("GPU unavailable: {0}")]
    Gpu(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Containers, bitstreams, decoders and encoders.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    #[error("{path}: unsupported input: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: malformed {container}: {reason}")]
    Malformed {
        path: PathBuf,
        container: &'static str,
        reason: String,
    },
    #[error("{path}: empty input (no video frames)")]
    Empty { path: PathBuf },
    #[error("H.264 decoder: {0}")]
    Decode(String),
    #[error("H.264 encoder: {0}")]
    Encode(String),
    #[error("frame size {width}x{height} is not supported: {reason}")]
    BadDimensions {
        width: usize,
        height: usize,
        reason: String,
    },
}

/// Model loading and inference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    #[error("model file {path} not found: run `bash scripts/setup.sh` to fetch it")]
    ModelMissing { path: PathBuf },
    #[error(
        "onnxruntime library {path} not found: run `bash scripts/setup.sh`, or set ORT_DYLIB_PATH"
    )]
    RuntimeMissing { path: PathBuf },
    #[error("onnxruntime: {0}")]
    Runtime(String),
    #[error("model output has shape {shape:?}, expected [batch, 22, anchors]")]
    BadOutput { shape: Vec<i64> },
    /// This binary has no TensorRT backend; the reason says how to get one.
    #[error("TensorRT backend not built: {reason}")]
    TrtNotBuilt { reason: String },
    /// TensorRT or its CUDA side failed; the message names the library,
    /// call or tensor.
    #[error("TensorRT: {0}")]
    TensorRt(String),
    /// A TensorRT plan that cannot be used, found before TensorRT is loaded
    /// where possible (missing, truncated, built by another version).
    #[error("TensorRT plan {path}: {reason}")]
    BadPlan { path: PathBuf, reason: String },
    /// `engine build` arguments that cannot work.
    #[error("engine build: {0}")]
    BadBuildOptions(String),
    /// A fault injected on purpose (`--fault-detector-*`, tests only).
    #[error("injected fault: {0}")]
    Injected(&'static str),
}

/// Configuration and policy values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("bad value for {key}: {value:?} ({reason})")]
    Value {
        key: String,
        value: String,
        reason: String,
    },
    #[error("unknown class {0:?} (run `livecensor classes` for the list)")]
    UnknownClass(String),
}

/// The scheduler, batcher and runners.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error("detector queue full ({capacity} frames)")]
    Backpressure { capacity: usize },
    #[error("detector worker stopped: {0}")]
    WorkerGone(String),
    #[error("{0}")]
    Other(String),
}

/// LiveKit signalling, WebRTC transport and room sessions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveKitError {
    #[error("LiveKit access token: {0}")]
    Token(String),
    #[error("LiveKit signalling connection to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server answered and said no (HTTP 401/403: a wrong key, secret
    /// or grant): retrying cannot help.
    #[error("LiveKit at {url} refused us ({status}): {reason}")]
    Refused {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("LiveKit signalling: {0}")]
    Signal(String),
    #[error("LiveKit server sent no pong for {0:?}")]
    PingTimeout(std::time::Duration),
    #[error("WebRTC ({pc}): {reason}")]
    Rtc { pc: &'static str, reason: String },
    #[error("UDP socket: {0}")]
    Socket(String),
    #[error("LiveKit session {room}: {reason}")]
    Session { room: String, reason: String },
    #[error("webhook: {0}")]
    Webhook(String),
    #[error("fault injection: {0}")]
    Fault(String),
    #[error("LiveKit agent dispatch: {0}")]
    Agent(String),
}

/// Moderation events, their delivery and the room actions rules take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModerationError {
    #[error("events file {path}: {source}")]
    EventsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("events webhook {url}: {reason}")]
    Webhook { url: String, reason: String },
    #[error("events webhook {url} needs a signing secret (set LIVECENSOR_EVENTS_SECRET)")]
    MissingSecret { url: String },
    #[error("event signature: {0}")]
    Signature(String),
    #[error("moderation events need a tokio runtime: {0}")]
    NoRuntime(String),
    #[error("{action} in room {room}: {reason}")]
    Action {
        action: &'static str,
        room: String,
        reason: String,
    },
}
