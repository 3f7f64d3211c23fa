//! Track lane: a CPU multi-object tracker over detector boxes (Similari
//! style). A stateless constant-velocity Kalman filter ([`KalmanFilter`])
//! carries each box between detections; [`Tracker`] associates detections to
//! tracks with the Hungarian algorithm on IoU, decays the confidence of
//! undetected tracks and predicts widened boxes for any frame.

pub mod kalman;
pub mod tracker;

pub use kalman::{KalmanFilter, KalmanParams, KalmanState};
pub use tracker::{Track, TrackPrediction, TrackState, Tracker, TrackerConfig};
