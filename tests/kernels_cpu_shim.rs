//! Parity of the CUDA kernels with their Rust references, without a GPU:
//! every `kernels/*.cu` is compiled by the host C++ compiler together with
//! `kernels/cpu_shim.h` (CUDA keywords, thread indices, a launcher that
//! loops over the grid) and `kernels/cpu_shim_launch.cpp`, loaded with
//! libloading, and driven with the very launch plans `gpu::plan` builds for
//! the CUDA backend. Expected: bit-identical censoring (inside and outside
//! the masks, and the pitch padding untouched), a bit-identical f32 detector
//! tensor (asserted with the brief's 1e-5 bound and reported as exact),
//! f16 equal to `half`'s round-to-nearest-even, and the same decoded
//! candidates as `detect::postprocess::decode`.
//!
//! Needs `c++` (or `$CXX`); a missing compiler fails the test rather than
//! skipping it, since these are the only parity checks CI can run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use livecensor::censor;
use livecensor::detect::postprocess::decode;
use livecensor::detect::preprocess::{
    preprocess_frame, preprocess_frame_with, Letterbox, LetterboxMode, ResizeFilter,
};
use livecensor::frame::{
    BBox, CensorMethod, Detection, Frame, Mask, MaskOrigin, MaskShape, PixelFormat,
};
use livecensor::gpu::plan::{
    candidates_to_detections, decode_dims, preprocess_dims, Candidate, CensorPlan, ImageInfo,
    Kernel, KernelMask, Plane, PlaneOp,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

type Cfg = *const u32;
/// (cfg, y, y pitch, uv, uv pitch, width, height, rows, cols, scale, out, slot);
/// `T` is f32, or u16 for the half-precision kernel.
type PreprocessFn<T> = unsafe extern "C" fn(
    Cfg,
    *const u8,
    i32,
    *const u8,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    i32,
    *mut T,
    i32,
);
/// (cfg, plane, pitch, step, width, height, masks, m, a).
type BlurLoadFn =
    unsafe extern "C" fn(Cfg, *const u8, i32, i32, i32, i32, *const KernelMask, i32, *mut u16);
/// (cfg, width, height, masks, m, stage, a, b, pre, tot).
type BlurScanFn = unsafe extern "C" fn(
    Cfg,
    i32,
    i32,
    *const KernelMask,
    i32,
    i32,
    *const u16,
    *const u16,
    *mut u32,
    *mut u32,
);
/// (cfg, width, height, masks, m, stage, tot).
type BlurCarryFn = unsafe extern "C" fn(Cfg, i32, i32, *const KernelMask, i32, i32, *mut u32);
/// (cfg, plane, pitch, step, width, height, masks, m, stage, a, b, pre, tot).
type BlurBoxFn = unsafe extern "C" fn(
    Cfg,
    *mut u8,
    i32,
    i32,
    i32,
    i32,
    *const KernelMask,
    i32,
    i32,
    *mut u16,
    *mut u16,
    *const u32,
    *const u32,
);
type PixMeansFn = unsafe extern "C" fn(Cfg, *const u8, i32, i32, *const KernelMask, i32, *mut u8);
type PixApplyFn = unsafe extern "C" fn(Cfg, *mut u8, i32, i32, *const KernelMask, i32, *const u8);
type FillFn = unsafe extern "C" fn(Cfg, *mut u8, i32, i32, *const KernelMask, i32);
type DecodeFn = unsafe extern "C" fn(
    Cfg,
    *const f32,
    i32,
    i32,
    *const f32,
    *const ImageInfo,
    i32,
    *mut Candidate,
    i32,
    *mut i32,
);
type HalfFn = unsafe extern "C" fn(f32) -> u16;

/// The kernels compiled for the CPU.
struct Shim {
    preprocess: PreprocessFn<f32>,
    preprocess_f16: PreprocessFn<u16>,
    blur_load: BlurLoadFn,
    blur_scan: BlurScanFn,
    blur_carry: BlurCarryFn,
    blur_box: BlurBoxFn,
    pix_means: PixMeansFn,
    pix_apply: PixApplyFn,
    fill: FillFn,
    decode: DecodeFn,
    to_half: HalfFn,
    _lib: libloading::Library,
}

fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels")
}

