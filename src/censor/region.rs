//! Mask geometry in integer pixels, shared by every censor method and plane.
//!
//! A mask is described by its *outline*, the float box rounded outward to
//! integers ([`SignedRect`], may lie partly or fully outside the frame), and
//! its *clip*, the outline intersected with the plane ([`PixelRect`]). Pixels
//! are only ever written inside the clip; the ellipse is inscribed in the
//! outline, so its shape does not change as a mask slides off the frame.
//!
//! Ellipse inside-ness (the reference for kernels): with the outline
//! `[ox0, ox1) x [oy0, oy1)`, `w = ox1 - ox0`, `h = oy1 - oy0`,
//! `dx = 2x + 1 - (ox0 + ox1)`, `dy = 2y + 1 - (oy0 + oy1)` (twice the offset
//! of the pixel centre `(x + 0.5, y + 0.5)` from the ellipse centre), pixel
//! `(x, y)` is inside iff `dx² h² + dy² w² <= w² h²`, evaluated exactly in
//! 128-bit integers (equality is impossible by parity, so `<` and `<=`
//! agree). Chroma uses the same rule on the chroma outline. Kernels may
//! take the per-row spans from [`Region::row_span`] instead.

use crate::error::MediaError;
use crate::frame::{BBox, MaskShape};

/// Outline coordinates are clamped to `±COORD_LIMIT` so that the ellipse
/// products always fit in `i128` and block/radius arithmetic in `i64`.
pub const COORD_LIMIT: i64 = 1 << 28;

/// Half-open integer rectangle `[x0, x1) x [y0, y1)` inside a plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PixelRect {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl PixelRect {
    pub fn new(x0: usize, y0: usize, x1: usize, y1: usize) -> Self {
        PixelRect { x0, y0, x1, y1 }
    }

    pub fn width(&self) -> usize {
        self.x1.saturating_sub(self.x0)
    }

    pub fn height(&self) -> usize {
        self.y1.saturating_sub(self.y0)
    }

    pub fn is_empty(&self) -> bool {
        self.width() == 0 || self.height() == 0
    }

    pub fn contains(&self, x: usize, y: usize) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}

/// Half-open integer rectangle that may extend beyond the plane (a mask outline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignedRect {
    pub x0: i64,
    pub y0: i64,
    pub x1: i64,
    pub y1: i64,
}

impl SignedRect {
    /// The box rounded outward (floor of the low corner, ceil of the high
    /// one) and clamped to `±COORD_LIMIT`. `None` for NaN coordinates or an
    /// empty box.
    pub fn from_bbox(b: &BBox) -> Option<SignedRect> {
        if [b.x0, b.y0, b.x1, b.y1].iter().any(|v| v.is_nan()) {
            return None;
        }
        if b.x1 <= b.x0 || b.y1 <= b.y0 {
            return None;
        }
        let lim = COORD_LIMIT as f64;
        let lo = |v: f32| (v as f64).floor().clamp(-lim, lim) as i64;
        let hi = |v: f32| (v as f64).ceil().clamp(-lim, lim) as i64;
        let r = SignedRect {
            x0: lo(b.x0),
            y0: lo(b.y0),
            x1: hi(b.x1),
            y1: hi(b.y1),
        };
        (r.x1 > r.x0 && r.y1 > r.y0).then_some(r)
    }

    /// The rectangle `[0, width) x [0, height)`.
    pub fn full(width: usize, height: usize) -> SignedRect {
        SignedRect {
            x0: 0,
            y0: 0,
            x1: to_i64(width),
            y1: to_i64(height),
        }
    }

    pub fn width(&self) -> i64 {
        (self.x1 - self.x0).max(0)
    }

    pub fn height(&self) -> i64 {
        (self.y1 - self.y0).max(0)
    }

    /// The shorter side, used to size blur sigma and pixel blocks.
    pub fn short_side(&self) -> i64 {
        self.width().min(self.height())
    }

    /// The 4:2:0 chroma outline: `floor(x0/2) .. ceil(x1/2)`, so every luma
    /// pixel of the mask has its chroma sample inside.
    pub fn to_chroma(&self) -> SignedRect {
        SignedRect {
            x0: self.x0.div_euclid(2),
            y0: self.y0.div_euclid(2),
            x1: (self.x1 + 1).div_euclid(2),
            y1: (self.y1 + 1).div_euclid(2),
        }
    }

    /// Intersection with a `width x height` plane; `None` when empty.
    pub fn clip(&self, width: usize, height: usize) -> Option<PixelRect> {
        let (w, h) = (to_i64(width), to_i64(height));
        let x0 = self.x0.clamp(0, w);
        let x1 = self.x1.clamp(0, w);
        let y0 = self.y0.clamp(0, h);
        let y1 = self.y1.clamp(0, h);
        if x1 <= x0 || y1 <= y0 {
            return None;
        }
        // All four are in [0, w] or [0, h], which came from usize.
        Some(PixelRect {
            x0: x0 as usize,
            y0: y0 as usize,
            x1: x1 as usize,
            y1: y1 as usize,
        })
    }
}

