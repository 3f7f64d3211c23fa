"""Shared by broadcaster.py and viewer.py: the picture (astronaut face moving
over a photo), where the face is for each frame counter, and the counter
encoded as black/white blocks, so the viewer can tell which frame it sees and
where the face must be without any side channel but the send-time file."""

import os
import sys
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHOTOS = os.path.join(ROOT, "models", "photos")

# Same crop and face box as src/synth/scenarios.rs (CROP, FACE): the detector
# finds a face there.
CROP = (73, 0, 300, 260)
FACE = (173, 82, 273, 179)

BITS = 16  # counter bits
CHECK = 4  # checksum bits (sum of counter nibbles mod 16)
BLOCK = 16  # block size at 720p; scaled with height

# The viewer checks the face box as a GRID x GRID grid of cells, each on its
# own; a cell whose raw picture has a mean texture (texture(): luma,
# measured at about DETAIL_LINES lines: larger frames are averaged down
# first, so the figures and --ratio mean the same at every size) below
# MIN_CELL_DETAIL is too flat to tell censored from visible. The scene's
# face cells measure 7-26 at every size from 180 to 1080 lines, so none is
# skipped today.
GRID = 3
MIN_CELL_DETAIL = 4.0
DETAIL_LINES = 360

# A/V sync marks: every FLASH_PERIOD seconds a white square (top-right,
# far from the face) shows for FLASH_ON seconds, and the audio carries a
# 1 kHz burst over the same instants; silence otherwise.
FLASH_PERIOD = 2.0
FLASH_ON = 0.1
BURST_HZ = 1000.0



def block_size(h):
    return max(4, round(BLOCK * h / 720))


def parse_spells(v):
    """`PERIOD,ON` seconds (the face in view for ON seconds at the end of
    every PERIOD), or None for a face always in view."""
    if not v:
        return None
    period, on = (float(x) for x in v.split(","))
    return period, on