/// Compiles cpu_shim.h + common.cuh + every kernels/*.cu + the launchers
/// into one shared library under the test's target tmp dir.
fn build_shim() -> Result<Shim, String> {
    let dir = kernels_dir();
    let mut cus: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    cus.sort();
    let mut unit = String::new();
    let mut files = vec![dir.join("cpu_shim.h"), dir.join("common.cuh")];
    files.extend(cus);
    files.push(dir.join("cpu_shim_launch.cpp"));
    for f in &files {
        unit.push_str(&format!("#include \"{}\"\n", f.display()));
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernels_cpu_shim");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let src = out.join("shim_unit.cpp");
    std::fs::write(&src, unit).map_err(|e| e.to_string())?;
    // A unique name per process: a loaded library must not be overwritten.
    let lib = out.join(format!("libkernels_shim_{}.so", std::process::id()));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let output = Command::new(&cxx)
        .args([
            "-std=c++17",
            "-O2",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-fPIC",
            "-shared",
        ])
        .args(["-Wall", "-Wextra", "-Wno-unused-function"])
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run the C++ compiler `{cxx}` (set CXX): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "compiling the kernels for the CPU shim failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if !output.stderr.is_empty() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    }
    // SAFETY: our own library; its initialisers are the C++ runtime's.
    let l = unsafe { libloading::Library::new(&lib) }.map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&lib);
    // Each launcher is looked up with the signature it is defined with in
    // kernels/cpu_shim_launch.cpp.
    fn sym<T: Copy>(l: &libloading::Library, name: &str) -> Result<T, String> {
        // SAFETY: see above.
        unsafe { l.get::<T>(name.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| format!("{name}: {e}"))
    }
    Ok(Shim {
        preprocess: sym(&l, "launch_preprocess_nv12")?,
        preprocess_f16: sym(&l, "launch_preprocess_nv12_f16")?,
        blur_load: sym(&l, "launch_blur_load_nv12")?,
        blur_scan: sym(&l, "launch_blur_scan_nv12")?,
        blur_carry: sym(&l, "launch_blur_carry_nv12")?,
        blur_box: sym(&l, "launch_blur_box_nv12")?,
        pix_means: sym(&l, "launch_pixelate_means_nv12")?,
        pix_apply: sym(&l, "launch_pixelate_apply_nv12")?,
        fill: sym(&l, "launch_fill_nv12")?,
        decode: sym(&l, "launch_decode_yolo_f32")?,
        to_half: sym(&l, "shim_float_to_half")?,
        _lib: l,
    })
}

fn shim() -> &'static Shim {
    static SHIM: OnceLock<Result<Shim, String>> = OnceLock::new();
    match SHIM.get_or_init(build_shim) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// A pitched NV12 "device" frame in host memory, padding filled with a
/// sentinel so stray writes show.
struct PitchedFrame {
    data: Vec<u8>,
    width: usize,
    height: usize,
    pitch: usize,
    uv_offset: usize,
}

const SENTINEL: u8 = 0xA5;

impl PitchedFrame {
    fn from_frame(f: &Frame, extra: usize) -> PitchedFrame {
        assert_eq!(f.format, PixelFormat::Nv12);
        let (w, h) = (f.width, f.height);
        let pitch = w.next_multiple_of(2) + extra;
        let uv_offset = pitch * h;
        let mut data = vec![SENTINEL; uv_offset + pitch * h.div_ceil(2)];
        let (y, uv, _) = f.planes();
        for r in 0..h {
            data[r * pitch..r * pitch + w].copy_from_slice(&y[r * w..(r + 1) * w]);
        }
        let uvw = 2 * w.div_ceil(2);
        for r in 0..h.div_ceil(2) {
            let o = uv_offset + r * pitch;
            data[o..o + uvw].copy_from_slice(&uv[r * uvw..(r + 1) * uvw]);
        }
        PitchedFrame {
            data,
            width: w,
            height: h,
            pitch,
            uv_offset,
        }
    }

    fn to_frame(&self) -> Frame {
        let (w, h, p) = (self.width, self.height, self.pitch);
        let mut f = Frame::new(PixelFormat::Nv12, w, h);
        let uvw = 2 * w.div_ceil(2);
        let (y, uv, _) = f.planes_mut();
        for r in 0..h {
            y[r * w..(r + 1) * w].copy_from_slice(&self.data[r * p..r * p + w]);
        }
        for r in 0..h.div_ceil(2) {
            let o = self.uv_offset + r * p;
            uv[r * uvw..(r + 1) * uvw].copy_from_slice(&self.data[o..o + uvw]);
        }
        f
    }

    /// Every byte outside the picture still holds the sentinel.
    fn padding_untouched(&self) -> bool {
        let (w, p) = (self.width, self.pitch);
        let uvw = 2 * w.div_ceil(2);
        let rows_y = (0..self.height).flat_map(|r| (r * p + w..(r + 1) * p).collect::<Vec<_>>());
        let rows_uv = (0..self.height.div_ceil(2)).flat_map(|r| {
            (self.uv_offset + r * p + uvw..self.uv_offset + (r + 1) * p).collect::<Vec<_>>()
        });
        rows_y.chain(rows_uv).all(|i| self.data[i] == SENTINEL)
    }
}

fn random_frame(rng: &mut SmallRng, w: usize, h: usize) -> Frame {
    let mut f = Frame::new(PixelFormat::Nv12, w, h);
    rng.fill(&mut f.data[..]);
    f
}

/// Runs a censor plan through the shim exactly as `GpuStream::censor_nv12`
/// runs it on the device.
fn run_censor_plan(frame: &mut PitchedFrame, plan: &CensorPlan) {
    let s = shim();
    let mut a = vec![0u16; plan.scratch_u16.max(1)];
    let mut b = vec![0u16; plan.scratch_u16.max(1)];
    let mut pre = vec![0u32; plan.scratch_u16.max(1)];
    let mut tot = vec![0u32; plan.scratch_seg.max(1)];
    let mut means = vec![0u8; plan.scratch_u8.max(1)];
    let (cw, ch) = (frame.width.div_ceil(2), frame.height.div_ceil(2));
    let pitch = frame.pitch as i32;
    let masks = plan.masks.as_ptr();
    for l in &plan.launches {
        if l.dims.is_empty() {
            continue;
        }
        let (off, step) = l.plane.offset_step();
        let (base, w, h) = match l.plane {
            Plane::Y => (0, frame.width, frame.height),
            Plane::U | Plane::V => (frame.uv_offset + off, cw, ch),
        };
        let cfg = l.dims.cfg();
        let (w, h) = (w as i32, h as i32);
        // SAFETY: pointers into live buffers sized by the plan; the kernels
        // stay inside the clip / window / block ranges the plan computed.
        unsafe {
            let ptr = frame.data.as_mut_ptr().add(base);
            let pa = a.as_mut_ptr();
            let pb = b.as_mut_ptr();
            match l.kernel {
                Kernel::BlurLoad => {
                    (s.blur_load)(cfg.as_ptr(), ptr, pitch, step, w, h, masks, l.mask, pa)
                }
                Kernel::BlurScan => (s.blur_scan)(
                    cfg.as_ptr(),
                    w,
                    h,
                    masks,
                    l.mask,
                    l.pass,
                    pa,
                    pb,
                    pre.as_mut_ptr(),
                    tot.as_mut_ptr(),
                ),
                Kernel::BlurCarry => {
                    (s.blur_carry)(cfg.as_ptr(), w, h, masks, l.mask, l.pass, tot.as_mut_ptr())
                }
                Kernel::BlurBox => (s.blur_box)(
                    cfg.as_ptr(),
                    ptr,
                    pitch,
                    step,
                    w,
                    h,
                    masks,
                    l.mask,
                    l.pass,
                    pa,
                    pb,
                    pre.as_ptr(),
                    tot.as_ptr(),
                ),
                Kernel::PixelateMeans => (s.pix_means)(
                    cfg.as_ptr(),
                    ptr,
                    pitch,
                    step,
                    masks,
                    l.mask,
                    means.as_mut_ptr(),
                ),
                Kernel::PixelateApply => (s.pix_apply)(
                    cfg.as_ptr(),
                    ptr,
                    pitch,
                    step,
                    masks,
                    l.mask,
                    means.as_ptr(),
                ),
                Kernel::Fill => (s.fill)(cfg.as_ptr(), ptr, pitch, step, masks, l.mask),
                other => panic!("{other:?} in a censor plan"),
            }
        }
    }
}

fn mask(b: BBox, shape: MaskShape, origin: MaskOrigin) -> Mask {
    Mask {
        bbox: b,
        shape,
        origin,
        class: 0,
    }
}

fn random_masks(rng: &mut SmallRng, w: usize, h: usize, n: usize) -> Vec<Mask> {
    let (wf, hf) = (w as f32, h as f32);
    (0..n)
        .map(|i| {
            // Boxes from well outside to well inside, fractional edges.
            let x0 = rng.random_range(-0.3 * wf - 5.0..1.1 * wf);
            let y0 = rng.random_range(-0.3 * hf - 5.0..1.1 * hf);
            let bw = rng.random_range(0.5..0.8 * wf + 4.0);
            let bh = rng.random_range(0.5..0.8 * hf + 4.0);
            let shape = if i % 2 == 0 {
                MaskShape::Ellipse
            } else {
                MaskShape::Rect
            };
            mask(
                BBox::new(x0, y0, x0 + bw, y0 + bh),
                shape,
                MaskOrigin::Detected,
            )
        })
        .collect()
}

fn methods() -> Vec<CensorMethod> {
    vec![
        CensorMethod::Blur { strength: 0.25 },
        CensorMethod::Blur { strength: 0.02 },
        CensorMethod::Blur { strength: 1.5 },
        CensorMethod::Pixelate { block: 0 },
        CensorMethod::Pixelate { block: 5 },
        CensorMethod::Pixelate { block: 2 },
        CensorMethod::Fill {
            y: 16,
            u: 128,
            v: 128,
        },
        CensorMethod::Fill {
            y: 235,
            u: 1,
            v: 254,
        },
    ]
}

/// GPU plan through the shim vs `censor::apply` on the packed frame.
fn check_censor(src: &Frame, masks: &[Mask], method: &CensorMethod, what: &str) {
    let mut want = src.clone();
    censor::apply(&mut want, masks, method);
    let mut dev = PitchedFrame::from_frame(src, 7);
    let plan = CensorPlan::new(src.width, src.height, masks, method);
    run_censor_plan(&mut dev, &plan);
    assert!(
        dev.padding_untouched(),
        "{what}: wrote into the pitch padding"
    );
    let got = dev.to_frame();
    if got != want {
        let diff = got
            .data
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| a != b)
            .count();
        let first = got.data.iter().zip(&want.data).position(|(a, b)| a != b);
        panic!("{what}: {diff} bytes differ, first at {first:?}; masks {masks:?}");
    }
}

