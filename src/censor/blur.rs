//! Gaussian blur approximated by three successive box blurs per axis
//! (Kovesi's "boxes for Gauss", n = 3), in exact integer arithmetic so a
//! kernel can match it bit for bit whatever its summation order.
//!
//! Reference definition (what a kernel must reproduce):
//! 1. `[r1, r2, r3] = box_radii(sigma)` (computed on the host and passed in).
//! 2. Every sample becomes `v = p << 8` (Q8 fixed point, at most 65280).
//! 3. Three vertical passes, then three horizontal passes. Pass `k` over a
//!    line `v[0..n)` of the whole plane, with `w = 2 r_k + 1`:
//!    `s(i) = Σ_{j = i - r_k}^{i + r_k} v[clamp(j, 0, n - 1)]` (u32, exact),
//!    `out(i) = (s(i) * m + 2^31) >> 32` in u64, with
//!    `m = (2^32 + w / 2) / w` (integer division), i.e. `s / w` rounded;
//!    a pass with `r_k = 0` is the identity.
//!    Edges are clamped per pass at the *plane* border.
//! 4. The result is `(v + 128) >> 8`, written only to pixels the region
//!    covers; everything else is untouched.
//!
//! Only the region padded by `r1 + r2 + r3` is read and processed: values
//! computed near the padding's inner edge are wrong, but each pass shrinks
//! the wrong zone by at most its radius, so the mask itself is exact.

use super::region::{check_plane, PixelRect, Region, SignedRect};
use crate::error::MediaError;
use crate::frame::MaskShape;

/// Larger sigmas are clamped: the box sums stay well inside u32 and a blur
/// this wide already flattens any frame.
pub const MAX_SIGMA: f32 = 2048.0;

/// Radii of the three boxes whose cascade approximates a Gaussian of
/// `sigma` (Kovesi 2010: widths `wl` or `wl + 2`, both odd, matching the
/// variance `12 sigma² / 3 + 1`). NaN counts as `MAX_SIGMA` so a broken
/// value blurs too much rather than not at all; negative counts as 0.
/// The total support `r1 + r2 + r3` is about `3 sigma`.
pub fn box_radii(sigma: f32) -> [usize; 3] {
    let s = if sigma.is_nan() {
        MAX_SIGMA
    } else {
        sigma.clamp(0.0, MAX_SIGMA)
    } as f64;
    let n = 3.0f64;
    let w_ideal = (12.0 * s * s / n + 1.0).sqrt();
    let mut wl = w_ideal.floor() as i64;
    if wl % 2 == 0 {
        wl -= 1;
    }
    let wl = wl.max(1);
    let wu = wl + 2;
    let wlf = wl as f64;
    let m_ideal = (12.0 * s * s - n * wlf * wlf - 4.0 * n * wlf - 3.0 * n) / (-4.0 * wlf - 4.0);
    let m = (m_ideal.round() as i64).clamp(0, 3);
    let mut radii = [0usize; 3];
    for (i, r) in radii.iter_mut().enumerate() {
        let w = if (i as i64) < m { wl } else { wu };
        *r = ((w - 1) / 2) as usize;
    }
    radii
}

