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
Needs a venv with onnxruntime==1.32.0, onnx, sympy, pillow and numpy
(docs/BENCHMARKS.md has the commands).
"""

import argparse
import glob
import os
import sys

import onnx
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)
from PIL import Image

from modelcheck import boxes, frames, iou, median_ms, session

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