#[test]
fn censor_matches_cpu_reference_on_random_masks() {
    let mut rng = SmallRng::seed_from_u64(0xC0FFEE);
    let sizes = [
        (64usize, 48usize),
        (65, 47),
        (321, 241),
        (33, 17),
        (2, 5),
        (1, 1),
    ];
    for &(w, h) in &sizes {
        for method in methods() {
            for round in 0..3 {
                let src = random_frame(&mut rng, w, h);
                let n = rng.random_range(1..5);
                let masks = random_masks(&mut rng, w, h, n);
                check_censor(
                    &src,
                    &masks,
                    &method,
                    &format!("{w}x{h} {method:?} round {round}"),
                );
            }
        }
    }
}

#[test]
fn censor_matches_cpu_reference_on_crafted_masks() {
    let mut rng = SmallRng::seed_from_u64(7);
    let (w, h) = (67usize, 45usize);
    let (wf, hf) = (w as f32, h as f32);
    let src = random_frame(&mut rng, w, h);
    let boxes = [
        BBox::new(-20.0, -20.0, wf + 20.0, hf + 20.0), // covers all, outline beyond
        BBox::new(-1e9, 3.0, 1e9, 9.5),                // huge outline: 128-bit ellipse path
        BBox::new(10.2, 10.7, 11.1, 11.3),             // one pixel
        BBox::new(wf - 0.5, hf - 0.5, wf + 3.0, hf + 3.0), // corner pixel only
        BBox::new(wf, 0.0, wf + 10.0, hf),             // just outside: nothing
        BBox::new(f32::NAN, 0.0, 5.0, 5.0),            // NaN: skipped
        BBox::new(5.0, 5.0, 5.0, 20.0),                // empty
        BBox::new(f32::NEG_INFINITY, 2.0, 30.0, f32::INFINITY),
    ];
    for method in methods() {
        for shape in [MaskShape::Rect, MaskShape::Ellipse] {
            for b in boxes {
                let m = [mask(b, shape, MaskOrigin::Predicted)];
                check_censor(&src, &m, &method, &format!("{b:?} {shape:?} {method:?}"));
            }
            // Overlapping masks compose in order.
            let all: Vec<Mask> = boxes
                .iter()
                .map(|&b| mask(b, shape, MaskOrigin::Detected))
                .collect();
            check_censor(&src, &all, &method, &format!("all {shape:?} {method:?}"));
            // Any full-frame mask censors the whole frame, raised strength.
            let mut full = all.clone();
            full.push(mask(BBox::default(), shape, MaskOrigin::FullFrame));
            check_censor(&src, &full, &method, &format!("full {shape:?} {method:?}"));
        }
    }
}