/// Blurs the pixels `region` covers on one 8-bit plane, in place.
/// Pixel `(x, y)` is `plane[y * stride + x * step]` (NV12 chroma: step 2 on
/// the UV plane sliced at offset 0 for U, 1 for V).
#[allow(clippy::too_many_arguments)]
pub fn blur_plane(
    plane: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    step: usize,
    region: &Region,
    sigma: f32,
) -> Result<(), MediaError> {
    let clip = region.clip;
    check_plane(plane.len(), width, height, stride, step, &clip)?;
    if clip.is_empty() {
        return Ok(());
    }
    let radii = box_radii(sigma);
    let pad: usize = radii.iter().sum();
    let (wx0, wx1) = (
        clip.x0.saturating_sub(pad),
        clip.x1.saturating_add(pad).min(width),
    );
    let (wy0, wy1) = (
        clip.y0.saturating_sub(pad),
        clip.y1.saturating_add(pad).min(height),
    );
    let (ww, wh) = (wx1 - wx0, wy1 - wy0);

    // Vertical passes over every column of the padded window, rows at a
    // time so the inner loops vectorise.
    let mut a = vec![0u16; ww * wh];
    for (row, y) in a.chunks_exact_mut(ww).zip(wy0..wy1) {
        let start = y * stride + wx0 * step;
        if step == 1 {
            for (v, &p) in row.iter_mut().zip(&plane[start..start + ww]) {
                *v = (p as u16) << 8;
            }
        } else {
            for (v, &p) in row.iter_mut().zip(plane[start..].iter().step_by(step)) {
                *v = (p as u16) << 8;
            }
        }
    }
    let mut b = vec![0u16; ww * wh];
    let mut sums = vec![0u32; ww];
    for &r in &radii {
        box_columns(&a, &mut b, ww, r, &mut sums);
        std::mem::swap(&mut a, &mut b);
    }
    drop(b);

    // Horizontal passes on the mask's rows only, one row at a time so the
    // three passes stay in L1; then write what the region covers.
    let r0 = clip.y0 - wy0;
    let c0 = clip.x0 - wx0;
    let mut line = vec![0u16; ww];
    let mut prefix = Vec::new();
    for (row, y) in a[r0 * ww..].chunks_exact_mut(ww).zip(clip.y0..clip.y1) {
        let Some((xa, xb)) = region.row_span(y) else {
            continue;
        };
        for &r in &radii {
            box_line(row, &mut line, r, &mut prefix);
            row.copy_from_slice(&line);
        }
        let src = &row[xa - clip.x0 + c0..xb - clip.x0 + c0];
        let start = y * stride + xa * step;
        if step == 1 {
            for (d, &v) in plane[start..start + src.len()].iter_mut().zip(src) {
                *d = ((v as u32 + 128) >> 8) as u8;
            }
        } else {
            for (d, &v) in plane[start..].iter_mut().step_by(step).zip(src) {
                *d = ((v as u32 + 128) >> 8) as u8;
            }
        }
    }
    Ok(())
}

/// One box pass of radius `r` along a line, edges clamped: prefix sums of
/// the line extended by `r` copies of each edge sample, then one uniform
/// difference per output. Wrapping u32: every window sum is below 2^32, so
/// differences are exact even if the running prefix wraps.
fn box_line(src: &[u16], dst: &mut [u16], r: usize, prefix: &mut Vec<u32>) {
    let n = src.len();
    if n == 0 || r == 0 {
        dst.copy_from_slice(src);
        return;
    }
    let mul = reciprocal(2 * r + 1);
    prefix.resize(n + 2 * r + 1, 0);
    let (first, last) = (src[0] as u32, src[n - 1] as u32);
    let (head, rest) = prefix.split_at_mut(r + 1);
    let (body, tail) = rest.split_at_mut(n);
    for (k, p) in head.iter_mut().enumerate() {
        *p = (k as u32).wrapping_mul(first);
    }
    let mut acc = (r as u32).wrapping_mul(first);
    for (p, &v) in body.iter_mut().zip(src) {
        acc = acc.wrapping_add(v as u32);
        *p = acc;
    }
    for p in tail.iter_mut() {
        acc = acc.wrapping_add(last);
        *p = acc;
    }
    let hi = &prefix[2 * r + 1..];
    for ((d, &h), &l) in dst.iter_mut().zip(hi).zip(prefix.iter()) {
        *d = scaled(h.wrapping_sub(l), mul);
    }
}

/// `(2^32 + w/2) / w`: multiplier for the rounded division by an odd box
/// width `w >= 3` (fits in u32, so the product is a 32x32->64 multiply).
fn reciprocal(w: usize) -> u32 {
    (((1u64 << 32) + (w as u64) / 2) / (w as u64)) as u32
}

#[inline(always)]
fn scaled(sum: u32, mul: u32) -> u16 {
    ((sum as u64 * mul as u64 + (1 << 31)) >> 32) as u16
}

