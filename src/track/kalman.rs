//! Constant-velocity Kalman filter over `[cx, cy, w, h]` boxes.
//!
//! The filter is stateless (like Similari's and DeepSORT's): it holds only
//! its tuning, and every call takes a [`KalmanState`] and returns a new one, so
//! a track owns its state and a caller can extrapolate without mutating it.
//! Noise is proportional to the box size, so a large box may wander more
//! pixels than a small one. Time is counted in frames; `dt` may be fractional,
//! above 1 (skipped frames) or 0 (no motion, no added uncertainty).

use nalgebra::{SMatrix, SVector};
use serde::Deserialize;

use crate::frame::BBox;

/// Index of the box centre x in the state vector.
pub const CX: usize = 0;
/// Index of the box centre y.
pub const CY: usize = 1;
/// Index of the box width.
pub const W: usize = 2;
/// Index of the box height.
pub const H: usize = 3;
/// Index of the centre x velocity (pixels per frame).
pub const VCX: usize = 4;
/// Index of the centre y velocity.
pub const VCY: usize = 5;
/// Index of the width velocity.
pub const VW: usize = 6;
/// Index of the height velocity.
pub const VH: usize = 7;

/// State dimension.
pub const STATE_DIM: usize = 8;
/// Measurement dimension (`[cx, cy, w, h]`).
pub const MEAS_DIM: usize = 4;

/// State vector `[cx, cy, w, h, vcx, vcy, vw, vh]`.
pub type StateVector = SVector<f32, STATE_DIM>;
/// State covariance.
pub type StateMatrix = SMatrix<f32, STATE_DIM, STATE_DIM>;
/// Measurement vector `[cx, cy, w, h]`.
pub type MeasVector = SVector<f32, MEAS_DIM>;
/// Measurement covariance.
pub type MeasMatrix = SMatrix<f32, MEAS_DIM, MEAS_DIM>;
/// Measurement model: picks the positional half of the state.
pub type MeasModel = SMatrix<f32, MEAS_DIM, STATE_DIM>;

/// Noise tuning. Standard deviations are `weight x box side`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct KalmanParams {
    /// Position noise per frame, relative to the box side (DeepSORT: 1/20).
    pub std_weight_position: f32,
    /// Velocity noise per frame, relative to the box side (DeepSORT: 1/160).
    pub std_weight_velocity: f32,
    /// Initial position std, in units of the position noise (DeepSORT: 2).
    pub init_position_factor: f32,
    /// Initial velocity std, in units of the velocity noise (DeepSORT: 10).
    pub init_velocity_factor: f32,
    /// Smallest side (pixels) used to scale noise, so a degenerate box still
    /// has a positive-definite covariance.
    pub min_side: f32,
}

impl Default for KalmanParams {
    fn default() -> Self {
        KalmanParams {
            std_weight_position: 1.0 / 20.0,
            std_weight_velocity: 1.0 / 160.0,
            init_position_factor: 2.0,
            init_velocity_factor: 10.0,
            min_side: 1.0,
        }
    }
}

/// Mean and covariance of one track.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KalmanState {
    pub mean: StateVector,
    pub covariance: StateMatrix,
}

impl KalmanState {
    /// The mean as a box (negative sizes clamp to 0).
    pub fn bbox(&self) -> BBox {
        let m = &self.mean;
        let (w, h) = (m[W].max(0.0), m[H].max(0.0));
        BBox::new(
            m[CX] - w * 0.5,
            m[CY] - h * 0.5,
            m[CX] + w * 0.5,
            m[CY] + h * 0.5,
        )
    }

    /// Standard deviation of the left/right edges and of the top/bottom edges:
    /// an edge is `c -/+ s/2`, so its variance is `var(c) + var(s)/4`
    /// (centre and size are independent in this model).
    pub fn edge_std(&self) -> (f32, f32) {
        let p = &self.covariance;
        let vx = p[(CX, CX)].max(0.0) + 0.25 * p[(W, W)].max(0.0);
        let vy = p[(CY, CY)].max(0.0) + 0.25 * p[(H, H)].max(0.0);
        (vx.sqrt(), vy.sqrt())
    }

    /// Every number finite (a corrupt state must never reach a mask).
    pub fn is_finite(&self) -> bool {
        self.mean.iter().all(|v| v.is_finite()) && self.covariance.iter().all(|v| v.is_finite())
    }
}

/// Box as a measurement `[cx, cy, w, h]`.
pub fn measurement(b: &BBox) -> MeasVector {
    let (cx, cy) = b.center();
    MeasVector::new(cx, cy, b.width(), b.height())
}

/// Stateless constant-velocity filter.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KalmanFilter {
    pub params: KalmanParams,
}

impl KalmanFilter {
    pub fn new(params: KalmanParams) -> Self {
        KalmanFilter { params }
    }

