//! Letterbox preprocessing for the NudeNet detector.
//!
//! The reference (NudeNet 3.4.2) pads the picture bottom/right with black to a
//! square of side `S = max(W, H)`, resizes that square to `size x size` with
//! OpenCV `INTER_LINEAR`, divides by 255 and lays it out NCHW in RGB order.
//!
//! The exact math here (a CUDA kernel `preprocess_nv12` must match it):
//! - `scale = S / size` (f32). For each output column `d` (rows alike):
//!   `s = (d + 0.5) * scale - 0.5`, `i0 = floor(s)`, `w = s - i0`;
//!   if `i0 < 0` then `i0 = 0, w = 0`; if `i0 >= S - 1` then `i0 = S - 1, w = 0`;
//!   `i1 = min(i0 + 1, S - 1)`.
//! - A source pixel `(x, y)` with `x >= W` or `y >= H` is black (padding);
//!   inside, it is RGB u8 (for YUV frames: `frame::yuv_to_rgb` of that
//!   pixel's Y and its 2x2-subsampled U, V, bit for bit; nothing else is
//!   converted).
//! - `v = ((p00 * (1 - wx) + p01 * wx) * (1 - wy) + (p10 * (1 - wx) + p11 * wx) * wy) / 255`
//!   per channel, in f32, without rounding to u8 (OpenCV rounds; the
//!   difference is below 1/255 and does not move detections).
//!
//! [`ResizeFilter::Triangle`] (the pipeline's default) replaces the 2x2
//! taps with an antialiased bilinear filter (a triangle widened by the
//! downsampling factor, as Pillow's `BILINEAR` resize): on a 4x-6x
//! downsample the 2x2 taps alias and lower the scores of small and moving
//! regions. Exact math (the CUDA kernel mirrors it op for op):
//! - per axis, output `d`: `support = max(scale, 1)`, `center = (d + 0.5) *
//!   scale`, source taps `floor(center - support + 0.5) ..
//!   floor(center + support + 0.5)` clipped to `[0, S)`, weight of tap `x`
//!   `max(0, 1 - |(x + 0.5 - center) * (1 / support)|)`, each divided by
//!   their sum;
//! - it filters the Y plane with those weights and the chroma planes with
//!   the weights of each chroma sample's pixels summed (`w(2k) + w(2k+1)`,
//!   what filtering the nearest-upsampled chroma gives), vertical pass
//!   first; taps in the padding contribute nothing but keep their weight,
//!   so the picture's edge fades into black as it does in the padded square;
//! - with `a` the in-picture share of the weights (`ax * ay`), the filtered
//!   Y, U, V convert like `frame::yuv_to_rgb` with the offsets scaled by `a`
//!   (`1.164 * (Y - 16a)`, `U - 128a`, `V - 128a`), clamp to `[0, 255a]`
//!   and are multiplied by `1 / 255`.
//!
//! The rectangular letterbox ([`LetterboxMode::Rect`], what Ultralytics'
//! own predictor does) keeps the same scale and the same pixels but stops
//! the padding at the next multiple of [`STRIDE`] past the picture: a 16:9
//! frame becomes a `320 x 192` input instead of `320 x 320`, its top-left
//! crop bit for bit, and the fully convolutional model runs ~40% faster.

use serde::Deserialize;

use crate::frame::{Frame, PixelFormat};

/// Model input sides are multiples of this (YOLOv8's coarsest stride).
pub const STRIDE: usize = 32;

/// How the picture is resampled to the model input (`[detector] resize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    /// NudeNet's own (OpenCV `INTER_LINEAR`, 2x2 taps): the audit's
    /// reference.
    Linear,
    /// Antialiased bilinear: a triangle as wide as the downsampling factor.
    #[default]
    Triangle,
}

impl ResizeFilter {
    /// The kernel's `filter` argument.
    pub fn code(self) -> i32 {
        match self {
            ResizeFilter::Linear => 0,
            ResizeFilter::Triangle => 1,
        }
    }
}

impl std::str::FromStr for ResizeFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "linear" => Ok(ResizeFilter::Linear),
            "triangle" => Ok(ResizeFilter::Triangle),
            other => Err(format!(
                "unknown resize filter {other:?} (triangle or linear)"
            )),
        }
    }
}

impl std::fmt::Display for ResizeFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResizeFilter::Linear => "linear",
            ResizeFilter::Triangle => "triangle",
        })
    }
}

/// How a frame is fitted to the model input (`[detector] letterbox`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LetterboxMode {
    /// Padded to `size x size`, exactly as NudeNet does (the audit's
    /// reference, and what TensorRT plans and the GPU kernel take).
    Square,
    /// Padded only to the next multiple of [`STRIDE`] on the short side.
    #[default]
    Rect,
}

/// How much lower every score threshold is under the rectangular
/// letterbox. Boxes near a threshold score a little differently on the
/// cropped input (either way): over 133 boxes on composited frames of four
/// sizes (`scripts/letterbox_check.py`) the rect input reports 92% of the
/// square input's boxes at its threshold and all of them 0.05 below it, so
/// a censor lowers the bar rather than miss one.
pub const RECT_SCORE_MARGIN: f32 = 0.05;

impl LetterboxMode {
    /// What the detector's and the policy's thresholds are lowered by.
    pub fn score_margin(self) -> f32 {
        match self {
            LetterboxMode::Square => 0.0,
            LetterboxMode::Rect => RECT_SCORE_MARGIN,
        }
    }
}

impl std::str::FromStr for LetterboxMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "square" => Ok(LetterboxMode::Square),
            "rect" => Ok(LetterboxMode::Rect),
            other => Err(format!("unknown letterbox {other:?} (rect or square)")),
        }
    }
}

