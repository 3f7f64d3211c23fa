//! `livecensor audit`: the instrument behind the no-leak claim. Runs the
//! detector on every input frame and checks that each region it finds (that
//! the policy censors) is covered in the output, both by the sidecar's masks
//! and by the pixels (the region's detail is gone).

use crate::censor::detail_ratio;
use crate::detect::{Detector, DetectorConfig, CLASSES};
use crate::error::{Error, PipelineError};
use crate::frame::{BBox, Detection, Frame, Mask, MaskOrigin, MaskShape};
use crate::pipeline::sidecar::{read_sidecar, FrameRecord, Status};
use crate::policy::Policy;
use crate::source::VideoReader;
use serde::Serialize;
use std::path::Path;

/// Pass marks.
#[derive(Clone, Copy, Debug)]
pub struct AuditThresholds {
    /// Share of a detection's box the masks must cover.
    pub min_mask_coverage: f32,
    /// Share of a ground-truth box the masks must cover (the truth is the
    /// region itself, not a detector's estimate of it: stricter).
    pub min_truth_coverage: f32,
    /// Highest allowed ratio of detail left in the box (after / before).
    pub max_detail_ratio: f32,
    /// Boxes with less detail than this before censoring have nothing to
    /// hide; the pixel check skips them.
    pub min_detail: f32,
}

impl Default for AuditThresholds {
    fn default() -> Self {
        AuditThresholds {
            min_mask_coverage: 0.9,
            min_truth_coverage: 0.95,
            max_detail_ratio: 0.35,
            min_detail: 1.0,
        }
    }
}

/// One region found on an input frame and not hidden in the output.
#[derive(Clone, Debug, Serialize)]
pub struct Leak {
    pub frame: u64,
    pub class: &'static str,
    pub score: f32,
    pub bbox: [f32; 4],
    /// Share of the box under the sidecar's masks.
    pub mask_coverage: f32,
    /// Detail left in the box (after / before).
    pub detail_ratio: f32,
    pub by_masks: bool,
    pub by_pixels: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditReport {
    pub input_frames: u64,
    pub output_frames: u64,
    pub sidecar_frames: u64,
    /// Regions the detector found on input frames that the policy censors.
    pub regions: u64,
    pub verified: u64,
    pub predicted: u64,
    pub fail_closed: u64,
    pub leaked_frames: Vec<u64>,
    pub leaks: Vec<Leak>,
    /// Share of the frame area under masks, averaged over frames.
    pub mean_masked_area: f64,
    /// Frame counts differ between input, output and sidecar.
    pub mismatch: Option<String>,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.leaked_frames.is_empty() && self.mismatch.is_none()
    }
}

/// How well one region of an input frame is hidden in the output frame:
/// the one leak criterion of `audit`, the bench and the ground-truth gate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hidden {
    /// Share of the region under the frame's masks.
    pub mask_coverage: f32,
    /// Detail left in the region (after / before); 0 when the region had
    /// too little detail to judge, infinite when the output is missing.
    pub detail_ratio: f32,
}

impl Hidden {
    /// Measures region `b` of `input` in `output` (`None`: the output
    /// frame could not be decoded, which hides nothing).
    pub fn measure(
        input: &Frame,
        output: Option<&Frame>,
        b: &BBox,
        masks: &[Mask],
        th: &AuditThresholds,
    ) -> Hidden {
        let detail_ratio = match output {
            Some(out) if crate::censor::detail(input, b) >= th.min_detail => {
                detail_ratio(input, out, b)
            }
            Some(_) => 0.0,
            None => f32::INFINITY,
        };
        Hidden {
            mask_coverage: coverage(b, masks),
            detail_ratio,
        }
    }

    /// [`Hidden::measure`] over a region made of disjoint rectangles (the
    /// visible part of a partly covered face): coverage and detail are
    /// area-weighted over the parts. Slivers under 2 px are left out.
    pub fn measure_parts(
        input: &Frame,
        output: Option<&Frame>,
        parts: &[BBox],
        masks: &[Mask],
        th: &AuditThresholds,
    ) -> Hidden {
        let parts: Vec<&BBox> = parts
            .iter()
            .filter(|p| p.width() >= 2.0 && p.height() >= 2.0)
            .collect();
        let area: f32 = parts.iter().map(|p| p.area()).sum();
        if area <= 0.0 {
            return Hidden {
                mask_coverage: 1.0,
                detail_ratio: 0.0,
            };
        }
        let weighted = |f: &dyn Fn(&BBox) -> f32| -> f32 {
            parts.iter().map(|p| f(p) * p.area()).sum::<f32>() / area
        };
        let mask_coverage = weighted(&|p| coverage(p, masks));
        let before = weighted(&|p| crate::censor::detail(input, p));
        let detail_ratio = match output {
            Some(out) if before >= th.min_detail => {
                if (out.width, out.height) != (input.width, input.height) {
                    f32::INFINITY
                } else {
                    weighted(&|p| crate::censor::detail(out, p)) / before
                }
            }
            Some(_) => 0.0,
            None => f32::INFINITY,
        };
        Hidden {
            mask_coverage,
            detail_ratio,
        }
    }

