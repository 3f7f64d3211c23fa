"""Builds models/320n-int8.onnx: NudeNet 320n with static INT8 quantization
(QDQ, per-channel weights) for CPUs with VNNI, then checks it against the
float model on frames it was not calibrated on.

The detection head's decoding (box DFL, sigmoid, concat of boxes and scores
into `output0`) stays in f32: quantized together, boxes (0..320) and scores
(0..1) share one scale and every score rounds to 0.

The check: on synthetic frames (a photo composited over another at random
scales and places, seeds disjoint from calibration) every box the float
model reports (score >= --score, after NMS) must be found by the INT8 model
(same class, IoU >= 0.5, score >= --score - --margin). The script prints the
recall and the largest score drop, and exits 1 (removing the model) when a
box is missed, so a bad quantization never reaches the pipeline.
Run it through scripts/quantize.sh (which makes the tool venv).
"""

import argparse
import glob
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)
from PIL import Image

SIZE = 320


def letterbox(img):
    """The same letterbox as src/detect/preprocess.rs (black bottom/right)."""
    w, h = img.size
    s = max(w, h)
    sq = Image.new("RGB", (s, s))
    sq.paste(img, (0, 0))
    a = np.asarray(sq.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32) / 255.0
    return a.transpose(2, 0, 1)[None].copy()


def composite(photos, rng, w=1280, h=720):
    """A photo (the subject) pasted over another (the background)."""
    bg = photos[rng.integers(len(photos))].resize((w, h))
    fg = photos[rng.integers(len(photos))]
    k = rng.uniform(0.25, 0.9) * h / fg.size[1]
    fg = fg.resize((max(8, int(fg.size[0] * k)), max(8, int(fg.size[1] * k))))
    x = int(rng.integers(0, max(1, w - fg.size[0])))
    y = int(rng.integers(0, max(1, h - fg.size[1])))
    bg.paste(fg, (x, y))
    return bg


def frames(photos, seed, n):
    rng = np.random.default_rng(seed)
    out = [letterbox(p) for p in photos]
    out += [letterbox(composite(photos, rng)) for _ in range(n)]
    return out


def boxes(y, score):
    """Rows of output0 [4 + classes, anchors] -> (xyxy, class, score) after
    class-wise NMS at IoU 0.45."""
    cls = y[4:].argmax(0)
    sc = y[4:].max(0)
    keep = np.nonzero(sc >= score)[0]
    cx, cy, bw, bh = y[0, keep], y[1, keep], y[2, keep], y[3, keep]
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    order = np.argsort(-sc[keep])
    out = []
    for i in order:
        if all(c != cls[keep[i]] or iou(xyxy[i], b) < 0.45 for b, c, _ in out):
            out.append((xyxy[i], cls[keep[i]], sc[keep[i]]))
    return out


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def median_ms(s, name, x, n=30):
    for _ in range(5):
        s.run(None, {name: x})
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        s.run(None, {name: x})
        ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/320n.onnx")
    ap.add_argument("--photos", default="models/photos")
    ap.add_argument("--out", default="models/320n-int8.onnx")
    ap.add_argument("--calib", type=int, default=96, help="composited calibration frames")
    ap.add_argument("--check", type=int, default=200, help="composited check frames")
    ap.add_argument("--score", type=float, default=0.25, help="the pipeline's NMS score")
    ap.add_argument("--margin", type=float, default=0.2,
                    help="how far below --score an INT8 box may score and still count as found")
    a = ap.parse_args()
    photos = [Image.open(p).convert("RGB") for p in sorted(glob.glob(os.path.join(a.photos, "*.png")))]
    if not photos:
        sys.exit(f"quantize: no photos in {a.photos} (run scripts/setup.sh)")
    name = session(a.model).get_inputs()[0].name
    calib = frames(photos, 1, a.calib)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x}

    pre = a.out + ".pre.onnx"
    quant_pre_process(a.model, pre, skip_symbolic_shape=True)
    head = [n.name for n in onnx.load(pre).graph.node
            if n.name.startswith("/model.22/") and "/cv" not in n.name]
    quantize_static(pre, a.out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=head)
    os.remove(pre)
    f32, i8 = session(a.model), session(a.out)
    found = total = extra = 0
    drop = 0.0
    missed = []
    for k, x in enumerate(frames(photos, 2, a.check)):
        ref = boxes(f32.run(None, {name: x})[0][0], a.score)
        got = boxes(i8.run(None, {name: x})[0][0], a.score - a.margin)
        extra += sum(1 for b2, c2, _ in got if not any(c == c2 and iou(b, b2) >= 0.5 for b, c, _ in ref))
        for b, c, s in ref:
            total += 1
            m = [s2 for b2, c2, s2 in got if c2 == c and iou(b, b2) >= 0.5]
            if m:
                found += 1
                drop = max(drop, s - max(m))
            else:
                missed.append((k, int(c), round(float(s), 3)))
    t32, t8 = median_ms(f32, name, calib[0]), median_ms(i8, name, calib[0])
    print(f"quantize: {a.out}: {found} of {total} float boxes found (score >= {a.score}, "
          f"INT8 >= {a.score - a.margin:.2f}), largest score drop {drop:.3f}, "
          f"{extra} INT8 box(es) the float model does not report (over-censoring); "
          f"1-thread inference {t32:.1f} ms -> {t8:.1f} ms ({t32 / t8:.2f}x)")
    if missed:
        os.remove(a.out)
        sys.exit(f"quantize: INT8 model missed {len(missed)} box(es) (frame, class, score): "
                 f"{missed[:10]}; model removed")


if __name__ == "__main__":
    main()