impl std::fmt::Display for LetterboxMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LetterboxMode::Square => "square",
            LetterboxMode::Rect => "rect",
        })
    }
}

/// How a frame was mapped onto the model input; `decode` uses it to map
/// boxes back to frame pixels, the detector to shape the input tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    /// Model input side in pixels (the long side of the input).
    pub size: usize,
    /// Frame pixels per input pixel: `max(width, height) / size`.
    pub scale: f32,
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
    /// Input tensor width (`size` for a square letterbox).
    pub cols: usize,
    /// Input tensor height (`size` for a square letterbox).
    pub rows: usize,
}

impl Letterbox {
    /// The mapping for a `width x height` frame onto a `size x size` input.
    pub fn new(width: usize, height: usize, size: usize) -> Self {
        let side = width.max(height);
        let scale = if size == 0 {
            0.0
        } else {
            side as f32 / size as f32
        };
        Letterbox {
            size,
            scale,
            width,
            height,
            cols: size,
            rows: size,
        }
    }

    /// The same mapping onto the smallest input of whole [`STRIDE`]s (at
    /// most `size`) that holds every output row and column with a live tap
    /// under either filter: the square input's top-left corner.
    pub fn rect(width: usize, height: usize, size: usize) -> Self {
        let mut lb = Letterbox::new(width, height, size);
        let side = width.max(height);
        if side == 0 || size == 0 {
            return lb;
        }
        let fit = |extent: usize| {
            let linear = taps(size, side, lb.scale)
                .iter()
                .take_while(|t| t.i0 < extent)
                .count();
            let triangle = Spans::new(size, side, lb.scale).live(extent);
            let live = linear.max(triangle);
            (live.div_ceil(STRIDE).max(1) * STRIDE).min(size)
        };
        lb.cols = fit(width);
        lb.rows = fit(height);
        lb
    }

    /// The mapping `mode` gives.
    pub fn with_mode(mode: LetterboxMode, width: usize, height: usize, size: usize) -> Self {
        match mode {
            LetterboxMode::Square => Letterbox::new(width, height, size),
            LetterboxMode::Rect => Letterbox::rect(width, height, size),
        }
    }

    /// Floats in this input's tensor (`3 * rows * cols`).
    pub fn len(&self) -> usize {
        3 * self.rows * self.cols
    }

    /// Whether the tensor holds nothing (a zero `size`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Input tensor `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
}

/// `frame::yuv_to_rgb` as lookup tables: each entry is the same single f32
/// operation, so sums match bit for bit, and rounding avoids the `roundf`
/// libm call that baseline x86-64 makes for `f32::round` (the hot spot).
struct YuvTables {
    c: [f32; 256],
    vr: [f32; 256],
    ug: [f32; 256],
    vg: [f32; 256],
    ub: [f32; 256],
}

impl YuvTables {
    fn new() -> Self {
        let mut t = YuvTables {
            c: [0.0; 256],
            vr: [0.0; 256],
            ug: [0.0; 256],
            vg: [0.0; 256],
            ub: [0.0; 256],
        };
        for i in 0..256 {
            let f = i as f32;
            let d = f - 128.0;
            t.c[i] = 1.164 * (f - 16.0);
            t.vr[i] = 1.596 * d;
            t.ug[i] = 0.392 * d;
            t.vg[i] = 0.813 * d;
            t.ub[i] = 2.017 * d;
        }
        t
    }

    #[inline(always)]
    fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let c = self.c[y as usize];
        let (u, v) = (u as usize, v as usize);
        [
            round_u8(c + self.vr[v]),
            round_u8(c - self.ug[u] - self.vg[v]),
            round_u8(c + self.ub[u]),
        ]
    }
}

/// `v.round().clamp(0.0, 255.0) as u8` exactly: round half away from zero is
/// `trunc(v + pred(0.5))` (LLVM's own expansion), and `as u8` saturates.
#[inline(always)]
fn round_u8(v: f32) -> u8 {
    const PRED_HALF: f32 = 0.499_999_97;
    (v + PRED_HALF) as u8
}

/// Two source taps along one axis and the weight of the second.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tap {
    i0: usize,
    i1: usize,
    w1: f32,
}

/// OpenCV `INTER_LINEAR` taps for `size` outputs over a source axis of `side`.
fn taps(size: usize, side: usize, scale: f32) -> Vec<Tap> {
    let last = side.saturating_sub(1);
    (0..size)
        .map(|d| {
            let s = (d as f32 + 0.5) * scale - 0.5;
            let f = s.floor();
            let (i0, w1) = if f < 0.0 {
                (0, 0.0)
            } else if f as usize >= last {
                (last, 0.0)
            } else {
                (f as usize, s - f)
            };
            Tap {
                i0,
                i1: (i0 + 1).min(last),
                w1,
            }
        })
        .collect()
}

/// The triangle filter's taps along one axis: output `d` reads source
/// indices `start[d]..start[d] + len[d]` with `weights[offset[d]..]`
/// (normalised; the module doc has the formula).
struct Spans {
    start: Vec<usize>,
    len: Vec<usize>,
    offset: Vec<usize>,
    weights: Vec<f32>,
}