#[test]
fn censor_matches_on_a_720p_frame() {
    let mut rng = SmallRng::seed_from_u64(720);
    let src = random_frame(&mut rng, 1280, 720);
    let masks = random_masks(&mut rng, 1280, 720, 3);
    for method in [
        CensorMethod::Blur { strength: 0.25 },
        CensorMethod::Pixelate { block: 0 },
    ] {
        check_censor(&src, &masks, &method, &format!("720p {method:?}"));
    }
}

/// The blur's reference definition (`censor::blur` module doc), per pixel
/// over a whole `w x h` plane with any box radii: three vertical passes,
/// three horizontal, edges clamped at the plane border, Q8 rounding.
fn naive_blur(p: &[u8], w: usize, h: usize, radii: [usize; 3]) -> Vec<u8> {
    let mut v: Vec<u64> = p.iter().map(|&q| u64::from(q) << 8).collect();
    for (horizontal, r) in radii
        .map(|r| (false, r))
        .into_iter()
        .chain(radii.map(|r| (true, r)))
    {
        let width = (2 * r + 1) as u64;
        let mul = ((1u64 << 32) + width / 2) / width;
        let mut out = vec![0u64; v.len()];
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0u64;
                for j in -(r as i64)..=(r as i64) {
                    let (xx, yy) = if horizontal {
                        ((x as i64 + j).clamp(0, w as i64 - 1) as usize, y)
                    } else {
                        (x, (y as i64 + j).clamp(0, h as i64 - 1) as usize)
                    };
                    sum += v[yy * w + xx];
                }
                out[y * w + x] = (sum * mul + (1 << 31)) >> 32;
            }
        }
        v = out;
    }
    v.iter().map(|&q| ((q + 128) >> 8) as u8).collect()
}