    /// Under `min_coverage` by the masks, or too much detail left.
    pub fn leaks(&self, min_coverage: f32, th: &AuditThresholds) -> (bool, bool) {
        (
            self.mask_coverage < min_coverage,
            self.detail_ratio > th.max_detail_ratio,
        )
    }
}

/// Whether a point lies under a mask.
pub fn mask_contains(m: &Mask, x: f32, y: f32) -> bool {
    if m.origin == MaskOrigin::FullFrame {
        return true;
    }
    let b = &m.bbox;
    if x < b.x0 || x >= b.x1 || y < b.y0 || y >= b.y1 {
        return false;
    }
    match m.shape {
        MaskShape::Rect => true,
        MaskShape::Ellipse => {
            let (cx, cy) = b.center();
            let (rx, ry) = (b.width() * 0.5, b.height() * 0.5);
            if rx <= 0.0 || ry <= 0.0 {
                return false;
            }
            let (dx, dy) = ((x - cx) / rx, (y - cy) / ry);
            dx * dx + dy * dy <= 1.0
        }
    }
}

/// Share of `b` covered by the union of `masks`, on a sample grid.
pub fn coverage(b: &BBox, masks: &[Mask]) -> f32 {
    if b.is_empty() {
        return 1.0;
    }
    const N: usize = 24;
    let mut hit = 0usize;
    for j in 0..N {
        for i in 0..N {
            let x = b.x0 + (i as f32 + 0.5) * b.width() / N as f32;
            let y = b.y0 + (j as f32 + 0.5) * b.height() / N as f32;
            if masks.iter().any(|m| mask_contains(m, x, y)) {
                hit += 1;
            }
        }
    }
    hit as f32 / (N * N) as f32
}

fn masked_area(r: &FrameRecord, width: usize, height: usize) -> f64 {
    let frame = BBox::new(0.0, 0.0, width as f32, height as f32);
    if frame.is_empty() {
        return 0.0;
    }
    coverage(&frame, &r.masks) as f64
}

/// The files an audit compares.
#[derive(Clone, Copy, Debug)]
pub struct AuditFiles<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub sidecar: &'a Path,
    /// Frame rate of raw .h264 files.
    pub fps_hint: Option<f64>,
}

