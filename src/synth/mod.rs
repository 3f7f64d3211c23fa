//! Synthetic video with ground truth: a real photo the detector finds (the
//! public-domain NASA astronaut portrait) moving over background photos along
//! scripted paths, so tracking coverage can be scored per scenario and the
//! demo has a face to censor. Frames depend only on (scenario, config, index).

mod raster;
mod scenarios;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Error, MediaError};
use crate::frame::{BBox, Frame, PixelFormat};

use raster::{load_rgb, motion_blur, resample, resample_rotated, tone, Planes, Window};
pub use scenarios::Scenario;
use scenarios::{Backdrop, Geometry, Layout, Look, Placement};

/// The sprite photo; the detector finds FACE_FEMALE 0.81 on it.
pub const SPRITE_PHOTO: &str = "astronaut.png";
/// Background photos, rotated by scenario and seed.
pub const BACKGROUND_PHOTOS: [&str; 5] = [
    "coffee.png",
    "chelsea.png",
    "brick.png",
    "grass.png",
    "motorcycle_left.png",
];

/// Ground truth below this visible fraction is omitted (nothing to find).
pub const MIN_VISIBLE: f32 = 0.1;

/// Clip parameters. Speeds are defined in px/frame at 720p30 and scale with
/// height and frame rate, so a clip shows the same motion in px/s of picture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    pub width: usize,
    pub height: usize,
    pub fps: f64,
    pub frames: usize,
    /// Folder holding the photos (`models/photos`, filled by `scripts/setup.sh`).
    pub photos: PathBuf,
    /// Picks the background photos.
    pub seed: u64,
}

impl SynthConfig {
    /// 1280x720, 30 fps, 90 frames, seed 0.
    pub fn new(photos: impl Into<PathBuf>) -> Self {
        SynthConfig {
            width: 1280,
            height: 720,
            fps: 30.0,
            frames: 90,
            photos: photos.into(),
            seed: 0,
        }
    }
}

/// Where one face is on one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// The face box in frame pixels, clipped to the frame.
    pub bbox: BBox,
    /// Stable id of the face across the clip (0, or 0 and 1 for crossing).
    pub object: u32,
    /// Share of the face's area inside the frame and not covered.
    pub visible_fraction: f32,
    /// Parts of `bbox` covered by something in front (a sprite, the
    /// occluder), clipped to it; what is left is what a viewer can see.
    #[serde(default)]
    pub hidden: Vec<BBox>,
}

impl GroundTruth {
    /// The visible part of the face box as disjoint rectangles: the box
    /// less every hidden part (a grid over their edges).
    pub fn visible_parts(&self) -> Vec<BBox> {
        visible_parts(&self.bbox, &self.hidden)
    }
}

/// `b` less the union of `hidden`, as disjoint rectangles.
pub fn visible_parts(b: &BBox, hidden: &[BBox]) -> Vec<BBox> {
    let cut: Vec<BBox> = hidden
        .iter()
        .map(|h| {
            BBox::new(
                h.x0.max(b.x0),
                h.y0.max(b.y0),
                h.x1.min(b.x1),
                h.y1.min(b.y1),
            )
        })
        .filter(|h| !h.is_empty())
        .collect();
    if cut.is_empty() {
        return vec![*b];
    }
    let mut xs: Vec<f32> = vec![b.x0, b.x1];
    let mut ys: Vec<f32> = vec![b.y0, b.y1];
    for h in &cut {
        xs.extend([h.x0, h.x1]);
        ys.extend([h.y0, h.y1]);
    }
    xs.sort_by(f32::total_cmp);
    ys.sort_by(f32::total_cmp);
    xs.dedup();
    ys.dedup();
    let mut out = Vec::new();
    for w in ys.windows(2) {
        for v in xs.windows(2) {
            let cell = BBox::new(v[0], w[0], v[1], w[1]);
            let (cx, cy) = cell.center();
            let covered = cut
                .iter()
                .any(|h| cx >= h.x0 && cx < h.x1 && cy >= h.y0 && cy < h.y1);
            if !cell.is_empty() && !covered {
                out.push(cell);
            }
        }
    }
    out
}

