//! How much high-frequency luma detail a region still holds: the audit's
//! pixel-level check that censoring really removed what it should.

use super::region::pixel_rect;
use crate::frame::{BBox, Frame};

/// Mean absolute difference between horizontally and vertically adjacent
/// luma pixels, over pairs with both pixels inside the box (rounded outward,
/// clipped). 0 for an empty box or one without pairs. A frame whose buffer
/// is too short reads as infinitely detailed so checks built on it fail safe.
pub fn detail(frame: &Frame, b: &BBox) -> f32 {
    let (w, h) = (frame.width, frame.height);
    if frame.data.len() < w.saturating_mul(h) {
        return f32::INFINITY;
    }
    let Some(r) = pixel_rect(b, w, h) else {
        return 0.0;
    };
    let y = &frame.data[..w * h];
    let (mut sum, mut n) = (0u64, 0u64);
    for yy in r.y0..r.y1 {
        let row = &y[yy * w + r.x0..yy * w + r.x1];
        sum += row
            .windows(2)
            .map(|p| p[0].abs_diff(p[1]) as u64)
            .sum::<u64>();
        n += row.len().saturating_sub(1) as u64;
        if yy + 1 < r.y1 {
            let next = &y[(yy + 1) * w + r.x0..(yy + 1) * w + r.x1];
            sum += row
                .iter()
                .zip(next)
                .map(|(a, b)| a.abs_diff(*b) as u64)
                .sum::<u64>();
            n += row.len() as u64;
        }
    }
    if n == 0 {
        0.0
    } else {
        (sum as f64 / n as f64) as f32
    }
}

/// `detail(after) / detail(before)` inside the box: near 0 when censoring
/// removed the detail, near 1 when it did not. 0 when neither had any
/// detail; infinity when frames differ in size or only `after` has detail
/// (so a `ratio > threshold` check flags it).
pub fn detail_ratio(before: &Frame, after: &Frame, b: &BBox) -> f32 {
    if before.width != after.width || before.height != after.height {
        return f32::INFINITY;
    }
    let (d0, d1) = (detail(before, b), detail(after, b));
    if d0 > 0.0 && d0.is_finite() {
        d1 / d0
    } else if d1 == 0.0 && d0 == 0.0 {
        0.0
    } else {
        f32::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;

    #[test]
    fn detail_of_known_patterns() {
        let mut f = Frame::new(PixelFormat::I420, 4, 4);
        assert_eq!(detail(&f, &BBox::new(0.0, 0.0, 4.0, 4.0)), 0.0);
        // Vertical stripes 0,100,0,100: horizontal pairs differ by 100,
        // vertical pairs by 0 -> 12*100 / 24 = 50.
        for y in 0..4 {
            for x in 0..4 {
                f.data[y * 4 + x] = if x % 2 == 1 { 100 } else { 0 };
            }
        }
        assert_eq!(detail(&f, &BBox::new(0.0, 0.0, 4.0, 4.0)), 50.0);
        assert_eq!(detail(&f, &BBox::new(1.0, 0.0, 2.0, 4.0)), 0.0);
        assert_eq!(detail(&f, &BBox::new(9.0, 9.0, 12.0, 12.0)), 0.0);
        let flat = Frame::new(PixelFormat::I420, 4, 4);
        let b = BBox::new(0.0, 0.0, 4.0, 4.0);
        assert_eq!(detail_ratio(&f, &flat, &b), 0.0);
        assert_eq!(detail_ratio(&f, &f, &b), 1.0);
        assert_eq!(detail_ratio(&flat, &flat, &b), 0.0);
        assert_eq!(detail_ratio(&flat, &f, &b), f32::INFINITY);
        let other = Frame::new(PixelFormat::I420, 5, 4);
        assert_eq!(detail_ratio(&f, &other, &b), f32::INFINITY);
    }

    #[test]
    fn short_buffer_reads_as_detailed() {
        let mut f = Frame::new(PixelFormat::I420, 4, 4);
        f.data.truncate(3);
        assert_eq!(detail(&f, &BBox::new(0.0, 0.0, 4.0, 4.0)), f32::INFINITY);
    }
}