    fn sides(&self, w: f32, h: f32) -> (f32, f32) {
        let min = self.params.min_side.max(f32::MIN_POSITIVE);
        let w = if w.is_finite() { w.abs().max(min) } else { min };
        let h = if h.is_finite() { h.abs().max(min) } else { min };
        (w, h)
    }

    /// A new track at `bbox`, at rest, with wide velocity uncertainty.
    pub fn initiate(&self, bbox: BBox) -> KalmanState {
        let z = measurement(&bbox);
        let mut mean = StateVector::zeros();
        mean.fixed_rows_mut::<MEAS_DIM>(0).copy_from(&z);
        let (w, h) = self.sides(z[2], z[3]);
        let p = &self.params;
        let sp = p.init_position_factor * p.std_weight_position;
        let sv = p.init_velocity_factor * p.std_weight_velocity;
        let std = [
            sp * w,
            sp * h,
            sp * w,
            sp * h,
            sv * w,
            sv * h,
            sv * w,
            sv * h,
        ];
        let covariance =
            StateMatrix::from_diagonal(&StateVector::from_iterator(std.iter().map(|s| s * s)));
        KalmanState { mean, covariance }
    }

    /// Extrapolates `dt` frames ahead. For whole `dt` this equals `dt` single
    /// steps of DeepSORT's predict (noise scaled by the starting box size):
    /// position variance gains `dt*q_p + q_v*sum(k^2)` and the position /
    /// velocity covariance `q_v*sum(k)` for `k < dt`. Negative or non-finite
    /// `dt` is treated as 0.
    pub fn predict(&self, state: &KalmanState, dt_frames: f32) -> KalmanState {
        let dt = if dt_frames.is_finite() {
            dt_frames.max(0.0)
        } else {
            0.0
        };
        if dt == 0.0 {
            return *state;
        }
        let mut f = StateMatrix::identity();
        for i in 0..MEAS_DIM {
            f[(i, i + MEAS_DIM)] = dt;
        }
        let mean = f * state.mean;

        let (w, h) = self.sides(state.mean[W], state.mean[H]);
        let p = &self.params;
        let sp = [p.std_weight_position * w, p.std_weight_position * h];
        let sv = [p.std_weight_velocity * w, p.std_weight_velocity * h];
        // Sums of k and k^2 over k = 0..dt-1, clamped at 0 for fractional
        // dt < 1 so the added noise stays positive semi-definite.
        let s1 = (dt * (dt - 1.0) * 0.5).max(0.0);
        let s2 = ((dt - 1.0) * dt * (2.0 * dt - 1.0) / 6.0).max(0.0);
        let mut q = StateMatrix::zeros();
        for i in 0..MEAS_DIM {
            // cx, w scale with width; cy, h with height.
            let axis = i % 2;
            let qp = sp[axis] * sp[axis];
            let qv = sv[axis] * sv[axis];
            q[(i, i)] = dt * qp + s2 * qv;
            q[(i, i + MEAS_DIM)] = s1 * qv;
            q[(i + MEAS_DIM, i)] = s1 * qv;
            q[(i + MEAS_DIM, i + MEAS_DIM)] = dt * qv;
        }
        let covariance = symmetric(f * state.covariance * f.transpose() + q);
        KalmanState { mean, covariance }
    }

    /// [`KalmanFilter::predict`], also backwards: a negative `dt` runs the
    /// motion back by `|dt|` frames, and the uncertainty grows by what
    /// `|dt|` forward steps would add (where a region was before it was
    /// first seen is no better known than where it will be).
    pub fn extrapolate(&self, state: &KalmanState, dt_frames: f32) -> KalmanState {
        if dt_frames >= 0.0 || dt_frames.is_nan() {
            return self.predict(state, dt_frames);
        }
        let back = -dt_frames;
        let grown = self.predict(state, back);
        let mut mean = state.mean;
        for i in 0..MEAS_DIM {
            mean[i] -= back * state.mean[i + MEAS_DIM];
        }
        KalmanState {
            mean,
            covariance: grown.covariance,
        }
    }

    /// Corrects `state` with a measured box. If the innovation covariance
    /// cannot be inverted (a corrupt state), the track restarts at the
    /// measurement: the detection is the better evidence of where the object is.
    pub fn update(&self, state: &KalmanState, bbox: BBox) -> KalmanState {
        let z = measurement(&bbox);
        let hm = MeasModel::identity();
        let (w, h) = self.sides(state.mean[W], state.mean[H]);
        let sp = self.params.std_weight_position;
        let r_std = [sp * w, sp * h, sp * w, sp * h];
        let r = MeasMatrix::from_diagonal(&MeasVector::from_iterator(r_std.iter().map(|s| s * s)));
        let pht = state.covariance * hm.transpose();
        let s = symmetric4(hm * pht + r);
        let Some(chol) = s.cholesky() else {
            return self.initiate(bbox);
        };
        // K = P H^T S^-1, solved as S K^T = H P (S symmetric).
        let gain = chol.solve(&pht.transpose()).transpose();
        let innovation = z - hm * state.mean;
        let mean = state.mean + gain * innovation;
        // Joseph form keeps the covariance symmetric and PSD in f32.
        let ikh = StateMatrix::identity() - gain * hm;
        let covariance =
            symmetric(ikh * state.covariance * ikh.transpose() + gain * r * gain.transpose());
        let out = KalmanState { mean, covariance };
        if out.is_finite() {
            out
        } else {
            self.initiate(bbox)
        }
    }
}

