//! The motion scenarios: where each sprite (and the occluder) sits on frame
//! `i`. Pure geometry, no pixels, so ground truth costs nothing to compute.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// One kind of motion the tracker must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Left to right at ~8 px/frame (720p, 30 fps).
    ConstantPan,
    /// ~25 px/frame, bouncing off the frame edges.
    FastPan,
    /// Sprite scaled 0.5x -> 1.2x -> 0.5x around the frame centre.
    Zoom,
    /// From rest, x = a t^2.
    Acceleration,
    /// 15 frames moving, 15 frames still, repeated.
    StopStart,
    /// Two faces moving in opposite directions, crossing mid-clip.
    Crossing,
    /// An opaque slab hides the face for ~10 frames mid-clip.
    Occlusion,
    /// Background and face position jump at the middle frame.
    HardCut,
    /// Nothing moves.
    Static,
}

const ALL: [Scenario; 9] = [
    Scenario::ConstantPan,
    Scenario::FastPan,
    Scenario::Zoom,
    Scenario::Acceleration,
    Scenario::StopStart,
    Scenario::Crossing,
    Scenario::Occlusion,
    Scenario::HardCut,
    Scenario::Static,
];

impl Scenario {
    pub fn all() -> &'static [Scenario] {
        &ALL
    }

    /// The kebab-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::ConstantPan => "constant-pan",
            Scenario::FastPan => "fast-pan",
            Scenario::Zoom => "zoom",
            Scenario::Acceleration => "acceleration",
            Scenario::StopStart => "stop-start",
            Scenario::Crossing => "crossing",
            Scenario::Occlusion => "occlusion",
            Scenario::HardCut => "hard-cut",
            Scenario::Static => "static",
        }
    }

    /// Position in [`Scenario::all`], used to vary the background per scenario.
    pub(crate) fn index(self) -> usize {
        ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// Where everything sits on frame `i`.
    pub(crate) fn layout(self, g: &Geometry, i: usize) -> Layout {
        let n = g.frames.max(2) as f64 - 1.0;
        let fi = i as f64;
        let t = (fi / n).clamp(0.0, 1.0);
        let (lo, hi) = g.face_x_range();
        let mid_y = g.height * 0.5;
        let centre = |cx: f64, cy: f64| vec![g.place(0, cx, cy, g.base_height, false)];
        let mut background = Backdrop::Main;
        let mut occluder = None;
        let sprites = match self {
            Scenario::Static => centre(g.width * 0.5, mid_y),
            Scenario::ConstantPan => {
                let v = 8.0 * g.speed;
                let start = (g.width * 0.5 - v * n * 0.5).clamp(lo, hi);
                centre(bounce(start, v * fi, lo, hi), mid_y)
            }
            Scenario::FastPan => centre(bounce(lo, 25.0 * g.speed * fi, lo, hi), mid_y),
            Scenario::Zoom => {
                let z = 0.5 + 0.35 * (1.0 - (std::f64::consts::TAU * fi / n).cos());
                let h = (g.base_height as f64 * z).round().max(2.0) as u32;
                vec![g.place(0, g.width * 0.5, mid_y, h, false)]
            }
            Scenario::Acceleration => centre(lo + (hi - lo) * t * t, mid_y),
            Scenario::StopStart => {
                let period = (15.0 * g.fps_ratio).round().max(1.0) as usize;
                let moved = |k: usize| (k / (2 * period)) * period + (k % (2 * period)).min(period);
                let v = 12.0 * g.speed;
                let travel = v * moved(g.frames.saturating_sub(1)) as f64;
                let start = (g.width * 0.5 - travel * 0.5).clamp(lo, hi);
                centre(bounce(start, v * moved(i) as f64, lo, hi), mid_y)
            }
            Scenario::Crossing => {
                // Back sprite first: object 1 (mirrored, higher) passes behind
                // object 0, whose top edge then covers at most half its face.
                let d = g.base_height as f64 * 0.25;
                vec![
                    g.place(1, hi - (hi - lo) * t, mid_y - d, g.base_height, true),
                    g.place(0, lo + (hi - lo) * t, mid_y + d, g.base_height, false),
                ]
            }
            Scenario::Occlusion => {
                let (vf, vo) = (4.0 * g.speed, 20.0 * g.speed);
                let start = (g.width * 0.5 - vf * n * 0.5).clamp(lo, hi);
                let face_x = |k: f64| bounce(start, vf * k, lo, hi);
                let m = n * 0.5;
                let slab_cx = face_x(m) - vo * (fi - m);
                occluder = Some(((slab_cx - g.slab_width as f64 * 0.5).round() as i64, 0));
                centre(face_x(fi), mid_y)
            }
            Scenario::HardCut => {
                let cut = g.frames / 2;
                let (dy, v) = (g.height * 0.06, 3.0 * g.speed);
                if i < cut {
                    centre(g.width * 0.3 + v * fi, mid_y + dy)
                } else {
                    background = Backdrop::Alternate;
                    centre(g.width * 0.7 - v * (i - cut) as f64, mid_y - dy)
                }
            }
        };
        Layout {
            background,
            sprites,
            occluder,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.iter()
            .copied()
            .find(|sc| sc.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ConfigError::Value {
                key: "scenario".into(),
                value: s.into(),
                reason: format!("expected one of {}", ALL.map(Scenario::name).join(", ")),
            })
    }
}

/// Crop of the 512x512 astronaut photo used as the sprite: head and
/// shoulders, with the face centred horizontally and vertically.
pub(crate) const CROP: [f64; 4] = [73.0, 0.0, 300.0, 260.0];
/// The detector's FACE_FEMALE box on the photo, corners x0, y0, x1, y1.
pub(crate) const FACE: [f64; 4] = [173.0, 82.0, 273.0, 179.0];

/// Frame-size-dependent constants shared by layout and ground truth.
#[derive(Clone, Debug)]
pub(crate) struct Geometry {
    pub width: f64,
    pub height: f64,
    pub frames: usize,
    /// Converts px/frame at 720p30 to this size and rate.
    pub speed: f64,
    /// 30 / fps: converts frame counts at 30 fps to this rate.
    pub fps_ratio: f64,
    /// Sprite height at zoom 1 (~0.58 of the frame height).
    pub base_height: u32,
    pub slab_width: u32,
}

impl Geometry {
    pub fn new(width: usize, height: usize, fps: f64, frames: usize) -> Self {
        let (w, h) = (width as f64, height as f64);
        let fps_ratio = fps / 30.0;
        let speed = (h / 720.0) / fps_ratio;
        let base_height = (h * 0.58).round().max(2.0) as u32;
        let mut g = Geometry {
            width: w,
            height: h,
            frames,
            speed,
            fps_ratio,
            base_height,
            slab_width: 0,
        };
        // Covers the whole face for 8 frames at the relative speed of face
        // (4) and slab (20); with the frames under 10% visible on either
        // side, truth is absent for ~10 frames.
        let f = g.face_in_sprite(base_height, false);
        let face_w = f[2] - f[0];
        g.slab_width = (face_w + 8.0 * 24.0 * speed).round().max(1.0) as u32;
        g
    }

    /// Sprite width for a sprite height, keeping the crop's aspect ratio.
    pub fn sprite_width(&self, height: u32) -> u32 {
        (CROP[2] * height as f64 / CROP[3]).round().max(1.0) as u32
    }

    /// Face box (x0, y0, x1, y1) inside a sprite of this height.
    pub fn face_in_sprite(&self, height: u32, mirrored: bool) -> [f64; 4] {
        let sx = self.sprite_width(height) as f64 / CROP[2];
        let sy = height as f64 / CROP[3];
        let (mut x0, mut x1) = (FACE[0] - CROP[0], FACE[2] - CROP[0]);
        if mirrored {
            (x0, x1) = (CROP[2] - x1, CROP[2] - x0);
        }
        [
            x0 * sx,
            (FACE[1] - CROP[1]) * sy,
            x1 * sx,
            (FACE[3] - CROP[1]) * sy,
        ]
    }

    /// Horizontal range for the face centre that keeps the face in frame
    /// with a small margin, at zoom 1.
    pub fn face_x_range(&self) -> (f64, f64) {
        let f = self.face_in_sprite(self.base_height, false);
        let lo = (f[2] - f[0]) * 0.5 + self.width * 0.02;
        (lo, (self.width - lo).max(lo))
    }

    /// A sprite whose face centre lands on (cx, cy), snapped to whole pixels.
    pub fn place(&self, object: u32, cx: f64, cy: f64, height: u32, mirrored: bool) -> Placement {
        let f = self.face_in_sprite(height, mirrored);
        Placement {
            object,
            x: (cx - (f[0] + f[2]) * 0.5).round() as i64,
            y: (cy - (f[1] + f[3]) * 0.5).round() as i64,
            height,
            mirrored,
        }
    }
}

/// Which background photo a frame shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backdrop {
    Main,
    Alternate,
}

