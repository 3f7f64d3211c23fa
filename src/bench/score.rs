//! Scoring a run after it ends: every output frame decoded and judged
//! against the synthetic ground truth and, with the audit, against the
//! reference detector's regions (the audit's own judges).

use super::clips::{stream_scenario, synth_config};
use super::report::{self, over_censored, truth_coverage, FrameScore, StreamRun};
use super::BenchOptions;
use crate::audit::{judge_regions, judge_truth};
use crate::codec::Decoder;
use crate::config::Config;
use crate::detect::Detector;
use crate::error::Error;
use crate::frame::BBox;
use crate::policy::Policy;
use crate::synth::{Scenario, Synth};

/// Fills every sample's score: ground-truth coverage, the ground-truth gate
/// (each face hidden in the decoded output), recall and over-censoring, and
/// with `o.audit` the leak check (detector on the input frame, masks and
/// pixels of the decoded output, like `livecensor audit`) and the reference
/// detector's recall.
pub(super) fn score(cfg: &Config, o: &BenchOptions, runs: &mut [StreamRun]) -> Result<(), Error> {
    let policy: Policy = cfg.policy()?;
    let th = crate::audit::AuditThresholds::default();
    // One detector with the pipeline's low floors serves both passes: NMS
    // keeps the same boxes above any threshold whatever lower ones it sees.
    let mut det = if o.audit {
        Some(Detector::new(&cfg.pipeline_detector()?)?)
    } else {
        None
    };
    let (mode, resize) = (cfg.detector.letterbox, cfg.detector.resize);
    let pipeline_policy = policy.lowered(mode.score_margin());
    let mut scenarios: Vec<Scenario> = Vec::new();
    for k in 0..runs.len() {
        let s = stream_scenario(o, k);
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    }
    let found_by = |dets: &[crate::frame::Detection], b: &BBox| {
        dets.iter().any(|d| d.bbox.iou(b) >= report::RECALL_IOU)
    };
    for s in scenarios {
        let synth = Synth::new(s, synth_config(o))?;
        let idx: Vec<usize> = (0..runs.len())
            .filter(|&k| stream_scenario(o, k) == s)
            .collect();
        let mut decs = idx
            .iter()
            .map(|_| Decoder::new())
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..o.frames {
            let f = synth.frame(i);
            let (input, truth) = (f.frame, f.truth);
            let boxes: Vec<BBox> = truth.iter().map(|t| t.bbox).collect();
            let visible: Vec<BBox> = truth.iter().flat_map(|t| t.visible_parts()).collect();
            let (found, pipeline_found): (Vec<_>, Vec<_>) = match &mut det {
                Some(d) => (
                    d.detect_frame(&input)?
                        .into_iter()
                        .filter(|d| policy.accepts(d))
                        .collect(),
                    d.detect_frame_with(&input, mode, resize)?
                        .into_iter()
                        .filter(|d| pipeline_policy.accepts(d))
                        .collect(),
                ),
                None => (Vec::new(), Vec::new()),
            };
            for (j, &k) in idx.iter().enumerate() {
                let Some(sample) = runs[k].samples.iter_mut().find(|x| x.index == i as u64) else {
                    continue;
                };
                // Every output frame is decoded: the decoder's state needs
                // them all, and the gate judges pixels.
                let output = decs[j].decode(&sample.au)?.into_iter().next();
                let (covered, area) = truth_coverage(&visible, &sample.masks);
                let mut sc = FrameScore {
                    truth_area: area,
                    truth_covered: covered,
                    over_censored: over_censored(&boxes, &sample.masks, o.width, o.height),
                    truth_faces: boxes.len() as u32,
                    ..FrameScore::default()
                };
                // The audit's own judges: one leak criterion for both.
                let left = judge_truth(
                    i as u64,
                    &input,
                    output.as_ref(),
                    &sample.masks,
                    &truth,
                    &th,
                );
                sc.truth_uncensored = left.len() as u32;
                sample.truth_misses = left
                    .into_iter()
                    .map(|l| {
                        let [x0, y0, x1, y1] = l.bbox;
                        report::TruthMiss {
                            frame: l.frame,
                            object: l.object,
                            bbox: l.bbox,
                            visible: l.visible,
                            mask_coverage: l.mask_coverage,
                            detail_ratio: l.detail_ratio,
                            detected: found_by(&sample.detections, &BBox::new(x0, y0, x1, y1)),
                        }
                    })
                    .collect();
                for b in &boxes {
                    sc.truth_found += u32::from(found_by(&pipeline_found, b));
                    sc.truth_found_reference += u32::from(found_by(&found, b));
                }
                if det.is_some() {
                    sc.audited = true;
                    sc.regions = found.len() as u32;
                    let leaks = judge_regions(
                        i as u64,
                        &input,
                        output.as_ref(),
                        &found,
                        &sample.masks,
                        &th,
                    );
                    sc.leaks = leaks.len() as u32;
                }
                sample.score = sc;
            }
        }
    }
    Ok(())
}