fn symmetric(m: StateMatrix) -> StateMatrix {
    (m + m.transpose()) * 0.5
}

fn symmetric4(m: MeasMatrix) -> MeasMatrix {
    (m + m.transpose()) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos_trace(s: &KalmanState) -> f32 {
        (0..MEAS_DIM).map(|i| s.covariance[(i, i)]).sum()
    }

    #[test]
    fn initiate_places_mean_at_measurement_at_rest() {
        let kf = KalmanFilter::default();
        let s = kf.initiate(BBox::new(10.0, 20.0, 50.0, 100.0));
        assert_eq!(s.mean[CX], 30.0);
        assert_eq!(s.mean[CY], 60.0);
        assert_eq!(s.mean[W], 40.0);
        assert_eq!(s.mean[H], 80.0);
        assert!((VCX..=VH).all(|i| s.mean[i] == 0.0));
        // std of cx is 2/20 of the width.
        assert!((s.covariance[(CX, CX)] - (0.1f32 * 40.0).powi(2)).abs() < 1e-3);
        assert_eq!(s.bbox(), BBox::new(10.0, 20.0, 50.0, 100.0));
    }

    #[test]
    fn update_pulls_mean_toward_measurement_and_shrinks_covariance() {
        let kf = KalmanFilter::default();
        let s0 = kf.initiate(BBox::from_xywh(100.0, 100.0, 50.0, 50.0));
        let s1 = kf.predict(&s0, 1.0);
        let meas = BBox::from_xywh(110.0, 96.0, 50.0, 50.0);
        let s2 = kf.update(&s1, meas);
        let (mx, my) = meas.center();
        assert!(s2.mean[CX] > s1.mean[CX] && s2.mean[CX] < mx);
        assert!(s2.mean[CY] < s1.mean[CY] && s2.mean[CY] > my);
        assert!(
            s2.mean[VCX] > 0.0,
            "velocity learns the direction of motion"
        );
        for i in 0..STATE_DIM {
            assert!(s2.covariance[(i, i)] < s1.covariance[(i, i)], "var {i}");
        }
    }

    #[test]
    fn predict_grows_covariance_and_moves_with_velocity() {
        let kf = KalmanFilter::default();
        let mut s = kf.initiate(BBox::from_xywh(0.0, 0.0, 40.0, 40.0));
        s.mean[VCX] = 3.0;
        s.mean[VH] = -1.0;
        let p = kf.predict(&s, 2.0);
        assert!((p.mean[CX] - (s.mean[CX] + 6.0)).abs() < 1e-4);
        assert!((p.mean[H] - (s.mean[H] - 2.0)).abs() < 1e-4);
        assert!(pos_trace(&p) > pos_trace(&s));
        for i in 0..STATE_DIM {
            assert!(p.covariance[(i, i)] > s.covariance[(i, i)], "var {i}");
        }
        let further = kf.predict(&s, 5.0);
        assert!(pos_trace(&further) > pos_trace(&p));
    }

    #[test]
    fn predict_zero_or_bad_dt_is_identity() {
        let kf = KalmanFilter::default();
        let s = kf.initiate(BBox::from_xywh(5.0, 5.0, 10.0, 10.0));
        assert_eq!(kf.predict(&s, 0.0), s);
        assert_eq!(kf.predict(&s, -3.0), s);
        assert_eq!(kf.predict(&s, f32::NAN), s);
    }

    #[test]
    fn multi_frame_predict_equals_repeated_single_steps() {
        let kf = KalmanFilter::default();
        let mut s = kf.initiate(BBox::from_xywh(50.0, 50.0, 64.0, 32.0));
        s.mean[VCX] = 2.0;
        s.mean[VCY] = -1.5;
        let once = kf.predict(&s, 3.0);
        let stepped = kf.predict(&kf.predict(&kf.predict(&s, 1.0), 1.0), 1.0);
        assert!((once.mean - stepped.mean).abs().max() < 1e-3);
        let rel = (once.covariance - stepped.covariance).abs().max() / stepped.covariance.max();
        assert!(rel < 1e-4, "relative covariance mismatch {rel}");
    }

    #[test]
    fn degenerate_boxes_stay_finite() {
        let kf = KalmanFilter::default();
        let s = kf.initiate(BBox::new(3.0, 3.0, 3.0, 3.0));
        let p = kf.predict(&s, 1.0);
        let u = kf.update(&p, BBox::new(3.0, 3.0, 3.0, 3.0));
        assert!(u.is_finite());
        assert!(u.covariance.cholesky().is_some());
    }
}