/// `clip.mp4` -> `clip.mp4.truth.jsonl`, where `livecensor synth` writes
/// the ground truth and `audit` looks for it.
pub fn truth_path(video: &Path) -> PathBuf {
    let mut s = video.as_os_str().to_owned();
    s.push(".truth.jsonl");
    PathBuf::from(s)
}

/// One line of a truth file (see [`Synth::truth_json_lines`]).
#[derive(Deserialize)]
struct TruthLine {
    frame: u64,
    truth: Vec<TruthEntry>,
}

#[derive(Deserialize)]
struct TruthEntry {
    object: u32,
    bbox: [f32; 4],
    visible: f32,
    #[serde(default)]
    hidden: Vec<[f32; 4]>,
}

/// Reads a truth file (one line per frame, as [`Synth::truth_json_lines`]
/// writes it) into frame index -> faces. A line that does not parse, a box
/// that is not a box (x1 < x0, not finite), a visible share outside 0..=1 or
/// a frame listed twice is an error naming the path and the line.
pub fn read_truth(path: &Path) -> Result<BTreeMap<u64, Vec<GroundTruth>>, Error> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let bad = |line: usize, reason: String| -> Error {
        ConfigError::File {
            path: path.to_path_buf(),
            reason: format!("line {line}: {reason}"),
        }
        .into()
    };
    let to_box = |[x0, y0, x1, y1]: [f32; 4]| -> Result<BBox, String> {
        let ok = [x0, y0, x1, y1].iter().all(|v| v.is_finite()) && x1 >= x0 && y1 >= y0;
        ok.then(|| BBox::new(x0, y0, x1, y1))
            .ok_or_else(|| format!("[{x0}, {y0}, {x1}, {y1}] is not a box (x0, y0, x1, y1)"))
    };
    let mut out = BTreeMap::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: TruthLine = serde_json::from_str(&line).map_err(|e| bad(i + 1, e.to_string()))?;
        let mut faces = Vec::with_capacity(l.truth.len());
        for t in l.truth {
            if !(0.0..=1.0).contains(&t.visible) {
                return Err(bad(
                    i + 1,
                    format!("visible {} is not a share between 0 and 1", t.visible),
                ));
            }
            let bbox = to_box(t.bbox).map_err(|e| bad(i + 1, e))?;
            let hidden = t
                .hidden
                .into_iter()
                .map(to_box)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(i + 1, format!("hidden: {e}")))?;
            faces.push(GroundTruth {
                bbox,
                object: t.object,
                visible_fraction: t.visible,
                hidden,
            });
        }
        if out.insert(l.frame, faces).is_some() {
            return Err(bad(i + 1, format!("frame {} is listed twice", l.frame)));
        }
    }
    Ok(out)
}

/// One rendered frame (I420) and the faces on it.
#[derive(Clone, Debug)]
pub struct SynthFrame {
    pub frame: Frame,
    pub truth: Vec<GroundTruth>,
}

/// Sprites cached by (height, mirrored, look); the zoom scenario makes one
/// per distinct pixel height, so the cache is bounded.
type SpriteCache = HashMap<(u32, bool, Look), Arc<Planes>>;
const SPRITE_CACHE_MAX: usize = 256;

/// A scenario ready to render.
pub struct Synth {
    scenario: Scenario,
    cfg: SynthConfig,
    geom: Geometry,
    astronaut: RgbImage,
    /// Backgrounds, `margin` pixels larger on every side than the frame
    /// when the camera shakes.
    main_bg: Frame,
    alt_bg: Frame,
    margin: usize,
    slab: Planes,
    sprites: Mutex<SpriteCache>,
}

