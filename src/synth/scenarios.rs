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
    /// Enters fast along the diagonal from outside the top-left corner
    /// (~22 px/frame), then drifts.
    DiagonalEntry,
    /// A slow pan filmed by a shaking camera: the whole picture jumps by up
    /// to 2% of the height every frame (seeded).
    Shaky,
    /// Half in the frame: along the right edge, then along the bottom edge.
    Edge,
    /// Faces 40-80 px tall at 720p (one panning and changing size, one
    /// still).
    SmallFaces,
    /// A pan at 40% contrast, brightness swinging from dark to bright.
    LowContrast,
    /// ~30 px/frame, bouncing, blurred along the motion (a 1/30 s shutter).
    MotionBlur,
    /// The face itself changes: rotation up to 25 degrees, scale 0.55-1.0,
    /// tight or loose crop, brightness, mirrored half way.
    VariedFace,
    /// The content mix of a real stream: nothing to censor most of the
    /// time, a face in view 10% of it, in spells (every 5 s, for 0.5 s,
    /// starting 1.33 s into each period so spells fall between key
    /// frames). Not in [`Scenario::all`] (the motion scenarios): it is the
    /// passthrough bench.
    Mixed,
}

const ALL: [Scenario; 16] = [
    Scenario::ConstantPan,
    Scenario::FastPan,
    Scenario::Zoom,
    Scenario::Acceleration,
    Scenario::StopStart,
    Scenario::Crossing,
    Scenario::Occlusion,
    Scenario::HardCut,
    Scenario::Static,
    Scenario::DiagonalEntry,
    Scenario::Shaky,
    Scenario::Edge,
    Scenario::SmallFaces,
    Scenario::LowContrast,
    Scenario::MotionBlur,
    Scenario::VariedFace,
];

