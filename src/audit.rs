//! `livecensor audit`: the instrument behind the no-leak claim. Three
//! passes, each of which fails the audit on its own:
//! - reference: the detector on every input frame at the policy's
//!   thresholds; each region it finds must be under the sidecar's masks
//!   (>= 90%) and its detail gone from the output pixels (<= 35% left);
//! - output: the detector on every output frame at a low threshold
//!   (`--miss-threshold`, 0.1); a censored class it still finds outside the
//!   masks of a frame not censored whole is a possible miss (what the
//!   reference pass cannot see: the detector's own misses on the input);
//! - ground truth, when a truth file is given or sits beside the input:
//!   the visible part of every face must be under the masks (>= 95%) and
//!   keep no more than 35% of its detail, judged exactly as the bench does.
//!
//! What neither detector run finds and no truth file names is beyond it, and
//! the reference is the censor's own model family.

use crate::censor::detail_ratio;
use crate::detect::{Detector, DetectorConfig, LetterboxMode, CLASSES};
use crate::error::{ConfigError, Error, PipelineError};
use crate::frame::{BBox, Detection, Frame, Mask, MaskOrigin, MaskShape};
use crate::pipeline::sidecar::{read_sidecar, FrameRecord, SidecarHeader, Status};
use crate::policy::{Policy, PolicyFile, PolicyOverrides};
use crate::source::VideoReader;
use crate::synth::{read_truth, truth_path, GroundTruth};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// A censored class the detector still finds on an output frame, at the
/// low threshold, outside the frame's masks: something viewers got that the
/// censor may have missed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PossibleMiss {
    pub frame: u64,
    pub class: &'static str,
    pub score: f32,
    pub bbox: [f32; 4],
    /// Share of the box under the sidecar's masks (under 90%).
    pub mask_coverage: f32,
}

/// A ground-truth face an output frame leaves visible.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TruthLeak {
    pub frame: u64,
    pub object: u32,
    /// The face box (x0, y0, x1, y1); its visible parts are judged.
    pub bbox: [f32; 4],
    /// Share of the face inside the frame and not covered.
    pub visible: f32,
    /// Share of the visible parts under the masks.
    pub mask_coverage: f32,
    /// Detail left in the visible parts (after / before).
    pub detail_ratio: f32,
    pub by_masks: bool,
    pub by_pixels: bool,
}

/// The ground-truth pass.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TruthReport {
    pub path: PathBuf,
    /// Face-frames judged (a face on a frame counts once per frame).
    pub faces: u64,
    pub left_visible: Vec<TruthLeak>,
    pub left_visible_frames: Vec<u64>,
}

/// An output frame the decoder could not decode: its pixels prove nothing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Undecodable {
    pub frame: u64,
    pub reason: String,
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
    /// The first of `mismatches`.
    pub mismatch: Option<String>,
    /// Frame counts or indices that do not line up between input, output,
    /// sidecar and truth file (a missing or duplicate record, ...).
    pub mismatches: Vec<String>,
    /// Where the policy came from (the sidecar's header, flags over it, or
    /// the configuration for a sidecar without a header).
    pub policy_source: String,
    /// False when the sidecar has no header (an older livecensor wrote
    /// it): the policy is then the configuration's, a guess.
    pub policy_from_sidecar: bool,
    /// The policy judged by.
    pub policy: PolicyFile,
    pub sidecar_header: Option<SidecarHeader>,
    /// The output pass's lowest score.
    pub miss_threshold: f32,
    /// Detections of censored classes on output frames not censored whole.
    pub output_regions: u64,
    pub possible_misses: Vec<PossibleMiss>,
    pub miss_frames: Vec<u64>,
    /// `None` without a truth file.
    pub truth: Option<TruthReport>,
    pub undecodable_frames: Vec<Undecodable>,
}