/// One plane of a packed NV12 frame as `(w, h, samples)`.
fn plane_of(f: &Frame, plane: Plane) -> (usize, usize, Vec<u8>) {
    let (y, uv, _) = f.planes();
    match plane {
        Plane::Y => (f.width, f.height, y.to_vec()),
        Plane::U | Plane::V => {
            let (cw, ch) = (f.width.div_ceil(2), f.height.div_ceil(2));
            let off = plane.offset_step().0;
            (cw, ch, uv.iter().skip(off).step_by(2).copied().collect())
        }
    }
}

/// The blur stages on their own, for radii `censor::box_radii` never pairs
/// (each 1..=64, independent): random sizes (odd ones included), Y and
/// chroma planes, clips anywhere and flush with every plane edge, against
/// the per-pixel reference; nothing but the covered pixels changes.
#[test]
fn blur_stages_match_reference_on_random_radii_and_windows() {
    let mut rng = SmallRng::seed_from_u64(0xB10B);
    for case in 0..80 {
        let (fw, fh) = (rng.random_range(1..150usize), rng.random_range(1..120usize));
        let src = random_frame(&mut rng, fw, fh);
        let plane = [Plane::Y, Plane::U, Plane::V][case % 3];
        let (w, h, before) = plane_of(&src, plane);
        let mut span = |n: usize| {
            let (mut a, mut b) = (rng.random_range(0..n), rng.random_range(0..n));
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            match rng.random_range(0..4) {
                0 => (0, b + 1),
                1 => (a, n),
                2 => (0, n),
                _ => (a, b + 1),
            }
        };
        let ((x0, x1), (y0, y1)) = (span(w), span(h));
        let shape = if case % 2 == 0 {
            MaskShape::Rect
        } else {
            MaskShape::Ellipse
        };
        let region = censor::Region::from_rect(censor::PixelRect::new(x0, y0, x1, y1), shape);
        let radii = [0; 3].map(|_| rng.random_range(1..=64usize));
        let mut km = KernelMask::new(&region, PlaneOp::Blur(1.0));
        [km.r0, km.r1, km.r2] = radii.map(|r| r as i32);
        let mut plan = CensorPlan::default();
        plan.add_blur(plane, km, w, h);
        let mut dev = PitchedFrame::from_frame(&src, 5);
        run_censor_plan(&mut dev, &plan);
        let what = format!("{fw}x{fh} {plane:?} clip {x0}..{x1} x {y0}..{y1} {shape:?} {radii:?}");
        assert!(dev.padding_untouched(), "{what}: wrote into the padding");
        let got = dev.to_frame();
        let full = naive_blur(&before, w, h, radii);
        let (_, _, after) = plane_of(&got, plane);
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let want = if region.contains(x, y) {
                    full[i]
                } else {
                    before[i]
                };
                assert_eq!(after[i], want, "{what} @ {x},{y}");
            }
        }
        // The other planes are untouched.
        for other in [Plane::Y, Plane::U, Plane::V] {
            if other != plane {
                assert_eq!(plane_of(&got, other), plane_of(&src, other), "{what}");
            }
        }
    }
}