impl Scenario {
    /// The motion scenarios (every frame has a face).
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
            Scenario::DiagonalEntry => "diagonal-entry",
            Scenario::Shaky => "shaky",
            Scenario::Edge => "edge",
            Scenario::SmallFaces => "small-faces",
            Scenario::LowContrast => "low-contrast",
            Scenario::MotionBlur => "motion-blur",
            Scenario::VariedFace => "varied-face",
            Scenario::Mixed => "mixed",
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
        let mut shake = (0, 0);
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
            Scenario::DiagonalEntry => {
                let from = (-0.25 * g.width, -0.3 * g.height);
                let to = (0.45 * g.width, 0.5 * g.height);
                let len = ((to.0 - from.0).powi(2) + (to.1 - from.1).powi(2)).sqrt();
                let v = 22.0 * g.speed;
                let arrive = (len / v).ceil();
                let k = fi.min(arrive) / arrive;
                let drift = 2.0 * g.speed * (fi - arrive).max(0.0);
                let x = (from.0 + (to.0 - from.0) * k + drift).min(hi);
                centre(x, from.1 + (to.1 - from.1) * k)
            }
            Scenario::Shaky => {
                let amp = (g.height * 0.02).round() as i64;
                let (dx, dy) = (jitter(i, 0, amp), jitter(i, 1, amp));
                shake = (dx, dy);
                let v = 3.0 * g.speed;
                let start = (g.width * 0.5 - v * n * 0.5).clamp(lo, hi);
                let cx = bounce(start, v * fi, lo, hi) + dx as f64;
                centre(cx, mid_y + dy as f64)
            }
            Scenario::Edge => {
                let f = g.face_in_sprite(g.base_height, false, Look::NONE);
                let (fw, fh) = (f[2] - f[0], f[3] - f[1]);
                let half = g.frames / 2;
                if i < half {
                    // 55% of the face inside the right edge, moving down.
                    let (top, bottom) = (fh * 0.5, (g.height - fh * 0.5).max(fh * 0.5));
                    let y = bounce(top, 4.0 * g.speed * fi, top, bottom);
                    centre(g.width - 0.05 * fw, y)
                } else {
                    // 60% inside the bottom edge, moving left.
                    let x = bounce(hi, 6.0 * g.speed * (i - half) as f64, lo, hi);
                    centre(g.width - x, g.height - 0.1 * fh)
                }
            }
            Scenario::SmallFaces => {
                // Face heights in 720p pixels, scaled to the frame.
                let face_h = 60.0 - 20.0 * (std::f64::consts::TAU * fi / n).cos();
                let v = 5.0 * g.speed;
                let start = (g.width * 0.2).clamp(lo, hi);
                vec![
                    g.place_look(
                        1,
                        g.width * 0.75,
                        g.height * 0.3,
                        g.sprite_for_face(50.0),
                        false,
                        Look::NONE,
                    ),
                    g.place_look(
                        0,
                        bounce(start, v * fi, lo, hi),
                        g.height * 0.6,
                        g.sprite_for_face(face_h),
                        false,
                        Look::NONE,
                    ),
                ]
            }
            Scenario::LowContrast => {
                let v = 6.0 * g.speed;
                let start = (g.width * 0.5 - v * n * 0.5).clamp(lo, hi);
                let look = Look {
                    contrast: 40,
                    brightness: (40.0 * (std::f64::consts::TAU * fi / n).sin()).round() as i16,
                    ..Look::NONE
                };
                let cx = bounce(start, v * fi, lo, hi);
                vec![g.place_look(0, cx, mid_y, g.base_height, false, look)]
            }
            Scenario::MotionBlur => {
                let v = 30.0 * g.speed;
                let look = Look {
                    blur: v.round().max(0.0) as u16,
                    ..Look::NONE
                };
                let cx = bounce(lo, v * fi, lo, hi);
                vec![g.place_look(0, cx, mid_y, g.base_height, false, look)]
            }
            Scenario::Mixed => {
                let period = (150.0 * g.fps_ratio).round().max(10.0) as usize;
                let spell = (period / 10).max(1);
                let start = period * 4 / 15;
                let k = i % period;
                if (start..start + spell).contains(&k) {
                    let v = 4.0 * g.speed;
                    let x = bounce(g.width * 0.35, v * (k - start) as f64, lo, hi);
                    centre(x, mid_y)
                } else {
                    Vec::new()
                }
            }
            Scenario::VariedFace => {
                let tau = std::f64::consts::TAU;
                let scale = 0.55 + 0.45 * (0.5 + 0.5 * (tau * t).cos());
                let look = Look {
                    angle: (250.0 * (tau * 1.5 * t).sin()).round() as i32,
                    brightness: (50.0 * (tau * 1.3 * t).sin()).round() as i16,
                    tight: (80.0 * (0.5 - 0.5 * (tau * 2.0 * t).cos())).round() as u16,
                    ..Look::NONE
                };
                let h = (g.base_height as f64 * scale).round().max(2.0) as u32;
                let cx = g.width * (0.5 + 0.2 * (tau * t).sin());
                let cy = mid_y + g.height * 0.08 * (tau * 2.0 * t).sin();
                vec![g.place_look(0, cx, cy, h, t >= 0.5, look)]
            }
        };
        Layout {
            background,
            sprites,
            occluder,
            shake,
        }
    }
}

/// A reproducible offset in `[-amp, amp]`, even (chroma stays aligned), for
/// frame `i` and axis `axis`.
fn jitter(i: usize, axis: u64, amp: i64) -> i64 {
    if amp <= 0 {
        return 0;
    }
    let mut z = (i as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(axis.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let span = (2 * amp + 1) as u64;
    ((z % span) as i64 - amp) & !1
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
            .chain(&[Scenario::Mixed])
            .copied()
            .find(|sc| sc.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ConfigError::Value {
                key: "scenario".into(),
                value: s.into(),
                reason: format!(
                    "expected one of {}, mixed",
                    ALL.map(Scenario::name).join(", ")
                ),
            })
    }
}

/// Crop of the 512x512 astronaut photo used as the sprite: head and
/// shoulders, with the face centred horizontally and vertically (x, y, w, h).
pub(crate) const CROP: [f64; 4] = [73.0, 0.0, 300.0, 260.0];
/// The tightest crop (`Look::tight` 100): the face and 30% of it around.
const TIGHT_CROP: [f64; 4] = [143.0, 52.9, 160.0, 155.2];
/// The detector's FACE_FEMALE box on the photo, corners x0, y0, x1, y1.
pub(crate) const FACE: [f64; 4] = [173.0, 82.0, 273.0, 179.0];

/// How the sprite looks on one frame; [`Look::NONE`] is the photo as it is.
/// Whole numbers, so a look can key the sprite cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Look {
    /// Rotation about the sprite's centre, tenths of a degree (clockwise on
    /// screen).
    pub angle: i32,
    /// Contrast about mid-grey, percent (100: as photographed).
    pub contrast: u16,
    /// Added to every RGB channel.
    pub brightness: i16,
    /// Horizontal motion blur, pixels of sprite (0 or 1: none).
    pub blur: u16,
    /// Crop, percent of the way from head-and-shoulders (0) to the face
    /// with a small margin (100).
    pub tight: u16,
}

