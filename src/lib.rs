//! livecensor: censors live video in real time. The folders follow the
//! pipeline: `source` (read and decode) -> `detect` (preprocess, model,
//! postprocess) -> `pipeline` (batcher, scheduler, runners) -> `track`
//! (Kalman) -> `censor` (blur, pixelate, fill) -> `sink` (encode and write).

pub mod audit;
pub mod backend;
pub mod bench;
pub mod censor;
pub mod codec;
pub mod config;
pub mod detect;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod gpu;
pub mod livekit;
pub mod metrics;
pub mod moderation;
pub mod pipeline;
pub mod policy;
pub mod sink;
pub mod source;
pub mod stats;
pub mod synth;
pub mod track;

pub use error::{Error, Result};