/// Runs the preprocess kernel into slot 1 of a 2-slot tensor; slot 0 must
/// stay untouched.
fn shim_preprocess(
    frame: &Frame,
    mode: LetterboxMode,
    filter: ResizeFilter,
    size: usize,
    extra_pitch: usize,
) -> Vec<f32> {
    let dev = PitchedFrame::from_frame(frame, extra_pitch);
    let lb = Letterbox::with_mode(mode, frame.width, frame.height, size);
    let plane = lb.len();
    let mut out = vec![-7.0f32; 2 * plane];
    let cfg = preprocess_dims(lb.rows, lb.cols).cfg();
    // SAFETY: the frame buffer holds both planes at the given pitch; the
    // tensor holds two slots of the letterbox's shape.
    unsafe {
        (shim().preprocess)(
            cfg.as_ptr(),
            dev.data.as_ptr(),
            dev.pitch as i32,
            dev.data.as_ptr().add(dev.uv_offset),
            dev.pitch as i32,
            frame.width as i32,
            frame.height as i32,
            lb.rows as i32,
            lb.cols as i32,
            lb.scale,
            filter.code(),
            out.as_mut_ptr(),
            1,
        );
    }
    assert!(
        out[..plane].iter().all(|&v| v == -7.0),
        "slot 0 overwritten"
    );
    out.split_off(plane)
}

#[test]
fn preprocess_matches_cpu_reference() {
    let mut rng = SmallRng::seed_from_u64(42);
    let cases = [
        (64usize, 48usize, 320usize),
        (65, 47, 320),
        (321, 241, 320),
        (1280, 720, 320),
        (47, 65, 64),
        (720, 1280, 320),
        (1, 1, 32),
        (2, 3, 16),
        (639, 480, 640),
        (1919, 1079, 320),
    ];
    let filters = [ResizeFilter::Linear, ResizeFilter::Triangle];
    for (((w, h, size), mode), filter) in cases
        .into_iter()
        .flat_map(|c| [(c, LetterboxMode::Square), (c, LetterboxMode::Rect)])
        .flat_map(|c| filters.map(|f| (c, f)))
    {
        let frame = random_frame(&mut rng, w, h);
        let mut want = vec![0.0f32; Letterbox::with_mode(mode, w, h, size).len()];
        preprocess_frame_with(&frame, mode, filter, size, &mut want);
        let got = shim_preprocess(&frame, mode, filter, size, 3);
        assert_eq!(got.len(), want.len());
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max <= 1e-5,
            "{w}x{h} -> {size} {mode} {filter}: max abs diff {max}"
        );
        // With FMA contraction off the arithmetic is the same IEEE sequence.
        let exact = got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            exact,
            "{w}x{h} -> {size} {mode} {filter}: not bit-identical (max diff {max})"
        );
    }
}