impl Spans {
    fn new(n: usize, side: usize, scale: f32) -> Spans {
        let support = if scale > 1.0 { scale } else { 1.0 };
        let inv = 1.0 / support;
        let mut s = Spans {
            start: Vec::with_capacity(n),
            len: Vec::with_capacity(n),
            offset: Vec::with_capacity(n),
            weights: Vec::new(),
        };
        for d in 0..n {
            let center = (d as f32 + 0.5) * scale;
            let lo = (center - support + 0.5).floor().max(0.0) as usize;
            let hi = ((center + support + 0.5).floor().max(0.0) as usize).min(side);
            let at = s.weights.len();
            let mut sum = 0.0f32;
            for x in lo..hi.max(lo) {
                let w = tri_weight(x, center, inv);
                sum += w;
                s.weights.push(w);
            }
            if sum > 0.0 {
                for w in &mut s.weights[at..] {
                    *w /= sum;
                }
            }
            s.start.push(lo);
            s.len.push(hi.saturating_sub(lo));
            s.offset.push(at);
        }
        s
    }

    /// Source index and weight of each tap of output `d`.
    fn taps(&self, d: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let (o, n) = (self.offset[d], self.len[d]);
        (self.start[d]..).zip(self.weights[o..o + n].iter().copied())
    }

    /// Outputs (from the first) with a tap inside `extent`.
    fn live(&self, extent: usize) -> usize {
        self.start.iter().take_while(|&&s| s < extent).count()
    }

    /// Weights of output `d` in the picture (`< extent`), summed in order.
    fn inside(&self, d: usize, extent: usize) -> f32 {
        self.taps(d)
            .take_while(|&(x, _)| x < extent)
            .fold(0.0, |a, (_, w)| a + w)
    }

    /// Output `d`'s taps on a plane subsampled by 2 (`extent` full-size
    /// pixels): chroma sample `k` weighs `w(2k) + w(2k+1)` over the pixels
    /// inside, in that order.
    fn halved(&self, d: usize, extent: usize, out: &mut Vec<(usize, f32)>) {
        out.clear();
        let (lo, n) = (self.start[d], self.len[d]);
        let hi = (lo + n).min(extent);
        if lo >= hi {
            return;
        }
        let o = self.offset[d];
        let w = |x: usize| {
            if x >= lo && x < hi {
                self.weights[o + x - lo]
            } else {
                0.0
            }
        };
        for k in lo / 2..=(hi - 1) / 2 {
            out.push((k, w(2 * k) + w(2 * k + 1)));
        }
    }
}

/// The triangle filter's weight of source pixel `x` for an output centred
/// on `center` (`inv` = 1 / support).
#[inline]
fn tri_weight(x: usize, center: f32, inv: f32) -> f32 {
    let t = (x as f32 + 0.5 - center) * inv;
    (1.0 - t.abs()).max(0.0)
}

/// `frame::yuv_to_rgb` of filtered planes whose weights inside the picture
/// sum to `a` (the rest is black padding), clamped and scaled to [0, 1].
#[inline]
fn filtered_rgb(y: f32, u: f32, v: f32, a: f32) -> [f32; 3] {
    let c = 1.164 * (y - 16.0 * a);
    let d = u - 128.0 * a;
    let e = v - 128.0 * a;
    let top = 255.0 * a;
    let clamp = |x: f32| {
        let x = if x < 0.0 { 0.0 } else { x };
        if x > top {
            top
        } else {
            x
        }
    };
    [
        clamp(c + 1.596 * e) * (1.0 / 255.0),
        clamp(c - 0.392 * d - 0.813 * e) * (1.0 / 255.0),
        clamp(c + 2.017 * d) * (1.0 / 255.0),
    ]
}

/// The antialiased letterbox of a YUV frame (see the module doc), into
/// `out` of `lb.len()` floats.
fn letterbox_triangle(frame: &Frame, lb: Letterbox, out: &mut [f32]) {
    let (width, height) = (lb.width, lb.height);
    let plane = lb.rows * lb.cols;
    let Some(out) = out.get_mut(..3 * plane) else {
        tracing::error!(
            len = out.len(),
            need = 3 * plane,
            "preprocess: output slot too small; nothing written"
        );
        return;
    };
    out.fill(0.0);
    if width == 0 || height == 0 {
        return;
    }
    let side = width.max(height);
    let xs = Spans::new(lb.cols, side, lb.scale);
    let ys = Spans::new(lb.rows, side, lb.scale);
    let (live_rows, live_cols) = (ys.live(height), xs.live(width));
    let (yp, a, b) = frame.planes();
    let cw = frame.chroma_width();
    let nv12 = frame.format == PixelFormat::Nv12;
    // Chroma row length in samples (NV12 interleaves U and V).
    let crow = if nv12 { 2 * cw } else { cw };
    let mut col_y = vec![0.0f32; width];
    let mut col_a = vec![0.0f32; crow];
    let mut col_b = vec![0.0f32; if nv12 { 0 } else { cw }];
    let mut ctaps_y = Vec::new();
    let xc: Vec<Vec<(usize, f32)>> = (0..live_cols)
        .map(|c| {
            let mut v = Vec::new();
            xs.halved(c, width, &mut v);
            v
        })
        .collect();
    let ax: Vec<f32> = (0..live_cols).map(|c| xs.inside(c, width)).collect();
    let (r_plane, gb) = out.split_at_mut(plane);
    let (g_plane, b_plane) = gb.split_at_mut(plane);
    for r in 0..live_rows {
        col_y.fill(0.0);
        for (y, w) in ys.taps(r).take_while(|&(y, _)| y < height) {
            let row = &yp[y * width..(y + 1) * width];
            for (c, &p) in col_y.iter_mut().zip(row) {
                *c += w * p as f32;
            }
        }
        ys.halved(r, height, &mut ctaps_y);
        col_a.fill(0.0);
        col_b.fill(0.0);
        for &(j, w) in &ctaps_y {
            let row = &a[j * crow..(j + 1) * crow];
            for (c, &p) in col_a.iter_mut().zip(row) {
                *c += w * p as f32;
            }
            if !nv12 {
                let row = &b[j * cw..(j + 1) * cw];
                for (c, &p) in col_b.iter_mut().zip(row) {
                    *c += w * p as f32;
                }
            }
        }
        let ay = ys.inside(r, height);
        let base = r * lb.cols;
        for c in 0..live_cols {
            let mut yf = 0.0f32;
            for (x, w) in xs.taps(c).take_while(|&(x, _)| x < width) {
                yf += w * col_y[x];
            }
            let (mut uf, mut vf) = (0.0f32, 0.0f32);
            for &(k, w) in &xc[c] {
                if nv12 {
                    uf += w * col_a[2 * k];
                    vf += w * col_a[2 * k + 1];
                } else {
                    uf += w * col_a[k];
                    vf += w * col_b[k];
                }
            }
            let [rr, gg, bb] = filtered_rgb(yf, uf, vf, ax[c] * ay);
            r_plane[base + c] = rr;
            g_plane[base + c] = gg;
            b_plane[base + c] = bb;
        }
    }
}