/// `BBox` rounded outward and clipped to a `width x height` plane.
pub fn pixel_rect(b: &BBox, width: usize, height: usize) -> Option<PixelRect> {
    SignedRect::from_bbox(b)?.clip(width, height)
}

/// The pixels a mask may change on one plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Where writes happen (outline clipped to the plane).
    pub clip: PixelRect,
    /// The mask's rounded box; the ellipse is inscribed in it and pixel
    /// blocks are aligned to its top-left corner.
    pub outline: SignedRect,
    pub shape: MaskShape,
}

impl Region {
    /// `None` when the outline misses the `width x height` plane.
    pub fn new(outline: SignedRect, shape: MaskShape, width: usize, height: usize) -> Option<Self> {
        let clip = outline.clip(width, height)?;
        Some(Region {
            clip,
            outline,
            shape,
        })
    }

    /// A region whose outline is the (already clipped) rectangle itself.
    pub fn from_rect(rect: PixelRect, shape: MaskShape) -> Self {
        Region {
            clip: rect,
            outline: SignedRect {
                x0: to_i64(rect.x0),
                y0: to_i64(rect.y0),
                x1: to_i64(rect.x1),
                y1: to_i64(rect.y1),
            },
            shape,
        }
    }

    /// The luma region of a float box.
    pub fn from_bbox(b: &BBox, shape: MaskShape, width: usize, height: usize) -> Option<Self> {
        Region::new(SignedRect::from_bbox(b)?, shape, width, height)
    }

    /// The matching chroma region on a `chroma_width x chroma_height` plane.
    pub fn to_chroma(&self, chroma_width: usize, chroma_height: usize) -> Option<Self> {
        Region::new(
            self.outline.to_chroma(),
            self.shape,
            chroma_width,
            chroma_height,
        )
    }

    /// Whether the mask covers pixel `(x, y)` (inside the clip and, for an
    /// ellipse, inside the ellipse). Per-pixel reference for `row_span`.
    pub fn contains(&self, x: usize, y: usize) -> bool {
        if !self.clip.contains(x, y) {
            return false;
        }
        match self.shape {
            MaskShape::Rect => true,
            MaskShape::Ellipse => {
                let o = &self.outline;
                let (w, h) = (o.width() as i128, o.height() as i128);
                let dx = 2 * x as i128 + 1 - (o.x0 + o.x1) as i128;
                let dy = 2 * y as i128 + 1 - (o.y0 + o.y1) as i128;
                dx * dx * h * h + dy * dy * w * w <= w * w * h * h
            }
        }
    }

    /// Columns `[xa, xb)` of row `y` that the mask covers, or `None`. The
    /// covered set of a row is contiguous (the ellipse is convex), so this is
    /// exactly the set of `x` with `contains(x, y)`.
    pub fn row_span(&self, y: usize) -> Option<(usize, usize)> {
        let c = &self.clip;
        if y < c.y0 || y >= c.y1 || c.x1 <= c.x0 {
            return None;
        }
        match self.shape {
            MaskShape::Rect => Some((c.x0, c.x1)),
            MaskShape::Ellipse => {
                let o = &self.outline;
                let (w, h) = (o.width() as i128, o.height() as i128);
                if w == 0 || h == 0 {
                    return None;
                }
                let dy = 2 * y as i128 + 1 - (o.y0 + o.y1) as i128;
                // dx² h² <= w² (h² - dy²)  <=>  |dx| <= isqrt(floor(w² (h² - dy²) / h²))
                let rem = w * w * (h * h - dy * dy);
                if rem < 0 {
                    return None;
                }
                let d = ((rem / (h * h)) as u128).isqrt() as i128;
                let s = (o.x0 + o.x1) as i128;
                // |2x + 1 - s| <= d  <=>  ceil((s-1-d)/2) <= x <= floor((s-1+d)/2)
                let xa = (s - d).div_euclid(2).max(c.x0 as i128);
                let xb = ((s - 1 + d).div_euclid(2) + 1).min(c.x1 as i128);
                // Both bounds are now within [c.x0, c.x1] when non-empty.
                (xa < xb).then_some((xa as usize, xb as usize))
            }
        }
    }
}

