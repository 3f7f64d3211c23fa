//! LiveKit without libwebrtc: signalling (protobuf over WebSocket, protocol
//! 17) and WebRTC media through str0m, as a sans-IO [`participant`] with a
//! thin tokio [`io`] layer, and the censoring [`session`] that joins a
//! broadcaster's raw room as a hidden subscriber and the viewers' room as a
//! publisher.
//!
//! Why not the official SDK: it downloads a prebuilt libwebrtc at build time
//! and only delivers decoded frames; we need the H.264 access units (our own
//! decoder feeds the detector) and a build that works offline.

pub mod dispatch;
pub mod fault;
pub mod fmtp;
pub mod io;
pub mod media;
pub mod moderate;
pub mod moderator;
pub mod participant;
pub mod preview;
pub mod session;
pub mod signal;
mod supervise;
pub mod timing;
pub mod token;
pub mod webhook;
pub mod worker;

pub use participant::{
    Participant, ParticipantConfig, ParticipantEvent, ParticipantOutput, Pc, PublishSpec,
    PUBLISHED_PROFILE_LEVEL_ID,
};
pub use session::{raw_room, LiveKitSettings, Session, SessionStats};
pub use supervise::JobInput;