/// The shared core: `fetch(x, y)` is only called with `x < width`,
/// `y < height`; everything else is black padding.
fn letterbox_core<F>(lb: Letterbox, out: &mut [f32], fetch: F) -> Letterbox
where
    F: Fn(usize, usize) -> [u8; 3],
{
    let (width, height) = (lb.width, lb.height);
    let plane = lb.rows * lb.cols;
    let Some(out) = out.get_mut(..3 * plane) else {
        tracing::error!(
            len = out.len(),
            need = 3 * plane,
            "preprocess: output slot too small; nothing written"
        );
        return lb;
    };
    if width == 0 || height == 0 {
        out.fill(0.0);
        return lb;
    }
    let side = width.max(height);
    let xt = taps(lb.cols, side, lb.scale);
    let yt = taps(lb.rows, side, lb.scale);
    let px = |x: usize, y: usize| -> [f32; 3] {
        if x < width && y < height {
            let [r, g, b] = fetch(x, y);
            [r as f32, g as f32, b as f32]
        } else {
            [0.0; 3]
        }
    };
    // Taps grow with the output index, so past the first output row (column)
    // whose both taps fall in the padding, every later one is black too:
    // those are filled, not sampled (44% of a 16:9 frame's input).
    let live_rows = yt.iter().take_while(|t| t.i0 < height).count();
    let live_cols = xt.iter().take_while(|t| t.i0 < width).count();
    let (r_plane, gb) = out.split_at_mut(plane);
    let (g_plane, b_plane) = gb.split_at_mut(plane);
    let rows = r_plane
        .chunks_exact_mut(lb.cols)
        .zip(g_plane.chunks_exact_mut(lb.cols))
        .zip(b_plane.chunks_exact_mut(lb.cols))
        .zip(yt.iter());
    for (row, (((r_row, g_row), b_row), ty)) in rows.enumerate() {
        if row >= live_rows {
            r_row.fill(0.0);
            g_row.fill(0.0);
            b_row.fill(0.0);
            continue;
        }
        let wy = ty.w1;
        let cols = r_row
            .iter_mut()
            .zip(g_row.iter_mut())
            .zip(b_row.iter_mut())
            .zip(xt.iter())
            .take(live_cols);
        for (((r, g), b), tx) in cols {
            let wx = tx.w1;
            let p00 = px(tx.i0, ty.i0);
            let p01 = px(tx.i1, ty.i0);
            let p10 = px(tx.i0, ty.i1);
            let p11 = px(tx.i1, ty.i1);
            let v = |c: usize| {
                let top = p00[c] * (1.0 - wx) + p01[c] * wx;
                let bottom = p10[c] * (1.0 - wx) + p11[c] * wx;
                (top * (1.0 - wy) + bottom * wy) * (1.0 / 255.0)
            };
            *r = v(0);
            *g = v(1);
            *b = v(2);
        }
        r_row[live_cols..].fill(0.0);
        g_row[live_cols..].fill(0.0);
        b_row[live_cols..].fill(0.0);
    }
    lb
}

/// Letterboxes a YUV frame into one batch slot `out` (`3 * size * size`
/// floats, NCHW RGB in [0, 1]), converting only the sampled pixels.
/// A frame whose data is shorter than its size implies yields a black input
/// (and an error log) rather than a panic.
pub fn preprocess_frame(frame: &Frame, size: usize, out: &mut [f32]) -> Letterbox {
    preprocess_frame_as(frame, LetterboxMode::Square, size, out)
}

/// [`preprocess_frame`] with the letterbox `mode`: `out` must hold the
/// returned letterbox's [`Letterbox::len`] floats (see
/// [`Letterbox::with_mode`]).
pub fn preprocess_frame_as(
    frame: &Frame,
    mode: LetterboxMode,
    size: usize,
    out: &mut [f32],
) -> Letterbox {
    preprocess_frame_with(frame, mode, ResizeFilter::Linear, size, out)
}