impl Synth {
    /// Loads the photos and pre-renders the backgrounds.
    pub fn new(scenario: Scenario, cfg: SynthConfig) -> Result<Synth, Error> {
        if cfg.width < 64 || cfg.height < 64 || cfg.width > 8192 || cfg.height > 8192 {
            return Err(MediaError::BadDimensions {
                width: cfg.width,
                height: cfg.height,
                reason: "synthetic clips need 64..=8192 pixels per side".into(),
            }
            .into());
        }
        if !(cfg.fps.is_finite() && cfg.fps > 0.0) {
            return Err(bad_value("fps", cfg.fps, "must be a positive number"));
        }
        if cfg.frames == 0 {
            return Err(bad_value("frames", cfg.frames, "must be at least 1"));
        }
        if !cfg.photos.is_dir() {
            return Err(Error::io(
                &cfg.photos,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "sample photos folder not found: run `bash scripts/setup.sh` to fetch it",
                ),
            ));
        }
        let astronaut = load_rgb(&cfg.photos.join(SPRITE_PHOTO))?;
        let n = BACKGROUND_PHOTOS.len();
        let first = (scenario.index() as u64).wrapping_add(cfg.seed) % n as u64;
        let pick = |k: u64| BACKGROUND_PHOTOS[((first + k) % n as u64) as usize];
        let main_photo = load_rgb(&cfg.photos.join(pick(0)))?;
        let alt_photo = load_rgb(&cfg.photos.join(pick(1)))?;
        let geom = Geometry::new(cfg.width, cfg.height, cfg.fps, cfg.frames);
        let margin = if scenario == Scenario::Shaky {
            (cfg.height as f64 * 0.02).round() as usize + 2
        } else {
            0
        };
        let (bw, bh) = (cfg.width + 2 * margin, cfg.height + 2 * margin);
        let main_bg = cover_frame(&main_photo, bw, bh);
        let alt_bg = cover_frame(&alt_photo, bw, bh);
        let sw = geom.slab_width as usize;
        let rgb = resample(
            &alt_photo,
            Window::cover(&alt_photo, sw, cfg.height),
            sw,
            cfg.height,
            false,
        );
        let slab = Planes::from_rgb(sw, cfg.height, &rgb);
        Ok(Synth {
            scenario,
            cfg,
            geom,
            astronaut,
            main_bg,
            alt_bg,
            margin,
            slab,
            sprites: Mutex::new(HashMap::new()),
        })
    }

    pub fn scenario(&self) -> Scenario {
        self.scenario
    }

    pub fn config(&self) -> &SynthConfig {
        &self.cfg
    }

    /// Number of frames in the clip.
    pub fn len(&self) -> usize {
        self.cfg.frames
    }

    pub fn is_empty(&self) -> bool {
        self.cfg.frames == 0
    }

    /// Frame `i` with its ground truth. Indices past the end continue the
    /// path (clamped where the path has an end).
    pub fn frame(&self, i: usize) -> SynthFrame {
        let layout = self.scenario.layout(&self.geom, i);
        let bg = match layout.background {
            Backdrop::Main => &self.main_bg,
            Backdrop::Alternate => &self.alt_bg,
        };
        let mut frame = if self.margin == 0 {
            bg.clone()
        } else {
            let m = self.margin as i64;
            let (dx, dy) = layout.shake;
            crop_i420(
                bg,
                (m - dx).clamp(0, 2 * m) as usize & !1,
                (m - dy).clamp(0, 2 * m) as usize & !1,
                self.cfg.width,
                self.cfg.height,
            )
        };
        for p in &layout.sprites {
            self.sprite(p).blit(&mut frame, p.x, p.y);
        }
        if let Some((x, y)) = layout.occluder {
            self.slab.blit(&mut frame, x, y);
        }
        SynthFrame {
            frame,
            truth: self.truth_for(&layout),
        }
    }

    /// Ground truth of frame `i` alone (no rendering).
    pub fn truth(&self, i: usize) -> Vec<GroundTruth> {
        self.truth_for(&self.scenario.layout(&self.geom, i))
    }

    /// All frames in order.
    pub fn frames(&self) -> impl Iterator<Item = SynthFrame> + '_ {
        (0..self.cfg.frames).map(move |i| self.frame(i))
    }

    /// One JSON object per line and frame:
    /// `{"frame":i,"truth":[{"object":0,"bbox":[x0,y0,x1,y1],"visible":1.0}]}`
    /// (plus `"hidden":[[x0,y0,x1,y1],...]` where something covers part of
    /// the face box).
    pub fn truth_json_lines(&self) -> String {
        let mut out = String::new();
        for i in 0..self.cfg.frames {
            let truth: Vec<serde_json::Value> = self
                .truth(i)
                .iter()
                .map(|t| {
                    let mut v = serde_json::json!({
                        "object": t.object,
                        "bbox": [t.bbox.x0, t.bbox.y0, t.bbox.x1, t.bbox.y1],
                        "visible": t.visible_fraction,
                    });
                    if !t.hidden.is_empty() {
                        v["hidden"] = t
                            .hidden
                            .iter()
                            .map(|h| serde_json::json!([h.x0, h.y0, h.x1, h.y1]))
                            .collect();
                    }
                    v
                })
                .collect();
            out.push_str(&serde_json::json!({ "frame": i, "truth": truth }).to_string());
            out.push('\n');
        }
        out
    }

    fn truth_for(&self, layout: &Layout) -> Vec<GroundTruth> {
        let frame = Rect::new(0.0, 0.0, self.geom.width, self.geom.height);
        let mut out: Vec<GroundTruth> = layout
            .sprites
            .iter()
            .enumerate()
            .filter_map(|(k, p)| {
                let f = self.geom.face_in_sprite(p.height, p.mirrored, p.look);
                let (x, y) = (p.x as f64, p.y as f64);
                let face = Rect::new(x + f[0], y + f[1], x + f[2], y + f[3]);
                let mut cover: Vec<Rect> = layout.sprites[k + 1..]
                    .iter()
                    .map(|q| self.sprite_rect(q))
                    .collect();
                if let Some((ox, oy)) = layout.occluder {
                    let (ox, oy) = (ox as f64, oy as f64);
                    let (w, h) = (self.slab.w as f64, self.slab.h as f64);
                    cover.push(Rect::new(ox, oy, ox + w, oy + h));
                }
                let inside = face.intersect(&frame);
                let visible = inside.area() - covered_area(&inside, &cover);
                let fraction = (visible / face.area().max(1e-9)).clamp(0.0, 1.0) as f32;
                let to_box =
                    |r: &Rect| BBox::new(r.x0 as f32, r.y0 as f32, r.x1 as f32, r.y1 as f32);
                let hidden = cover
                    .iter()
                    .map(|c| c.intersect(&inside))
                    .filter(|c| c.area() > 0.0)
                    .map(|c| to_box(&c))
                    .collect();
                (fraction >= MIN_VISIBLE).then(|| GroundTruth {
                    bbox: to_box(&inside),
                    object: p.object,
                    visible_fraction: fraction,
                    hidden,
                })
            })
            .collect();
        out.sort_by_key(|t| t.object);
        out
    }

    fn sprite_rect(&self, p: &Placement) -> Rect {
        let w = self.geom.sprite_width(p.height, p.look) as f64;
        let (x, y) = (p.x as f64, p.y as f64);
        Rect::new(x, y, x + w, y + p.height as f64)
    }

    /// The astronaut crop of a placement, resampled once and cached.
    fn sprite(&self, p: &Placement) -> Arc<Planes> {
        let key = (p.height, p.mirrored, p.look);
        let mut cache = self.sprites.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.get(&key) {
            return Arc::clone(s);
        }
        if cache.len() >= SPRITE_CACHE_MAX {
            cache.clear();
        }
        let look = p.look;
        let w = self.geom.sprite_width(p.height, look) as usize;
        let h = p.height as usize;
        let [x, y, ww, wh] = look.window();
        let win = Window { x, y, w: ww, h: wh };
        let mut rgb = if look.angle == 0 {
            resample(&self.astronaut, win, w, h, p.mirrored)
        } else {
            resample_rotated(&self.astronaut, win, w, h, p.mirrored, look.radians())
        };
        tone(&mut rgb, look.contrast, look.brightness);
        motion_blur(&mut rgb, w, look.blur as usize);
        let s = Arc::new(Planes::from_rgb(w, h, &rgb));
        cache.insert(key, Arc::clone(&s));
        s
    }
}

