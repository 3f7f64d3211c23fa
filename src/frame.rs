//! Host frames and the geometry shared by every stage.

use serde::{Deserialize, Serialize};

/// Planar YUV 4:2:0 layouts: I420 (openh264, Y4M) and NV12 (NVDEC, NVENC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PixelFormat {
    I420,
    Nv12,
}

/// A host frame with tightly packed planes: Y (`width*height`), then for I420
/// U and V (`chroma_width*chroma_height` each), for NV12 one interleaved UV
/// plane (`2*chroma_width*chroma_height`). Odd sizes round chroma up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Frame {
    /// A black frame.
    pub fn new(format: PixelFormat, width: usize, height: usize) -> Self {
        let luma = width * height;
        let chroma = chroma_dim(width) * chroma_dim(height);
        let mut data = vec![16u8; luma + 2 * chroma];
        data[luma..].fill(128);
        Frame {
            format,
            width,
            height,
            data,
        }
    }

    pub fn chroma_width(&self) -> usize {
        chroma_dim(self.width)
    }

    /// The `w x h` window at (`x`, `y`) as a frame of its own, in the same
    /// format. The corner is rounded down to even coordinates (chroma
    /// stays aligned) and the window clipped to the frame; `None` when
    /// nothing is left or the buffer is short.
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Option<Frame> {
        let (x, y) = (x & !1, y & !1);
        let w = w.min(self.width.saturating_sub(x));
        let h = h.min(self.height.saturating_sub(y));
        if w == 0 || h == 0 || self.data.len() < Frame::expected_len(self.width, self.height) {
            return None;
        }
        let mut out = Frame::new(self.format, w, h);
        let (scw, ocw, och) = (self.chroma_width(), out.chroma_width(), out.chroma_height());
        let (sy, sa, sb) = self.planes();
        let (oy, oa, ob) = out.planes_mut();
        for r in 0..h {
            let s = (y + r) * self.width + x;
            oy[r * w..(r + 1) * w].copy_from_slice(&sy[s..s + w]);
        }
        // NV12 interleaves U and V: twice the samples per chroma row.
        let k = if self.format == PixelFormat::Nv12 {
            2
        } else {
            1
        };
        for r in 0..och {
            let s = k * ((y / 2 + r) * scw + x / 2);
            let o = k * r * ocw;
            oa[o..o + k * ocw].copy_from_slice(&sa[s..s + k * ocw]);
            if k == 1 {
                ob[o..o + ocw].copy_from_slice(&sb[s..s + ocw]);
            }
        }
        Some(out)
    }

    pub fn chroma_height(&self) -> usize {
        chroma_dim(self.height)
    }

    /// Expected byte length of `data` for this format and size.
    pub fn expected_len(width: usize, height: usize) -> usize {
        width * height + 2 * chroma_dim(width) * chroma_dim(height)
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..self.width * self.height]
    }

    /// I420: (Y, U, V). NV12: (Y, UV, empty).
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let luma = self.width * self.height;
        let c = self.chroma_width() * self.chroma_height();
        let (y, rest) = self.data.split_at(luma);
        match self.format {
            PixelFormat::I420 => {
                let (u, v) = rest.split_at(c);
                (y, u, v)
            }
            PixelFormat::Nv12 => (y, rest, &[]),
        }
    }

    /// I420: (Y, U, V). NV12: (Y, UV, empty).
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = self.width * self.height;
        let c = self.chroma_width() * self.chroma_height();
        let format = self.format;
        let (y, rest) = self.data.split_at_mut(luma);
        match format {
            PixelFormat::I420 => {
                let (u, v) = rest.split_at_mut(c);
                (y, u, v)
            }
            PixelFormat::Nv12 => (y, rest, &mut []),
        }
    }

    /// The same picture in the other layout.
    pub fn converted(&self, format: PixelFormat) -> Frame {
        if format == self.format {
            return self.clone();
        }
        let mut out = Frame::new(format, self.width, self.height);
        let (y, a, b) = self.planes();
        let (oy, oa, ob) = out.planes_mut();
        oy.copy_from_slice(y);
        match self.format {
            PixelFormat::I420 => {
                for (i, (u, v)) in a.iter().zip(b.iter()).enumerate() {
                    oa[2 * i] = *u;
                    oa[2 * i + 1] = *v;
                }
            }
            PixelFormat::Nv12 => {
                for (i, uv) in a.chunks_exact(2).enumerate() {
                    oa[i] = uv[0];
                    ob[i] = uv[1];
                }
            }
        }
        out
    }

    /// Full-range-ish BT.601 conversion of one pixel to RGB (for the detector
    /// and the audit; the encoder never sees this).
    pub fn rgb_at(&self, x: usize, y: usize) -> [u8; 3] {
        let (yp, a, b) = self.planes();
        let cw = self.chroma_width();
        let ci = (y / 2) * cw + x / 2;
        let (u, v) = match self.format {
            PixelFormat::I420 => (a[ci], b[ci]),
            PixelFormat::Nv12 => (a[2 * ci], a[2 * ci + 1]),
        };
        yuv_to_rgb(yp[y * self.width + x], u, v)
    }

    /// Packed RGB24 of the whole frame.
    pub fn to_rgb(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.width * self.height * 3);
        for y in 0..self.height {
            for x in 0..self.width {
                out.extend_from_slice(&self.rgb_at(x, y));
            }
        }
        out
    }

    /// From packed RGB24 (BT.601 limited range), chroma averaged over 2x2.
    pub fn from_rgb(format: PixelFormat, width: usize, height: usize, rgb: &[u8]) -> Frame {
        let mut f = Frame::new(format, width, height);
        let cw = f.chroma_width();
        let ch = f.chroma_height();
        let (yp, a, b) = f.planes_mut();
        for y in 0..height {
            for x in 0..width {
                let i = (y * width + x) * 3;
                let (r, g, bl) = (rgb[i] as f32, rgb[i + 1] as f32, rgb[i + 2] as f32);
                yp[y * width + x] = (16.0 + 0.257 * r + 0.504 * g + 0.098 * bl).round() as u8;
            }
        }
        for cy in 0..ch {
            for cx in 0..cw {
                let (mut su, mut sv, mut n) = (0.0f32, 0.0f32, 0.0f32);
                for dy in 0..2 {
                    for dx in 0..2 {
                        let (x, y) = (cx * 2 + dx, cy * 2 + dy);
                        if x < width && y < height {
                            let i = (y * width + x) * 3;
                            let (r, g, bl) = (rgb[i] as f32, rgb[i + 1] as f32, rgb[i + 2] as f32);
                            su += 128.0 - 0.148 * r - 0.291 * g + 0.439 * bl;
                            sv += 128.0 + 0.439 * r - 0.368 * g - 0.071 * bl;
                            n += 1.0;
                        }
                    }
                }
                let (u, v) = ((su / n).round() as u8, (sv / n).round() as u8);
                let ci = cy * cw + cx;
                match format {
                    PixelFormat::I420 => {
                        a[ci] = u;
                        b[ci] = v;
                    }
                    PixelFormat::Nv12 => {
                        a[2 * ci] = u;
                        a[2 * ci + 1] = v;
                    }
                }
            }
        }
        f
    }
}