impl Look {
    pub const NONE: Look = Look {
        angle: 0,
        contrast: 100,
        brightness: 0,
        blur: 0,
        tight: 0,
    };

    /// The photo window this look's sprite shows (x, y, w, h).
    pub fn window(&self) -> [f64; 4] {
        let t = (self.tight.min(100) as f64) / 100.0;
        let mut w = [0.0; 4];
        for (k, v) in w.iter_mut().enumerate() {
            *v = CROP[k] + (TIGHT_CROP[k] - CROP[k]) * t;
        }
        w
    }

    pub fn radians(&self) -> f64 {
        (self.angle as f64 / 10.0).to_radians()
    }
}

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
        let f = g.face_in_sprite(base_height, false, Look::NONE);
        let face_w = f[2] - f[0];
        g.slab_width = (face_w + 8.0 * 24.0 * speed).round().max(1.0) as u32;
        g
    }

    /// Sprite width for a sprite height, keeping the crop's aspect ratio.
    pub fn sprite_width(&self, height: u32, look: Look) -> u32 {
        let win = look.window();
        (win[2] * height as f64 / win[3]).round().max(1.0) as u32
    }

    /// Sprite height (head-and-shoulders crop) whose face is `face_h`
    /// pixels tall at 720p, scaled to this frame.
    pub fn sprite_for_face(&self, face_h: f64) -> u32 {
        let scaled = face_h * self.height / 720.0;
        (scaled * CROP[3] / (FACE[3] - FACE[1])).round().max(2.0) as u32
    }

    /// Face box (x0, y0, x1, y1) inside a sprite of this height and look.
    /// A rotated face's box is the bounding box of the rotated ellipse
    /// inscribed in the upright face box (a face is not a rectangle).
    pub fn face_in_sprite(&self, height: u32, mirrored: bool, look: Look) -> [f64; 4] {
        let win = look.window();
        let sw = self.sprite_width(height, look) as f64;
        let sx = sw / win[2];
        let sy = height as f64 / win[3];
        let mut b = [
            (FACE[0] - win[0]) * sx,
            (FACE[1] - win[1]) * sy,
            (FACE[2] - win[0]) * sx,
            (FACE[3] - win[1]) * sy,
        ];
        if look.angle != 0 {
            let th = look.radians();
            let (sin, cos) = th.sin_cos();
            let (dx, dy) = (
                (b[0] + b[2]) * 0.5 - sw * 0.5,
                (b[1] + b[3]) * 0.5 - height as f64 * 0.5,
            );
            let cx = sw * 0.5 + cos * dx - sin * dy;
            let cy = height as f64 * 0.5 + sin * dx + cos * dy;
            let (a, e) = ((b[2] - b[0]) * 0.5, (b[3] - b[1]) * 0.5);
            let hw = ((a * cos).powi(2) + (e * sin).powi(2)).sqrt();
            let hh = ((a * sin).powi(2) + (e * cos).powi(2)).sqrt();
            b = [cx - hw, cy - hh, cx + hw, cy + hh];
        }
        if mirrored {
            (b[0], b[2]) = (sw - b[2], sw - b[0]);
        }
        b
    }

    /// Horizontal range for the face centre that keeps the face in frame
    /// with a small margin, at zoom 1.
    pub fn face_x_range(&self) -> (f64, f64) {
        let f = self.face_in_sprite(self.base_height, false, Look::NONE);
        let lo = (f[2] - f[0]) * 0.5 + self.width * 0.02;
        (lo, (self.width - lo).max(lo))
    }

    /// A sprite whose face centre lands on (cx, cy), snapped to whole pixels.
    pub fn place(&self, object: u32, cx: f64, cy: f64, height: u32, mirrored: bool) -> Placement {
        self.place_look(object, cx, cy, height, mirrored, Look::NONE)
    }

    /// [`Geometry::place`] with a look.
    pub fn place_look(
        &self,
        object: u32,
        cx: f64,
        cy: f64,
        height: u32,
        mirrored: bool,
        look: Look,
    ) -> Placement {
        let f = self.face_in_sprite(height, mirrored, look);
        Placement {
            object,
            x: (cx - (f[0] + f[2]) * 0.5).round() as i64,
            y: (cy - (f[1] + f[3]) * 0.5).round() as i64,
            height,
            mirrored,
            look,
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
    pub look: Look,
}

/// Everything on one frame: sprites back to front, then the occluder slab
/// (top-left corner; full frame height) on top.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Layout {
    pub background: Backdrop,
    pub sprites: Vec<Placement>,
    pub occluder: Option<(i64, i64)>,
    /// Camera shake: the background moves by this much (even pixels).
    pub shake: (i64, i64),
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
        assert_eq!(Scenario::all().len(), 16);
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
        let w = g.sprite_width(g.base_height, Look::NONE) as f64;
        let a = g.face_in_sprite(g.base_height, false, Look::NONE);
        let b = g.face_in_sprite(g.base_height, true, Look::NONE);
        assert!((b[0] - (w - a[2])).abs() < 1e-9 && (b[2] - (w - a[0])).abs() < 1e-9);
        assert_eq!((a[1], a[3]), (b[1], b[3]));
        // Face at least 160 px wide at 720p: >= 40 px in a 320 detector input.
        assert!(a[2] - a[0] >= 158.0, "{a:?}");
    }
}