impl AuditReport {
    /// Why the audit fails; empty when it passes.
    pub fn failures(&self) -> Vec<&'static str> {
        let truth_left = self
            .truth
            .as_ref()
            .is_some_and(|t| !t.left_visible.is_empty());
        [
            (!self.leaked_frames.is_empty(), "leaks"),
            (!self.possible_misses.is_empty(), "possible misses"),
            (truth_left, "ground truth left visible"),
            (
                !self.undecodable_frames.is_empty(),
                "undecodable output frames",
            ),
            (!self.mismatches.is_empty(), "mismatch"),
        ]
        .into_iter()
        .filter(|(failed, _)| *failed)
        .map(|(_, why)| why)
        .collect()
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    fn mismatch(&mut self, m: String) {
        if self.mismatch.is_none() {
            self.mismatch = Some(m.clone());
        }
        self.mismatches.push(m);
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
    /// Ground truth (`--truth`, or [`truth_beside`] the input).
    pub truth: Option<&'a Path>,
    /// Frame rate of raw .h264 files.
    pub fps_hint: Option<f64>,
}

/// `IN.truth.jsonl` when it exists (what `livecensor synth` writes).
pub fn truth_beside(input: &Path) -> Option<PathBuf> {
    Some(truth_path(input)).filter(|p| p.is_file())
}

/// How an audit judges, besides the policy.
#[derive(Clone, Copy, Debug)]
pub struct AuditOptions {
    pub thresholds: AuditThresholds,
    /// The output pass's lowest score (`--miss-threshold`).
    pub miss_threshold: f32,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            thresholds: AuditThresholds::default(),
            miss_threshold: 0.1,
        }
    }
}

/// The policy an audit judges by and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ChosenPolicy {
    pub policy: PolicyFile,
    pub source: String,
    pub from_sidecar: bool,
}

/// The sidecar header's policy (what the censor applied) with the policy
/// flags given over it; without a header (a sidecar from before version 2)
/// the configured policy (config file and flags), which may not be what the
/// censor ran with.
pub fn choose_policy(
    header: Option<&SidecarHeader>,
    configured: &PolicyFile,
    overrides: &PolicyOverrides,
) -> ChosenPolicy {
    let Some(h) = header else {
        return ChosenPolicy {
            policy: configured.clone(),
            source: "configuration and flags (the sidecar has no header: written before \
                     sidecar version 2, so the policy the censor ran with is unknown)"
                .into(),
            from_sidecar: false,
        };
    };
    let mut policy = h.policy.clone();
    overrides.apply(&mut policy);
    let flags = overrides.flags();
    let mut source = format!("sidecar header (version {}, mode {})", h.version, h.mode);
    if !flags.is_empty() {
        source.push_str(&format!(", overridden by {}", flags.join(" ")));
    }
    ChosenPolicy {
        policy,
        source,
        from_sidecar: true,
    }
}

/// Sidecar records matched to frames by their `frame` index, not by line.
#[derive(Debug, Default)]
pub struct RecordIndex {
    by_frame: BTreeMap<u64, FrameRecord>,
    /// Duplicate records, found while indexing.
    pub problems: Vec<String>,
}

impl RecordIndex {
    pub fn new(records: Vec<FrameRecord>) -> RecordIndex {
        let mut ix = RecordIndex::default();
        for r in records {
            let f = r.frame;
            if ix.by_frame.insert(f, r).is_some() {
                ix.problems
                    .push(format!("sidecar has more than one record for frame {f}"));
            }
        }
        ix
    }

    pub fn get(&self, frame: u64) -> Option<&FrameRecord> {
        self.by_frame.get(&frame)
    }

    /// Records for frames at or past `frames` (the clip has no such frame).
    pub fn past_end(&self, frames: u64) -> Vec<String> {
        self.by_frame
            .range(frames..)
            .map(|(f, _)| format!("sidecar has a record for frame {f}, past the last frame"))
            .collect()
    }
}

