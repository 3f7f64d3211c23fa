//! Moderation: debounced events out of the censor (exposures, fail-closed
//! spans), rules that act on them, and delivery that never blocks media.
//!
//! The deciding parts are sans-IO (they take `now`, tests drive a synthetic
//! clock): `debounce::ExposureTracker`, `rules::RuleEngine`, and
//! `session::SessionModeration`, which ties both to one broadcaster's track.
//! Delivery (`deliver::Moderation`) and LiveKit calls (`actions`) do the IO.

pub mod actions;
pub mod debounce;
pub mod deliver;
pub mod event;
pub mod rules;
pub mod session;
pub mod webhook;

pub use actions::{perform, LiveKitRoomActions, RoomActions};
pub use debounce::{DebounceConfig, ExposureTracker, FrameObservation, Region};
pub use deliver::{Moderation, ModerationBuilder, SinkStats};
pub use event::{Event, EventBody, Exposure, Source};
pub use rules::{Action, Rule, RuleConfig, RuleEngine, RulesFile, Trigger};
pub use session::{ActionRequest, CensorWhole, SessionModeration, Step};
