//! Photo loading, bilinear resampling and opaque blits straight into I420
//! planes (no per-frame RGB round trip: rendering is on the benchmark path).

use std::path::Path;

use image::RgbImage;

use crate::error::{Error, MediaError};
use crate::frame::{Frame, PixelFormat};

/// Loads a PNG as RGB (grayscale photos are expanded).
pub(crate) fn load_rgb(path: &Path) -> Result<RgbImage, Error> {
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "sample photo missing: run `bash scripts/setup.sh` to fetch it",
            ),
        ));
    }
    match image::open(path) {
        Ok(img) => Ok(img.to_rgb8()),
        Err(image::ImageError::IoError(e)) => Err(Error::io(path, e)),
        Err(e) => Err(MediaError::Malformed {
            path: path.to_path_buf(),
            container: "png",
            reason: e.to_string(),
        }
        .into()),
    }
}

/// Source window of a photo to resample, in photo pixels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Window {
    /// The centred window of `img` with the aspect ratio of `w x h` (what
    /// "scale to cover" shows).
    pub fn cover(img: &RgbImage, w: usize, h: usize) -> Window {
        let (iw, ih) = (img.width() as f64, img.height() as f64);
        let s = (w as f64 / iw).max(h as f64 / ih);
        let (ww, wh) = (w as f64 / s, h as f64 / s);
        Window {
            x: (iw - ww) * 0.5,
            y: (ih - wh) * 0.5,
            w: ww,
            h: wh,
        }
    }
}