/// Reference pass on one frame: each region `found` on the input must be
/// under `masks` and its detail gone from `output` (`None`: undecodable,
/// which hides nothing). The bench counts its leaks with it too.
pub fn judge_regions(
    frame: u64,
    input: &Frame,
    output: Option<&Frame>,
    found: &[Detection],
    masks: &[Mask],
    th: &AuditThresholds,
) -> Vec<Leak> {
    found
        .iter()
        .filter_map(|d| {
            let h = Hidden::measure(input, output, &d.bbox, masks, th);
            let (by_masks, by_pixels) = h.leaks(th.min_mask_coverage, th);
            (by_masks || by_pixels).then(|| Leak {
                frame,
                class: class_name(d.class),
                score: d.score,
                bbox: [d.bbox.x0, d.bbox.y0, d.bbox.x1, d.bbox.y1],
                mask_coverage: h.mask_coverage,
                detail_ratio: h.detail_ratio,
                by_masks,
                by_pixels,
            })
        })
        .collect()
}

/// Output pass on one frame: every detection `found` on the output of a
/// class `policy` censors, at `min_score` or more, must be under the
/// record's masks, unless the frame was censored whole. Returns how many
/// detections were judged and the possible misses among them.
pub fn judge_output(
    found: &[Detection],
    rec: &FrameRecord,
    policy: &Policy,
    min_score: f32,
    th: &AuditThresholds,
) -> (u64, Vec<PossibleMiss>) {
    let whole = rec.status == Status::FailClosed
        || rec.masks.iter().any(|m| m.origin == MaskOrigin::FullFrame);
    if whole {
        return (0, Vec::new());
    }
    let judged: Vec<&Detection> = found
        .iter()
        .filter(|d| policy.censors_class(d.class) && d.score >= min_score)
        .collect();
    let misses = judged
        .iter()
        .filter_map(|d| {
            let cov = coverage(&d.bbox, &rec.masks);
            (cov < th.min_mask_coverage).then(|| PossibleMiss {
                frame: rec.frame,
                class: class_name(d.class),
                score: d.score,
                bbox: [d.bbox.x0, d.bbox.y0, d.bbox.x1, d.bbox.y1],
                mask_coverage: cov,
            })
        })
        .collect();
    (judged.len() as u64, misses)
}

/// Ground truth on one frame, as the bench judges it: each face's visible
/// parts must be under `masks` (`min_truth_coverage`) and keep no more than
/// `max_detail_ratio` of their detail in `output` (`None`: undecodable).
pub fn judge_truth(
    frame: u64,
    input: &Frame,
    output: Option<&Frame>,
    masks: &[Mask],
    truth: &[GroundTruth],
    th: &AuditThresholds,
) -> Vec<TruthLeak> {
    truth
        .iter()
        .filter_map(|t| {
            let h = Hidden::measure_parts(input, output, &t.visible_parts(), masks, th);
            let (by_masks, by_pixels) = h.leaks(th.min_truth_coverage, th);
            let b = &t.bbox;
            (by_masks || by_pixels).then_some(TruthLeak {
                frame,
                object: t.object,
                bbox: [b.x0, b.y0, b.x1, b.y1],
                visible: t.visible_fraction,
                mask_coverage: h.mask_coverage,
                detail_ratio: h.detail_ratio,
                by_masks,
                by_pixels,
            })
        })
        .collect()
}

fn class_name(class: u8) -> &'static str {
    CLASSES.get(class as usize).copied().unwrap_or("?")
}

/// Truth boxes more than a pixel outside the frame: a truth file of
/// another clip (or another size).
fn truth_outside(frame: u64, truth: &[GroundTruth], width: usize, height: usize) -> Option<String> {
    let (w, h) = (width as f32 + 1.0, height as f32 + 1.0);
    truth
        .iter()
        .find(|t| t.bbox.x0 < -1.0 || t.bbox.y0 < -1.0 || t.bbox.x1 > w || t.bbox.y1 > h)
        .map(|t| {
            let b = &t.bbox;
            format!(
                "truth file: frame {frame}: box [{:.0},{:.0},{:.0},{:.0}] lies outside the \
                 {width}x{height} frame (the truth of another clip?)",
                b.x0, b.y0, b.x1, b.y1
            )
        })
}

/// The detector settings of the output pass: NudeNet's square input (the
/// reference) with candidates and NMS down to `min_score`.
fn miss_detector(detector: &DetectorConfig, min_score: f32) -> DetectorConfig {
    DetectorConfig {
        letterbox: LetterboxMode::Square,
        min_score,
        nms_score: min_score,
        ..detector.clone()
    }
}

