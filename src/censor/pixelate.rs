//! Pixelation: square blocks aligned to the mask outline's top-left corner;
//! every covered pixel becomes the rounded integer mean of its block.
//!
//! Reference definition: blocks are `[ox0 + i*b, ox0 + (i+1)*b) x
//! [oy0 + j*b, oy0 + (j+1)*b)` on the outline `(ox0, oy0)`; a block's mean is
//! taken over all of its pixels inside the clip (ellipse or not):
//! `mean = (sum + n/2) / n` in integers; the mean is written to the pixels
//! of the block that the region covers.

use super::region::{check_plane, Region, COORD_LIMIT};
use crate::error::MediaError;

/// Block size used when the method asks for auto (0): 1/8 of the mask's
/// shorter side, at least 8 px.
pub fn auto_block(short_side: usize) -> usize {
    (short_side / 8).max(8)
}

/// Pixelates the pixels `region` covers on one 8-bit plane, in place.
/// `block` is clamped to at least 1 (1 leaves the plane unchanged).
#[allow(clippy::too_many_arguments)]
pub fn pixelate_plane(
    plane: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    step: usize,
    region: &Region,
    block: usize,
) -> Result<(), MediaError> {
    let clip = region.clip;
    check_plane(plane.len(), width, height, stride, step, &clip)?;
    if clip.is_empty() {
        return Ok(());
    }
    let b = (block as u64).clamp(1, 2 * COORD_LIMIT as u64) as i64;
    let o = region.outline;
    // Block edges along one axis, clipped: `[start, end)` in plane pixels.
    let spans = |lo: usize, hi: usize, origin: i64| -> Vec<(usize, usize)> {
        let (lo_i, hi_i) = (lo as i64, hi as i64);
        let mut s = origin + (lo_i - origin).div_euclid(b) * b;
        let mut out = Vec::new();
        while s < hi_i {
            let e = s + b;
            out.push((s.max(lo_i) as usize, e.min(hi_i) as usize));
            s = e;
        }
        out
    };
    let cols = spans(clip.x0, clip.x1, o.x0);
    let rows = spans(clip.y0, clip.y1, o.y0);
    let mut sums = vec![0u64; cols.len()];
    for &(ry0, ry1) in &rows {
        sums.fill(0);
        for y in ry0..ry1 {
            let base = y * stride;
            for (s, &(xs, xe)) in sums.iter_mut().zip(&cols) {
                *s += (xs..xe).map(|x| plane[base + x * step] as u64).sum::<u64>();
            }
        }
        let nrows = (ry1 - ry0) as u64;
        for (s, &(xs, xe)) in sums.iter_mut().zip(&cols) {
            let n = nrows * (xe - xs) as u64;
            *s = (*s + n / 2) / n;
        }
        for y in ry0..ry1 {
            let Some((a, e)) = region.row_span(y) else {
                continue;
            };
            let base = y * stride;
            for (&mean, &(xs, xe)) in sums.iter().zip(&cols) {
                for x in xs.max(a)..xe.min(e) {
                    plane[base + x * step] = mean as u8;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::censor::region::{PixelRect, SignedRect};
    use crate::frame::MaskShape;

    #[test]
    fn block_means_are_exact_and_rounded() {
        // 4x2 plane, blocks of 2: means of {0,1,4,5}, {2,3,6,7} and rounding.
        let mut p = vec![0u8, 1, 2, 3, 4, 5, 6, 8];
        let region = Region::from_rect(PixelRect::new(0, 0, 4, 2), MaskShape::Rect);
        pixelate_plane(&mut p, 4, 2, 4, 1, &region, 2).unwrap();
        // (0+1+4+5)=10 -> 2.5 -> 3 (half up); (2+3+6+8)=19 -> 4.75 -> 5
        assert_eq!(p, vec![3, 3, 5, 5, 3, 3, 5, 5]);
    }

    #[test]
    fn blocks_align_to_outline_not_clip() {
        // Outline starts at x = -1, so blocks are [-1, 2), [2, 5), [5, 8):
        // clipped to [0, 2), [2, 5), [5, 6).
        let mut p: Vec<u8> = (0..6).map(|v| v * 10).collect();
        let outline = SignedRect {
            x0: -1,
            y0: 0,
            x1: 6,
            y1: 1,
        };
        let region = Region::new(outline, MaskShape::Rect, 6, 1).unwrap();
        pixelate_plane(&mut p, 6, 1, 6, 1, &region, 3).unwrap();
        assert_eq!(p, vec![5, 5, 30, 30, 30, 50]);
    }

    #[test]
    fn partial_blocks_at_the_far_edge_use_their_own_pixels() {
        let mut p: Vec<u8> = vec![10, 20, 30, 40, 50];
        let region = Region::from_rect(PixelRect::new(0, 0, 5, 1), MaskShape::Rect);
        pixelate_plane(&mut p, 5, 1, 5, 1, &region, 2).unwrap();
        assert_eq!(p, vec![15, 15, 35, 35, 50]);
    }

    #[test]
    fn ellipse_writes_only_inside_but_means_use_whole_block() {
        let (w, h) = (8, 8);
        let src: Vec<u8> = (0..64).map(|v| (v * 3) as u8).collect();
        let mut p = src.clone();
        let region = Region::from_rect(PixelRect::new(0, 0, w, h), MaskShape::Ellipse);
        pixelate_plane(&mut p, w, h, w, 1, &region, 8).unwrap();
        let mean = ((src.iter().map(|&v| v as u64).sum::<u64>() + 32) / 64) as u8;
        for y in 0..h {
            for x in 0..w {
                let want = if region.contains(x, y) {
                    mean
                } else {
                    src[y * w + x]
                };
                assert_eq!(p[y * w + x], want);
            }
        }
        assert_eq!(p[0], src[0]);
    }

    #[test]
    fn block_one_is_identity_and_auto_block_has_a_floor() {
        let src: Vec<u8> = (0..20).collect();
        let mut p = src.clone();
        let region = Region::from_rect(PixelRect::new(1, 1, 5, 4), MaskShape::Rect);
        pixelate_plane(&mut p, 5, 4, 5, 1, &region, 0).unwrap();
        assert_eq!(p, src);
        assert_eq!(auto_block(10), 8);
        assert_eq!(auto_block(200), 25);
    }
}
