//! Turning the raw `[22, anchors]` model output into frame-space detections,
//! the way NudeNet 3.4.2 does (candidate threshold, then OpenCV-style NMS).

use super::classes::CLASSES;
use super::preprocess::Letterbox;
use crate::error::DetectError;
use crate::frame::{BBox, Detection};

/// Rows per anchor: 4 box rows (cx, cy, w, h in input pixels) then one
/// sigmoid score row per class.
pub const OUTPUT_ROWS: usize = 4 + CLASSES.len();

/// Candidates of one image's output slice (`OUTPUT_ROWS * anchors` floats,
/// row-major): an anchor is kept when its best class score is at least
/// `min_score`. Boxes go centre -> corner, are scaled by `lb.scale` (padding
/// is bottom/right, so no offset) and clipped to the frame; boxes that lie
/// wholly in the padding are dropped. A short slice decodes only the anchors
/// it fully holds.
pub fn decode(output: &[f32], anchors: usize, lb: &Letterbox, min_score: f32) -> Vec<Detection> {
    let anchors = anchors.min(output.len() / OUTPUT_ROWS);
    let row = |r: usize| &output[r * anchors..(r + 1) * anchors];
    let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
    let mut out = Vec::new();
    for i in 0..anchors {
        let mut best = (0usize, f32::NEG_INFINITY);
        for c in 0..CLASSES.len() {
            let s = output[(4 + c) * anchors + i];
            if s > best.1 {
                best = (c, s);
            }
        }
        // NaN scores never become `best`, so an all-NaN anchor stays at -inf.
        if best.1 < min_score {
            continue;
        }
        let (hw, hh) = (w[i] * 0.5, h[i] * 0.5);
        let bbox = BBox::new(
            (cx[i] - hw) * lb.scale,
            (cy[i] - hh) * lb.scale,
            (cx[i] + hw) * lb.scale,
            (cy[i] + hh) * lb.scale,
        )
        .clipped(lb.width, lb.height);
        if bbox.is_empty() {
            continue;
        }
        out.push(Detection {
            bbox,
            class: best.0 as u8,
            score: best.1,
        });
    }
    out
}

/// Anchors of a `[batch, OUTPUT_ROWS, anchors]` batch output holding
/// `len` values; any other shape is `BadOutput`. Every backend checks its
/// output with this before decoding.
pub fn output_anchors(dims: &[i64], batch: usize, len: usize) -> Result<usize, DetectError> {
    let bad = || DetectError::BadOutput {
        shape: dims.to_vec(),
    };
    let anchors = match dims {
        [b, rows, a] if *b == batch as i64 && *rows == OUTPUT_ROWS as i64 && *a > 0 => *a as usize,
        _ => return Err(bad()),
    };
    if batch.checked_mul(OUTPUT_ROWS * anchors) != Some(len) {
        return Err(bad());
    }
    Ok(anchors)
}

/// Decode then NMS of each image of a checked batch output (see
/// [`output_anchors`]); `letterboxes[i]` maps image `i` back to its frame.
pub fn decode_batch(
    data: &[f32],
    anchors: usize,
    letterboxes: &[Letterbox],
    min_score: f32,
    nms_iou: f32,
    nms_score: f32,
) -> Vec<Vec<Detection>> {
    data.chunks_exact(OUTPUT_ROWS * anchors.max(1))
        .zip(letterboxes)
        .map(|(out, lb)| nms(decode(out, anchors, lb, min_score), nms_iou, nms_score))
        .collect()
}

