//! CPU censoring of host frames, in place: Gaussian blur, pixelation, fill.
//!
//! These are also the reference implementations the CUDA kernels are
//! parity-tested against, so every per-pixel rule is integer arithmetic
//! documented next to its plane function:
//! - geometry (outline, clip, ellipse, chroma box): [`region`],
//! - blur (three box passes per axis, Q8 integers): [`blur`],
//! - pixelation (rounded block means): [`pixelate`],
//! - fill: [`fill`].
//!
//! Blur cost is independent of sigma (running box sums): on a loaded 2-core
//! x86 VM, 4 masks of 200x200 on 720p take about 3 ms, a whole 720p frame
//! about 5.5 ms (release).
//!
//! Per mask, from its outline (box rounded outward, shorter side `s`):
//! - Blur: luma sigma = `max(strength * s, 2)`, chroma sigma half of it.
//! - Pixelate: luma block = `block` (at least 2) or, for 0, `max(8, s/8)`;
//!   chroma block = `max(2, block/2)`.
//! - Fill: the Y, U, V constants.
//!
//! A whole-frame censor ([`censor_full`], or any mask with origin
//! `FullFrame`) must leave nothing recognisable, so it raises the strength:
//! blur sigma at least 1/8 of the frame's shorter side, pixel blocks at
//! least `max(16, s/16)`. [`censor_full`] (the fail-closed path) blurs
//! decimated, which is several times cheaper; [`censor_full_exact`] and
//! the CUDA plan blur at full resolution.

pub mod blur;
pub mod detail;
pub mod fill;
pub mod pixelate;
pub mod region;

pub use blur::{blur_plane, box_radii, MAX_SIGMA};
pub use detail::{detail, detail_ratio};
pub use fill::fill_plane;
pub use pixelate::{auto_block, pixelate_plane};
pub use region::{pixel_rect, PixelRect, Region, SignedRect};

use crate::error::MediaError;
use crate::frame::{CensorMethod, Frame, Mask, MaskOrigin, MaskShape, PixelFormat};

/// Censors every mask of a frame, in order. Masks are clipped to the frame;
/// empty, NaN or outside masks are skipped. Any `FullFrame` mask censors
/// the whole frame instead (same result as [`censor_full_exact`]). A frame whose
/// buffer does not match its size cannot be censored reliably and is
/// blanked entirely (fail closed).
pub fn apply(frame: &mut Frame, masks: &[Mask], method: &CensorMethod) {
    if masks.iter().any(|m| m.origin == MaskOrigin::FullFrame) {
        censor_full_exact(frame, method);
        return;
    }
    if !frame_is_sound(frame) {
        blank(frame);
        return;
    }
    for m in masks {
        let Some(outline) = SignedRect::from_bbox(&m.bbox) else {
            continue;
        };
        if let Err(e) = censor_outline(frame, outline, m.shape, method, false) {
            tracing::error!("censor failed, blanking the frame: {e}");
            blank(frame);
            return;
        }
    }
}

/// Merges rectangle masks that mostly overlap (IoU >= 0.5) into the box
/// around both, in place: a region masked by its own detection and by its
/// track would otherwise be blurred twice, at twice the cost, for nothing.
/// The union covers everything either did. Ellipses are left as they are
/// (the ellipse of a union box need not hold both).
pub fn merge_overlapping(masks: &mut Vec<Mask>) {
    let mut i = 0;
    while i < masks.len() {
        let mut merged = false;
        for j in i + 1..masks.len() {
            let (a, b) = (&masks[i], &masks[j]);
            let rects = a.shape == MaskShape::Rect && b.shape == MaskShape::Rect;
            if rects && a.origin != MaskOrigin::FullFrame && a.bbox.iou(&b.bbox) >= 0.5 {
                let (p, q) = (a.bbox, b.bbox);
                masks[i].bbox = crate::frame::BBox::new(
                    p.x0.min(q.x0),
                    p.y0.min(q.y0),
                    p.x1.max(q.x1),
                    p.y1.max(q.y1),
                );
                masks.remove(j);
                merged = true;
                break;
            }
        }
        if !merged {
            i += 1;
        }
    }
}