#[cfg(test)]
mod look_tests {
    use super::*;

    #[test]
    fn jitter_is_even_bounded_and_varied() {
        let v: Vec<i64> = (0..200).map(|i| jitter(i, 0, 14)).collect();
        assert!(v.iter().all(|d| d % 2 == 0 && d.abs() <= 14), "{v:?}");
        assert!(v.iter().any(|d| *d > 6) && v.iter().any(|d| *d < -6));
        assert_eq!(jitter(5, 1, 14), jitter(5, 1, 14));
        assert_eq!(jitter(5, 1, 0), 0);
    }

    #[test]
    fn rotated_face_box_turns_about_the_sprite_centre() {
        let g = Geometry::new(1280, 720, 30.0, 90);
        let up = g.face_in_sprite(g.base_height, false, Look::NONE);
        let half = Look {
            angle: 1800,
            ..Look::NONE
        };
        let r = g.face_in_sprite(g.base_height, false, half);
        let sw = g.sprite_width(g.base_height, half) as f64;
        let sh = g.base_height as f64;
        // 180 degrees: the centre is mirrored through the sprite centre.
        assert!(((r[0] + r[2]) * 0.5 - (sw - (up[0] + up[2]) * 0.5)).abs() < 1e-6);
        assert!(((r[1] + r[3]) * 0.5 - (sh - (up[1] + up[3]) * 0.5)).abs() < 1e-6);
        // 90 degrees swaps the extents.
        let q = g.face_in_sprite(
            g.base_height,
            false,
            Look {
                angle: 900,
                ..Look::NONE
            },
        );
        assert!(((q[2] - q[0]) - (up[3] - up[1])).abs() < 1e-6);
        assert!(((q[3] - q[1]) - (up[2] - up[0])).abs() < 1e-6);
    }

    #[test]
    fn tight_crop_makes_the_face_a_larger_share_of_the_sprite() {
        let g = Geometry::new(1280, 720, 30.0, 90);
        let share = |look: Look| {
            let f = g.face_in_sprite(300, false, look);
            (f[3] - f[1]) / 300.0
        };
        assert!(
            share(Look {
                tight: 100,
                ..Look::NONE
            }) > 1.5 * share(Look::NONE)
        );
        let small = g.sprite_for_face(40.0);
        let f = g.face_in_sprite(small, false, Look::NONE);
        assert!((f[3] - f[1] - 40.0).abs() < 1.0, "{f:?}");
    }
}
