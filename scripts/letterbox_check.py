"""Checks the rectangular letterbox (`[detector] letterbox = "rect"`, the
default) against NudeNet's square one on the real model, the way
scripts/quantize.py checks a quantized model.

On composited frames (a photo pasted over another at random scales and
places) of several sizes, every box the square input reports (score >=
--score, after NMS) must be reported by the rectangular input (same class,
IoU >= 0.5) at score >= --score - --margin. Prints, per size, the input
shape, how many boxes are found at --score and at the margin, the boxes the
rect input adds, and the 1-thread inference time of both shapes; exits 1
when a box is missed at the margin.

    /tmp/qenv/bin/python scripts/letterbox_check.py       # venv: docs/BENCHMARKS.md
"""

import argparse
import glob
import os
import sys

import numpy as np
from PIL import Image

from modelcheck import SIZE, boxes, composite, letterbox, match, median_ms, rect_dims, session


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/320n.onnx")
    ap.add_argument("--photos", default="models/photos")
    ap.add_argument("--frames", type=int, default=100, help="composited frames per size")
    ap.add_argument("--score", type=float, default=0.25, help="the pipeline's NMS score")
    ap.add_argument("--margin", type=float, default=0.05,
                    help="how far below --score a rect box may score and still count as found")
    a = ap.parse_args()
    photos = [Image.open(p).convert("RGB") for p in sorted(glob.glob(os.path.join(a.photos, "*.png")))]
    if not photos:
        sys.exit(f"letterbox_check: no photos in {a.photos} (run scripts/setup.sh)")
    s = session(a.model)
    name = s.get_inputs()[0].name
    missed = []
    for seed, (w, h) in enumerate([(1280, 720), (1920, 1080), (720, 1280), (640, 480)]):
        rng = np.random.default_rng(100 + seed)
        rows, cols = rect_dims(w, h)
        total = found = found_margin = extra = 0
        for k in range(a.frames):
            x = letterbox(composite(photos, rng, w, h))
            xr = np.ascontiguousarray(x[:, :, :rows, :cols])
            ref = boxes(s.run(None, {name: x})[0][0], a.score)
            yr = s.run(None, {name: xr})[0][0]
            f, e = match(ref, boxes(yr, a.score))
            low = boxes(yr, a.score - a.margin)
            total, found, extra = total + len(ref), found + f, extra + e
            for b, c, sc in ref:
                if match([(b, c, sc)], low)[0]:
                    found_margin += 1
                else:
                    missed.append((f"{w}x{h}", k, int(c), round(float(sc), 3)))
        sq_ms = median_ms(s, name, x)
        rect_ms = median_ms(s, name, xr)
        print(f"{w}x{h}: rect {cols}x{rows} vs square {SIZE}x{SIZE}: {found}/{total} boxes at "
              f"{a.score}, {found_margin}/{total} at {a.score - a.margin:.2f}, {extra} added; "
              f"1-thread inference {sq_ms:.1f} -> {rect_ms:.1f} ms")
    if missed:
        sys.exit(f"letterbox_check: rect missed {len(missed)} box(es) (size, frame, class, score): {missed[:10]}")


if __name__ == "__main__":
    main()