/// Class-agnostic non-maximum suppression with `cv2.dnn.NMSBoxes` semantics:
/// drop scores not above `min_score`, stable-sort by score descending, keep a
/// box unless its IoU with an already kept box exceeds `iou`.
pub fn nms(mut dets: Vec<Detection>, iou: f32, min_score: f32) -> Vec<Detection> {
    dets.retain(|d| d.score > min_score);
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(dets.len().min(64));
    for d in dets {
        if kept.iter().all(|k| k.bbox.iou(&d.bbox) <= iou) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x0: f32, y0: f32, x1: f32, y1: f32, class: u8, score: f32) -> Detection {
        Detection {
            bbox: BBox::new(x0, y0, x1, y1),
            class,
            score,
        }
    }

    /// A synthetic `[22, anchors]` tensor with the given (cx, cy, w, h, class, score).
    fn tensor(anchors: usize, items: &[(f32, f32, f32, f32, usize, f32)]) -> Vec<f32> {
        let mut t = vec![0.0f32; OUTPUT_ROWS * anchors];
        for (i, &(cx, cy, w, h, c, s)) in items.iter().enumerate() {
            t[i] = cx;
            t[anchors + i] = cy;
            t[2 * anchors + i] = w;
            t[3 * anchors + i] = h;
            t[(4 + c) * anchors + i] = s;
        }
        t
    }

    #[test]
    fn output_shape_is_checked_then_each_image_decoded() {
        assert_eq!(output_anchors(&[2, 22, 3], 2, 2 * 22 * 3).unwrap(), 3);
        for (dims, batch, len) in [
            (vec![2, 22, 3], 1, 22 * 3),
            (vec![2, 84, 3], 2, 2 * 84 * 3),
            (vec![2, 22, 0], 2, 0),
            (vec![2, 22, 3], 2, 100),
            (vec![22, 3], 1, 66),
        ] {
            let e = output_anchors(&dims, batch, len).unwrap_err().to_string();
            assert!(e.contains(&format!("{dims:?}")), "{e}");
        }
        let lb = Letterbox::new(320, 320, 320);
        let mut data = tensor(3, &[(50.0, 50.0, 20.0, 20.0, 1, 0.9)]);
        data.extend(tensor(3, &[(200.0, 100.0, 40.0, 20.0, 12, 0.8)]));
        let out = decode_batch(&data, 3, &[lb, lb], 0.2, 0.45, 0.25);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].len(), out[0][0].class), (1, 1));
        assert_eq!((out[1].len(), out[1][0].class), (1, 12));
        assert_eq!(out[1][0].bbox, BBox::new(180.0, 90.0, 220.0, 110.0));
    }

    #[test]
    fn nms_suppresses_across_classes() {
        let d = vec![
            det(0.0, 0.0, 10.0, 10.0, 1, 0.6),
            det(1.0, 0.0, 11.0, 10.0, 3, 0.9), // IoU with first = 90/110
            det(50.0, 50.0, 60.0, 60.0, 1, 0.5),
        ];
        let k = nms(d, 0.45, 0.25);
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].class, 3);
        assert_eq!(k[0].score, 0.9);
        assert_eq!(k[1].bbox.x0, 50.0);
    }

    #[test]
    fn nms_threshold_edges() {
        // IoU exactly 1/3: kept at thr 1/3 (suppression needs IoU > thr)...
        let a = det(0.0, 0.0, 10.0, 10.0, 0, 0.9);
        let b = det(5.0, 0.0, 15.0, 10.0, 0, 0.8);
        let iou = a.bbox.iou(&b.bbox);
        assert_eq!(nms(vec![a, b], iou, 0.25).len(), 2);
        // ...and suppressed just below it.
        assert_eq!(nms(vec![a, b], iou - 1e-4, 0.25).len(), 1);
        // Score equal to the threshold is dropped (OpenCV keeps score > thr).
        let c = det(40.0, 40.0, 50.0, 50.0, 0, 0.25);
        assert!(nms(vec![c], 0.45, 0.25).is_empty());
        assert_eq!(nms(vec![c], 0.45, 0.2499).len(), 1);
        assert!(nms(Vec::new(), 0.45, 0.25).is_empty());
    }

    #[test]
    fn nms_keeps_disjoint_and_orders_by_score() {
        let d: Vec<_> = (0..5)
            .map(|i| {
                det(
                    i as f32 * 20.0,
                    0.0,
                    i as f32 * 20.0 + 10.0,
                    10.0,
                    0,
                    0.3 + i as f32 * 0.1,
                )
            })
            .collect();
        let k = nms(d, 0.45, 0.25);
        assert_eq!(k.len(), 5);
        assert!(k.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn decode_maps_non_square_frame() {
        // 1280x720 frame -> 320 input, scale 4. A box at input (40..80, 20..50).
        let lb = Letterbox::new(1280, 720, 320);
        assert_eq!(lb.scale, 4.0);
        let t = tensor(8, &[(60.0, 35.0, 40.0, 30.0, 13, 0.7)]);
        let d = decode(&t, 8, &lb, 0.2);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].class, 13);
        assert_eq!(d[0].bbox, BBox::new(160.0, 80.0, 320.0, 200.0));
        // Portrait: 480x960 -> scale 3.
        let lb = Letterbox::new(480, 960, 320);
        let t = tensor(4, &[(100.0, 200.0, 20.0, 40.0, 2, 0.5)]);
        let d = decode(&t, 4, &lb, 0.2);
        assert_eq!(d[0].bbox, BBox::new(270.0, 540.0, 330.0, 660.0));
    }

    #[test]
    fn decode_thresholds_and_clips() {
        let lb = Letterbox::new(1280, 720, 320);
        let t = tensor(
            6,
            &[
                (0.0, 0.0, 20.0, 20.0, 4, 0.5),      // crosses the top-left corner
                (310.0, 170.0, 40.0, 20.0, 4, 0.5),  // crosses right edge and the padding
                (100.0, 300.0, 20.0, 20.0, 4, 0.9),  // wholly in the padding: dropped
                (100.0, 100.0, 20.0, 20.0, 4, 0.19), // below min_score
                (100.0, 100.0, 20.0, 20.0, 5, 0.2),  // exactly min_score: kept
            ],
        );
        let d = decode(&t, 6, &lb, 0.2);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].bbox, BBox::new(0.0, 0.0, 40.0, 40.0));
        assert_eq!(d[1].bbox, BBox::new(1160.0, 640.0, 1280.0, 720.0));
        assert_eq!(d[2].class, 5);
        for x in &d {
            assert!(x.bbox.x1 <= 1280.0 && x.bbox.y1 <= 720.0);
        }
    }

    #[test]
    fn decode_picks_best_class_and_tolerates_short_input() {
        let lb = Letterbox::new(320, 320, 320);
        let mut t = tensor(2, &[(50.0, 50.0, 10.0, 10.0, 7, 0.4)]);
        t[(4 + 9) * 2] = 0.6;
        let d = decode(&t, 2, &lb, 0.2);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].class, d[0].score), (9, 0.6));
        // Claims more anchors than the slice holds: no panic, fewer anchors.
        assert!(decode(&t[..10], 2, &lb, 0.2).is_empty());
        assert!(decode(&[], 2100, &lb, 0.2).is_empty());
    }
}