/// [`preprocess_frame_as`] with the resampling `filter`.
pub fn preprocess_frame_with(
    frame: &Frame,
    mode: LetterboxMode,
    filter: ResizeFilter,
    size: usize,
    out: &mut [f32],
) -> Letterbox {
    let (width, height) = (frame.width, frame.height);
    let lb = Letterbox::with_mode(mode, width, height, size);
    if frame.data.len() < Frame::expected_len(width, height) {
        tracing::error!(
            len = frame.data.len(),
            width,
            height,
            "preprocess: truncated frame; detector input left black"
        );
        return letterbox_core(lb, out, |_, _| [0; 3]);
    }
    if filter == ResizeFilter::Triangle {
        letterbox_triangle(frame, lb, out);
        return lb;
    }
    let (yp, a, b) = frame.planes();
    let cw = frame.chroma_width();
    let t = YuvTables::new();
    match frame.format {
        PixelFormat::I420 => letterbox_core(lb, out, |x, y| {
            let ci = (y / 2) * cw + x / 2;
            t.rgb(yp[y * width + x], a[ci], b[ci])
        }),
        PixelFormat::Nv12 => letterbox_core(lb, out, |x, y| {
            let ci = 2 * ((y / 2) * cw + x / 2);
            t.rgb(yp[y * width + x], a[ci], a[ci + 1])
        }),
    }
}