/// Bilinear resample of `win` to packed RGB24 of `w x h`, optionally
/// mirrored left-right. Samples outside the photo clamp to its edge.
pub(crate) fn resample(img: &RgbImage, win: Window, w: usize, h: usize, mirror: bool) -> Vec<u8> {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let mut out = vec![0u8; w * h * 3];
    if iw == 0 || ih == 0 || w == 0 || h == 0 {
        return out;
    }
    let (sx, sy) = (win.w / w as f64, win.h / h as f64);
    let (maxx, maxy) = ((iw - 1) as f64, (ih - 1) as f64);
    // Per-column taps, shared by every row.
    let cols: Vec<(usize, usize, f32)> = (0..w)
        .map(|x| {
            let xo = if mirror { w - 1 - x } else { x };
            let u = (win.x + (xo as f64 + 0.5) * sx - 0.5).clamp(0.0, maxx);
            let x0 = u.floor() as usize;
            (x0, (x0 + 1).min(iw - 1), (u - x0 as f64) as f32)
        })
        .collect();
    for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
        let v = (win.y + (y as f64 + 0.5) * sy - 0.5).clamp(0.0, maxy);
        let y0 = v.floor() as usize;
        let y1 = (y0 + 1).min(ih - 1);
        let fy = (v - y0 as f64) as f32;
        let (r0, r1) = (y0 * iw * 3, y1 * iw * 3);
        for (px, &(x0, x1, fx)) in row.chunks_exact_mut(3).zip(cols.iter()) {
            for (c, o) in px.iter_mut().enumerate() {
                let a = src[r0 + x0 * 3 + c] as f32;
                let b = src[r0 + x1 * 3 + c] as f32;
                let cc = src[r1 + x0 * 3 + c] as f32;
                let d = src[r1 + x1 * 3 + c] as f32;
                let top = a + (b - a) * fx;
                let bot = cc + (d - cc) * fx;
                *o = (top + (bot - top) * fy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// [`resample`] rotated by `angle` radians about the output's centre
/// (clockwise on screen; the mirror applies after the rotation). Samples
/// outside the photo clamp to its edge.
pub(crate) fn resample_rotated(
    img: &RgbImage,
    win: Window,
    w: usize,
    h: usize,
    mirror: bool,
    angle: f64,
) -> Vec<u8> {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let mut out = vec![0u8; w * h * 3];
    if iw == 0 || ih == 0 || w == 0 || h == 0 {
        return out;
    }
    let (sx, sy) = (win.w / w as f64, win.h / h as f64);
    let (maxx, maxy) = ((iw - 1) as f64, (ih - 1) as f64);
    let (sin, cos) = angle.sin_cos();
    let (hw, hh) = (w as f64 * 0.5, h as f64 * 0.5);
    for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let xo = if mirror { w - 1 - x } else { x };
            let (dx, dy) = (xo as f64 + 0.5 - hw, y as f64 + 0.5 - hh);
            // Inverse rotation: where this output pixel comes from.
            let (rx, ry) = (cos * dx + sin * dy + hw, -sin * dx + cos * dy + hh);
            let u = (win.x + rx * sx - 0.5).clamp(0.0, maxx);
            let v = (win.y + ry * sy - 0.5).clamp(0.0, maxy);
            let (x0, y0) = (u.floor() as usize, v.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(iw - 1), (y0 + 1).min(ih - 1));
            let (fx, fy) = ((u - x0 as f64) as f32, (v - y0 as f64) as f32);
            for (c, o) in px.iter_mut().enumerate() {
                let at = |xx: usize, yy: usize| src[(yy * iw + xx) * 3 + c] as f32;
                let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
                let bot = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
                *o = (top + (bot - top) * fy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Contrast about mid-grey (`contrast` percent) then `brightness` added,
/// on packed RGB24 in place.
pub(crate) fn tone(rgb: &mut [u8], contrast: u16, brightness: i16) {
    if contrast == 100 && brightness == 0 {
        return;
    }
    let (k, b) = (contrast as f32 / 100.0, brightness as f32);
    for v in rgb.iter_mut() {
        *v = ((*v as f32 - 128.0) * k + 128.0 + b)
            .round()
            .clamp(0.0, 255.0) as u8;
    }
}

/// Horizontal motion blur: each pixel becomes the mean of the `len` pixels
/// of its row centred on it (fewer at the row's ends), on packed RGB24.
pub(crate) fn motion_blur(rgb: &mut [u8], w: usize, len: usize) {
    if len <= 1 || w == 0 {
        return;
    }
    let (before, after) = ((len - 1) / 2, len / 2);
    let mut row = vec![0u8; w * 3];
    let mut sums = vec![0u32; w + 1];
    for r in rgb.chunks_exact_mut(w * 3) {
        row.copy_from_slice(r);
        for c in 0..3 {
            for x in 0..w {
                sums[x + 1] = sums[x] + row[x * 3 + c] as u32;
            }
            for x in 0..w {
                let (a, b) = (x.saturating_sub(before), (x + after + 1).min(w));
                let n = (b - a) as u32;
                r[x * 3 + c] = ((sums[b] - sums[a] + n / 2) / n) as u8;
            }
        }
    }
}

/// An opaque rectangle in full-resolution Y, U and V (chroma is subsampled
/// at blit time, so any pixel offset keeps colours right).
#[derive(Clone, Debug)]
pub(crate) struct Planes {
    pub w: usize,
    pub h: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl Planes {
    /// From packed RGB24, with the same BT.601 limited-range formulas as
    /// [`Frame::from_rgb`].
    pub fn from_rgb(w: usize, h: usize, rgb: &[u8]) -> Planes {
        let n = w * h;
        let (mut y, mut u, mut v) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for px in rgb.chunks_exact(3).take(n) {
            let (r, g, b) = (px[0] as f32, px[1] as f32, px[2] as f32);
            y.push((16.0 + 0.257 * r + 0.504 * g + 0.098 * b).round() as u8);
            u.push((128.0 - 0.148 * r - 0.291 * g + 0.439 * b).round() as u8);
            v.push((128.0 + 0.439 * r - 0.368 * g - 0.071 * b).round() as u8);
        }
        Planes { w, h, y, u, v }
    }

    /// Paints this rectangle opaquely onto an I420 frame with its top-left
    /// corner at (ox, oy); parts outside the frame are dropped. Chroma cells
    /// half covered mix with the background in proportion.
    pub fn blit(&self, frame: &mut Frame, ox: i64, oy: i64) {
        if frame.format != PixelFormat::I420 || self.y.len() < self.w * self.h {
            return;
        }
        let (fw, fh) = (frame.width as i64, frame.height as i64);
        let (sw, sh) = (self.w as i64, self.h as i64);
        let (x0, x1) = (ox.max(0), ox.saturating_add(sw).min(fw));
        let (y0, y1) = (oy.max(0), oy.saturating_add(sh).min(fh));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        // All four are now inside both the frame and the sprite.
        let (x0, x1, y0, y1) = (x0 as usize, x1 as usize, y0 as usize, y1 as usize);
        let (sx0, sy0) = ((x0 as i64 - ox) as usize, (y0 as i64 - oy) as usize);
        let (width, height, cw) = (frame.width, frame.height, frame.chroma_width());
        let (yp, up, vp) = frame.planes_mut();
        let span = x1 - x0;
        for (k, fy) in (y0..y1).enumerate() {
            let s = (sy0 + k) * self.w + sx0;
            yp[fy * width + x0..fy * width + x1].copy_from_slice(&self.y[s..s + span]);
        }
        for cy in y0 / 2..y1.div_ceil(2) {
            for cx in x0 / 2..x1.div_ceil(2) {
                let (mut su, mut sv, mut n, mut total) = (0u32, 0u32, 0u32, 0u32);
                for py in 2 * cy..(2 * cy + 2).min(height) {
                    for px in 2 * cx..(2 * cx + 2).min(width) {
                        total += 1;
                        if (x0..x1).contains(&px) && (y0..y1).contains(&py) {
                            let s = (py - y0 + sy0) * self.w + (px - x0 + sx0);
                            su += self.u[s] as u32;
                            sv += self.v[s] as u32;
                            n += 1;
                        }
                    }
                }
                let ci = cy * cw + cx;
                let bg = total - n;
                up[ci] = ((su + up[ci] as u32 * bg + total / 2) / total) as u8;
                vp[ci] = ((sv + vp[ci] as u32 * bg + total / 2) / total) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: usize, h: usize, rgb: [u8; 3]) -> Planes {
        Planes::from_rgb(w, h, &rgb.repeat(w * h))
    }

    #[test]
    fn blit_writes_exactly_the_clipped_rectangle() {
        let mut f = Frame::new(PixelFormat::I420, 20, 10);
        solid(8, 6, [200, 50, 50]).blit(&mut f, -3, 7);
        let y = solid(1, 1, [200, 50, 50]).y[0];
        for yy in 0..10 {
            for xx in 0..20 {
                let inside = xx < 5 && yy >= 7;
                let got = f.y()[yy * 20 + xx];
                assert_eq!(got == y, inside, "({xx},{yy})");
            }
        }
        // Fully covered chroma cell takes the sprite colour; odd edge mixes.
        let (_, u, _) = f.planes();
        let su = solid(1, 1, [200, 50, 50]).u[0];
        assert_eq!(u[4 * 10], su);
        assert_ne!(u[3 * 10 + 2], su);
    }

    #[test]
    fn blit_far_outside_is_a_no_op() {
        let mut f = Frame::new(PixelFormat::I420, 16, 16);
        let before = f.clone();
        let p = solid(4, 4, [255, 255, 255]);
        for (x, y) in [(-4, 0), (16, 0), (0, 16), (0, -4), (i64::MIN, i64::MAX)] {
            p.blit(&mut f, x, y);
        }
        assert_eq!(f, before);
    }

    #[test]
    fn rotation_by_zero_is_resample_and_half_turn_reverses() {
        let img = RgbImage::from_fn(6, 4, |x, y| image::Rgb([(x * 40) as u8, (y * 60) as u8, 9]));
        let win = Window {
            x: 0.0,
            y: 0.0,
            w: 6.0,
            h: 4.0,
        };
        assert_eq!(
            resample_rotated(&img, win, 6, 4, false, 0.0),
            resample(&img, win, 6, 4, false)
        );
        let r = resample_rotated(&img, win, 6, 4, false, std::f64::consts::PI);
        let plain = resample(&img, win, 6, 4, false);
        for y in 0..4 {
            for x in 0..6 {
                let (a, b) = ((y * 6 + x) * 3, ((3 - y) * 6 + (5 - x)) * 3);
                assert_eq!(r[a..a + 3], plain[b..b + 3], "({x},{y})");
            }
        }
    }

    #[test]
    fn tone_and_motion_blur() {
        let mut v = vec![0u8, 128, 255];
        tone(&mut v, 50, 10);
        assert_eq!(v, vec![74, 138, 202]);
        // A one-pixel line spreads over `len` pixels and keeps its sum.
        let mut rgb = vec![0u8; 9 * 3];
        rgb[4 * 3] = 250;
        motion_blur(&mut rgb, 9, 5);
        let lit: Vec<u8> = rgb.chunks(3).map(|p| p[0]).collect();
        assert_eq!(lit, vec![0, 0, 50, 50, 50, 50, 50, 0, 0]);
    }

    #[test]
    fn resample_identity_and_mirror() {
        let mut img = RgbImage::new(4, 2);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 60) as u8, (y * 100) as u8, 7]);
        }
        let win = Window {
            x: 0.0,
            y: 0.0,
            w: 4.0,
            h: 2.0,
        };
        assert_eq!(resample(&img, win, 4, 2, false), img.as_raw().clone());
        let m = resample(&img, win, 4, 2, true);
        assert_eq!(&m[0..3], &[180, 0, 7]);
        assert_eq!(&m[9..12], &[0, 0, 7]);
    }
}
