"""Shared pieces of the model checks (scripts/quantize.py,
scripts/letterbox_check.py): the letterbox of src/detect/preprocess.rs,
composited test frames, NudeNet's box decoding and NMS, and matching.
"""

import time

import numpy as np
import onnxruntime as ort
from PIL import Image

STRIDE = 32

SIZE = 320


def letterbox(img):
    """The letterbox of src/detect/preprocess.rs (black bottom/right), resampled
    with Pillow's antialiased BILINEAR: the filter of `resize = "triangle"`
    (on RGB rather than YUV)."""
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


def rect_dims(w, h):
    """(rows, cols) of the rectangular letterbox (Letterbox::rect): output
    rows/columns whose first tap is inside the picture, rounded up to a
    multiple of STRIDE, at most SIZE."""
    scale = np.float32(max(w, h)) / np.float32(SIZE)
    d = np.arange(SIZE, dtype=np.float32)
    first = np.maximum(np.floor((d + np.float32(0.5)) * scale - np.float32(0.5)), 0)

    def fit(n):
        live = int(np.count_nonzero(first < n))
        return min(SIZE, max(1, -(-live // STRIDE)) * STRIDE)

    return fit(h), fit(w)


def match(ref, got):
    """(boxes of ref that got has: same class, IoU >= 0.5; boxes of got
    that ref lacks)."""
    found = sum(1 for b, c, _ in ref if any(c == c2 and iou(b, b2) >= 0.5 for b2, c2, _ in got))
    extra = sum(1 for b2, c2, _ in got if not any(c == c2 and iou(b, b2) >= 0.5 for b, c, _ in ref))
    return found, extra


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
