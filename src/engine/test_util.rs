//! A stream engine whose detector finds nothing, for the tests of the
//! engine and of its live source and sink.

use super::{Engine, EngineOptions};
use crate::backend::Backend;
use crate::detect::{DetectBackend, Letterbox};
use crate::error::DetectError;
use crate::frame::Detection;
use crate::pipeline::batcher::BatcherConfig;
use crate::pipeline::scheduler::SchedulerConfig;
use crate::pipeline::{DetectService, StreamOptions, StreamPipeline};
use crate::policy::Policy;
use std::sync::Arc;

/// A detector that finds nothing: every intact frame is verified.
pub struct Nothing;

impl DetectBackend for Nothing {
    fn input_size(&self) -> usize {
        32
    }
    fn detect(
        &mut self,
        _: &[f32],
        batch: usize,
        _: &[Letterbox],
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        Ok(vec![Vec::new(); batch])
    }
}

/// An engine on `backend` with the default policy, no tracker and
/// [`Nothing`] as its detector.
pub fn engine_finding_nothing(backend: &Backend, opts: EngineOptions) -> Engine {
    engine_with_detector(backend, opts, Box::new(Nothing), Policy::default())
}

/// An engine on `backend` with `detector`, `policy` and no tracker.
pub fn engine_with_detector(
    backend: &Backend,
    opts: EngineOptions,
    detector: Box<dyn DetectBackend>,
    policy: Policy,
) -> Engine {
    let svc = Arc::new(
        DetectService::start(vec![detector], BatcherConfig::default()).expect("a detector service"),
    );
    let stream = StreamOptions {
        policy,
        scheduler: SchedulerConfig::default(),
        tracker: None,
        resize: Default::default(),
        zoom: Default::default(),
    };
    Engine::new(StreamPipeline::new(0, svc, stream), backend, opts).expect("an engine")
}