/// Audits `output` (and its sidecar) against `input`.
pub fn audit(
    files: AuditFiles,
    policy: &Policy,
    detector: &DetectorConfig,
    th: AuditThresholds,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<AuditReport, Error> {
    let AuditFiles {
        input,
        output,
        sidecar,
        fps_hint,
    } = files;
    let records = read_sidecar(sidecar)?;
    let mut det = Detector::new(detector)?;
    let mut src = VideoReader::open(input, fps_hint)?;
    let mut out = VideoReader::open(output, fps_hint)?;
    let expected = src.info().frame_count;
    let mut rep = AuditReport {
        sidecar_frames: records.len() as u64,
        ..AuditReport::default()
    };
    let mut area_sum = 0.0;
    loop {
        let a = src.next_frame().transpose()?;
        let b = out.next_frame().transpose()?;
        let (a, b) = match (a, b) {
            (None, None) => break,
            (Some(_), None) => {
                rep.input_frames += 1;
                rep.mismatch = Some("output has fewer frames than input".into());
                continue;
            }
            (None, Some(_)) => {
                rep.output_frames += 1;
                rep.mismatch = Some("output has more frames than input".into());
                continue;
            }
            (Some(a), Some(b)) => (a, b),
        };
        let i = rep.input_frames;
        rep.input_frames += 1;
        rep.output_frames += 1;
        progress(rep.input_frames, expected);
        let Some(rec) = records.get(i as usize) else {
            rep.mismatch = Some(format!("sidecar has no record for frame {i}"));
            continue;
        };
        match rec.status {
            Status::Verified => rep.verified += 1,
            Status::Predicted => rep.predicted += 1,
            Status::FailClosed => rep.fail_closed += 1,
        }
        area_sum += masked_area(rec, a.frame.width, a.frame.height);
        if a.frame.width != b.frame.width || a.frame.height != b.frame.height {
            rep.mismatch = Some(format!(
                "frame {i}: output is {}x{}, input {}x{}",
                b.frame.width, b.frame.height, a.frame.width, a.frame.height
            ));
            continue;
        }
        let found: Vec<Detection> = det
            .detect_frame(&a.frame)?
            .into_iter()
            .filter(|d| policy.accepts(d))
            .collect();
        let mut leaked = false;
        for d in found {
            rep.regions += 1;
            let h = Hidden::measure(&a.frame, Some(&b.frame), &d.bbox, &rec.masks, &th);
            let (by_masks, by_pixels) = h.leaks(th.min_mask_coverage, &th);
            let (cov, ratio) = (h.mask_coverage, h.detail_ratio);
            if by_masks || by_pixels {
                leaked = true;
                rep.leaks.push(Leak {
                    frame: i,
                    class: CLASSES.get(d.class as usize).copied().unwrap_or("?"),
                    score: d.score,
                    bbox: [d.bbox.x0, d.bbox.y0, d.bbox.x1, d.bbox.y1],
                    mask_coverage: cov,
                    detail_ratio: ratio,
                    by_masks,
                    by_pixels,
                });
            }
        }
        if leaked {
            rep.leaked_frames.push(i);
        }
    }
    if rep.input_frames == 0 {
        return Err(
            PipelineError::Other(format!("{}: no frames to audit", input.display())).into(),
        );
    }
    if rep.sidecar_frames != rep.input_frames && rep.mismatch.is_none() {
        rep.mismatch = Some(format!(
            "sidecar has {} records for {} frames",
            rep.sidecar_frames, rep.input_frames
        ));
    }
    rep.mean_masked_area = area_sum / rep.input_frames as f64;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(b: BBox, shape: MaskShape) -> Mask {
        Mask {
            bbox: b,
            shape,
            origin: MaskOrigin::Detected,
            class: 0,
        }
    }

    #[test]
    fn coverage_of_rect_ellipse_and_full_frame() {
        let b = BBox::new(0.0, 0.0, 100.0, 100.0);
        assert_eq!(coverage(&b, &[m(b, MaskShape::Rect)]), 1.0);
        let e = coverage(&b, &[m(b, MaskShape::Ellipse)]);
        assert!((e - std::f32::consts::FRAC_PI_4).abs() < 0.03, "{e}");
        let half = coverage(&b, &[m(BBox::new(0.0, 0.0, 50.0, 100.0), MaskShape::Rect)]);
        assert!((half - 0.5).abs() < 1e-6);
        assert_eq!(coverage(&b, &[]), 0.0);
        let full = Mask {
            bbox: BBox::new(0.0, 0.0, 1.0, 1.0),
            shape: MaskShape::Rect,
            origin: MaskOrigin::FullFrame,
            class: 255,
        };
        assert_eq!(coverage(&b, &[full]), 1.0);
        // An ellipse of the box grown by 0.2 per side covers nearly all of it.
        let grown = coverage(&b, &[m(b.expanded(0.2, 0.2), MaskShape::Ellipse)]);
        assert!(grown > 0.97, "{grown}");
    }

    #[test]
    fn a_region_in_parts_is_judged_on_its_parts_only() {
        use crate::frame::PixelFormat;
        let th = AuditThresholds::default();
        let mut input = Frame::new(PixelFormat::I420, 64, 32);
        for (i, p) in input.data.iter_mut().enumerate().take(64 * 32) {
            *p = if (i / 64 + i % 64) % 2 == 0 { 30 } else { 220 };
        }
        // The output flattens the left half only.
        let mut output = input.clone();
        for y in 0..32 {
            output.data[y * 64..y * 64 + 32].fill(128);
        }
        let left = BBox::new(0.0, 0.0, 32.0, 32.0);
        let right = BBox::new(32.0, 0.0, 64.0, 32.0);
        let masks = [m(left, MaskShape::Rect)];
        let l = Hidden::measure_parts(&input, Some(&output), &[left], &masks, &th);
        assert_eq!(l.mask_coverage, 1.0);
        assert!(l.detail_ratio < 0.05, "{l:?}");
        assert_eq!(l.leaks(0.95, &th), (false, false));
        let both = Hidden::measure_parts(&input, Some(&output), &[left, right], &masks, &th);
        assert!((both.mask_coverage - 0.5).abs() < 1e-6);
        assert!(both.detail_ratio > 0.35);
        assert_eq!(both.leaks(0.95, &th), (true, true));
        let gone = Hidden::measure_parts(&input, None, &[left], &masks, &th);
        assert!(
            gone.leaks(0.95, &th).1,
            "an undecodable output hides nothing"
        );
        let none = Hidden::measure_parts(&input, Some(&output), &[], &masks, &th);
        assert_eq!(none.leaks(0.95, &th), (false, false));
    }
}