fn bad_value(key: &str, value: impl ToString, reason: &str) -> Error {
    ConfigError::Value {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
    .into()
}

/// The `w x h` window of an I420 frame at an even (x, y) (clamped inside).
fn crop_i420(src: &Frame, x: usize, y: usize, w: usize, h: usize) -> Frame {
    let mut out = Frame::new(PixelFormat::I420, w, h);
    let x = x.min(src.width.saturating_sub(w)) & !1;
    let y = y.min(src.height.saturating_sub(h)) & !1;
    let (sw, scw, cw) = (src.width, src.chroma_width(), out.chroma_width());
    let (sy, su, sv) = src.planes();
    let (oy, ou, ov) = out.planes_mut();
    for r in 0..h.min(src.height) {
        let s = (y + r) * sw + x;
        let n = w.min(sw - x);
        oy[r * w..r * w + n].copy_from_slice(&sy[s..s + n]);
    }
    for r in 0..h.div_ceil(2).min(src.height.div_ceil(2)) {
        let s = (y / 2 + r) * scw + x / 2;
        let n = cw.min(scw - x / 2);
        ou[r * cw..r * cw + n].copy_from_slice(&su[s..s + n]);
        ov[r * cw..r * cw + n].copy_from_slice(&sv[s..s + n]);
    }
    out
}

/// A photo scaled to cover a `w x h` frame (centre crop), as I420.
fn cover_frame(img: &RgbImage, w: usize, h: usize) -> Frame {
    let rgb = resample(img, Window::cover(img, w, h), w, h, false);
    Frame::from_rgb(PixelFormat::I420, w, h, &rgb)
}

/// Default photos folder of this crate's checkout (`models/photos`).
pub fn default_photos_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/photos")
}