/// One sprite on one frame, top-left corner in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub object: u32,
    pub x: i64,
    pub y: i64,
    pub height: u32,
    pub mirrored: bool,
}

/// Everything on one frame: sprites back to front, then the occluder slab
/// (top-left corner; full frame height) on top.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Layout {
    pub background: Backdrop,
    pub sprites: Vec<Placement>,
    pub occluder: Option<(i64, i64)>,
}

/// `start + dist` folded into `[lo, hi]` by reflecting at both ends.
pub(crate) fn bounce(start: f64, dist: f64, lo: f64, hi: f64) -> f64 {
    let span = hi - lo;
    if span <= 0.0 {
        return lo;
    }
    let p = (start - lo + dist).rem_euclid(2.0 * span);
    lo + if p <= span { p } else { 2.0 * span - p }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for s in Scenario::all() {
            assert_eq!(s.name().parse::<Scenario>().ok(), Some(*s));
            let json = serde_json::to_string(s).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", s.name()));
            assert_eq!(serde_json::from_str::<Scenario>(&json).ok(), Some(*s));
        }
        assert_eq!(Scenario::all().len(), 9);
        let err = "spin".parse::<Scenario>().unwrap_err().to_string();
        assert!(
            err.contains("constant-pan") && err.contains("spin"),
            "{err}"
        );
    }

    #[test]
    fn bounce_reflects_inside_range() {
        assert_eq!(bounce(10.0, 5.0, 0.0, 100.0), 15.0);
        assert_eq!(bounce(90.0, 20.0, 0.0, 100.0), 90.0);
        assert_eq!(bounce(0.0, 250.0, 0.0, 100.0), 50.0);
        for k in 0..1000 {
            let p = bounce(3.0, k as f64 * 7.3, 0.0, 100.0);
            assert!((0.0..=100.0).contains(&p));
        }
    }

    #[test]
    fn mirrored_face_box_is_reflected_about_the_sprite_centre() {
        let g = Geometry::new(1280, 720, 30.0, 90);
        let w = g.sprite_width(g.base_height) as f64;
        let a = g.face_in_sprite(g.base_height, false);
        let b = g.face_in_sprite(g.base_height, true);
        assert!((b[0] - (w - a[2])).abs() < 1e-9 && (b[2] - (w - a[0])).abs() < 1e-9);
        assert_eq!((a[1], a[3]), (b[1], b[3]));
        // Face at least 160 px wide at 720p: >= 40 px in a 320 detector input.
        assert!(a[2] - a[0] >= 158.0, "{a:?}");
    }
}
