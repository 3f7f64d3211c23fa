//! The lanes: the continuous batcher and per-stream scheduler (sans-IO), the
//! detector service threads, the stream pipeline that glues them to the
//! tracker and censor, the sidecar, and the file runner.

pub mod batcher;
pub mod run;
pub mod scheduler;
pub mod service;
pub mod sidecar;
pub mod stream;

pub use run::{censor_file, Summary};
pub use service::DetectService;
pub use sidecar::{FrameRecord, Status};
pub use stream::{Released, StreamOptions, StreamPipeline};
