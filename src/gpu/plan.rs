//! Host-side planning for the kernels, in plain Rust (no CUDA types), so the
//! CUDA backend and the CPU-shim parity test run the very same launch
//! sequence: the structs passed to kernels (`#[repr(C)]` twins of the C
//! structs in `kernels/*.cu`), the per-plane censor parameters, and every
//! launch's grid.
//!
//! Censoring follows `censor::apply` exactly: masks in order, each on Y then
//! U then V; a `FullFrame` mask censors the whole frame with the raised
//! strengths at full resolution (`censor::censor_full_exact`; the host's
//! fail-closed path blurs decimated instead, see `censor::censor_full`);
//! the chroma outline is the luma outline rounded outward.

use crate::censor::{box_radii, Region, SignedRect};
use crate::detect::preprocess::Letterbox;
use crate::frame::{BBox, CensorMethod, Detection, Mask, MaskOrigin, MaskShape};

/// Threads per block side for 2-D launches over pixels.
const TILE: (u32, u32) = (32, 8);
/// Threads per block for 1-D launches.
const LINE: u32 = 128;
/// Line segment one blur scan thread sums (`LC_BLUR_SEG`).
const BLUR_SEG: u32 = 32;
/// Largest pixelation block the CPU reference honours (`2 * COORD_LIMIT`).
const MAX_BLOCK: usize = 1 << 29;

/// One mask on one plane: the C struct `LcMask` in `kernels/common.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelMask {
    /// Outline `[ox0, ox1) x [oy0, oy1)`, may extend beyond the plane.
    pub ox0: i32,
    pub oy0: i32,
    pub ox1: i32,
    pub oy1: i32,
    /// Clip: the outline inside the plane, never empty.
    pub cx0: i32,
    pub cy0: i32,
    pub cx1: i32,
    pub cy1: i32,
    /// 0 rectangle, 1 ellipse.
    pub shape: i32,
    /// Blur box radii.
    pub r0: i32,
    pub r1: i32,
    pub r2: i32,
    /// Pixelation block side.
    pub block: i32,
    /// Fill value.
    pub value: i32,
}

/// What one plane gets for one mask (mirror of the CPU module's rule, see
/// `censor` module doc).
pub use crate::censor::{plane_ops, PlaneOp};