/// Checks that a plane described by `(len, width, height, stride, step)`
/// holds every pixel of `clip`, so later indexing cannot go out of bounds.
pub(crate) fn check_plane(
    len: usize,
    width: usize,
    height: usize,
    stride: usize,
    step: usize,
    clip: &PixelRect,
) -> Result<(), MediaError> {
    let bad = |reason: &str| MediaError::BadDimensions {
        width,
        height,
        reason: reason.to_string(),
    };
    if clip.x0 > clip.x1 || clip.y0 > clip.y1 || clip.x1 > width || clip.y1 > height {
        return Err(bad("censor rectangle outside the plane"));
    }
    if width == 0 || height == 0 {
        return Ok(());
    }
    if step == 0 {
        return Err(bad("pixel step 0"));
    }
    let row_span = (width - 1)
        .checked_mul(step)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| bad("row size overflows"))?;
    if stride < row_span {
        return Err(bad("stride shorter than a row"));
    }
    let need = (height - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(row_span))
        .ok_or_else(|| bad("plane size overflows"))?;
    if len < need {
        return Err(bad("plane buffer too short"));
    }
    Ok(())
}

fn to_i64(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ell(x0: i64, y0: i64, x1: i64, y1: i64, w: usize, h: usize) -> Option<Region> {
        Region::new(SignedRect { x0, y0, x1, y1 }, MaskShape::Ellipse, w, h)
    }

    #[test]
    fn pixel_rect_rounds_outward_and_clips() {
        let r = pixel_rect(&BBox::new(1.5, 2.2, 10.1, 7.0), 100, 100);
        assert_eq!(r, Some(PixelRect::new(1, 2, 11, 7)));
        let r = pixel_rect(&BBox::new(-5.5, -3.0, 200.0, 8.5), 100, 50);
        assert_eq!(r, Some(PixelRect::new(0, 0, 100, 9)));
        assert_eq!(
            pixel_rect(&BBox::new(100.0, 0.0, 120.0, 10.0), 100, 50),
            None
        );
        assert_eq!(pixel_rect(&BBox::new(-20.0, 0.0, 0.0, 10.0), 100, 50), None);
        assert_eq!(pixel_rect(&BBox::new(5.0, 5.0, 5.0, 9.0), 100, 50), None);
        assert_eq!(
            pixel_rect(&BBox::new(f32::NAN, 5.0, 7.0, 9.0), 100, 50),
            None
        );
        let r = pixel_rect(
            &BBox::new(f32::NEG_INFINITY, -f32::MAX, f32::MAX, f32::INFINITY),
            7,
            5,
        );
        assert_eq!(r, Some(PixelRect::new(0, 0, 7, 5)));
    }

    #[test]
    fn chroma_outline_rounds_outward() {
        let o = SignedRect {
            x0: -3,
            y0: 1,
            x1: 5,
            y1: 6,
        };
        assert_eq!(
            o.to_chroma(),
            SignedRect {
                x0: -2,
                y0: 0,
                x1: 3,
                y1: 3
            }
        );
    }

    #[test]
    fn row_span_matches_per_pixel_predicate() {
        let cases = [
            (0, 0, 10, 10),
            (-7, 3, 13, 8),
            (2, -9, 5, 30),
            (0, 0, 1, 1),
            (1, 1, 2, 40),
            (-100, -50, 300, 400),
            (3, 4, 4, 5),
        ];
        for (x0, y0, x1, y1) in cases {
            let Some(r) = ell(x0, y0, x1, y1, 31, 23) else {
                continue;
            };
            for y in 0..23 {
                let span = r.row_span(y);
                for x in 0..31 {
                    let in_span = span.is_some_and(|(a, b)| x >= a && x < b);
                    assert_eq!(in_span, r.contains(x, y), "{x0},{y0},{x1},{y1} @ {x},{y}");
                }
            }
        }
    }

    #[test]
    fn ellipse_leaves_corners_and_keeps_centre() {
        let r = ell(0, 0, 20, 10, 20, 10).unwrap();
        for (x, y) in [(0, 0), (19, 0), (0, 9), (19, 9)] {
            assert!(!r.contains(x, y));
        }
        assert!(r.contains(10, 5) && r.contains(0, 5) && r.contains(10, 0));
        assert_eq!(r.row_span(5), Some((0, 20)));
    }

    #[test]
    fn check_plane_rejects_short_buffers() {
        let rect = PixelRect::new(0, 0, 4, 4);
        assert!(check_plane(16, 4, 4, 4, 1, &rect).is_ok());
        assert!(check_plane(15, 4, 4, 4, 1, &rect).is_err());
        // NV12 V samples: slice starts at offset 1, so one byte shorter.
        assert!(check_plane(31, 4, 4, 8, 2, &rect).is_ok());
        assert!(check_plane(30, 4, 4, 8, 2, &rect).is_err());
        assert!(check_plane(16, 4, 4, 3, 1, &rect).is_err());
        assert!(check_plane(16, 4, 4, 4, 0, &rect).is_err());
        assert!(check_plane(100, 4, 4, 4, 1, &PixelRect::new(0, 0, 5, 4)).is_err());
    }
}
