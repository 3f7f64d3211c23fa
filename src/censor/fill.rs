//! Solid fill: every covered pixel becomes one constant.

use super::region::{check_plane, Region};
use crate::error::MediaError;

/// Sets the pixels `region` covers on one 8-bit plane to `value`.
#[allow(clippy::too_many_arguments)]
pub fn fill_plane(
    plane: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    step: usize,
    region: &Region,
    value: u8,
) -> Result<(), MediaError> {
    let clip = region.clip;
    check_plane(plane.len(), width, height, stride, step, &clip)?;
    for y in clip.y0..clip.y1 {
        let Some((a, b)) = region.row_span(y) else {
            continue;
        };
        let base = y * stride;
        if step == 1 {
            plane[base + a..base + b].fill(value);
        } else {
            for x in a..b {
                plane[base + x * step] = value;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::censor::region::PixelRect;
    use crate::frame::MaskShape;

    #[test]
    fn fills_exactly_the_rect() {
        let mut p = vec![7u8; 6 * 4];
        let region = Region::from_rect(PixelRect::new(1, 1, 4, 3), MaskShape::Rect);
        fill_plane(&mut p, 6, 4, 6, 1, &region, 200).unwrap();
        for y in 0..4 {
            for x in 0..6 {
                let want = if (1..4).contains(&x) && (1..3).contains(&y) {
                    200
                } else {
                    7
                };
                assert_eq!(p[y * 6 + x], want);
            }
        }
    }

    #[test]
    fn step_two_touches_only_its_samples() {
        let mut p = [1u8; 2 * 3 * 3];
        let region = Region::from_rect(PixelRect::new(0, 0, 3, 3), MaskShape::Rect);
        fill_plane(&mut p[1..], 3, 3, 6, 2, &region, 9).unwrap();
        for (i, &v) in p.iter().enumerate() {
            assert_eq!(v, if i % 2 == 1 { 9 } else { 1 });
        }
    }
}