/// Audits `output` (and its sidecar, and the ground truth when given)
/// against `input`. The policy is the sidecar header's, with `overrides`
/// over it; `configured` is used only for a sidecar without a header.
pub fn audit(
    files: AuditFiles,
    configured: &PolicyFile,
    overrides: &PolicyOverrides,
    detector: &DetectorConfig,
    opts: AuditOptions,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<AuditReport, Error> {
    let AuditFiles {
        input,
        output,
        sidecar,
        truth,
        fps_hint,
    } = files;
    let th = opts.thresholds;
    if !(opts.miss_threshold.is_finite() && (0.0..=1.0).contains(&opts.miss_threshold)) {
        return Err(ConfigError::Value {
            key: "--miss-threshold".into(),
            value: opts.miss_threshold.to_string(),
            reason: "must be between 0 and 1".into(),
        }
        .into());
    }
    let side = read_sidecar(sidecar)?;
    let chosen = choose_policy(side.header.as_ref(), configured, overrides);
    let policy = Policy::from_file(&chosen.policy).map_err(|e| match chosen.from_sidecar {
        true => Error::from(ConfigError::File {
            path: sidecar.to_path_buf(),
            reason: format!("the header's policy: {e}"),
        }),
        false => e.into(),
    })?;
    let truth = match truth {
        Some(p) => Some((p.to_path_buf(), read_truth(p)?)),
        None => None,
    };
    let mut det = Detector::new(detector)?;
    let mut low = Detector::new(&miss_detector(detector, opts.miss_threshold))?;
    let mut src = VideoReader::open(input, fps_hint)?;
    let mut out = VideoReader::open(output, fps_hint)?;
    let expected = src.info().frame_count;
    let mut rep = AuditReport {
        sidecar_frames: side.records.len() as u64,
        policy_source: chosen.source,
        policy_from_sidecar: chosen.from_sidecar,
        policy: chosen.policy,
        sidecar_header: side.header,
        miss_threshold: opts.miss_threshold,
        truth: truth.as_ref().map(|(p, _)| TruthReport {
            path: p.clone(),
            ..TruthReport::default()
        }),
        ..AuditReport::default()
    };
    let records = RecordIndex::new(side.records);
    for m in &records.problems {
        rep.mismatch(m.clone());
    }
    let mut area_sum = 0.0;
    // After a fatal error the output reader has nothing more to give.
    let mut output_ended = false;
    let (mut fewer, mut more) = (false, false);
    loop {
        let a = src.next_frame().transpose()?;
        let b = if output_ended { None } else { out.next_frame() };
        let i = rep.input_frames;
        let (a, b) = match (a, b) {
            (None, None) => break,
            (Some(_), None) => {
                rep.input_frames += 1;
                output_ended = true;
                if !std::mem::replace(&mut fewer, true) {
                    rep.mismatch("output has fewer frames than input".into());
                }
                continue;
            }
            (None, Some(_)) => {
                rep.output_frames += 1;
                if !std::mem::replace(&mut more, true) {
                    rep.mismatch("output has more frames than input".into());
                }
                continue;
            }
            (Some(a), Some(b)) => (a, b),
        };
        rep.input_frames += 1;
        progress(rep.input_frames, expected);
        // An undecodable output frame fails on its own and is not judged
        // (its pixels are a stand-in); the audit goes on with the next.
        let b = match b {
            Ok(b) => {
                rep.output_frames += 1;
                if b.corrupt {
                    rep.undecodable_frames.push(Undecodable {
                        frame: i,
                        reason: "damaged data the decoder could not decode (a grey or \
                                 partial picture stands in)"
                            .into(),
                    });
                    None
                } else {
                    Some(b)
                }
            }
            Err(e) => {
                rep.undecodable_frames.push(Undecodable {
                    frame: i,
                    reason: e.to_string(),
                });
                output_ended = true;
                None
            }
        };
        let Some(rec) = records.get(i) else {
            rep.mismatch(format!("sidecar has no record for frame {i}"));
            continue;
        };
        match rec.status {
            Status::Verified => rep.verified += 1,
            Status::Predicted => rep.predicted += 1,
            Status::FailClosed => rep.fail_closed += 1,
        }
        area_sum += masked_area(rec, a.frame.width, a.frame.height);
        let frame_truth = match &truth {
            Some((_, t)) => match t.get(&i) {
                Some(faces) => Some(faces.as_slice()),
                None => {
                    rep.mismatch(format!("truth file has no line for frame {i}"));
                    None
                }
            },
            None => None,
        };
        if let Some(m) =
            frame_truth.and_then(|t| truth_outside(i, t, a.frame.width, a.frame.height))
        {
            rep.mismatch(m);
        }
        let Some(b) = b else {
            continue;
        };
        if a.frame.width != b.frame.width || a.frame.height != b.frame.height {
            rep.mismatch(format!(
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
        rep.regions += found.len() as u64;
        let leaks = judge_regions(i, &a.frame, Some(&b.frame), &found, &rec.masks, &th);
        if !leaks.is_empty() {
            rep.leaked_frames.push(i);
            rep.leaks.extend(leaks);
        }
        let seen = low.detect_frame(&b.frame)?;
        let (judged, misses) = judge_output(&seen, rec, &policy, opts.miss_threshold, &th);
        rep.output_regions += judged;
        if !misses.is_empty() {
            rep.miss_frames.push(i);
            rep.possible_misses.extend(misses);
        }
        if let (Some(faces), Some(tr)) = (frame_truth, rep.truth.as_mut()) {
            tr.faces += faces.len() as u64;
            let left = judge_truth(i, &a.frame, Some(&b.frame), &rec.masks, faces, &th);
            if !left.is_empty() {
                tr.left_visible_frames.push(i);
                tr.left_visible.extend(left);
            }
        }
    }
    if rep.input_frames == 0 {
        return Err(
            PipelineError::Other(format!("{}: no frames to audit", input.display())).into(),
        );
    }
    for m in records.past_end(rep.input_frames) {
        rep.mismatch(m);
    }
    if let Some((_, t)) = &truth {
        for f in t.range(rep.input_frames..).map(|(f, _)| *f) {
            rep.mismatch(format!(
                "truth file has a line for frame {f}, past the last frame"
            ));
        }
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

    /// A 64x32 checkerboard (plenty of detail everywhere).
    fn board() -> Frame {
        use crate::frame::PixelFormat;
        let mut f = Frame::new(PixelFormat::I420, 64, 32);
        for (i, p) in f.data.iter_mut().enumerate().take(64 * 32) {
            *p = if (i / 64 + i % 64) % 2 == 0 { 30 } else { 220 };
        }
        f
    }

    /// `input` with the luma of `b` flattened, as a censor would leave it.
    fn flattened(input: &Frame, b: &BBox) -> Frame {
        let mut out = input.clone();
        for y in b.y0 as usize..b.y1 as usize {
            out.data[y * 64 + b.x0 as usize..y * 64 + b.x1 as usize].fill(128);
        }
        out
    }

    fn record(frame: u64, masks: Vec<Mask>) -> FrameRecord {
        FrameRecord {
            frame,
            pts: 0,
            status: Status::Verified,
            reason: None,
            masks,
            detections: vec![],
            latency_ms: 0.0,
            passthrough: false,
            passthrough_off: None,
        }
    }

    fn face(b: BBox, hidden: Vec<BBox>) -> GroundTruth {
        GroundTruth {
            bbox: b,
            object: 0,
            visible_fraction: 1.0,
            hidden,
        }
    }

    #[test]
    fn truth_is_judged_on_masks_and_pixels() {
        let th = AuditThresholds::default();
        let input = board();
        let b = BBox::new(8.0, 4.0, 40.0, 28.0);
        let truth = [face(b, vec![])];
        // Masked and flattened: hidden.
        let out = flattened(&input, &b);
        let masks = [m(b.expanded(0.1, 0.1), MaskShape::Rect)];
        assert!(judge_truth(3, &input, Some(&out), &masks, &truth, &th).is_empty());
        // Neither masked nor flattened: left visible on both counts.
        let left = judge_truth(3, &input, Some(&input), &[], &truth, &th);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(
            (left[0].frame, left[0].by_masks, left[0].by_pixels),
            (3, true, true)
        );
        assert_eq!(left[0].bbox, [8.0, 4.0, 40.0, 28.0]);
        // Masked in the sidecar but the pixels kept: caught by the pixels.
        let left = judge_truth(3, &input, Some(&input), &masks, &truth, &th);
        assert_eq!((left[0].by_masks, left[0].by_pixels), (false, true));
        // The left half hidden behind something: only the right half is
        // judged, so a mask over the right half alone is enough.
        let right = BBox::new(24.0, 4.0, 40.0, 28.0);
        let truth = [face(b, vec![BBox::new(0.0, 0.0, 24.0, 32.0)])];
        let out = flattened(&input, &right);
        let masks = [m(right, MaskShape::Rect)];
        assert!(judge_truth(3, &input, Some(&out), &masks, &truth, &th).is_empty());
        // A mask over 90% of the face passes the detector's bar, not the truth's 95%.
        let b = BBox::new(0.0, 0.0, 40.0, 30.0);
        let most = BBox::new(0.0, 0.0, 36.0, 30.0);
        let out = flattened(&input, &b);
        let left = judge_truth(
            0,
            &input,
            Some(&out),
            &[m(most, MaskShape::Rect)],
            &[face(b, vec![])],
            &th,
        );
        assert_eq!((left.len(), left[0].by_masks), (1, true));
        // An undecodable output hides nothing.
        assert_eq!(
            judge_truth(
                0,
                &input,
                None,
                &[m(b, MaskShape::Rect)],
                &[face(b, vec![])],
                &th
            )
            .len(),
            1
        );
    }

    #[test]
    fn output_pass_reports_censored_classes_outside_the_masks() {
        let th = AuditThresholds::default();
        let mut policy = Policy::default();
        policy.set_classes("FACE_FEMALE").unwrap();
        let female = crate::detect::class_index("FACE_FEMALE").unwrap();
        let male = crate::detect::class_index("FACE_MALE").unwrap();
        let d = |class, score, b: BBox| Detection {
            bbox: b,
            class,
            score,
        };
        let masked = BBox::new(10.0, 10.0, 50.0, 50.0);
        let elsewhere = BBox::new(200.0, 10.0, 240.0, 50.0);
        let rec = record(7, vec![m(masked.expanded(0.1, 0.1), MaskShape::Rect)]);
        let found = [
            d(female, 0.12, masked),
            d(female, 0.15, elsewhere),
            d(male, 0.9, elsewhere),
            d(female, 0.05, elsewhere),
        ];
        let (judged, misses) = judge_output(&found, &rec, &policy, 0.1, &th);
        // The male face is not a censored class; 0.05 is under the threshold.
        assert_eq!(judged, 2);
        assert_eq!(
            misses,
            vec![PossibleMiss {
                frame: 7,
                class: "FACE_FEMALE",
                score: 0.15,
                bbox: [200.0, 10.0, 240.0, 50.0],
                mask_coverage: 0.0,
            }]
        );
        // Half under a mask is still a miss (under 90%).
        let half = BBox::new(30.0, 10.0, 70.0, 50.0);
        let rec = record(7, vec![m(masked, MaskShape::Rect)]);
        assert_eq!(
            judge_output(&[d(female, 0.3, half)], &rec, &policy, 0.1, &th)
                .1
                .len(),
            1
        );
        // A frame censored whole hides everything.
        let mut whole = record(7, vec![]);
        whole.status = Status::FailClosed;
        assert_eq!(judge_output(&found, &whole, &policy, 0.1, &th), (0, vec![]));
    }

    #[test]
    fn records_are_matched_by_frame_index() {
        let ix = RecordIndex::new(vec![
            record(2, vec![]),
            record(0, vec![]),
            record(1, vec![]),
        ]);
        assert!(ix.problems.is_empty());
        assert_eq!(ix.get(2).map(|r| r.frame), Some(2));
        assert!(ix.past_end(3).is_empty());
        // Frame 1 twice, frame 2 missing, frame 5 past the end of 3 frames.
        let mut dup = record(1, vec![]);
        dup.status = Status::FailClosed;
        let ix = RecordIndex::new(vec![
            record(0, vec![]),
            record(1, vec![]),
            dup,
            record(5, vec![]),
        ]);
        assert_eq!(
            ix.problems,
            vec!["sidecar has more than one record for frame 1"]
        );
        assert!(ix.get(2).is_none());
        assert_eq!(
            ix.past_end(3),
            vec!["sidecar has a record for frame 5, past the last frame"]
        );
    }

    #[test]
    fn the_sidecar_policy_wins_unless_a_flag_overrides_it() {
        use crate::config::Config;
        let mut cfg = Config::default();
        cfg.policy.classes = vec!["FACE_MALE".into()];
        let header = SidecarHeader::from_config(&cfg).unwrap();
        let configured = PolicyFile {
            classes: vec!["FACE_FEMALE".into()],
            ..PolicyFile::default()
        };
        let none = PolicyOverrides::default();
        let c = choose_policy(Some(&header), &configured, &none);
        assert!(c.from_sidecar);
        assert_eq!(c.policy.classes, vec!["FACE_MALE".to_string()]);
        assert_eq!(c.source, "sidecar header (version 2, mode strict)");
        let flags = PolicyOverrides {
            threshold: Some(0.5),
            ..PolicyOverrides::default()
        };
        let c = choose_policy(Some(&header), &configured, &flags);
        assert_eq!(
            (c.policy.classes[0].as_str(), c.policy.threshold),
            ("FACE_MALE", 0.5)
        );
        assert!(
            c.source.ends_with("overridden by --threshold"),
            "{}",
            c.source
        );
        // An old sidecar: the configuration (flags already in it), said so.
        let c = choose_policy(None, &configured, &flags);
        assert!(!c.from_sidecar);
        assert_eq!(c.policy, configured);
        assert!(c.source.contains("no header"), "{}", c.source);
    }

    #[test]
    fn every_kind_of_failure_fails_the_report() {
        assert!(AuditReport::default().passed());
        let mut r = AuditReport::default();
        r.mismatch("a".into());
        r.mismatch("b".into());
        assert_eq!((r.mismatch.as_deref(), r.mismatches.len()), (Some("a"), 2));
        assert_eq!(r.failures(), vec!["mismatch"]);
        let r = AuditReport {
            possible_misses: vec![PossibleMiss {
                frame: 0,
                class: "FACE_FEMALE",
                score: 0.2,
                bbox: [0.0; 4],
                mask_coverage: 0.0,
            }],
            undecodable_frames: vec![Undecodable {
                frame: 1,
                reason: "x".into(),
            }],
            ..AuditReport::default()
        };
        assert_eq!(
            r.failures(),
            vec!["possible misses", "undecodable output frames"]
        );
        let mut r = AuditReport {
            truth: Some(TruthReport::default()),
            ..AuditReport::default()
        };
        assert!(r.passed(), "ground truth with nothing left visible passes");
        if let Some(t) = r.truth.as_mut() {
            t.left_visible.extend(judge_truth(
                0,
                &board(),
                Some(&board()),
                &[],
                &[face(BBox::new(0.0, 0.0, 20.0, 20.0), vec![])],
                &AuditThresholds::default(),
            ));
        }
        assert_eq!(r.failures(), vec!["ground truth left visible"]);
    }

    #[test]
    fn a_miss_threshold_outside_0_to_1_is_refused_first() {
        let nowhere = Path::new("/nonexistent/x.mp4");
        let files = AuditFiles {
            input: nowhere,
            output: nowhere,
            sidecar: nowhere,
            truth: None,
            fps_hint: None,
        };
        for t in [1.5, -0.1, f32::NAN] {
            let opts = AuditOptions {
                miss_threshold: t,
                ..AuditOptions::default()
            };
            let e = audit(
                files,
                &PolicyFile::default(),
                &PolicyOverrides::default(),
                &DetectorConfig::default(),
                opts,
                &mut |_, _| {},
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("--miss-threshold"), "{e}");
        }
    }
}