#[test]
fn preprocess_f16_rounds_like_half() {
    let mut rng = SmallRng::seed_from_u64(16);
    let (w, h, size) = (321usize, 241usize, 160usize);
    let frame = random_frame(&mut rng, w, h);
    let mut want = vec![0.0f32; 3 * size * size];
    preprocess_frame(&frame, size, &mut want);
    let dev = PitchedFrame::from_frame(&frame, 0);
    let lb = Letterbox::new(w, h, size);
    let mut out = vec![0u16; 3 * size * size];
    let cfg = preprocess_dims(size, size).cfg();
    // SAFETY: as in shim_preprocess, one slot.
    unsafe {
        (shim().preprocess_f16)(
            cfg.as_ptr(),
            dev.data.as_ptr(),
            dev.pitch as i32,
            dev.data.as_ptr().add(dev.uv_offset),
            dev.pitch as i32,
            w as i32,
            h as i32,
            size as i32,
            size as i32,
            lb.scale,
            ResizeFilter::Linear.code(),
            out.as_mut_ptr(),
            0,
        );
    }
    for (i, (&g, &v)) in out.iter().zip(&want).enumerate() {
        assert_eq!(g, half::f16::from_f32(v).to_bits(), "index {i}: value {v}");
    }
}

#[test]
fn float_to_half_is_round_to_nearest_even() {
    let to_half = shim().to_half;
    let check = |x: f32| {
        // SAFETY: a pure function.
        let got = unsafe { to_half(x) };
        let want = half::f16::from_f32(x);
        if x.is_nan() {
            assert!(half::f16::from_bits(got).is_nan(), "{x}");
        } else {
            assert_eq!(got, want.to_bits(), "{x:e} ({:#x})", x.to_bits());
        }
    };
    // Every half value, and the exact midpoints (ties) next to each.
    for h in 0..=u16::MAX {
        let v = half::f16::from_bits(h).to_f32();
        check(v);
        if v.is_finite() {
            let next = half::f16::from_bits(h.wrapping_add(1)).to_f32();
            if next.is_finite() {
                let mid = (v as f64 + next as f64) / 2.0;
                check(mid as f32);
                check(f32::from_bits((mid as f32).to_bits() + 1));
                check(f32::from_bits((mid as f32).to_bits().saturating_sub(1)));
            }
        }
    }
    for x in [
        0.0f32,
        -0.0,
        65504.0,
        65519.99,
        65520.0,
        1e-8,
        2.98e-8,
        5.96e-8,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NAN,
    ] {
        check(x);
        check(-x);
    }
    let mut rng = SmallRng::seed_from_u64(99);
    for _ in 0..2_000_000 {
        check(f32::from_bits(rng.random()));
    }
}

/// Runs decode_yolo_f32 through the shim on `[batch, 4 + classes, anchors]`.
fn shim_decode(
    out: &[f32],
    anchors: usize,
    lbs: &[Letterbox],
    thresholds: &[f32],
    capacity: usize,
) -> (Vec<Candidate>, i32) {
    let infos: Vec<ImageInfo> = lbs.iter().map(ImageInfo::from).collect();
    let mut cands = vec![Candidate::default(); capacity.max(1)];
    let mut count = 0i32;
    let cfg = decode_dims(anchors, lbs.len()).cfg();
    assert!(out.len() >= lbs.len() * (4 + thresholds.len()) * anchors);
    // SAFETY: buffers sized as the kernel expects.
    unsafe {
        (shim().decode)(
            cfg.as_ptr(),
            out.as_ptr(),
            anchors as i32,
            thresholds.len() as i32,
            thresholds.as_ptr(),
            infos.as_ptr(),
            lbs.len() as i32,
            cands.as_mut_ptr(),
            capacity as i32,
            &mut count,
        );
    }
    cands.truncate((count.max(0) as usize).min(capacity));
    (cands, count)
}

/// The host reference: `decode` at the smallest threshold, then each
/// class's own threshold.
fn reference_decode(
    out: &[f32],
    anchors: usize,
    lbs: &[Letterbox],
    thr: &[f32],
) -> Vec<Vec<Detection>> {
    let per = (4 + thr.len()) * anchors;
    let min = thr.iter().copied().fold(f32::INFINITY, f32::min);
    lbs.iter()
        .enumerate()
        .map(|(i, lb)| {
            decode(&out[i * per..(i + 1) * per], anchors, lb, min)
                .into_iter()
                .filter(|d| d.score >= thr[d.class as usize])
                .collect()
        })
        .collect()
}