/// Axis-aligned rectangle in f64 (ground truth is computed unrounded).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rect {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl Rect {
    fn new(x0: f64, y0: f64, x1: f64, y1: f64) -> Self {
        Rect { x0, y0, x1, y1 }
    }

    fn area(&self) -> f64 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }

    fn intersect(&self, o: &Rect) -> Rect {
        Rect::new(
            self.x0.max(o.x0),
            self.y0.max(o.y0),
            self.x1.min(o.x1),
            self.y1.min(o.y1),
        )
    }
}

/// Area of `region` covered by the union of `rects` (sweep over x slabs).
fn covered_area(region: &Rect, rects: &[Rect]) -> f64 {
    let rs: Vec<Rect> = rects
        .iter()
        .map(|r| r.intersect(region))
        .filter(|r| r.area() > 0.0)
        .collect();
    let mut xs: Vec<f64> = rs.iter().flat_map(|r| [r.x0, r.x1]).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let mut area = 0.0;
    for w in xs.windows(2) {
        let &[a, b] = w else { continue };
        let mid = (a + b) * 0.5;
        let mut ys: Vec<(f64, f64)> = rs
            .iter()
            .filter(|r| r.x0 <= mid && mid < r.x1)
            .map(|r| (r.y0, r.y1))
            .collect();
        ys.sort_by(|p, q| p.0.total_cmp(&q.0));
        let (mut len, mut end) = (0.0, f64::NEG_INFINITY);
        for (y0, y1) in ys {
            let start = y0.max(end);
            if y1 > start {
                len += y1 - start;
                end = y1;
            }
        }
        area += (b - a) * len;
    }
    area
}

#[cfg(test)]
mod tests;