fn i32_of(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

fn i32_of_usize(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl KernelMask {
    /// The kernel form of a region (outline coordinates are already within
    /// `±2^28`, the clip within the plane) and its operation.
    pub fn new(region: &Region, op: PlaneOp) -> KernelMask {
        let (o, c) = (region.outline, region.clip);
        let mut m = KernelMask {
            ox0: i32_of(o.x0),
            oy0: i32_of(o.y0),
            ox1: i32_of(o.x1),
            oy1: i32_of(o.y1),
            cx0: i32_of_usize(c.x0),
            cy0: i32_of_usize(c.y0),
            cx1: i32_of_usize(c.x1),
            cy1: i32_of_usize(c.y1),
            shape: match region.shape {
                MaskShape::Rect => 0,
                MaskShape::Ellipse => 1,
            },
            ..KernelMask::default()
        };
        match op {
            PlaneOp::Blur(sigma) => {
                let [a, b, c] = box_radii(sigma);
                m.r0 = i32_of_usize(a);
                m.r1 = i32_of_usize(b);
                m.r2 = i32_of_usize(c);
            }
            PlaneOp::Pixelate(b) => m.block = i32_of_usize(b.clamp(1, MAX_BLOCK)),
            PlaneOp::Fill(v) => m.value = v as i32,
        }
        m
    }

    /// Clip width and height.
    pub fn clip_size(&self) -> (u32, u32) {
        (
            (self.cx1 - self.cx0).max(0) as u32,
            (self.cy1 - self.cy0).max(0) as u32,
        )
    }

    /// The blur work area on a `width x height` plane: the clip padded by
    /// the radii sum, clamped (`lc_blur_window`). Returns (x0, y0, x1, y1).
    pub fn blur_window(&self, width: usize, height: usize) -> (i64, i64, i64, i64) {
        let pad = self.r0 as i64 + self.r1 as i64 + self.r2 as i64;
        (
            (self.cx0 as i64 - pad).max(0),
            (self.cy0 as i64 - pad).max(0),
            (self.cx1 as i64 + pad).min(width as i64),
            (self.cy1 as i64 + pad).min(height as i64),
        )
    }

    /// Pixelation blocks across and down that touch the clip (`lc_blocks`).
    pub fn blocks(&self) -> (u32, u32) {
        let b = (self.block as i64).max(1);
        let fx = (self.cx0 as i64 - self.ox0 as i64).div_euclid(b);
        let lx = (self.cx1 as i64 - 1 - self.ox0 as i64).div_euclid(b);
        let fy = (self.cy0 as i64 - self.oy0 as i64).div_euclid(b);
        let ly = (self.cy1 as i64 - 1 - self.oy0 as i64).div_euclid(b);
        ((lx - fx + 1).max(0) as u32, (ly - fy + 1).max(0) as u32)
    }
}

/// The kernels, by their `extern "C"` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    PreprocessNv12,
    PreprocessNv12F16,
    BlurLoad,
    BlurScan,
    BlurCarry,
    BlurBox,
    PixelateMeans,
    PixelateApply,
    Fill,
    DecodeYolo,
}

impl Kernel {
    pub const ALL: [Kernel; 10] = [
        Kernel::PreprocessNv12,
        Kernel::PreprocessNv12F16,
        Kernel::BlurLoad,
        Kernel::BlurScan,
        Kernel::BlurCarry,
        Kernel::BlurBox,
        Kernel::PixelateMeans,
        Kernel::PixelateApply,
        Kernel::Fill,
        Kernel::DecodeYolo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::PreprocessNv12 => "preprocess_nv12",
            Kernel::PreprocessNv12F16 => "preprocess_nv12_f16",
            Kernel::BlurLoad => "blur_load_nv12",
            Kernel::BlurScan => "blur_scan_nv12",
            Kernel::BlurCarry => "blur_carry_nv12",
            Kernel::BlurBox => "blur_box_nv12",
            Kernel::PixelateMeans => "pixelate_means_nv12",
            Kernel::PixelateApply => "pixelate_apply_nv12",
            Kernel::Fill => "fill_nv12",
            Kernel::DecodeYolo => "decode_yolo_f32",
        }
    }

    /// The `kernels/*.cu` file that defines it.
    pub fn source_file(self) -> &'static str {
        match self {
            Kernel::PreprocessNv12 | Kernel::PreprocessNv12F16 => "preprocess.cu",
            Kernel::DecodeYolo => "postprocess.cu",
            _ => "censor.cu",
        }
    }
}

/// Grid and block of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

impl LaunchDims {
    /// Enough `TILE` blocks to cover `w x h` threads.
    pub fn tiles(w: u32, h: u32) -> LaunchDims {
        LaunchDims {
            grid: (w.div_ceil(TILE.0), h.div_ceil(TILE.1), 1),
            block: (TILE.0, TILE.1, 1),
        }
    }

    /// Enough `LINE` blocks to cover `n` threads, `rows` deep in y.
    pub fn lines(n: u32, rows: u32) -> LaunchDims {
        LaunchDims {
            grid: (n.div_ceil(LINE), rows, 1),
            block: (LINE, 1, 1),
        }
    }

    /// `[grid.x, grid.y, grid.z, block.x, block.y, block.z]`.
    pub fn cfg(&self) -> [u32; 6] {
        let (g, b) = (self.grid, self.block);
        [g.0, g.1, g.2, b.0, b.1, b.2]
    }

    pub fn is_empty(&self) -> bool {
        self.grid.0 == 0 || self.grid.1 == 0 || self.grid.2 == 0
    }
}

/// One plane of an NV12 frame as the kernels see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plane {
    /// Luma: step 1.
    Y,
    /// The U samples of the interleaved UV plane: offset 0, step 2.
    U,
    /// The V samples: offset 1, step 2.
    V,
}

impl Plane {
    /// Byte offset within its plane buffer and distance between samples.
    pub fn offset_step(self) -> (usize, i32) {
        match self {
            Plane::Y => (0, 1),
            Plane::U => (0, 2),
            Plane::V => (1, 2),
        }
    }
}

/// One censor kernel launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CensorLaunch {
    pub kernel: Kernel,
    pub plane: Plane,
    /// Index into [`CensorPlan::masks`].
    pub mask: i32,
    /// Blur stage: 0..3 the vertical passes, 3..6 the horizontal ones
    /// (`kernels/censor.cu`); 0 otherwise.
    pub pass: i32,
    pub dims: LaunchDims,
}