/// Censors the whole frame strongly enough that no detail survives (for
/// fail-closed frames); see the module doc for the raised strengths. A blur
/// is done decimated ([`blur::blur_whole_plane`]): fail-closed frames come
/// in runs when the machine is overloaded, and a full-resolution blur of
/// the whole frame costs several times a normal frame's censoring.
pub fn censor_full(frame: &mut Frame, method: &CensorMethod) {
    if !matches!(method, CensorMethod::Blur { .. }) {
        censor_full_exact(frame, method);
        return;
    }
    if !frame_is_sound(frame) {
        blank(frame);
        return;
    }
    let (w, h) = (frame.width, frame.height);
    let (cw, ch) = (frame.chroma_width(), frame.chroma_height());
    let sigmas = plane_ops(method, w.min(h), true).map(|op| match op {
        PlaneOp::Blur(s) => s,
        _ => MAX_SIGMA,
    });
    let format = frame.format;
    let (yp, a, b) = frame.planes_mut();
    let done = blur::blur_whole_plane(yp, w, h, w, 1, sigmas[0]).and_then(|()| match format {
        PixelFormat::I420 => {
            blur::blur_whole_plane(a, cw, ch, cw, 1, sigmas[1])?;
            blur::blur_whole_plane(b, cw, ch, cw, 1, sigmas[2])
        }
        PixelFormat::Nv12 => {
            blur::blur_whole_plane(a, cw, ch, 2 * cw, 2, sigmas[1])?;
            let v = a.get_mut(1..).unwrap_or_default();
            blur::blur_whole_plane(v, cw, ch, 2 * cw, 2, sigmas[2])
        }
    });
    if let Err(e) = done {
        tracing::error!("censor failed, blanking the frame: {e}");
        blank(frame);
    }
}

/// [`censor_full`] at full resolution for every method: what a `FullFrame`
/// mask does in [`apply`] and in the CUDA launch plan (`gpu::plan`), whose
/// reference it is.
pub fn censor_full_exact(frame: &mut Frame, method: &CensorMethod) {
    if !frame_is_sound(frame) {
        blank(frame);
        return;
    }
    if frame.width == 0 || frame.height == 0 {
        return;
    }
    let outline = SignedRect::full(frame.width, frame.height);
    if let Err(e) = censor_outline(frame, outline, MaskShape::Rect, method, true) {
        tracing::error!("censor failed, blanking the frame: {e}");
        blank(frame);
    }
}

/// What one plane gets for one mask.
/// One plane's operation; the CUDA launch plan (`gpu::plan`) uses the same.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PlaneOp {
    Blur(f32),
    Pixelate(usize),
    Fill(u8),
}