/// Letterboxes packed RGB24 (`width * height * 3` bytes) into one batch slot;
/// the exact reference for `preprocess_frame`. Short input yields black.
pub fn preprocess_rgb(
    rgb: &[u8],
    width: usize,
    height: usize,
    size: usize,
    out: &mut [f32],
) -> Letterbox {
    if rgb.len() < width * height * 3 {
        tracing::error!(
            len = rgb.len(),
            width,
            height,
            "preprocess: truncated RGB image; detector input left black"
        );
        return letterbox_core(Letterbox::new(width, height, size), out, |_, _| [0; 3]);
    }
    letterbox_core(Letterbox::new(width, height, size), out, |x, y| {
        let i = (y * width + x) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn solid_rgb(w: usize, h: usize, c: [u8; 3]) -> Vec<u8> {
        c.iter().copied().cycle().take(w * h * 3).collect()
    }

    fn at(t: &[f32], size: usize, c: usize, x: usize, y: usize) -> f32 {
        t[c * size * size + y * size + x]
    }

    #[test]
    fn yuv_tables_match_frame_conversion_exactly() {
        let t = YuvTables::new();
        for y in 0..=255u8 {
            for u in 0..=255u8 {
                for v in 0..=255u8 {
                    assert_eq!(
                        t.rgb(y, u, v),
                        crate::frame::yuv_to_rgb(y, u, v),
                        "{y} {u} {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn round_u8_matches_round_clamp() {
        let mut v = -3.0f32;
        while v < 260.0 {
            for x in [
                v,
                f32::from_bits(v.to_bits() + 1),
                f32::from_bits(v.to_bits().wrapping_sub(1)),
            ] {
                assert_eq!(round_u8(x), x.round().clamp(0.0, 255.0) as u8, "{x}");
            }
            v += 0.5;
        }
    }

    #[test]
    fn letterbox_scale() {
        let lb = Letterbox::new(1280, 720, 320);
        assert_eq!(
            (lb.scale, lb.width, lb.height, lb.size),
            (4.0, 1280, 720, 320)
        );
        assert_eq!(Letterbox::new(200, 400, 320).scale, 1.25);
    }

    #[test]
    fn rect_letterbox_stops_at_the_next_stride() {
        for ((w, h), (rows, cols)) in [
            ((1280, 720), (192, 320)),
            ((1920, 1080), (192, 320)),
            ((720, 1280), (320, 192)),
            ((640, 480), (256, 320)),
            ((500, 500), (320, 320)),
            ((2000, 10), (32, 320)),
        ] {
            let lb = Letterbox::rect(w, h, 320);
            assert_eq!(lb.dims(), (rows, cols), "{w}x{h}");
            assert_eq!(lb.scale, Letterbox::new(w, h, 320).scale);
            assert_eq!(lb.len(), 3 * rows * cols);
        }
        assert_eq!(Letterbox::new(1280, 720, 320).dims(), (320, 320));
        assert_eq!(
            Letterbox::with_mode(LetterboxMode::Square, 1280, 720, 320).dims(),
            (320, 320)
        );
        assert_eq!(Letterbox::rect(0, 0, 320).dims(), (320, 320));
        assert_eq!("RECT".parse::<LetterboxMode>(), Ok(LetterboxMode::Rect));
        assert_eq!(LetterboxMode::Square.score_margin(), 0.0);
        assert_eq!(LetterboxMode::Rect.score_margin(), RECT_SCORE_MARGIN);
        assert!("round".parse::<LetterboxMode>().is_err());
    }

    #[test]
    fn wide_image_is_padded_black_at_the_bottom() {
        let (w, h, s) = (64, 32, 32);
        let rgb = solid_rgb(w, h, [255, 128, 0]);
        let mut t = vec![-1.0; 3 * s * s];
        preprocess_rgb(&rgb, w, h, s, &mut t);
        assert!(t.iter().all(|v| (0.0..=1.0).contains(v)));
        for y in 0..s {
            for x in 0..s {
                let px = [at(&t, s, 0, x, y), at(&t, s, 1, x, y), at(&t, s, 2, x, y)];
                if y < 16 {
                    let want = [1.0, 128.0 / 255.0, 0.0];
                    let close = px.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6);
                    assert!(close, "({x},{y}): {px:?}");
                } else {
                    assert_eq!(px, [0.0; 3], "({x},{y})");
                }
            }
        }
        // Tall image: padding on the right.
        let rgb = solid_rgb(h, w, [10, 20, 30]);
        preprocess_rgb(&rgb, h, w, s, &mut t);
        assert!((at(&t, s, 2, 15, 31) - 30.0 / 255.0).abs() < 1e-6);
        assert_eq!(at(&t, s, 2, 16, 0), 0.0);
    }

    #[test]
    fn same_size_is_a_copy_and_half_size_averages_pairs() {
        let (w, h) = (8, 6);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 5 % 256) as u8).collect();
        let mut t = vec![0.0; 3 * 8 * 8];
        preprocess_rgb(&rgb, w, h, 8, &mut t);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let v = rgb[(y * w + x) * 3 + c] as f32 / 255.0;
                    assert!((at(&t, 8, c, x, y) - v).abs() < 1e-6);
                }
            }
        }
        let mut t = vec![0.0; 3 * 4 * 4];
        preprocess_rgb(&rgb, w, h, 4, &mut t);
        let p = |x: usize, y: usize| rgb[(y * w + x) * 3] as f32;
        let want = (p(2, 0) + p(3, 0) + p(2, 1) + p(3, 1)) / 4.0 / 255.0;
        assert!((at(&t, 4, 0, 1, 0) - want).abs() < 1e-6);
    }

    #[test]
    fn uniform_frame_gives_uniform_rgb() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let (w, h, s) = (100, 60, 64);
            let f = Frame::from_rgb(format, w, h, &solid_rgb(w, h, [200, 100, 50]));
            let want = f.rgb_at(0, 0);
            let mut t = vec![0.0; 3 * s * s];
            preprocess_frame(&f, s, &mut t);
            // Rows whose both taps lie inside the 60-row picture.
            for y in 0..37 {
                for x in 0..s {
                    for (c, want) in want.iter().enumerate() {
                        let v = at(&t, s, c, x, y);
                        assert!(
                            (v - *want as f32 / 255.0).abs() < 1e-6,
                            "{format:?} ({x},{y})"
                        );
                    }
                }
            }
            assert_eq!(at(&t, s, 0, 5, 63), 0.0);
        }
    }

    #[test]
    fn box_in_frame_maps_back_through_scale() {
        // A white square at frame (400..600, 200..400) of a 1280x720 frame.
        let (w, h, s) = (1280, 720, 320);
        let mut rgb = vec![0u8; w * h * 3];
        for y in 200..400 {
            for x in 400..600 {
                rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(255);
            }
        }
        let f = Frame::from_rgb(PixelFormat::Nv12, w, h, &rgb);
        let mut t = vec![0.0; 3 * s * s];
        let lb = preprocess_frame(&f, s, &mut t);
        let lit: Vec<(usize, usize)> = (0..s)
            .flat_map(|y| (0..s).map(move |x| (x, y)))
            .filter(|&(x, y)| at(&t, s, 1, x, y) > 0.5)
            .collect();
        let x0 = lit.iter().map(|p| p.0).min().unwrap_or(0) as f32 * lb.scale;
        let x1 = (lit.iter().map(|p| p.0).max().unwrap_or(0) + 1) as f32 * lb.scale;
        let y0 = lit.iter().map(|p| p.1).min().unwrap_or(0) as f32 * lb.scale;
        let y1 = (lit.iter().map(|p| p.1).max().unwrap_or(0) + 1) as f32 * lb.scale;
        assert_eq!((x0, y0, x1, y1), (400.0, 200.0, 600.0, 400.0));
    }

    #[test]
    fn bad_inputs_do_not_panic() {
        let mut t = vec![0.5; 3 * 16 * 16];
        let mut f = Frame::new(PixelFormat::I420, 32, 32);
        f.data.truncate(100);
        preprocess_frame(&f, 16, &mut t);
        assert!(t.iter().all(|&v| v == 0.0));
        preprocess_rgb(&[1, 2, 3], 4, 4, 16, &mut t);
        let mut short = vec![0.5; 10];
        preprocess_rgb(&solid_rgb(4, 4, [9, 9, 9]), 4, 4, 16, &mut short);
        assert!(short.iter().all(|&v| v == 0.5));
        let lb = preprocess_rgb(&[], 0, 0, 16, &mut t);
        assert_eq!(lb.scale, 0.0);
    }

    fn random_frame(w: usize, h: usize, seed: u64, nv12: bool) -> Frame {
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17 ^ seed) as u8)
            .collect();
        let format = if nv12 {
            PixelFormat::Nv12
        } else {
            PixelFormat::I420
        };
        Frame::from_rgb(format, w, h, &rgb)
    }

    /// The module doc's triangle formula evaluated pixel by pixel, in the
    /// operation order the CUDA kernel uses (per output pixel: over the
    /// horizontal taps, each column's vertical sum first).
    fn triangle_by_formula(f: &Frame, lb: Letterbox) -> Vec<f32> {
        let (w, h) = (f.width, f.height);
        let side = w.max(h);
        let support = if lb.scale > 1.0 { lb.scale } else { 1.0 };
        let inv = 1.0 / support;
        let axis = |d: usize| -> Vec<(usize, f32)> {
            let center = (d as f32 + 0.5) * lb.scale;
            let lo = (center - support + 0.5).floor().max(0.0) as usize;
            let hi = ((center + support + 0.5).floor().max(0.0) as usize).min(side);
            let raw: Vec<(usize, f32)> = (lo..hi.max(lo))
                .map(|x| {
                    let t = (x as f32 + 0.5 - center) * inv;
                    (x, (1.0 - t.abs()).max(0.0))
                })
                .collect();
            let sum = raw.iter().fold(0.0f32, |a, (_, w)| a + w);
            raw.into_iter()
                .map(|(x, w)| (x, if sum > 0.0 { w / sum } else { w }))
                .collect()
        };
        let (yp, a, b) = f.planes();
        let cw = f.chroma_width();
        let nv12 = f.format == PixelFormat::Nv12;
        let u_at = |j: usize, k: usize| {
            if nv12 {
                a[2 * (j * cw + k)]
            } else {
                a[j * cw + k]
            }
        };
        let v_at = |j: usize, k: usize| {
            if nv12 {
                a[2 * (j * cw + k) + 1]
            } else {
                b[j * cw + k]
            }
        };
        let half = |taps: &[(usize, f32)], extent: usize| -> Vec<(usize, f32)> {
            let inside: Vec<(usize, f32)> =
                taps.iter().copied().filter(|(x, _)| *x < extent).collect();
            let Some(&(first, _)) = inside.first() else {
                return Vec::new();
            };
            let last = inside[inside.len() - 1].0;
            let wt = |x: usize| inside.iter().find(|t| t.0 == x).map_or(0.0, |t| t.1);
            (first / 2..=last / 2)
                .map(|k| (k, wt(2 * k) + wt(2 * k + 1)))
                .collect()
        };
        let plane = lb.rows * lb.cols;
        let mut out = vec![0.0f32; 3 * plane];
        for dy in 0..lb.rows {
            let ty = axis(dy);
            let ay = ty.iter().filter(|t| t.0 < h).fold(0.0f32, |s, t| s + t.1);
            let cy = half(&ty, h);
            for dx in 0..lb.cols {
                let tx = axis(dx);
                let ax = tx.iter().filter(|t| t.0 < w).fold(0.0f32, |s, t| s + t.1);
                let mut yf = 0.0f32;
                for &(x, wx) in tx.iter().filter(|t| t.0 < w) {
                    let mut col = 0.0f32;
                    for &(y, wy) in ty.iter().filter(|t| t.0 < h) {
                        col += wy * yp[y * w + x] as f32;
                    }
                    yf += wx * col;
                }
                let (mut uf, mut vf) = (0.0f32, 0.0f32);
                for (k, wx) in half(&tx, w) {
                    let (mut cu, mut cv) = (0.0f32, 0.0f32);
                    for &(j, wy) in &cy {
                        cu += wy * u_at(j, k) as f32;
                        cv += wy * v_at(j, k) as f32;
                    }
                    uf += wx * cu;
                    vf += wx * cv;
                }
                let rgb = filtered_rgb(yf, uf, vf, ax * ay);
                for (c, v) in rgb.iter().enumerate() {
                    out[c * plane + dy * lb.cols + dx] = *v;
                }
            }
        }
        out
    }

    #[test]
    fn triangle_of_a_uniform_frame_is_its_colour_and_fades_into_the_padding() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let (w, h, s) = (400, 240, 64);
            let f = Frame::from_rgb(format, w, h, &solid_rgb(w, h, [200, 100, 50]));
            let want = f.rgb_at(0, 0);
            let mut t = vec![0.0; 3 * s * s];
            preprocess_frame_with(&f, LetterboxMode::Square, ResizeFilter::Triangle, s, &mut t);
            // Rows whose taps all lie in the 240-row picture: the colour, to
            // within the u8 rounding the linear path does.
            for y in 0..37 {
                for x in 0..s {
                    for (c, want) in want.iter().enumerate() {
                        let v = at(&t, s, c, x, y);
                        assert!(
                            (v - *want as f32 / 255.0).abs() < 1.0 / 255.0,
                            "{format:?} ({x},{y}) {v}"
                        );
                    }
                }
            }
            // The edge row blends with black; below it, black.
            let edge = at(&t, s, 0, 10, 38);
            assert!(edge > 0.0 && edge < 200.0 / 255.0, "{edge}");
            assert_eq!(at(&t, s, 0, 10, 40), 0.0);
        }
    }

    #[test]
    fn triangle_antialiases_where_linear_aliases() {
        // One-pixel stripes 3x downsampled: the 2x2 taps land on a single
        // pixel, alternately bright and dark, a pattern of full contrast
        // that is not in the picture; the triangle averages them to grey.
        let (w, h, s) = (480, 480, 160);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                if (i % w) % 2 == 0 {
                    [235u8; 3]
                } else {
                    [20u8; 3]
                }
            })
            .collect();
        let f = Frame::from_rgb(PixelFormat::I420, w, h, &rgb);
        let spread = |filter| {
            let mut t = vec![0.0; 3 * s * s];
            preprocess_frame_with(&f, LetterboxMode::Square, filter, s, &mut t);
            let row: Vec<f32> = (1..s - 1).map(|x| at(&t, s, 1, x, s / 2)).collect();
            let (lo, hi) = row
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
            (hi - lo, row.iter().sum::<f32>() / row.len() as f32)
        };
        let (tri, tri_mean) = spread(ResizeFilter::Triangle);
        let (lin, _) = spread(ResizeFilter::Linear);
        assert!(tri < 0.1, "triangle spread {tri}");
        assert!((tri_mean - 127.5 / 255.0).abs() < 0.05, "{tri_mean}");
        assert!(lin > 0.6, "linear spread {lin}");
    }

    #[test]
    fn resize_filter_parses() {
        assert_eq!(
            "Triangle".parse::<ResizeFilter>(),
            Ok(ResizeFilter::Triangle)
        );
        assert_eq!("linear".parse::<ResizeFilter>(), Ok(ResizeFilter::Linear));
        assert!("cubic".parse::<ResizeFilter>().is_err());
        assert_eq!(ResizeFilter::default(), ResizeFilter::Triangle);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The separable triangle path equals the formula at every pixel,
        /// bit for bit, for both letterboxes and chroma layouts, and odd
        /// sizes, up- and downscaling.
        #[test]
        fn triangle_matches_the_formula_everywhere(
            w in 1usize..160, h in 1usize..160, s in prop::sample::select(vec![16usize, 32, 64, 96]),
            seed in any::<u64>(), nv12 in any::<bool>(), rect in any::<bool>(),
        ) {
            let f = random_frame(w, h, seed, nv12);
            let mode = if rect { LetterboxMode::Rect } else { LetterboxMode::Square };
            let lb = Letterbox::with_mode(mode, w, h, s);
            let mut got = vec![7.0; lb.len()];
            prop_assert_eq!(preprocess_frame_with(&f, mode, ResizeFilter::Triangle, s, &mut got), lb);
            let want = triangle_by_formula(&f, lb);
            for (i, (g, v)) in got.iter().zip(&want).enumerate() {
                prop_assert_eq!(g.to_bits(), v.to_bits(), "index {}: {} vs {}", i, g, v);
            }
        }

        /// The YUV path equals the RGB reference on the frame's own RGB.
        #[test]
        fn frame_matches_rgb_reference(
            w in 1usize..90, h in 1usize..90, s in prop::sample::select(vec![16usize, 32, 64]),
            seed in any::<u64>(), nv12 in any::<bool>(),
        ) {
            let rgb: Vec<u8> = (0..w * h * 3)
                .map(|i| ((i as u64).wrapping_mul(2654435761) ^ seed) as u8)
                .collect();
            let format = if nv12 { PixelFormat::Nv12 } else { PixelFormat::I420 };
            let f = Frame::from_rgb(format, w, h, &rgb);
            let mut a = vec![0.0; 3 * s * s];
            let mut b = vec![0.0; 3 * s * s];
            let la = preprocess_frame(&f, s, &mut a);
            let lb = preprocess_rgb(&f.to_rgb(), w, h, s, &mut b);
            prop_assert_eq!(la, lb);
            prop_assert_eq!(a, b);
        }

        /// The rectangular input is the square input's top-left crop, bit
        /// for bit, and everything the crop leaves out is padding (zero).
        #[test]
        fn rect_is_the_square_inputs_corner(
            w in 1usize..200, h in 1usize..200, s in prop::sample::select(vec![32usize, 64, 96]),
            seed in any::<u64>(), nv12 in any::<bool>(),
        ) {
            let rgb: Vec<u8> = (0..w * h * 3)
                .map(|i| ((i as u64).wrapping_mul(0x2545_F491) ^ seed) as u8)
                .collect();
            let format = if nv12 { PixelFormat::Nv12 } else { PixelFormat::I420 };
            let f = Frame::from_rgb(format, w, h, &rgb);
            let mut sq = vec![0.0; 3 * s * s];
            preprocess_frame(&f, s, &mut sq);
            let lb = Letterbox::rect(w, h, s);
            let mut rect = vec![9.0; lb.len()];
            prop_assert_eq!(preprocess_frame_as(&f, LetterboxMode::Rect, s, &mut rect), lb);
            prop_assert_eq!(lb.rows % STRIDE, 0);
            prop_assert_eq!(lb.cols % STRIDE, 0);
            for c in 0..3 {
                for y in 0..s {
                    for x in 0..s {
                        let v = at(&sq, s, c, x, y);
                        if y < lb.rows && x < lb.cols {
                            let r = rect[c * lb.rows * lb.cols + y * lb.cols + x];
                            prop_assert_eq!(r.to_bits(), v.to_bits(), "{} {} {}", x, y, c);
                        } else {
                            prop_assert_eq!(v, 0.0, "{} {} {}", x, y, c);
                        }
                    }
                }
            }
        }

        /// The letterbox (padding rows and columns filled, not sampled)
        /// equals the module doc's formula evaluated at every output pixel.
        #[test]
        fn rgb_matches_the_formula_everywhere(
            w in 1usize..70, h in 1usize..70, s in prop::sample::select(vec![8usize, 16, 33]),
            seed in any::<u64>(), dirty in any::<bool>(),
        ) {
            let rgb: Vec<u8> = (0..w * h * 3)
                .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9) ^ seed) as u8)
                .collect();
            let mut got = vec![if dirty { 7.0 } else { 0.0 }; 3 * s * s];
            preprocess_rgb(&rgb, w, h, s, &mut got);
            let side = w.max(h);
            let scale = side as f32 / s as f32;
            let tap = |d: usize| {
                let v = (d as f32 + 0.5) * scale - 0.5;
                let f = v.floor();
                let (i0, w1) = if f < 0.0 {
                    (0, 0.0)
                } else if f as usize >= side - 1 {
                    (side - 1, 0.0)
                } else {
                    (f as usize, v - f)
                };
                (i0, (i0 + 1).min(side - 1), w1)
            };
            let p = |x: usize, y: usize, c: usize| {
                if x < w && y < h { rgb[(y * w + x) * 3 + c] as f32 } else { 0.0 }
            };
            for y in 0..s {
                let (y0, y1, wy) = tap(y);
                for x in 0..s {
                    let (x0, x1, wx) = tap(x);
                    for c in 0..3 {
                        let top = p(x0, y0, c) * (1.0 - wx) + p(x1, y0, c) * wx;
                        let bottom = p(x0, y1, c) * (1.0 - wx) + p(x1, y1, c) * wx;
                        let want = (top * (1.0 - wy) + bottom * wy) * (1.0 / 255.0);
                        prop_assert_eq!(at(&got, s, c, x, y).to_bits(), want.to_bits(), "{} {} {}", x, y, c);
                    }
                }
            }
        }
    }
}