/// Everything the device needs to censor one NV12 frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CensorPlan {
    /// Uploaded once; launches index it.
    pub masks: Vec<KernelMask>,
    /// In order; must run sequentially on one stream.
    pub launches: Vec<CensorLaunch>,
    /// u16 elements each of the two blur buffers (A, B) must hold; the
    /// blur's u32 prefix-sum buffer holds as many.
    pub scratch_u16: usize,
    /// u32 elements the blur's segment totals buffer must hold.
    pub scratch_seg: usize,
    /// Bytes the pixelation means buffer must hold.
    pub scratch_u8: usize,
}

impl CensorPlan {
    /// The plan for `censor::apply(frame, masks, method)` on a
    /// `width x height` NV12 frame.
    pub fn new(width: usize, height: usize, masks: &[Mask], method: &CensorMethod) -> CensorPlan {
        let mut plan = CensorPlan::default();
        if width == 0 || height == 0 {
            return plan;
        }
        if masks.iter().any(|m| m.origin == MaskOrigin::FullFrame) {
            let outline = SignedRect::full(width, height);
            plan.add_outline(width, height, outline, MaskShape::Rect, method, true);
            return plan;
        }
        for m in masks {
            if let Some(outline) = SignedRect::from_bbox(&m.bbox) {
                plan.add_outline(width, height, outline, m.shape, method, false);
            }
        }
        plan
    }

    fn add_outline(
        &mut self,
        width: usize,
        height: usize,
        outline: SignedRect,
        shape: MaskShape,
        method: &CensorMethod,
        full: bool,
    ) {
        let Some(luma) = Region::new(outline, shape, width, height) else {
            return;
        };
        let short = usize::try_from(outline.short_side()).unwrap_or(0);
        let [oy, ou, ov] = plane_ops(method, short, full);
        self.add_plane(Plane::Y, &luma, oy, width, height);
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        if let Some(chroma) = luma.to_chroma(cw, ch) {
            self.add_plane(Plane::U, &chroma, ou, cw, ch);
            self.add_plane(Plane::V, &chroma, ov, cw, ch);
        }
    }

    fn add_plane(
        &mut self,
        plane: Plane,
        region: &Region,
        op: PlaneOp,
        width: usize,
        height: usize,
    ) {
        let mask = KernelMask::new(region, op);
        let (cw, ch) = mask.clip_size();
        match op {
            PlaneOp::Blur(_) => self.add_blur(plane, mask, width, height),
            PlaneOp::Pixelate(_) => {
                let (nx, ny) = mask.blocks();
                self.push_mask(
                    plane,
                    mask,
                    &[
                        (Kernel::PixelateMeans, 0, LaunchDims::tiles(nx, ny)),
                        (Kernel::PixelateApply, 0, LaunchDims::tiles(cw, ch)),
                    ],
                );
                self.scratch_u8 = self.scratch_u8.max(nx as usize * ny as usize);
            }
            PlaneOp::Fill(_) => {
                self.push_mask(plane, mask, &[(Kernel::Fill, 0, LaunchDims::tiles(cw, ch))])
            }
        }
    }

    /// The blur launches of `mask` on a `width x height` plane (its radii
    /// as given): load the window, then per stage a segment scan, the
    /// carries and the box pass (`kernels/censor.cu`). Public so the
    /// parity tests can drive any radii.
    pub fn add_blur(&mut self, plane: Plane, mask: KernelMask, width: usize, height: usize) {
        let (x0, y0, x1, y1) = mask.blur_window(width, height);
        let (ww, wh) = ((x1 - x0).max(0) as u32, (y1 - y0).max(0) as u32);
        let (cw, ch) = mask.clip_size();
        let (seg_v, seg_h) = (wh.div_ceil(BLUR_SEG), ww.div_ceil(BLUR_SEG));
        let mut launches = vec![(Kernel::BlurLoad, 0, LaunchDims::tiles(ww, wh))];
        for stage in 0..6 {
            // Vertical stages: the window's columns are the lines;
            // horizontal ones: the clip's rows, across the window, the last
            // writing the clip only.
            let (scan, lines, out) = match stage {
                0..3 => (LaunchDims::tiles(ww, seg_v), ww, (ww, wh)),
                3 | 4 => (LaunchDims::tiles(seg_h, ch), ch, (ww, ch)),
                _ => (LaunchDims::tiles(seg_h, ch), ch, (cw, ch)),
            };
            launches.push((Kernel::BlurScan, stage, scan));
            launches.push((Kernel::BlurCarry, stage, LaunchDims::lines(lines, 1)));
            launches.push((Kernel::BlurBox, stage, LaunchDims::tiles(out.0, out.1)));
        }
        self.push_mask(plane, mask, &launches);
        self.scratch_u16 = self.scratch_u16.max(ww as usize * wh as usize);
        let seg = (ww as usize * seg_v as usize).max(ch as usize * seg_h as usize);
        self.scratch_seg = self.scratch_seg.max(seg);
    }