class Scene:
    def __init__(self, width, height, fps, spells=None):
        self.w, self.h, self.fps = width, height, fps
        self.spells = spells
        bg = Image.open(os.path.join(PHOTOS, "coffee.png")).convert("RGB").resize((width, height))
        self.bg = np.dstack([np.asarray(bg), np.full((height, width), 255, np.uint8)])
        self.sh = max(2, round(height * 0.58))
        self.sw = max(1, round((CROP[2] - CROP[0]) * self.sh / (CROP[3] - CROP[1])))
        sprite = Image.open(os.path.join(PHOTOS, "astronaut.png")).convert("RGB").crop(CROP)
        sprite = sprite.resize((self.sw, self.sh), Image.BILINEAR)
        self.sprite = np.dstack([np.asarray(sprite), np.full((self.sh, self.sw), 255, np.uint8)])
        sx = self.sw / (CROP[2] - CROP[0])
        sy = self.sh / (CROP[3] - CROP[1])
        self.face_in_sprite = (
            (FACE[0] - CROP[0]) * sx,
            (FACE[1] - CROP[1]) * sy,
            (FACE[2] - CROP[0]) * sx,
            (FACE[3] - CROP[1]) * sy,
        )

    def sprite_pos(self, k):
        """Top-left of the sprite for counter k: a horizontal sine sweep
        (period 4 s) with a small vertical bob, in whole pixels."""
        t = k / self.fps
        x_lo, x_hi = int(self.w * 0.02), self.w - self.sw - int(self.w * 0.02)
        x = x_lo + (x_hi - x_lo) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 4.0))
        y = (self.h - self.sh) / 2 - self.h * 0.08 + self.h * 0.04 * np.sin(2 * np.pi * t / 1.7)
        return int(round(x)), int(round(max(0, y)))

    def face_on(self, k):
        """Whether frame k shows the face (with spells: the last ON seconds
        of every PERIOD; nothing to censor the rest of the time)."""
        if not self.spells:
            return True
        period, on = self.spells
        t = (k / self.fps + 1e-6) % period
        return t >= period - on

    def face_box(self, k):
        x, y = self.sprite_pos(k)
        f = self.face_in_sprite
        return (x + f[0], y + f[1], x + f[2], y + f[3])

    def render_region(self, k, box):
        """The picture of frame k inside `box` only (the face region: no
        counter or flash there): what render(k) would have there, cheaply."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, x1 = max(0, x0), min(self.w, x1)
        y0, y1 = max(0, y0), min(self.h, y1)
        img = self.bg[y0:y1, x0:x1].copy()
        sx, sy = self.sprite_pos(k)
        ix0, iy0 = max(x0, sx), max(y0, sy)
        ix1, iy1 = min(x1, sx + self.sw), min(y1, sy + self.sh)
        if ix0 < ix1 and iy0 < iy1 and self.face_on(k):
            img[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self.sprite[iy0 - sy : iy1 - sy, ix0 - sx : ix1 - sx]
        return img

    def render(self, k):
        img = self.bg.copy()
        x, y = self.sprite_pos(k)
        if self.face_on(k):
            img[y : y + self.sh, x : x + self.sw] = self.sprite
        write_counter(img, k)
        x0, y0, x1, y1 = flash_box(self.w, self.h)
        img[y0:y1, x0:x1, :3] = 255 if flash_on(k, self.fps) else 0
        return img


def flash_on(k, fps):
    """Whether frame k (captured at k / fps seconds) shows the flash."""
    t = k / fps
    return (t + 1e-6) % FLASH_PERIOD < FLASH_ON


def flash_box(w, h):
    s = 3 * block_size(h)
    return w - 2 * s, s // 2, w - s, s // 2 + s


def channels(a):
    """The colour channels of an RGBA array, or a grey (luma) one as is."""
    return a[..., :3] if a.ndim == 3 else a


def burst(t0, n, rate=48000):
    """n samples of the audio mark starting at sample t0 (int16)."""
    i = np.arange(t0, t0 + n)
    on = (i / rate + 1e-6) % FLASH_PERIOD < FLASH_ON
    x = np.sin(2 * np.pi * BURST_HZ * i / rate) * 12000 * on
    return x.astype(np.int16)


def counter_bits(k):
    k &= (1 << BITS) - 1
    # +5 so an all-black (or empty) corner never reads as a valid 0.
    check = (sum((k >> s) & 0xF for s in range(0, BITS, 4)) + 5) & 0xF
    return [(k >> i) & 1 for i in range(BITS)] + [(check >> i) & 1 for i in range(CHECK)]


def counter_origin(h):
    b = block_size(h)
    return b, h - 2 * b  # bottom-left corner, far from the face


def write_counter(img, k):
    h = img.shape[0]
    b = block_size(h)
    x0, y0 = counter_origin(h)
    for i, bit in enumerate(counter_bits(k)):
        v = 255 if bit else 0
        img[y0 : y0 + b, x0 + i * b : x0 + (i + 1) * b, :3] = v


def read_counter(img, scene_h):
    """Reads the counter from a received RGBA or luma frame of any size (the
    picture may have been scaled); None if the checksum does not match."""
    h, w = img.shape[:2]
    if h < 32 or w < 32:
        return None
    s = h / scene_h
    b = block_size(scene_h)
    x0, y0 = counter_origin(scene_h)
    bits = []
    for i in range(BITS + CHECK):
        cx = (x0 + i * b + b / 2) * s
        cy = (y0 + b / 2) * s
        r = max(1, int(b * s / 4))
        patch = channels(img[int(cy) - r : int(cy) + r, int(cx) - r : int(cx) + r])
        bits.append(1 if patch.mean() > 128 else 0)
    k = sum(bit << i for i, bit in enumerate(bits[:BITS]))
    if counter_bits(k)[BITS:] != bits[BITS:]:
        return None
    return k


def detail(gray):
    """Mean absolute Laplacian: high on photo texture, near zero on a blurred,
    pixelated or filled region."""
    g = gray.astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.abs(lap).mean())


def texture(gray):
    """Mean absolute mixed derivative (central differences: I[y-1,x-1] -
    I[y-1,x+1] - I[y+1,x-1] + I[y+1,x+1]): high on 2-D texture such as a
    face, zero on any picture of the form f(x) + g(y). Masks are axis-aligned
    rectangles, so the seam where one flat or blurred mask meets another,
    and the block edges of the codec or of libwebrtc's loss concealment,
    are such steps and count only at their corners, where detail() counts
    every pixel along them (a seam through a cell read as 0.36-0.52 of the
    face's detail there)."""
    g = gray.astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    d = g[:-2, :-2] - g[:-2, 2:] - g[2:, :-2] + g[2:, 2:]
    return float(np.abs(d).mean())


def gray(img):
    if img.ndim == 2:
        return img
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def rgb_luma(img):
    """The luma the viewer receives for an RGB(A) picture: BT.601 limited
    range, as libyuv computes it when the SDK turns the broadcaster's RGBA
    frame into I420 (16 + (66 R + 129 G + 25 B) / 256; detail 0.86 of
    gray()'s). A luma array is returned as is."""
    if img.ndim == 2:
        return img
    c = img[..., :3].astype(np.float32)
    return 16.0 + (66.0 * c[..., 0] + 129.0 * c[..., 1] + 25.0 * c[..., 2]) / 256.0


def luma(frame):
    """The Y plane of an I420 VideoFrame as an (h, w) array."""
    y = np.frombuffer(frame.get_plane(0), dtype=np.uint8)
    return y[: frame.width * frame.height].reshape(frame.height, frame.width)


def inner(box, frac=0.6):
    """The central part of a box: the check must not depend on how far the
    mask is expanded, only on the face itself being hidden."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) * frac / 2, (y1 - y0) * frac / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def cells(box, n=None):
    """The box split into an n x n grid (GRID by default), row by row from
    the top-left: every part of the face is in one cell."""
    n = n or GRID
    x0, y0, x1, y1 = box
    xs = [x0 + (x1 - x0) * i / n for i in range(n + 1)]
    ys = [y0 + (y1 - y0) * j / n for j in range(n + 1)]
    return [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(n) for i in range(n)]


def binned(img, f):
    """img averaged over f x f blocks (f <= 1: as is)."""
    if f <= 1:
        return img
    h, w = img.shape[0] // f * f, img.shape[1] // f * f
    return img[:h, :w].astype(np.float32).reshape(h // f, f, w // f, f).mean(axis=(1, 3))


class FaceCheck:
    """The face check of one scene (frame size): how much of the raw
    picture's texture survives in a received frame over the whole face box,
    its GRID x GRID cells and (for comparison only) its centre. A cell whose
    raw picture has less than MIN_CELL_DETAIL (flat skin, say) cannot tell
    censored from visible and is not judged. The raw reference is rendered
    from the scene, as luma the way the SDK converts it, once per counter;
    both are measured at about DETAIL_LINES lines. Texture, not detail():
    a face's features survive it, the straight seams between masks do not
    (see texture())."""

    def __init__(self, scene, n=None, min_detail=None):
        self.scene = scene
        self.n = n or GRID
        self.min_detail = MIN_CELL_DETAIL if min_detail is None else min_detail
        self.f = max(1, round(scene.h / DETAIL_LINES))
        self.ref = {}
        self.whole = None

    def detail(self, img):
        return texture(binned(img, self.f))

    def reference(self, k):
        if k not in self.ref:
            box = self.scene.face_box(k)
            regions = [box, inner(box)] + cells(box, self.n)
            self.ref[k] = [self.detail(rgb_luma(self.scene.render_region(k, r))) for r in regions]
            if len(self.ref) > 4096:
                self.ref.pop(next(iter(self.ref)))
        return self.ref[k]

    def measure(self, img, k):
        """Ratios (received detail / raw detail) for frame k's face: `box`
        (whole face box), `centre` (its central 60%, the old check), `cells`
        (one per cell, None where the cell is not judged) and `worst` (the
        highest judged cell, else the box)."""
        box = self.scene.face_box(k)
        regions = [box, inner(box)] + cells(box, self.n)
        ref = self.reference(k)
        got = [self.detail(crop(img, r)) for r in regions]
        ratio = [g / max(d, 1e-6) for g, d in zip(got, ref)]
        cell = [r if d >= self.min_detail else None for r, d in zip(ratio[2:], ref[2:])]
        judged = [r for r in cell if r is not None]
        return {"box": ratio[0], "centre": ratio[1], "cells": cell,
                "worst": max(judged) if judged else ratio[0]}

    def match(self, img, k):
        """Per cell, the normalized cross-correlation of the received
        picture with frame k's raw picture (both at about DETAIL_LINES
        lines): near 1 where frame k's face itself is visible there, low
        over a mask or over other content (the background where the face
        is not). Used to place a frame whose counter cannot be read."""
        out = []
        for c in cells(self.scene.face_box(k), self.n):
            raw = binned(rgb_luma(self.scene.render_region(k, c)), self.f).astype(np.float32)
            got = binned(crop(img, c), self.f).astype(np.float32)
            hh, ww = min(raw.shape[0], got.shape[0]), min(raw.shape[1], got.shape[1])
            a, b = raw[:hh, :ww] - raw[:hh, :ww].mean(), got[:hh, :ww] - got[:hh, :ww].mean()
            den = float(np.sqrt((a * a).sum() * (b * b).sum()))
            out.append(float((a * b).sum()) / den if den > 1e-6 else 0.0)
        return out

    def whole_ratio(self, img):
        """Detail of the whole received frame against the raw picture's (on
        every other pixel at about DETAIL_LINES lines, for speed): near 0
        when it is censored whole."""
        s = 2 * self.f
        if self.whole is None:
            self.whole = detail(rgb_luma(self.scene.render(0))[::s, ::s])
        return detail(img[::s, ::s]) / max(self.whole, 1e-6)


def crop(img, box, scale=1.0):
    x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
    h, w = img.shape[:2]
    x0, x1 = max(0, x0), min(w, x1)
    y0, y1 = max(0, y0), min(h, y1)
    return img[y0:y1, x0:x1]


def exit_now(code):
    """Flush and leave without interpreter teardown: the livekit SDK's
    native side can abort (SIGABRT) while Python finalizes after a room
    with several remote tracks, which would turn a finished verdict into
    a crash. livekit/agents exits the same way (its PR 770)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