fn random_output(rng: &mut SmallRng, anchors: usize, classes: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; (4 + classes) * anchors];
    for a in 0..anchors {
        t[a] = rng.random_range(-30.0..350.0);
        t[anchors + a] = rng.random_range(-30.0..350.0);
        t[2 * anchors + a] = rng.random_range(-5.0..120.0);
        t[3 * anchors + a] = rng.random_range(-5.0..120.0);
        for c in 0..classes {
            // Mostly low scores like a real model, some high.
            let s: f32 = rng.random();
            t[(4 + c) * anchors + a] = s * s * s;
        }
    }
    t
}

#[test]
fn decode_matches_cpu_reference_on_random_outputs() {
    let mut rng = SmallRng::seed_from_u64(2100);
    let (anchors, classes) = (2100usize, 18usize);
    let lbs = [
        Letterbox::new(1280, 720, 320),
        Letterbox::new(480, 960, 320),
        Letterbox::new(321, 241, 320),
    ];
    for round in 0..4 {
        let mut out = Vec::new();
        for _ in 0..lbs.len() {
            out.extend(random_output(&mut rng, anchors, classes));
        }
        let thr: Vec<f32> = (0..classes).map(|_| rng.random_range(0.1..0.6)).collect();
        let (cands, count) = shim_decode(&out, anchors, &lbs, &thr, 8192);
        let got = candidates_to_detections(&cands, lbs.len());
        let want = reference_decode(&out, anchors, &lbs, &thr);
        assert_eq!(count as usize, want.iter().map(Vec::len).sum::<usize>());
        assert!(
            count > 0,
            "round {round}: the random outputs should produce candidates"
        );
        assert_eq!(got, want, "round {round}");
    }
}

#[test]
fn decode_matches_cpu_reference_on_crafted_outputs() {
    let classes = 18usize;
    let anchors = 12usize;
    let mut t = vec![0.0f32; (4 + classes) * anchors];
    let mut set = |a: usize, b: [f32; 4], scores: &[(usize, f32)]| {
        for (r, v) in b.iter().enumerate() {
            t[r * anchors + a] = *v;
        }
        for &(c, s) in scores {
            t[(4 + c) * anchors + a] = s;
        }
    };
    set(0, [60.0, 35.0, 40.0, 30.0], &[(13, 0.7)]); // plain
    set(1, [0.0, 0.0, 20.0, 20.0], &[(4, 0.5)]); // crosses the corner: clipped
    set(2, [100.0, 300.0, 20.0, 20.0], &[(4, 0.9)]); // wholly in the padding: dropped
    set(3, [100.0, 100.0, 20.0, 20.0], &[(2, 0.3), (5, 0.3)]); // tie: first class wins
    set(4, [100.0, 100.0, 20.0, 20.0], &[(0, f32::NAN), (7, 0.8)]); // NaN never wins
    set(5, [f32::NAN, 100.0, 20.0, 20.0], &[(1, 0.9)]); // NaN box: dropped
    set(6, [100.0, 100.0, -20.0, 20.0], &[(1, 0.9)]); // negative width: dropped
    set(7, [100.0, 100.0, 20.0, 20.0], &[(9, 0.25)]); // exactly at threshold: kept
    set(8, [100.0, 100.0, 20.0, 20.0], &[(9, 0.2499)]); // just below: dropped
    set(9, [f32::INFINITY, 50.0, 10.0, 10.0], &[(3, 0.9)]); // infinite: clipped away
    set(10, [319.0, 179.0, 2.0, 2.0], &[(17, 1.0)]); // bottom-right edge of the picture
    set(11, [160.0, 90.0, 1000.0, 1000.0], &[(6, 0.95), (8, 0.96)]); // whole frame
    let lbs = [Letterbox::new(1280, 720, 320)];
    let mut thr = vec![0.25f32; classes];
    thr[13] = 0.69;
    let (cands, count) = shim_decode(&t, anchors, &lbs, &thr, 64);
    let got = candidates_to_detections(&cands, 1);
    let want = reference_decode(&t, anchors, &lbs, &thr);
    assert_eq!(got, want);
    let classes_found: Vec<u8> = got[0].iter().map(|d| d.class).collect();
    assert_eq!(classes_found, vec![13, 4, 2, 7, 9, 17, 8]);
    assert_eq!(count, 7);
    // A full candidate buffer: the count still tells the host how many.
    let (few, count) = shim_decode(&t, anchors, &lbs, &thr, 3);
    assert_eq!((few.len(), count), (3, 7));
}