    /// Appends `mask` and its launches, in order.
    fn push_mask(
        &mut self,
        plane: Plane,
        mask: KernelMask,
        launches: &[(Kernel, i32, LaunchDims)],
    ) {
        let index = i32_of_usize(self.masks.len());
        self.masks.push(mask);
        for &(kernel, pass, dims) in launches {
            self.launches.push(CensorLaunch {
                kernel,
                plane,
                mask: index,
                pass,
                dims,
            });
        }
    }
}

/// Launch geometry of `preprocess_nv12[_f16]` for a `rows x cols` input
/// (a letterbox's `dims()`).
pub fn preprocess_dims(rows: usize, cols: usize) -> LaunchDims {
    let r = u32::try_from(rows).unwrap_or(u32::MAX);
    let c = u32::try_from(cols).unwrap_or(u32::MAX);
    LaunchDims {
        grid: (c.div_ceil(16), r.div_ceil(16), 1),
        block: (16, 16, 1),
    }
}

/// Per image of a batch, for `decode_yolo_f32` (C struct `LcImageInfo`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ImageInfo {
    pub scale: f32,
    pub width: i32,
    pub height: i32,
    pub pad: i32,
}

impl From<&Letterbox> for ImageInfo {
    fn from(lb: &Letterbox) -> Self {
        ImageInfo {
            scale: lb.scale,
            width: i32_of_usize(lb.width),
            height: i32_of_usize(lb.height),
            pad: 0,
        }
    }
}

/// One anchor that survived `decode_yolo_f32` (C struct `LcCandidate`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Candidate {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    pub score: f32,
    pub class: i32,
    pub image: i32,
    pub anchor: i32,
}

/// Launch geometry of `decode_yolo_f32`: anchors across, images down.
pub fn decode_dims(anchors: usize, batch: usize) -> LaunchDims {
    LaunchDims {
        grid: (
            u32::try_from(anchors.div_ceil(256)).unwrap_or(u32::MAX),
            u32::try_from(batch).unwrap_or(u32::MAX),
            1,
        ),
        block: (256, 1, 1),
    }
}