/// Chroma plane dimension for a luma dimension (4:2:0, rounded up).
pub fn chroma_dim(n: usize) -> usize {
    n.div_ceil(2)
}

/// BT.601 limited range YUV -> RGB.
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 1.164 * (y as f32 - 16.0);
    let d = u as f32 - 128.0;
    let e = v as f32 - 128.0;
    let r = c + 1.596 * e;
    let g = c - 0.392 * d - 0.813 * e;
    let b = c + 2.017 * d;
    [clamp_u8(r), clamp_u8(g), clamp_u8(b)]
}

fn clamp_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Axis-aligned box in frame pixels, corners `[x0, x1) x [y0, y1)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct BBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl BBox {
    pub fn new(x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        BBox { x0, y0, x1, y1 }
    }

    pub fn from_xywh(x: f32, y: f32, w: f32, h: f32) -> Self {
        BBox::new(x, y, x + w, y + h)
    }

    pub fn width(&self) -> f32 {
        (self.x1 - self.x0).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y1 - self.y0).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    pub fn center(&self) -> (f32, f32) {
        ((self.x0 + self.x1) * 0.5, (self.y0 + self.y1) * 0.5)
    }

    pub fn intersection(&self, o: &BBox) -> f32 {
        let w = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0.0);
        let h = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0.0);
        w * h
    }

    pub fn iou(&self, o: &BBox) -> f32 {
        let i = self.intersection(o);
        let u = self.area() + o.area() - i;
        if u <= 0.0 {
            0.0
        } else {
            i / u
        }
    }

    /// Grown by `fx` of its width and `fy` of its height on every side.
    pub fn expanded(&self, fx: f32, fy: f32) -> BBox {
        let (dx, dy) = (self.width() * fx, self.height() * fy);
        BBox::new(self.x0 - dx, self.y0 - dy, self.x1 + dx, self.y1 + dy)
    }

    /// Grown by absolute pixel margins.
    pub fn padded(&self, px: f32, py: f32) -> BBox {
        BBox::new(self.x0 - px, self.y0 - py, self.x1 + px, self.y1 + py)
    }

    /// Clipped to a `width x height` frame; may become empty.
    pub fn clipped(&self, width: usize, height: usize) -> BBox {
        let (w, h) = (width as f32, height as f32);
        BBox::new(
            self.x0.clamp(0.0, w),
            self.y0.clamp(0.0, h),
            self.x1.clamp(0.0, w),
            self.y1.clamp(0.0, h),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.width() <= 0.0 || self.height() <= 0.0
    }
}

/// One detector finding, in frame pixels. `class` indexes `detect::CLASSES`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub bbox: BBox,
    pub class: u8,
    pub score: f32,
}

/// Mask outline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MaskShape {
    #[default]
    Rect,
    Ellipse,
}

/// Why a mask is on a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskOrigin {
    /// The detector's finding on this very frame.
    Detected,
    /// A tracker prediction for this frame's time.
    Predicted,
    /// The whole frame (fail-closed).
    FullFrame,
}

/// A region to censor on one frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mask {
    pub bbox: BBox,
    pub shape: MaskShape,
    pub origin: MaskOrigin,
    /// Class index, or 255 for a full-frame mask.
    pub class: u8,
}

/// How a mask's pixels are hidden.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum CensorMethod {
    /// Gaussian blur; sigma = `strength` x the mask's shorter side (at least 2 px).
    Blur { strength: f32 },
    /// Mean over square blocks of `block` pixels (at least 2); 0 = auto (1/8 of the shorter side, at least 8).
    Pixelate { block: u32 },
    /// Solid colour (Y, U, V).
    Fill { y: u8, u: u8, v: u8 },
}

impl Default for CensorMethod {
    fn default() -> Self {
        CensorMethod::Blur { strength: 0.25 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_is_the_window_in_both_layouts() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let (w, h) = (37usize, 23usize);
            let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
            let f = Frame::from_rgb(format, w, h, &rgb);
            // An odd corner rounds down to even; the window is clipped.
            let c = f.crop(5, 9, 40, 10).expect("window");
            assert_eq!((c.width, c.height, c.format), (33, 10, format));
            assert_eq!(c.data.len(), Frame::expected_len(33, 10));
            for yy in 0..c.height {
                for xx in 0..c.width {
                    assert_eq!(
                        c.rgb_at(xx, yy),
                        f.rgb_at(xx + 4, yy + 8),
                        "{format:?} ({xx},{yy})"
                    );
                }
            }
            assert!(f.crop(40, 0, 5, 5).is_none());
            let mut short = f.clone();
            short.data.truncate(10);
            assert!(short.crop(0, 0, 4, 4).is_none());
        }
    }
}