/// One box pass of radius `r` down the columns of a `cw`-wide image,
/// edges clamped.
fn box_columns(src: &[u16], dst: &mut [u16], cw: usize, r: usize, sums: &mut [u32]) {
    if cw == 0 || r == 0 {
        dst.copy_from_slice(src);
        return;
    }
    let h = src.len() / cw;
    if h == 0 {
        return;
    }
    let last = h - 1;
    let row = |k: usize| &src[k * cw..(k + 1) * cw];
    let mul = reciprocal(2 * r + 1);
    let inner = r.min(last);
    for (s, &v) in sums.iter_mut().zip(row(0)) {
        *s = v as u32 * (r as u32 + 1);
    }
    for k in 1..=inner {
        for (s, &v) in sums.iter_mut().zip(row(k)) {
            *s += v as u32;
        }
    }
    let extra = (r - inner) as u32;
    for (s, &v) in sums.iter_mut().zip(row(last)) {
        *s += v as u32 * extra;
    }
    for (i, out) in dst.chunks_exact_mut(cw).enumerate() {
        let add = row((i + r + 1).min(last));
        let sub = row(i.saturating_sub(r));
        for (((d, s), &a), &b) in out.iter_mut().zip(sums.iter_mut()).zip(add).zip(sub) {
            *d = scaled(*s, mul);
            *s = *s + a as u32 - b as u32;
        }
    }
}

/// Decimation factor of [`blur_whole_plane`] for `sigma`: at most a
/// quarter of sigma, so the blur on the small plane still spans several
/// cells and interpolating back up leaves no visible cell edges. Sigmas
/// under 8 (and NaN) get 1: the full-resolution blur.
pub fn decimation(sigma: f32) -> usize {
    if sigma >= 8.0 {
        ((sigma.min(MAX_SIGMA) / 4.0) as usize).clamp(1, 32)
    } else {
        1
    }
}

/// Blurs a whole plane by `sigma` at a fraction of [`blur_plane`]'s cost,
/// for frames censored whole (fail-closed, often under overload): `k x k`
/// block means (`k` from [`decimation`]), [`blur_plane`] with `sigma / k`
/// on that small plane, then separable linear interpolation back up (Q8,
/// cell centres at `(i + 0.5) k`). Nothing finer than the full blur keeps
/// survives, for about `1/k²` of its blur work plus one read and one write
/// of the plane. `k = 1` is exactly [`blur_plane`] over the whole plane.
pub fn blur_whole_plane(
    plane: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    step: usize,
    sigma: f32,
) -> Result<(), MediaError> {
    let full = PixelRect::new(0, 0, width, height);
    check_plane(plane.len(), width, height, stride, step, &full)?;
    if width == 0 || height == 0 {
        return Ok(());
    }
    let k = decimation(sigma);
    let whole = |w, h| {
        Region::new(SignedRect::full(w, h), MaskShape::Rect, w, h).ok_or(
            MediaError::BadDimensions {
                width: w,
                height: h,
                reason: "empty plane".into(),
            },
        )
    };
    if k == 1 {
        return blur_plane(
            plane,
            width,
            height,
            stride,
            step,
            &whole(width, height)?,
            sigma,
        );
    }
    let (sw, sh) = (width.div_ceil(k), height.div_ceil(k));
    // Block means: the rows of a block are summed column by column over the
    // row's bytes (other channels' bytes included, then skipped), which
    // vectorises whatever the step; each block row's cells are then summed.
    let span = (width - 1) * step + 1;
    let mut small = vec![0u8; sw * sh];
    let mut cols = vec![0u32; span];
    for (j, out) in small.chunks_exact_mut(sw).enumerate() {
        cols.fill(0);
        let (y0, y1) = (j * k, ((j + 1) * k).min(height));
        for y in y0..y1 {
            let row = &plane[y * stride..y * stride + span];
            for (c, &p) in cols.iter_mut().zip(row) {
                *c += u32::from(p);
            }
        }
        for (i, o) in out.iter_mut().enumerate() {
            let (x0, x1) = (i * k, ((i + 1) * k).min(width));
            let sum: u32 = cols[x0 * step..].iter().step_by(step).take(x1 - x0).sum();
            let n = ((x1 - x0) * (y1 - y0)) as u32;
            *o = ((sum + n / 2) / n) as u8;
        }
    }
    blur_plane(&mut small, sw, sh, sw, 1, &whole(sw, sh)?, sigma / k as f32)?;
    let xs = taps(width, k, sw);
    let mut rows = vec![0u16; sh * width];
    for (row, cells) in rows.chunks_exact_mut(width).zip(small.chunks_exact(sw)) {
        for (v, &(i0, i1, f)) in row.iter_mut().zip(&xs) {
            *v = u16::from(cells[i0]) * (256 - f) + u16::from(cells[i1]) * f;
        }
    }
    let mut line = vec![0u8; width];
    for (y, (j0, j1, g)) in taps(height, k, sh).into_iter().enumerate() {
        let (g, a, b) = (
            u32::from(g),
            &rows[j0 * width..(j0 + 1) * width],
            &rows[j1 * width..(j1 + 1) * width],
        );
        for (d, (&a, &b)) in line.iter_mut().zip(a.iter().zip(b)) {
            *d = ((u32::from(a) * (256 - g) + u32::from(b) * g + 32768) >> 16) as u8;
        }
        let start = y * stride;
        if step == 1 {
            plane[start..start + width].copy_from_slice(&line);
        } else {
            for (d, &v) in plane[start..].iter_mut().step_by(step).zip(&line) {
                *d = v;
            }
        }
    }
    Ok(())
}

