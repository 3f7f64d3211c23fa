//! Moderation: debounced events out of the censor (exposures, fail-closed
//! spans), rules that act on them, and delivery that never blocks media.
//!
//! The deciding parts are sans-IO (they take `now`, tests drive a synthetic
//! clock).

pub mod debounce;
pub mod event;

pub use debounce::{DebounceConfig, ExposureTracker, FrameObservation, Region};
pub use event::{Event, EventBody, Exposure, Source};