/// Candidates (in the arbitrary order the atomic counter gave them) ->
/// per-image detections in anchor order, exactly what
/// `detect::postprocess::decode` returns on the host. Entries with an image
/// index outside `0..batch` are ignored.
pub fn candidates_to_detections(cands: &[Candidate], batch: usize) -> Vec<Vec<Detection>> {
    let mut sorted: Vec<&Candidate> = cands
        .iter()
        .filter(|c| c.image >= 0 && (c.image as usize) < batch)
        .collect();
    sorted.sort_by_key(|c| (c.image, c.anchor));
    let mut out = vec![Vec::new(); batch];
    for c in sorted {
        if let Some(v) = out.get_mut(c.image as usize) {
            v.push(Detection {
                bbox: BBox::new(c.x0, c.y0, c.x1, c.y1),
                class: u8::try_from(c.class).unwrap_or(u8::MAX),
                score: c.score,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::censor::PixelRect;

    fn region(x0: i64, y0: i64, x1: i64, y1: i64, w: usize, h: usize) -> Region {
        Region::new(SignedRect { x0, y0, x1, y1 }, MaskShape::Ellipse, w, h).unwrap()
    }

    #[test]
    fn kernel_mask_layout_matches_c() {
        assert_eq!(std::mem::size_of::<KernelMask>(), 14 * 4);
        assert_eq!(std::mem::size_of::<Candidate>(), 32);
        assert_eq!(std::mem::size_of::<ImageInfo>(), 16);
    }

    #[test]
    fn blocks_match_the_cpu_block_spans() {
        // Outline starts at -1 with blocks of 3 on a 6-wide plane: blocks
        // [-1,2) [2,5) [5,8) -> 3 across; one row.
        let r = region(-1, 0, 6, 1, 6, 1);
        let m = KernelMask::new(&r, PlaneOp::Pixelate(3));
        assert_eq!(m.blocks(), (3, 1));
        let r = region(0, 0, 5, 1, 5, 1);
        assert_eq!(KernelMask::new(&r, PlaneOp::Pixelate(2)).blocks(), (3, 1));
        // Clip deep inside a big outline: only the touched blocks count
        // (edges at -4, 4, 12 around the clip [0, 10)).
        let r = region(-100, -100, 200, 200, 10, 10);
        assert_eq!(KernelMask::new(&r, PlaneOp::Pixelate(8)).blocks(), (2, 2));
        assert_eq!(KernelMask::new(&r, PlaneOp::Pixelate(0)).block, 1);
    }

    #[test]
    fn blur_window_pads_and_clamps() {
        let r = Region::from_rect(PixelRect::new(10, 20, 30, 25), MaskShape::Rect);
        let m = KernelMask::new(&r, PlaneOp::Blur(2.0));
        assert_eq!((m.r0, m.r1, m.r2), (1, 1, 2));
        assert_eq!(m.blur_window(34, 100), (6, 16, 34, 29));
        assert_eq!(m.clip_size(), (20, 5));
    }

    #[test]
    fn plan_orders_planes_and_sizes_scratch() {
        let mask = Mask {
            bbox: BBox::new(-10.5, 4.0, 40.0, 30.2),
            shape: MaskShape::Ellipse,
            origin: MaskOrigin::Detected,
            class: 3,
        };
        let plan = CensorPlan::new(64, 48, &[mask], &CensorMethod::Blur { strength: 0.25 });
        assert_eq!(plan.masks.len(), 3);
        assert_eq!(plan.launches.len(), 3 * 19);
        assert_eq!(plan.launches[0].kernel, Kernel::BlurLoad);
        assert_eq!(plan.launches[18].kernel, Kernel::BlurBox);
        assert_eq!(plan.launches[18].pass, 5);
        let planes: Vec<Plane> = plan.launches.iter().map(|l| l.plane).collect();
        assert_eq!(&planes[..19], &[Plane::Y; 19]);
        assert_eq!(&planes[38..], &[Plane::V; 19]);
        assert!(plan.scratch_u16 >= 41 * 27);
        assert!(plan.scratch_seg >= 41 * 27usize.div_ceil(32));
        let fill = CensorMethod::Fill { y: 0, u: 0, v: 0 };
        let plan = CensorPlan::new(64, 48, &[mask], &fill);
        assert!(plan.launches.iter().all(|l| l.kernel == Kernel::Fill));
        // Outside and NaN masks produce nothing; a full-frame mask wins.
        let mut out = mask;
        out.bbox = BBox::new(70.0, 0.0, 80.0, 10.0);
        let mut nan = mask;
        nan.bbox.x0 = f32::NAN;
        assert!(CensorPlan::new(64, 48, &[out, nan], &fill)
            .launches
            .is_empty());
        let mut full = out;
        full.origin = MaskOrigin::FullFrame;
        let plan = CensorPlan::new(64, 48, &[mask, full], &fill);
        assert_eq!(plan.masks[0].clip_size(), (64, 48));
        assert_eq!(plan.masks.len(), 3);
        assert!(CensorPlan::new(0, 48, &[mask], &fill).launches.is_empty());
    }

    #[test]
    fn candidates_sort_into_images_in_anchor_order() {
        let c = |image, anchor| Candidate {
            image,
            anchor,
            class: anchor,
            ..Candidate::default()
        };
        let out = candidates_to_detections(&[c(1, 5), c(0, 9), c(1, 2), c(7, 0), c(-1, 0)], 2);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), 1);
        let classes: Vec<u8> = out[1].iter().map(|d| d.class).collect();
        assert_eq!(classes, vec![2, 5]);
    }
}