/// The luma and two chroma operations for a mask with shorter side `short`.
pub fn plane_ops(method: &CensorMethod, short: usize, full: bool) -> [PlaneOp; 3] {
    match *method {
        CensorMethod::Blur { strength } => {
            // NaN strength gives NaN here; `max` then picks the floor.
            let mut sigma = (strength * short as f32).max(2.0);
            if full {
                sigma = sigma.max(short as f32 / 8.0);
            }
            let c = PlaneOp::Blur(sigma / 2.0);
            [PlaneOp::Blur(sigma), c, c]
        }
        CensorMethod::Pixelate { block } => {
            let mut b = match block {
                0 => auto_block(short),
                n => (n as usize).max(2),
            };
            if full {
                b = b.max(16).max(short / 16);
            }
            let c = PlaneOp::Pixelate((b / 2).max(2));
            [PlaneOp::Pixelate(b), c, c]
        }
        CensorMethod::Fill { y, u, v } => [PlaneOp::Fill(y), PlaneOp::Fill(u), PlaneOp::Fill(v)],
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    plane: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    step: usize,
    region: &Region,
    op: PlaneOp,
) -> Result<(), MediaError> {
    match op {
        PlaneOp::Blur(s) => blur_plane(plane, width, height, stride, step, region, s),
        PlaneOp::Pixelate(b) => pixelate_plane(plane, width, height, stride, step, region, b),
        PlaneOp::Fill(v) => fill_plane(plane, width, height, stride, step, region, v),
    }
}

/// Censors one outline on all planes. Chroma is censored only where the
/// luma box touches the frame, over the chroma outline (rounded outward).
fn censor_outline(
    frame: &mut Frame,
    outline: SignedRect,
    shape: MaskShape,
    method: &CensorMethod,
    full: bool,
) -> Result<(), MediaError> {
    let (w, h) = (frame.width, frame.height);
    let (cw, ch) = (frame.chroma_width(), frame.chroma_height());
    let Some(luma) = Region::new(outline, shape, w, h) else {
        return Ok(());
    };
    let short = usize::try_from(outline.short_side()).unwrap_or(0);
    let [oy, ou, ov] = plane_ops(method, short, full);
    let format = frame.format;
    let (yp, a, b) = frame.planes_mut();
    run(yp, w, h, w, 1, &luma, oy)?;
    let Some(chroma) = luma.to_chroma(cw, ch) else {
        return Ok(());
    };
    match format {
        PixelFormat::I420 => {
            run(a, cw, ch, cw, 1, &chroma, ou)?;
            run(b, cw, ch, cw, 1, &chroma, ov)?;
        }
        PixelFormat::Nv12 => {
            run(a, cw, ch, 2 * cw, 2, &chroma, ou)?;
            let v = a.get_mut(1..).unwrap_or_default();
            run(v, cw, ch, 2 * cw, 2, &chroma, ov)?;
        }
    }
    Ok(())
}

fn frame_is_sound(frame: &Frame) -> bool {
    frame
        .width
        .checked_mul(frame.height)
        .is_some_and(|_| frame.data.len() == Frame::expected_len(frame.width, frame.height))
}

/// Fail-closed fallback for a frame we cannot censor region by region.
fn blank(frame: &mut Frame) {
    tracing::warn!(
        "frame {}x{} with {} bytes: blanked",
        frame.width,
        frame.height,
        frame.data.len()
    );
    frame.data.fill(128);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BBox;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const FORMATS: [PixelFormat; 2] = [PixelFormat::I420, PixelFormat::Nv12];
    const SHAPES: [MaskShape; 2] = [MaskShape::Rect, MaskShape::Ellipse];

    #[test]
    fn overlapping_rects_merge_into_their_union_and_cover_as_much() {
        let mut m = vec![
            mask(BBox::new(10.0, 10.0, 110.0, 110.0), MaskShape::Rect),
            mask(BBox::new(300.0, 0.0, 340.0, 40.0), MaskShape::Rect),
            mask(BBox::new(12.0, 8.0, 114.0, 112.0), MaskShape::Rect),
            mask(BBox::new(14.0, 10.0, 110.0, 110.0), MaskShape::Ellipse),
        ];
        let before = m.clone();
        merge_overlapping(&mut m);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0].bbox, BBox::new(10.0, 8.0, 114.0, 112.0));
        // Every point any mask covered is still covered.
        for x in (0..400).step_by(3) {
            for y in (0..150).step_by(3) {
                let (x, y) = (x as f32, y as f32);
                let was = before.iter().any(|k| crate::audit::mask_contains(k, x, y));
                let is = m.iter().any(|k| crate::audit::mask_contains(k, x, y));
                assert!(!was || is, "({x},{y}) uncovered");
            }
        }
    }

    fn methods() -> Vec<CensorMethod> {
        vec![
            CensorMethod::Blur { strength: 0.25 },
            CensorMethod::Pixelate { block: 0 },
            CensorMethod::Pixelate { block: 5 },
            CensorMethod::Fill {
                y: 16,
                u: 128,
                v: 128,
            },
        ]
    }

    fn noise_frame(format: PixelFormat, w: usize, h: usize, seed: u64) -> Frame {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut f = Frame::new(PixelFormat::I420, w, h);
        rng.fill(&mut f.data[..]);
        f.converted(format)
    }

    fn mask(b: BBox, shape: MaskShape) -> Mask {
        Mask {
            bbox: b,
            shape,
            origin: MaskOrigin::Detected,
            class: 0,
        }
    }

    /// Luma and chroma regions a mask may touch (reference for the tests).
    fn regions(f: &Frame, m: &Mask) -> Option<(Region, Option<Region>)> {
        let luma = Region::from_bbox(&m.bbox, m.shape, f.width, f.height)?;
        let chroma = luma.to_chroma(f.chroma_width(), f.chroma_height());
        Some((luma, chroma))
    }

    /// Every pixel no mask covers is bit-identical (compared as I420).
    fn assert_outside_unchanged(before: &Frame, after: &Frame, masks: &[Mask]) {
        let (b, a) = (
            before.converted(PixelFormat::I420),
            after.converted(PixelFormat::I420),
        );
        let regs: Vec<_> = masks.iter().filter_map(|m| regions(before, m)).collect();
        let (w, cw) = (b.width, b.chroma_width());
        let (by, bu, bv) = b.planes();
        let (ay, au, av) = a.planes();
        for y in 0..b.height {
            for x in 0..w {
                if !regs.iter().any(|(l, _)| l.contains(x, y)) {
                    assert_eq!(ay[y * w + x], by[y * w + x], "luma {x},{y} {masks:?}");
                }
            }
        }
        for y in 0..b.chroma_height() {
            for x in 0..cw {
                if !regs
                    .iter()
                    .any(|(_, c)| c.is_some_and(|c| c.contains(x, y)))
                {
                    let i = y * cw + x;
                    assert_eq!((au[i], av[i]), (bu[i], bv[i]), "chroma {x},{y} {masks:?}");
                }
            }
        }
    }

    /// A box well inside the mask's covered pixels (the ellipse's inscribed
    /// square, shrunk by a pixel), where detail must be gone.
    fn inner_box(b: &BBox, shape: MaskShape) -> BBox {
        let (cx, cy) = b.center();
        let k = match shape {
            MaskShape::Rect => 0.5,
            MaskShape::Ellipse => 0.5 * std::f32::consts::FRAC_1_SQRT_2,
        };
        BBox::new(
            cx - b.width() * k + 1.0,
            cy - b.height() * k + 1.0,
            cx + b.width() * k - 1.0,
            cy + b.height() * k - 1.0,
        )
    }

    #[test]
    fn method_shape_format_size_matrix() {
        let sizes = [(641usize, 359usize), (64, 48), (3, 3), (1, 1), (2, 5)];
        for (si, &(w, h)) in sizes.iter().enumerate() {
            let (wf, hf) = (w as f32, h as f32);
            let boxes = [
                BBox::new(wf * 0.1, hf * 0.2, wf * 0.45, hf * 0.7),
                BBox::new(-wf * 0.1 - 3.3, -hf * 0.2, wf * 0.3, hf * 0.4 + 0.5),
                BBox::new(wf * 0.7, hf * 0.6, wf * 1.3, hf * 1.5),
                BBox::new(wf + 1.0, 2.0, wf + 40.0, hf),
                BBox::new(-50.0, -50.0, -1.0, -0.5),
                BBox::new(wf * 0.5, hf * 0.5, wf * 0.5, hf * 0.9),
            ];
            for method in methods() {
                for shape in SHAPES {
                    let before = noise_frame(PixelFormat::I420, w, h, si as u64 * 31 + 1);
                    let masks: Vec<Mask> = boxes.iter().map(|&b| mask(b, shape)).collect();
                    let mut out = Vec::new();
                    for format in FORMATS {
                        let src = before.converted(format);
                        let mut f = src.clone();
                        apply(&mut f, &masks, &method);
                        assert_outside_unchanged(&src, &f, &masks);
                        out.push(f.converted(PixelFormat::I420));
                    }
                    assert_eq!(out[0], out[1], "I420 vs NV12 {method:?} {shape:?} {w}x{h}");
                    // Detail gone inside the first mask (fully inside the frame).
                    if w >= 64 {
                        let inner = inner_box(&boxes[0], shape);
                        let r = detail_ratio(&before, &out[0], &inner);
                        match method {
                            CensorMethod::Fill { .. } => assert_eq!(r, 0.0),
                            _ => assert!(r < 0.2, "{method:?} {shape:?} {w}x{h}: {r}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fully_outside_and_degenerate_masks_change_nothing() {
        let before = noise_frame(PixelFormat::Nv12, 33, 17, 5);
        let masks = [
            mask(BBox::new(33.0, 0.0, 60.0, 17.0), MaskShape::Rect),
            mask(BBox::new(0.0, 17.0, 33.0, 30.0), MaskShape::Ellipse),
            mask(BBox::new(-9.0, -9.0, 0.0, 0.0), MaskShape::Rect),
            mask(BBox::new(5.0, 5.0, 2.0, 9.0), MaskShape::Rect),
            mask(BBox::new(f32::NAN, 0.0, 9.0, 9.0), MaskShape::Rect),
        ];
        for method in methods() {
            let mut f = before.clone();
            apply(&mut f, &masks, &method);
            assert_eq!(f, before, "{method:?}");
        }
    }

    #[test]
    fn ellipse_leaves_rect_corners_untouched() {
        let before = noise_frame(PixelFormat::I420, 80, 60, 9);
        let m = mask(BBox::new(10.0, 10.0, 50.0, 40.0), MaskShape::Ellipse);
        for method in methods() {
            let mut f = before.clone();
            apply(&mut f, &[m], &method);
            for (x, y) in [(10, 10), (49, 10), (10, 39), (49, 39), (11, 11)] {
                assert_eq!(f.data[y * 80 + x], before.data[y * 80 + x], "{method:?}");
            }
            let centre = (25 * 80 + 30, 25 * 80 + 31);
            assert_ne!(
                (f.data[centre.0], f.data[centre.1]),
                (before.data[centre.0], before.data[centre.1]),
                "{method:?}"
            );
        }
    }

    #[test]
    fn fill_writes_exact_values() {
        for format in FORMATS {
            let before = noise_frame(format, 21, 13, 2);
            let mut f = before.clone();
            let m = mask(BBox::new(3.5, 2.0, 10.0, 9.2), MaskShape::Rect);
            apply(&mut f, &[m], &CensorMethod::Fill { y: 1, u: 2, v: 3 });
            let g = f.converted(PixelFormat::I420);
            let (y, u, v) = g.planes();
            for yy in 2..10 {
                for xx in 3..10 {
                    assert_eq!(y[yy * 21 + xx], 1);
                }
            }
            // Chroma box: floor(3/2)=1 .. ceil(10/2)=5, 1 .. 5.
            for yy in 1..5 {
                for xx in 1..5 {
                    assert_eq!((u[yy * 11 + xx], v[yy * 11 + xx]), (2, 3));
                }
            }
            assert_outside_unchanged(&before, &f, &[m]);
        }
    }

    #[test]
    fn pixelate_block_means_are_exact() {
        let before = noise_frame(PixelFormat::I420, 40, 30, 4);
        let mut f = before.clone();
        // Outline 3..26 x 5..19, block 4: blocks start at 3, 7, ... and 5, 9, ...
        let m = mask(BBox::new(3.0, 5.0, 26.0, 19.0), MaskShape::Rect);
        apply(&mut f, &[m], &CensorMethod::Pixelate { block: 4 });
        let (w, src) = (40, before.y());
        for by in (5..19).step_by(4) {
            for bx in (3..26).step_by(4) {
                let (ex, ey) = ((bx + 4).min(26), (by + 4).min(19));
                let mut sum = 0u32;
                for y in by..ey {
                    for x in bx..ex {
                        sum += src[y * w + x] as u32;
                    }
                }
                let n = ((ex - bx) * (ey - by)) as u32;
                let mean = ((sum + n / 2) / n) as u8;
                for y in by..ey {
                    for x in bx..ex {
                        assert_eq!(f.y()[y * w + x], mean, "block {bx},{by}");
                    }
                }
            }
        }
        // Chroma block 2 on the chroma box 1..13 x 2..10.
        let (_, su, _) = before.planes();
        let (_, fu, _) = f.planes();
        let (x0, y0) = (1usize, 2usize);
        let s = su[y0 * 20 + x0] as u32
            + su[y0 * 20 + x0 + 1] as u32
            + su[(y0 + 1) * 20 + x0] as u32
            + su[(y0 + 1) * 20 + x0 + 1] as u32;
        assert_eq!(fu[y0 * 20 + x0] as u32, (s + 2) / 4);
    }

    #[test]
    fn full_frame_mask_equals_censor_full() {
        let before = noise_frame(PixelFormat::Nv12, 97, 61, 8);
        let ff = Mask {
            bbox: BBox::new(0.0, 0.0, 97.0, 61.0),
            shape: MaskShape::Ellipse,
            origin: MaskOrigin::FullFrame,
            class: 255,
        };
        let other = mask(BBox::new(3.0, 3.0, 20.0, 20.0), MaskShape::Rect);
        for method in methods() {
            let mut a = before.clone();
            apply(&mut a, &[other, ff], &method);
            let mut b = before.clone();
            censor_full_exact(&mut b, &method);
            assert_eq!(a, b, "{method:?}");
            assert_ne!(a, before);
            // The fail-closed path: the same but for a decimated blur.
            let mut c = before.clone();
            censor_full(&mut c, &method);
            if matches!(method, CensorMethod::Blur { .. }) {
                let diff = c.data.iter().zip(&b.data).map(|(&x, &y)| x.abs_diff(y));
                let mean = diff.map(f64::from).sum::<f64>() / c.data.len() as f64;
                assert!(mean < 3.0, "{method:?}: mean |diff| {mean}");
            } else {
                assert_eq!(c, b, "{method:?}");
            }
        }
    }

    #[test]
    fn censor_full_leaves_no_detail() {
        let whole = BBox::new(0.0, 0.0, 320.0, 180.0);
        for format in FORMATS {
            let before = noise_frame(format, 320, 180, 12);
            for method in [
                CensorMethod::Blur { strength: 0.0 },
                CensorMethod::Pixelate { block: 2 },
            ] {
                let mut f = before.clone();
                censor_full(&mut f, &method);
                let r = detail_ratio(&before, &f, &whole);
                assert!(r < 0.05, "{method:?}: {r}");
            }
        }
        // A strong 8-px checkerboard is flattened by the full-frame blur.
        let mut f = Frame::new(PixelFormat::I420, 128, 96);
        for y in 0..96 {
            for x in 0..128 {
                f.data[y * 128 + x] = if (x / 8 + y / 8) % 2 == 0 { 235 } else { 16 };
            }
        }
        let before = f.clone();
        censor_full(&mut f, &CensorMethod::Blur { strength: 0.0 });
        let r = detail_ratio(&before, &f, &BBox::new(0.0, 0.0, 128.0, 96.0));
        assert!(r < 0.02, "{r}");
        // Away from the borders (where edge clamping tints the result) the
        // picture is flat.
        let interior = (32..64).flat_map(|y| (40..88).map(move |x| y * 128 + x));
        let (lo, hi) = interior.fold((255, 0), |(l, h), i| (f.data[i].min(l), f.data[i].max(h)));
        assert!(hi - lo < 8, "{lo}..{hi}");
    }

    #[test]
    fn blur_sigma_and_blocks_follow_the_mask() {
        let ops = plane_ops(&CensorMethod::Blur { strength: 0.25 }, 200, false);
        assert_eq!(
            ops,
            [
                PlaneOp::Blur(50.0),
                PlaneOp::Blur(25.0),
                PlaneOp::Blur(25.0)
            ]
        );
        let ops = plane_ops(&CensorMethod::Blur { strength: f32::NAN }, 200, false);
        assert_eq!(ops[0], PlaneOp::Blur(2.0));
        let ops = plane_ops(&CensorMethod::Blur { strength: 0.01 }, 720, true);
        assert_eq!(ops[0], PlaneOp::Blur(90.0));
        let ops = plane_ops(&CensorMethod::Pixelate { block: 0 }, 200, false);
        assert_eq!(
            ops,
            [
                PlaneOp::Pixelate(25),
                PlaneOp::Pixelate(12),
                PlaneOp::Pixelate(12)
            ]
        );
        let ops = plane_ops(&CensorMethod::Pixelate { block: 1 }, 200, false);
        assert_eq!(
            ops,
            [
                PlaneOp::Pixelate(2),
                PlaneOp::Pixelate(2),
                PlaneOp::Pixelate(2)
            ]
        );
        let ops = plane_ops(&CensorMethod::Pixelate { block: 4 }, 720, true);
        assert_eq!(ops[0], PlaneOp::Pixelate(45));
    }

    #[test]
    fn malformed_frame_is_blanked_not_panicking() {
        let mut f = noise_frame(PixelFormat::I420, 16, 16, 1);
        f.data.truncate(100);
        let m = mask(BBox::new(0.0, 0.0, 4.0, 4.0), MaskShape::Rect);
        apply(&mut f, &[m], &CensorMethod::default());
        assert!(f.data.iter().all(|&v| v == 128));
        let mut g = noise_frame(PixelFormat::Nv12, 16, 16, 1);
        g.data.push(0);
        censor_full(&mut g, &CensorMethod::default());
        assert!(g.data.iter().all(|&v| v == 128));
        let mut empty = Frame::new(PixelFormat::I420, 0, 0);
        censor_full(&mut empty, &CensorMethod::default());
        apply(&mut empty, &[m], &CensorMethod::default());
        assert!(empty.data.is_empty());
    }

    fn coord() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -40.0f32..60.0,
            1 => prop::num::f32::NORMAL | prop::num::f32::ZERO | prop::num::f32::INFINITE,
            1 => prop::sample::select(vec![f32::MAX, -f32::MAX, 1e9, -1e9, 0.5, -0.5]),
        ]
    }

    fn any_method() -> impl Strategy<Value = CensorMethod> {
        prop_oneof![
            prop_oneof![0.0f32..2.0, Just(f32::NAN), Just(1e30)]
                .prop_map(|strength| CensorMethod::Blur { strength }),
            (0u32..12).prop_map(|block| CensorMethod::Pixelate { block }),
            Just(u32::MAX).prop_map(|block| CensorMethod::Pixelate { block }),
            any::<(u8, u8, u8)>().prop_map(|(y, u, v)| CensorMethod::Fill { y, u, v }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn random_masks_never_panic_or_leak_outside(
            w in 1usize..24,
            h in 1usize..24,
            nv12 in any::<bool>(),
            seed in any::<u64>(),
            boxes in prop::collection::vec(
                (coord(), coord(), coord(), coord(), any::<bool>()), 0..4),
            method in any_method(),
        ) {
            let format = if nv12 { PixelFormat::Nv12 } else { PixelFormat::I420 };
            let before = noise_frame(format, w, h, seed);
            let masks: Vec<Mask> = boxes
                .iter()
                .map(|&(x0, y0, x1, y1, e)| {
                    let shape = if e { MaskShape::Ellipse } else { MaskShape::Rect };
                    mask(BBox::new(x0, y0, x1, y1), shape)
                })
                .collect();
            let mut f = before.clone();
            apply(&mut f, &masks, &method);
            assert_outside_unchanged(&before, &f, &masks);
        }
    }
}