/// Per output position `0..n`, the two cells of a `k`-decimated axis of
/// `cells` it lies between and the second one's weight in 1/256:
/// position `p` sits at `(p + 0.5) / k - 0.5` in cell units, clamped to
/// the first and last cell centres.
fn taps(n: usize, k: usize, cells: usize) -> Vec<(usize, usize, u16)> {
    let last = cells.saturating_sub(1);
    (0..n)
        .map(|p| {
            // Twice k times the cell coordinate, exactly.
            let num = 2 * p as i64 + 1 - k as i64;
            let den = 2 * k as i64;
            if num <= 0 {
                return (0, 0, 0);
            }
            let i0 = (num / den) as usize;
            if i0 >= last {
                return (last, last, 0);
            }
            let f = ((num % den) * 256 + den / 2) / den;
            (i0, i0 + 1, f as u16)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// Straightforward per-pixel version of the reference definition, over
    /// the whole plane.
    fn reference(plane: &[u8], width: usize, height: usize, sigma: f32) -> Vec<u8> {
        let radii = box_radii(sigma);
        let mut v: Vec<u64> = plane.iter().map(|&p| (p as u64) << 8).collect();
        let pass = |v: &Vec<u64>, r: usize, horizontal: bool| -> Vec<u64> {
            if r == 0 {
                return v.clone();
            }
            let w = 2 * r + 1;
            let mul = reciprocal(w) as u64;
            let mut out = vec![0u64; v.len()];
            for y in 0..height {
                for x in 0..width {
                    let mut s = 0u64;
                    for j in -(r as i64)..=(r as i64) {
                        let (xx, yy) = if horizontal {
                            ((x as i64 + j).clamp(0, width as i64 - 1) as usize, y)
                        } else {
                            (x, (y as i64 + j).clamp(0, height as i64 - 1) as usize)
                        };
                        s += v[yy * width + xx];
                    }
                    out[y * width + x] = (s * mul + (1 << 31)) >> 32;
                }
            }
            out
        };
        for &r in &radii {
            v = pass(&v, r, false);
        }
        for &r in &radii {
            v = pass(&v, r, true);
        }
        v.iter().map(|&q| ((q + 128) >> 8) as u8).collect()
    }

    fn noise(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn radii_follow_sigma() {
        assert_eq!(box_radii(0.0), [0, 0, 0]);
        assert_eq!(box_radii(-3.0), [0, 0, 0]);
        assert_eq!(box_radii(2.0), [1, 1, 2]);
        let r = box_radii(50.0);
        let total: usize = r.iter().sum();
        assert!((140..=160).contains(&total), "{r:?}");
        assert_eq!(box_radii(f32::NAN), box_radii(MAX_SIGMA));
        assert_eq!(box_radii(1e9), box_radii(MAX_SIGMA));
        // Variance of the cascade is close to sigma² (coarse for small sigma,
        // where box widths are few odd integers).
        for sigma in [1.0f32, 2.0, 3.3, 10.0, 47.0, 300.0] {
            let var: f64 = box_radii(sigma)
                .iter()
                .map(|&r| ((2 * r + 1) as f64).powi(2) - 1.0)
                .sum::<f64>()
                / 12.0;
            let s2 = (sigma as f64).powi(2);
            let tol = if sigma >= 10.0 { 0.05 } else { 0.35 };
            assert!((var - s2).abs() / s2 < tol, "sigma {sigma}: var {var}");
        }
    }

    #[test]
    fn windowed_blur_equals_whole_plane_reference() {
        let (w, h) = (37, 29);
        let src = noise(w * h, 7);
        for sigma in [2.0f32, 3.5, 9.0, 40.0] {
            let full = reference(&src, w, h, sigma);
            for rect in [
                PixelRect::new(0, 0, w, h),
                PixelRect::new(5, 4, 20, 17),
                PixelRect::new(30, 0, 37, 3),
                PixelRect::new(12, 13, 13, 14),
            ] {
                for shape in [MaskShape::Rect, MaskShape::Ellipse] {
                    let mut p = src.clone();
                    let region = Region::from_rect(rect, shape);
                    blur_plane(&mut p, w, h, w, 1, &region, sigma).unwrap();
                    for y in 0..h {
                        for x in 0..w {
                            let want = if region.contains(x, y) {
                                full[y * w + x]
                            } else {
                                src[y * w + x]
                            };
                            assert_eq!(p[y * w + x], want, "{sigma} {rect:?} {shape:?} @ {x},{y}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn strided_interleaved_plane_matches_packed() {
        let (w, h) = (19, 11);
        let src = noise(w * h, 3);
        let other = noise(w * h, 4);
        let rect = PixelRect::new(2, 1, 15, 9);
        let region = Region::from_rect(rect, MaskShape::Ellipse);
        let mut packed = src.clone();
        blur_plane(&mut packed, w, h, w, 1, &region, 3.0).unwrap();
        // Interleave with another plane, blur the odd samples only.
        let mut inter: Vec<u8> = src.iter().zip(&other).flat_map(|(&a, &b)| [b, a]).collect();
        blur_plane(&mut inter[1..], w, h, 2 * w, 2, &region, 3.0).unwrap();
        let odd: Vec<u8> = inter.iter().skip(1).step_by(2).copied().collect();
        let even: Vec<u8> = inter.iter().step_by(2).copied().collect();
        assert_eq!(odd, packed);
        assert_eq!(even, other);
    }

    #[test]
    fn flat_plane_stays_flat() {
        let mut p = vec![200u8; 50 * 40];
        let region = Region::from_rect(PixelRect::new(0, 0, 50, 40), MaskShape::Rect);
        blur_plane(&mut p, 50, 40, 50, 1, &region, 30.0).unwrap();
        assert!(p.iter().all(|&v| v == 200));
        let mut p = vec![255u8; 9];
        let region = Region::from_rect(PixelRect::new(0, 0, 3, 3), MaskShape::Rect);
        blur_plane(&mut p, 3, 3, 3, 1, &region, MAX_SIGMA).unwrap();
        assert!(p.iter().all(|&v| v == 255));
    }

    #[test]
    fn bad_plane_is_an_error_not_a_panic() {
        let mut p = vec![0u8; 10];
        let region = Region::from_rect(PixelRect::new(0, 0, 4, 4), MaskShape::Rect);
        assert!(blur_plane(&mut p, 4, 4, 4, 1, &region, 2.0).is_err());
        assert_eq!(p, vec![0u8; 10]);
    }

    /// A smooth random picture: a few random gradients and blobs.
    fn smooth(w: usize, h: usize, seed: u64) -> Vec<u8> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let blobs: Vec<(f32, f32, f32, f32)> = (0..6)
            .map(|_| {
                (
                    rng.random_range(0.0..w as f32),
                    rng.random_range(0.0..h as f32),
                    rng.random_range(20.0..(w.min(h) as f32 / 2.0).max(21.0)),
                    rng.random_range(-90.0..90.0),
                )
            })
            .collect();
        let mut p = vec![0u8; w * h];
        for (i, v) in p.iter_mut().enumerate() {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let mut s = 128.0 + 30.0 * (x / w as f32) - 20.0 * (y / h as f32);
            for &(cx, cy, r, a) in &blobs {
                let d2 = ((x - cx).powi(2) + (y - cy).powi(2)) / (r * r);
                s += a * (-d2).exp();
            }
            *v = s.clamp(0.0, 255.0) as u8;
        }
        p
    }

    #[test]
    fn decimation_keeps_a_quarter_of_sigma() {
        assert_eq!(decimation(2.0), 1);
        assert_eq!(decimation(7.9), 1);
        assert_eq!(decimation(f32::NAN), 1);
        assert_eq!(decimation(8.0), 2);
        assert_eq!(decimation(90.0), 22);
        assert_eq!(decimation(1e9), 32);
        // k = 1 is the full-resolution blur itself.
        let p = smooth(41, 29, 1);
        let mut a = p.clone();
        blur_whole_plane(&mut a, 41, 29, 41, 1, 5.0).unwrap();
        let mut b = p.clone();
        let whole = Region::new(SignedRect::full(41, 29), MaskShape::Rect, 41, 29).unwrap();
        blur_plane(&mut b, 41, 29, 41, 1, &whole, 5.0).unwrap();
        assert_eq!(a, b);
    }

    /// Close to the full-resolution blur it stands in for, and as
    /// featureless on noise.
    #[test]
    fn whole_plane_blur_tracks_the_full_resolution_blur() {
        let (w, h) = (320, 180);
        let whole = Region::new(SignedRect::full(w, h), MaskShape::Rect, w, h).unwrap();
        for (seed, sigma) in [(2, 22.5), (3, 45.0), (4, 90.0)] {
            let p = smooth(w, h, seed);
            let mut fast = p.clone();
            blur_whole_plane(&mut fast, w, h, w, 1, sigma).unwrap();
            let mut exact = p.clone();
            blur_plane(&mut exact, w, h, w, 1, &whole, sigma).unwrap();
            let diffs: Vec<i32> = fast
                .iter()
                .zip(&exact)
                .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
                .collect();
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            assert!(mean < 2.0, "sigma {sigma}: mean |diff| {mean}");
        }
        let mut rng = SmallRng::seed_from_u64(5);
        let mut noise = vec![0u8; w * h];
        rng.fill(&mut noise[..]);
        let spread = |p: &[u8]| p.iter().max().unwrap() - p.iter().min().unwrap();
        let mut exact = noise.clone();
        blur_plane(&mut exact, w, h, w, 1, &whole, 22.5).unwrap();
        blur_whole_plane(&mut noise, w, h, w, 1, 22.5).unwrap();
        assert!(
            spread(&noise) <= spread(&exact).max(4),
            "noise left a spread of {} (full resolution: {})",
            spread(&noise),
            spread(&exact)
        );
    }

    proptest! {
        /// Any size, pitch and chroma step: no error, nothing outside the
        /// plane's pixels written, every value within the input's range.
        #[test]
        fn whole_plane_blur_stays_in_range_and_in_bounds(
            w in 1usize..70,
            h in 1usize..70,
            step in 1usize..3,
            pad in 0usize..5,
            sigma in 0.0f32..400.0,
            seed in any::<u64>(),
        ) {
            let stride = w * step + pad;
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut plane = vec![0u8; stride * h];
            rng.fill(&mut plane[..]);
            let before = plane.clone();
            blur_whole_plane(&mut plane, w, h, stride, step, sigma).unwrap();
            let px = |p: &[u8], x: usize, y: usize| p[y * stride + x * step];
            let (mut lo, mut hi) = (255u8, 0u8);
            for y in 0..h {
                for x in 0..w {
                    lo = lo.min(px(&before, x, y));
                    hi = hi.max(px(&before, x, y));
                }
            }
            for (i, (&a, &b)) in plane.iter().zip(&before).enumerate() {
                let (y, rem) = (i / stride, i % stride);
                let pixel = rem % step == 0 && rem / step < w && y < h;
                if pixel {
                    prop_assert!((lo..=hi).contains(&a), "{a} outside {lo}..={hi}");
                } else {
                    prop_assert_eq!(a, b, "byte {} outside the plane's pixels", i);
                }
            }
        }
    }
}
