"""Subscribes to the censored video in ROOM (or, with --raw, to the
broadcaster's own track in ROOM-raw), decodes every frame, reads its counter
and checks frame by frame that the face (whose position follows from the
counter and the frame size) is hidden, all of it: the face box is split into
a 3x3 grid of cells and in every cell the texture (common.texture: mean
|mixed derivative| of the luma) must be below --ratio times the raw
picture's there. A mask that covers only the centre, or misses an edge
strip of the face, leaks. A cell too flat in the raw picture to tell
(common.MIN_CELL_DETAIL) is not judged. Texture rather than the Laplacian:
masks are axis-aligned rectangles, and the straight seam where a face's
mask meets a wider tracker mask, or the block edges of libwebrtc's loss
concealment, read as up to half the face's Laplacian in a cell although
the face is hidden; they have no mixed derivative but at their corners,
while the face's features keep it wherever they show.
Also checks that frames keep flowing, measures latency against the
broadcaster's send-time file, and with --audio measures the A/V offset:
when the flash square appears vs when the audio burst starts (pass/fail on
the median after --settle seconds, when the receiver's jitter buffers have
settled; all reported).

Every frame is also measured whole: one whose whole-picture detail
(mean |Laplacian|) is below
--ratio of the raw picture's is censored whole (livecensor could not verify
it). A frame whose counter cannot be read must be censored whole, or lie
between readable frames at most PLACE_SPAN counters apart: libwebrtc's
loss concealment can cover the counter with flat blocks of an earlier
frame. Such a frame is checked at every counter between its neighbours'
(a cell leaks where it keeps the raw texture and matches that counter's
raw face, see Checker.place; "placed" in the report); any other is
"unchecked" and fails the run (libwebrtc's tiny placeholder frames
before the first real one are skipped). A run where more than
--max-whole of the frames are censored whole fails as over-censoring.

Where the face is: common.Scene.face_box(k), the detector's face box on
the photo (common.FACE, as in src/synth), placed in the broadcaster's
picture; detail is measured at about 360 lines (larger frames averaged
down) against the raw picture rendered as the luma the SDK sends. The
encoder may crop a picture (480x270 arrives as its top 480x268):
--source-size names the sizes the broadcaster publishes so such a frame
is checked against its picture's own geometry.

A new video track (livecensor rejoined after a drop) is followed: frames of
every track count, and the gap across the switch is a gap like any other.

The report (--json) has, besides the timing figures: leaks (leak_examples:
counter, worst ratio, size, cells over --ratio), unchecked, censored_whole,
whole_share and whole_runs (arrival indices), centre_leaks (frames the old
centre-60%-only check would have flagged), per cell (row by row from the
top-left) cell_leaks, cell_skipped, cell_ratio_p50 and cell_ratio_max,
closest (the five frames nearest the threshold, every cell), box_ratio_*;
ratio_p50/ratio_max are of each frame's worst cell (--raw: whole box).
With --dump DIR, leaked, unchecked and near-miss frames are saved as PNG.

Exit status 0 when: at least --min-frames frames, zero leaks, zero
unchecked frames (--max-unreadable allows a share), at most --max-whole
censored whole, no gap over --max-gap seconds (and with --audio: bursts
heard, offset within --max-av-ms); 1 otherwise. With --raw the leak check
is inverted (the face must be visible: the whole face box's ratio at least
--ratio): it validates the instrument itself.

`viewer.py --self-test` checks the checks on synthetic pictures (the scene
rendered with numpy, censored with a Gaussian blur like livecensor's, and
with JPEG standing in for the codec), without LiveKit: a correct mask
passes, and so do masks meeting at a seam through the face and flat
concealment blocks over it; a raw face, a mask over the centre only, a
mask shifted by half the face, one over its right half only and one
missing an edge strip leak; a frame blurred whole counts as censored
whole; a garbled counter on a visible picture is unchecked, and a
concealed one between readable frames is placed (a masked face passes,
a raw or half-open one leaks); and the
verdict fails on each of these and on over-censoring. Four frames a run
flagged under the old Laplacian check (tests/e2e/fixtures/seam-*.png,
the face masked every time) must pass, and leak with the raw face, whole
or its left half, pasted back in.
"""

import argparse
import asyncio
import json
import sys
import time

import numpy as np

import common


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def rnd(x, n=1):
    return None if x is None or x != x else round(x, n)


def runs(idx, most=20):
    """Sorted indices as [first, last] runs of consecutive ones (at most
    `most` runs, the first ones)."""
    out = []
    for i in idx:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out[:most]


def wxh(v):
    w, h = v.lower().split("x")
    return int(w), int(h)


def parser():
    ap = argparse.ArgumentParser()
    ap.add_argument("--room", default="demo")
    ap.add_argument("--raw", action="store_true", help="watch ROOM-raw, expect the face visible")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=20.0, help="give up after this long")
    ap.add_argument("--idle", type=float, default=3.0, help="stop after this long without frames")
    ap.add_argument("--sent", default="sent.tsv")
    ap.add_argument("--min-frames", type=int, default=60)
    ap.add_argument("--max-gap", type=float, default=1.0)
    ap.add_argument("--ratio", type=float, default=0.35,
                    help="leak if any cell of the face box keeps more than this share of its texture "
                         "(--raw: the face is visible if the whole box keeps at least this); also the "
                         "whole-frame ratio below which a frame is censored whole")
    ap.add_argument("--json", default="")
    ap.add_argument("--identity", default="viewer")
    ap.add_argument("--audio", action="store_true", help="expect the audio bursts; measure A/V")
    ap.add_argument("--max-av-ms", type=float, default=80.0)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="A/V pass/fail uses flashes this long after the first frame (all are reported)")
    ap.add_argument("--compare-raw", action="store_true",
                    help="also watch ROOM-raw: added latency = censored vs raw arrival of each frame")
    ap.add_argument("--max-unreadable", type=float, default=0.0,
                    help="fail if more than this share of frames is unchecked: no readable counter "
                         "and not censored whole")
    ap.add_argument("--max-whole", type=float, default=0.5,
                    help="fail (over-censoring) if more than this share of frames is censored whole")
    ap.add_argument("--source-size", action="append", default=[], metavar="WxH", type=wxh,
                    help="a size the broadcaster publishes (repeat for each): a received frame up to "
                         "15 px smaller is that picture with its bottom/right cropped by the encoder "
                         "(libwebrtc sends 480x270 as 480x268) and is checked against its geometry")
    ap.add_argument("--spells", default="", metavar="PERIOD,ON",
                    help="the broadcaster shows the face only the last ON seconds of every PERIOD: "
                         "frames without it have nothing to hide and are counted, not judged")
    ap.add_argument("--dump", default="", metavar="DIR",
                    help="save the luma of leaked, unchecked and near-miss (worst cell above 0.8 x "
                         "--ratio) frames there as PNG, at most 10 of each")
    ap.add_argument("--self-test", action="store_true",
                    help="check the checks on synthetic pictures (no LiveKit) and exit")
    return ap


# A frame whose counter cannot be read (libwebrtc's loss concealment can
# cover it with flat blocks of an earlier frame) is placed between the
# readable frames around it when their counters are at most PLACE_SPAN
# apart, and checked at each counter in between (see Checker.place); at
# most PLACE_MAX such frames wait for the next readable one.
PLACE_SPAN = 10
PLACE_MAX = 8
# A placed frame's cell leaks only where it also matches the raw face of
# the counter it is checked at (normalized cross-correlation: 0.99 for
# the raw face through JPEG at its own counter, 0.5-0.8 one counter off,
# at most 0.74 for a blurred one), so that the background and the sprite
# where the face is at another counter do not count.
PLACE_MATCH = 0.8


class Checker:
    """Classifies received frames (luma arrays): the state the viewer keeps
    across a run, without LiveKit, so --self-test drives the same code."""

    def __init__(self, fps, ratio, raw=False, sources=(), dump="", spells=None):
        self.fps, self.ratio, self.raw, self.dump = fps, ratio, raw, dump
        self.spells = spells
        self.without_face = 0  # frames whose picture had no face (spells)
        self.dumped = {}
        self.sources = list(sources)  # (w, h) the broadcaster publishes
        self.source_of = {}  # received size -> the broadcaster's picture size
        self.checks = {}  # frame size -> common.FaceCheck
        self.leaks = []
        self.unchecked = []  # (arrival index, whole-frame ratio, size)
        self.censored_whole = 0  # frames censored whole, counter or not
        self.whole_at = []  # their arrival indices
        self.whole_unreadable = 0  # of those, frames without a readable counter
        self.centre_leaks = 0  # frames the old check (centre 60% only) flags
        g = common.GRID * common.GRID
        self.cell_leaks = [0] * g
        self.cell_skipped = [0] * g
        self.cell_ratios = [[] for _ in range(g)]
        self.box_ratios = []
        self.closest = []
        self.frames = 0
        self.last_k = None  # the last counter read, unwrapped
        self.unplaced = []  # (arrival index, image, size, whole ratio)
        self.unplaced_after = None  # the counter read before them
        self.placed = 0  # frames checked by placement (see place())

    def check(self, img):
        """One frame; returns (counter or None, the frame's ratio or None):
        the worst judged cell (--raw: the whole box)."""
        h, w = img.shape[:2]
        size = (w, h)
        if size not in self.source_of:
            fits = [(sw, sh) for sw, sh in self.sources if 0 <= sw - w < 16 and 0 <= sh - h < 16]
            self.source_of[size] = min(fits, key=lambda s: s[0] * s[1]) if fits else size
        size = self.source_of[size]
        if size != (w, h):
            # The encoder cropped the bottom/right: back to the picture's
            # geometry (the rows it dropped are far from face and counter).
            img = np.pad(img, ((0, size[1] - h), (0, size[0] - w)), mode="edge")
            h, w = img.shape[:2]
        if size not in self.checks:
            self.checks[size] = common.FaceCheck(common.Scene(w, h, self.fps, self.spells))
        fc = self.checks[size]
        n = self.frames
        self.frames += 1
        whole_ratio = fc.whole_ratio(img)
        whole = whole_ratio < self.ratio
        if whole:
            self.censored_whole += 1
            self.whole_at.append(n)
        k = common.read_counter(img, h)
        before = self.last_k
        if k is not None:
            k = self.unwrap(k)
        if k is None:
            if whole:
                self.whole_unreadable += 1
            elif self.raw:
                self.unchecked.append((n, round(whole_ratio, 3), size))
                self.save("unchecked", img, f"{n}")
            else:
                # Not a frame livecensor could not verify: checked once the
                # next readable frame says where the face can be.
                if not self.unplaced:
                    self.unplaced_after = before
                self.unplaced.append((n, img, size, round(whole_ratio, 3)))
                if len(self.unplaced) > PLACE_MAX:
                    self.give_up(self.unplaced[:1])
                    self.unplaced = self.unplaced[1:]
            return None, None
        if self.unplaced:
            self.place(self.unplaced_after, k)
        if not fc.scene.face_on(k):
            self.without_face += 1
            return k, None
        m = fc.measure(img, k)
        self.box_ratios.append(m["box"])
        if self.raw:
            ratio = m["box"]
            bad = ratio < self.ratio
        else:
            ratio = m["worst"]
            bad = ratio > self.ratio
            if m["centre"] > self.ratio:
                self.centre_leaks += 1
        for i, r in enumerate(m["cells"]):
            if r is None:
                self.cell_skipped[i] += 1
                continue
            self.cell_ratios[i].append(r)
            if not self.raw and r > self.ratio:
                self.cell_leaks[i] += 1
        # The closest calls (censored: the highest worst cells; --raw: the
        # least visible faces), with every cell, for the report.
        key = -ratio if self.raw else ratio
        self.closest.append((key, n, k, [None if r is None else round(r, 3) for r in m["cells"]]))
        if len(self.closest) > 40:
            self.closest = sorted(self.closest, reverse=True)[:5]
        if bad:
            cells = [i for i, r in enumerate(m["cells"]) if r is not None and r > self.ratio]
            self.leaks.append((k, round(ratio, 3), size, cells))
            self.save("leak", img, f"{n}-k{k}-r{ratio:.2f}")
        elif not self.raw and ratio > 0.8 * self.ratio:
            self.save("near", img, f"{n}-k{k}-r{ratio:.2f}")
        return k, ratio

    def give_up(self, frames):
        """Frames that cannot be placed: nothing says where the face is, so
        they cannot be checked."""
        for n, img, size, whole_ratio in frames:
            self.unchecked.append((n, whole_ratio, size))
            self.save("unchecked", img, f"{n}")

    def place(self, prev, k):
        """Checks the frames with no readable counter that came between
        counters `prev` and `k`: each at every counter from prev to k (loss
        concealment shows blocks of the earlier frames, the rest is the
        frame's own), a leak where a judged cell keeps over --ratio of the
        raw texture and matches that counter's raw face (PLACE_MATCH). Too
        far apart, or no earlier counter: unchecked."""
        frames, self.unplaced = self.unplaced, []
        if prev is None or not 0 < k - prev <= PLACE_SPAN:
            self.give_up(frames)
            return
        for n, img, size, _ in frames:
            fc = self.checks[size]
            worst, at, bad = 0.0, None, []
            for kc in range(prev, k + 1):
                if not fc.scene.face_on(kc):
                    continue
                m = fc.measure(img, kc)
                match = fc.match(img, kc)
                judged = [(i, r) for i, (r, c) in enumerate(zip(m["cells"], match))
                          if r is not None and c > PLACE_MATCH]
                for i, r in judged:
                    if r > worst:
                        worst, at = r, kc
                    if r > self.ratio:
                        bad.append(i)
            self.placed += 1
            if bad:
                self.leaks.append((f"{prev}..{k}@{at}", round(worst, 3), size, sorted(set(bad))))
                self.save("leak", img, f"{n}-placed-k{at}-r{worst:.2f}")

    def finish(self):
        """The stream ended: frames still waiting to be placed are
        unchecked."""
        self.give_up(self.unplaced)
        self.unplaced = []

    def unwrap(self, k):
        """The full counter from the BITS bits a frame carries: the value
        nearest the last one read (the counter wraps every 2^16 frames, 36
        minutes at 30 fps; a wrapped counter would place the face wrong)."""
        m = 1 << common.BITS
        if self.last_k is not None:
            base = self.last_k - self.last_k % m
            k = min((base - m + k, base + k, base + m + k), key=lambda c: abs(c - self.last_k))
        self.last_k = k
        return k

    def save(self, kind, img, name):
        if not self.dump or self.dumped.get(kind, 0) >= 10:
            return
        import os

        from PIL import Image

        self.dumped[kind] = self.dumped.get(kind, 0) + 1
        os.makedirs(self.dump, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(img)).save(os.path.join(self.dump, f"{kind}-{name}.png"))

    def report(self):
        self.finish()
        return {
            "without_face": self.without_face,
            "placed": self.placed,
            "censored_whole": self.censored_whole,
            "whole_share": round(self.censored_whole / self.frames, 3) if self.frames else 0.0,
            "whole_runs": runs(self.whole_at),
            "unchecked": len(self.unchecked),
            "unchecked_examples": self.unchecked[:5],
            "leaks": len(self.leaks),
            "leak_examples": self.leaks[:5],
            "centre_leaks": self.centre_leaks,
            "checked_as": {f"{w}x{h}": f"{sw}x{sh}" for (w, h), (sw, sh) in self.source_of.items()
                           if (w, h) != (sw, sh)},
            "grid": common.GRID,
            "cell_leaks": self.cell_leaks,
            "cell_skipped": self.cell_skipped,
            "cell_ratio_p50": [rnd(pct(v, 50), 3) for v in self.cell_ratios],
            "cell_ratio_max": [round(max(v), 3) if v else None for v in self.cell_ratios],
            "closest": [{"at": n, "k": k, "ratio": round(abs(key), 3), "cells": c}
                        for key, n, k, c in sorted(self.closest, reverse=True)[:5]],
            "box_ratio_p50": rnd(pct(self.box_ratios, 50), 3),
            "box_ratio_min": round(min(self.box_ratios), 3) if self.box_ratios else None,
            "box_ratio_max": round(max(self.box_ratios), 3) if self.box_ratios else None,
        }


def failures(out, a):
    """Why the run fails (empty: it passes), from the report `out`."""
    why = []
    n = out["frames"]
    if n < a.min_frames:
        why.append(f"{n} frames < {a.min_frames}")
    if out["leaks"]:
        why.append(f"{out['leaks']} leaked frames" if not a.raw
                   else f"{out['leaks']} frames with the raw face not visible")
    if (out["max_gap_s"] or 0) > a.max_gap:
        why.append(f"gap {out['max_gap_s']} s > {a.max_gap}")
    if n and out["unchecked"] > a.max_unreadable * n:
        why.append(f"{out['unchecked']} of {n} frames unchecked (no counter, not censored whole)")
    if n and out["censored_whole"] > a.max_whole * n:
        why.append(f"over-censoring: {out['censored_whole']} of {n} frames "
                   f"({out['whole_share']:.0%}) censored whole > {a.max_whole:.0%}")
    if out["distinct"] + out["censored_whole_unreadable"] < a.min_frames * 0.9:
        why.append(f"{out['distinct']} distinct counters")
    overloaded = n and out["censored_whole"] > 0.1 * n
    if a.audio and not overloaded:
        # (Overloaded: frames censored whole mean livecensor missed its
        # deadlines, so lip sync is not what is measured; only reported.)
        if len(out["av_offset_ms"]) < 2:
            why.append(f"A/V: {len(out['av_offset_ms'])} flash/burst pairs "
                       f"({out['flashes']} flashes, {out['audio_bursts']} bursts)")
        elif not out["av_steady_n"]:
            why.append("A/V: no flash/burst pair after the settling time")
        elif abs(out["av_offset_ms_steady_p50"]) > a.max_av_ms:
            why.append(f"A/V offset p50 {out['av_offset_ms_steady_p50']} ms > {a.max_av_ms} (after {a.settle} s)")
    return why


def self_test(a):
    """Checks the checks on synthetic pictures, without LiveKit: the scene
    rendered as the luma the viewer receives, censored with a Gaussian blur
    the way livecensor blurs (the whole picture blurred, written inside the
    mask only; sigma = 0.25 x the mask's shorter side, its default policy),
    each case also after a JPEG round trip standing in for the codec.
    Returns the exit status (0: every expectation met)."""
    import io

    from PIL import Image, ImageFilter

    results, fails = {}, []

    def expect(name, ok, **info):
        results[name] = dict(ok=bool(ok), **info)
        if not ok:
            fails.append(name)

    def clip(box, w, h):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        return max(0, x0), max(0, y0), min(w, x1), min(h, y1)

    def blur(y, box, strength=0.25):
        h, w = y.shape
        x0, y0, x1, y1 = clip(box, w, h)
        sigma = strength * min(x1 - x0, y1 - y0)
        b = np.asarray(Image.fromarray(y).filter(ImageFilter.GaussianBlur(sigma)))
        out = y.copy()
        out[y0:y1, x0:x1] = b[y0:y1, x0:x1]
        return out

    def jpeg(y):
        buf = io.BytesIO()
        Image.fromarray(y).save(buf, "JPEG", quality=50)
        return np.asarray(Image.open(buf).convert("L"))

    def grow(box, f):
        x0, y0, x1, y1 = box
        dx, dy = (x1 - x0) * f, (y1 - y0) * f
        return x0 - dx, y0 - dy, x1 + dx, y1 + dy

    def shift(box, fx):
        x0, y0, x1, y1 = box
        d = (x1 - x0) * fx
        return x0 + d, y0, x1 + d, y1

    def fill(y, box, v):
        h, w = y.shape
        x0, y0, x1, y1 = clip(box, w, h)
        out = y.copy()
        out[y0:y1, x0:x1] = v
        return out

    def blocks(y, box, b=16):
        """Inside box, the picture blurred whole and flattened to b x b
        blocks on the codec's grid, every other block 10 levels darker: what
        libwebrtc's loss concealment shows of an earlier frame censored
        whole (flat blocks, straight edges between them)."""
        h, w = y.shape
        x0, y0, x1, y1 = clip(box, w, h)
        soft = np.asarray(Image.fromarray(y).filter(ImageFilter.GaussianBlur(h / 20)))
        out = y.copy()
        for by in range(y0 // b * b, y1, b):
            for bx in range(x0 // b * b, x1, b):
                ys, xs = slice(max(by, y0), min(by + b, y1)), slice(max(bx, x0), min(bx + b, x1))
                dark = 10 * ((bx // b + by // b) % 2)
                out[ys, xs] = np.clip(soft[by:by + b, bx:bx + b].mean() - dark, 0, 255)
        return out

    def laplacian_worst(fc, img, k):
        """The worst cell as the old check measured it (mean |Laplacian|)."""
        box = fc.scene.face_box(k)
        raw = common.rgb_luma(fc.scene.render_region(k, box))
        x0, y0 = (int(round(max(0, v))) for v in box[:2])
        got = []
        for c in common.cells(box, fc.n):
            local = (c[0] - x0, c[1] - y0, c[2] - x0, c[3] - y0)
            d = common.detail(common.binned(common.crop(raw, local), fc.f))
            got.append(common.detail(common.binned(common.crop(img, c), fc.f)) / max(d, 1e-6))
        return max(got)

    def run(frames, raw=False, sources=()):
        c = Checker(a.fps, a.ratio, raw=raw, sources=sources)
        got = [c.check(f) for f in frames]
        c.finish()
        return c, got

    def report(c, got):
        ks = [k for k, _ in got if k is not None]
        return {"frames": c.frames, "max_gap_s": 0.0, "distinct": len(set(ks)),
                "censored_whole_unreadable": c.whole_unreadable, **c.report()}

    seqs = {}
    spread = {}  # case -> every frame's worst cell ratio
    for w, h in ((640, 360), (320, 180), (1280, 720)):
        scene = common.Scene(w, h, a.fps)
        for codec in (False, True):
            for k in (0, 23, 61, 97):
                y = np.clip(np.round(common.rgb_luma(scene.render(k))), 0, 255).astype(np.uint8)
                face = scene.face_box(k)
                fw, fh = face[2] - face[0], face[3] - face[1]
                mask = grow(face, 0.1)  # the default policy's expand
                garbled = y.copy()
                x0, y0 = common.counter_origin(h)
                b = common.block_size(h)
                garbled[y0:y0 + b, x0:x0 + (common.BITS + common.CHECK) * b] = 128
                cases = {
                    "raw": y,
                    "masked": blur(y, mask),
                    "centre_only": blur(y, common.inner(face)),
                    "half_shifted": blur(y, shift(mask, 0.5)),
                    "top_strip_missed": blur(y, (mask[0], face[1] + 0.25 * fh, mask[2], mask[3])),
                    "left_strip_missed": blur(y, (face[0] + 0.2 * fw, mask[1], mask[2], mask[3])),
                    "half_open": blur(y, (face[0] + 0.5 * fw, mask[1], mask[2], mask[3])),
                    # The face's mask (flat) meets a wider tracker mask
                    # (flat, another grey) inside the face box.
                    "seam": fill(fill(y, grow(shift(face, 0.3), 0.4), 110),
                                 (mask[0], mask[1], face[0] + 0.6 * fw, face[1] + 0.55 * fh), 150),
                    "concealed_blocks": blocks(y, grow(face, 0.3)),
                    "whole": blur(y, (0, 0, w, h)),
                    "garbled_counter": garbled,
                }
                if codec:
                    cases = {n: jpeg(f) for n, f in cases.items()}
                tag = f"{w}x{h}{'+jpeg' if codec else ''}@{k}"
                for n, f in cases.items():
                    seqs.setdefault((w, h, codec, n), []).append(f)
                    c, [(kk, r)] = run([f])
                    fc = c.checks[(w, h)]
                    m = fc.measure(f, k)
                    spread.setdefault(n, []).append(m["worst"])
                    info = dict(counter=kk, worst=round(m["worst"], 3), box=round(m["box"], 3),
                                centre=round(m["centre"], 3),
                                cells=[None if x is None else round(x, 2) for x in m["cells"]],
                                whole=round(fc.whole_ratio(f), 3))
                    if n == "raw":
                        cr, [(_, rr)] = run([f], raw=True)
                        expect(f"{tag} raw: counter read, face visible to --raw, a leak to the censor check",
                               kk == k and not cr.leaks and c.leaks and not c.censored_whole, **info)
                    elif n == "masked":
                        expect(f"{tag} masked: no leak, not censored whole",
                               kk == k and not c.leaks and not c.censored_whole and not c.unchecked, **info)
                    elif n == "centre_only":
                        expect(f"{tag} centre_only: a leak the old centre-60% check missed",
                               kk == k and c.leaks and m["centre"] < a.ratio, **info)
                    elif n in ("half_shifted", "top_strip_missed", "left_strip_missed", "half_open"):
                        expect(f"{tag} {n}: a leak", kk == k and c.leaks, **info)
                    elif n in ("seam", "concealed_blocks"):
                        expect(f"{tag} {n}: hidden, no leak", kk == k and not c.leaks and not c.unchecked,
                               laplacian_worst=round(laplacian_worst(fc, f, k), 3), **info)
                    elif n == "whole":
                        expect(f"{tag} whole: censored whole, not unchecked",
                               kk is None and c.censored_whole == 1 and c.whole_unreadable == 1
                               and not c.unchecked, **info)
                    elif n == "garbled_counter":
                        expect(f"{tag} garbled_counter: unchecked",
                               kk is None and not c.censored_whole and len(c.unchecked) == 1, **info)

    # libwebrtc sends a 480x270 picture as its top 480x268: with the
    # broadcaster's size given, the face box is the picture's own.
    scene = common.Scene(480, 270, a.fps)
    for k in (0, 23, 61, 97):
        y = np.clip(np.round(common.rgb_luma(scene.render(k))), 0, 255).astype(np.uint8)
        face = scene.face_box(k)
        masked = jpeg(blur(y, grow(face, 0.1)))[:268]
        exposed = jpeg(blur(y, shift(grow(face, 0.1), 0.5)))[:268]
        c, [(kk, _)] = run([masked], sources=[(480, 270)])
        c2, _ = run([exposed], sources=[(480, 270)])
        expect(f"480x270 cropped to 480x268 @{k}: checked as 480x270, masked passes, half-shifted leaks",
               kk == k and list(c.checks) == [(480, 270)] and not c.leaks and not c.unchecked
               and c2.leaks, checked_as=c.report()["checked_as"])

    # Frames an e2e run flagged under the old check (mean |Laplacian|, a
    # leak up to 0.52): the face under a mask every time, a seam between
    # masks or concealment blocks through a cell. The old measure must
    # still flag them (else they no longer test anything), the check not.
    import glob
    import os
    import re

    fixtures = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "fixtures", "seam-fps*-k*.png")))
    expect("seam fixtures present", len(fixtures) >= 4, found=len(fixtures))
    for path in fixtures:
        fps, k = (int(x) for x in re.search(r"fps(\d+)-k(\d+)", path).groups())
        img = np.asarray(Image.open(path).convert("L"))
        c = Checker(fps, a.ratio, sources=[(480, 270)])
        kk, r = c.check(img)
        full = np.pad(img, ((0, 270 - img.shape[0]), (0, 480 - img.shape[1])), mode="edge")
        old = laplacian_worst(c.checks[(480, 270)], full, k)
        expect(f"fixture {os.path.basename(path)}: masked face, seams: no leak (old check: a leak)",
               kk == k and not c.leaks and not c.unchecked and old > a.ratio,
               worst=rnd(r, 3), laplacian_worst=round(old, 3))
        # The same frame with the raw face pasted back, whole and its left
        # half only: both leak.
        fc = c.checks[(480, 270)]
        x0, y0, x1, y1 = (int(round(v)) for v in fc.scene.face_box(k))
        raw = np.clip(np.round(common.rgb_luma(fc.scene.render(k))), 0, 255).astype(np.uint8)
        for part, xe in (("whole", x1), ("left half", (x0 + x1) // 2)):
            leaked = full.copy()
            leaked[y0:y1, x0:xe] = raw[y0:y1, x0:xe]
            c2 = Checker(fps, a.ratio, sources=[(480, 270)])
            kk2, r2 = c2.check(jpeg(leaked))
            expect(f"fixture {os.path.basename(path)} with the face's {part} uncovered: a leak",
                   kk2 == k and c2.leaks, worst=rnd(r2, 3))

    # Loss concealment over the counter: flat blocks of an earlier frame
    # censored whole cover the counter and the left of the picture. Such a
    # frame between readable ones is placed and checked at every counter
    # between them: a masked face passes (also 5 counters either side,
    # where the background lies under the other counters' face boxes), a
    # raw or half-open face leaks; with no readable frame after it, or
    # with the readable ones too far apart, it stays unchecked.
    w, h = 640, 360
    scene = common.Scene(w, h, a.fps)
    for k in (10, 23, 61):  # the face clear of the concealed top-left
        def frame(kk, how="masked"):
            y = np.clip(np.round(common.rgb_luma(scene.render(kk))), 0, 255).astype(np.uint8)
            face = scene.face_box(kk)
            fw = face[2] - face[0]
            if how == "masked":
                y = blur(y, grow(face, 0.1))
            elif how == "half_open":
                y = blur(y, (face[0] + 0.5 * fw, face[1] - 0.1 * fw, face[2] + 0.1 * fw, face[3]))
            return y

        def concealed(y):
            x0, y0 = common.counter_origin(h)
            b = common.block_size(h)
            return blocks(y, (0, 0, x0 + (common.BITS + common.CHECK + 2) * b, y0 + 3 * b))

        for how, d, after, want in (
            ("masked", 1, True, "placed"),
            ("masked", 5, True, "placed"),
            ("raw", 1, True, "leak"),
            ("half_open", 2, True, "leak"),
            ("masked", 1, False, "unchecked"),
            ("masked", 6, True, "unchecked"),
        ):
            seq_ = [frame(k - d), concealed(frame(k, how))] + ([frame(k + d)] if after else [])
            seq_ = [jpeg(f) for f in seq_]
            c, got = run(seq_)
            placed = c.placed == 1 and not c.unchecked
            ok = {"placed": placed and not c.leaks,
                  "leak": placed and len(c.leaks) == 1,
                  "unchecked": len(c.unchecked) == 1 and not c.leaks}[want]
            expect(f"concealed counter @{k}, {how}, readable frames {d} either side"
                   f"{'' if after else ' (none after)'}: {want}",
                   ok and got[1][0] is None, placed=c.placed, unchecked=len(c.unchecked),
                   leaks=c.leaks[:1])

    # The verdict over a run of frames (640x360 through JPEG, 4 distinct).
    va = argparse.Namespace(**dict(vars(a), min_frames=4, raw=False, audio=False))
    seq = lambda n: seqs[(640, 360, True, n)]  # noqa: E731
    for name, frames, want in (
        ("clean run passes", seq("masked") * 3, None),
        ("one centre-only frame fails as a leak", seq("masked") * 2 + seq("centre_only")[:1], "leaked"),
        ("one unchecked frame fails", seq("masked") * 2 + seq("garbled_counter")[:1], "unchecked"),
        ("60% censored whole fails as over-censoring", seq("masked") + (seq("whole") * 2)[:6],
         "over-censoring"),
        ("40% censored whole passes", seq("masked") + seq("masked")[:2] + seq("whole"), None),
    ):
        c, got = run(frames)
        out = report(c, got)
        why = failures(out, va)
        ok = (not why) if want is None else any(want in x for x in why)
        expect(f"verdict: {name}", ok, why=why, frames=out["frames"], whole_share=out["whole_share"],
               leaks=out["leaks"], unchecked=out["unchecked"])
    vr = argparse.Namespace(**dict(vars(a), min_frames=4, raw=True, audio=False))
    c, got = run(seqs[(640, 360, True, "masked")], raw=True)
    why = failures(report(c, got), vr)
    expect("verdict --raw: a censored face fails the instrument", any("not visible" in x for x in why), why=why)
    c = Checker(a.fps, a.ratio)
    got = [c.unwrap(k) for k in (65534, 65535, 0, 1, 65535, 2, 0, 1)]
    expect("the 16-bit counter unwraps (36 min at 30 fps)",
           got == [65534, 65535, 65536, 65537, 65535, 65538, 131072 - 65536, 65537], got=got)

    for name, r in results.items():
        if not r["ok"]:
            print(f"viewer self-test FAILED {name}: {json.dumps(r)}", flush=True)
    print("viewer self-test: " + json.dumps({
        "checks": len(results), "failed": len(fails),
        "worst_cell_ratio_range": {n: [round(min(v), 3), round(max(v), 3)] for n, v in spread.items()},
        "examples": {n: r for n, r in results.items() if n.startswith(("640x360+jpeg@23", "verdict", "fixture", "seam fixtures"))},
    }), flush=True)
    print("viewer: self-test " + ("PASS" if not fails else f"FAIL: {len(fails)} of {len(results)}"), flush=True)
    return 0 if not fails else 1


async def main():
    a = parser().parse_args()
    if a.self_test:
        common.exit_now(self_test(a))
    from livekit import rtc

    import tokens

    room_name = a.room + "-raw" if a.raw else a.room
    checker = Checker(a.fps, a.ratio, raw=a.raw, sources=a.source_size, dump=a.dump,
                      spells=common.parse_spells(a.spells))

    room = rtc.Room()
    frames_q = asyncio.Queue()
    tracks = []
    audio = {"frames": 0, "onsets": [], "loud": False, "quiet_run": 0}

    async def read_video(track):
        # I420 as decoded (no conversion); the checks use the luma plane.
        stream = rtc.VideoStream(track, format=rtc.VideoBufferType.I420)
        async for ev in stream:
            await frames_q.put((time.time(), ev.frame))

    async def listen(track):
        async for ev in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
            now = time.time()
            pcm = np.frombuffer(ev.frame.data, dtype=np.int16)
            audio["frames"] += 1
            loud = np.nonzero(np.abs(pcm.astype(np.int32)) > 3000)[0]
            if loud.size:
                if not audio["loud"]:
                    audio["onsets"].append(now - (pcm.size - loud[0]) / 48000)
                audio["loud"] = True
                audio["quiet_run"] = 0
            else:
                audio["quiet_run"] += 1
                if audio["quiet_run"] >= 5:
                    audio["loud"] = False

    tasks = []

    @room.on("track_subscribed")
    def _on_sub(track, pub, participant):
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            tracks.append((time.time(), participant.identity, track.sid))
            print(f"viewer: subscribed to {participant.identity}'s video {track.sid}", flush=True)
            tasks.append(asyncio.ensure_future(read_video(track)))
        if track.kind == rtc.TrackKind.KIND_AUDIO and a.audio:
            tasks.append(asyncio.ensure_future(listen(track)))

    raw_times = {}
    raw_room = None
    if a.compare_raw and not a.raw:
        raw_room = rtc.Room()

        async def read_raw(track):
            async for ev in rtc.VideoStream(track, format=rtc.VideoBufferType.I420):
                now = time.time()
                f = ev.frame
                if f.width < 32 or f.height < 32:
                    continue
                k = common.read_counter(common.luma(f), f.height)
                if k is not None:
                    raw_times.setdefault(k, now)

        @raw_room.on("track_subscribed")
        def _on_raw(track, pub, participant):
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                tasks.append(asyncio.ensure_future(read_raw(track)))

        await raw_room.connect(tokens.URL, tokens.token(a.identity + "-rawref", a.room + "-raw", False, True))

    t_start = time.time()
    await room.connect(tokens.URL, tokens.token(a.identity, room_name, False, True))
    print(f"viewer: joined {room_name}", flush=True)

    seen = []  # (k or None, recv time, ratio)
    sizes = {}
    deadline = t_start + a.seconds
    while time.time() < deadline:
        try:
            wait = a.idle if seen else deadline - time.time()
            now, f = await asyncio.wait_for(frames_q.get(), max(0.01, wait))
        except asyncio.TimeoutError:
            break
        if f.width < 32 or f.height < 32:
            continue  # libwebrtc's placeholder before the first real frame
        size = (f.width, f.height)
        sizes[size] = sizes.get(size, 0) + 1
        k, ratio = checker.check(common.luma(f))
        seen.append((k, now, ratio))
    for t in tasks:
        t.cancel()
    await room.disconnect()
    if raw_room:
        await raw_room.disconnect()

    sent = {}
    try:
        with open(a.sent) as fh:
            for line in fh:
                p = line.split()
                if len(p) == 2:
                    sent[int(p[0])] = float(p[1])
    except OSError:
        pass
    lat = [(t - sent[k]) * 1000 for k, t, _ in seen if k is not None and k in sent]
    added = [(t - raw_times[k]) * 1000 for k, t, _ in seen if k is not None and k in raw_times]
    times = [t for _, t, _ in seen]
    gaps = [b - a_ for a_, b in zip(times, times[1:])]
    ks = [k for k, _, _ in seen if k is not None]
    ratios = [r for _, _, r in seen if r is not None]
    # A/V: the start of each flash, from the frame counters (a frame
    # censored whole hides the square but not its number), against the
    # nearest start of an audio burst. A flash whose first frame was not
    # seen is timed from its first frame that was, less the frames between.
    flashes = []
    starts = set()
    for k, t, _ in seen:
        if k is None or not common.flash_on(k, a.fps):
            continue
        k0 = k
        while k0 > 0 and common.flash_on(k0 - 1, a.fps):
            k0 -= 1
        if k0 not in starts:
            starts.add(k0)
            flashes.append(t - (k - k0) / a.fps)
    av = []
    av_steady = []  # after the receiver's jitter buffers have settled
    t_first = seen[0][1] if seen else 0.0
    for tv in flashes:
        near = [ta for ta in audio["onsets"] if abs(ta - tv) < 0.5]
        if near:
            ta = min(near, key=lambda x: abs(x - tv))
            av.append((ta - tv) * 1000)
            if tv - t_first >= a.settle:
                av_steady.append((ta - tv) * 1000)
    first_k = next((t for k, t, _ in seen if k is not None), None)
    out = {
        "room": room_name,
        "frames": len(seen),
        "unreadable": sum(1 for k, _, _ in seen if k is None),
        "censored_whole_unreadable": checker.whole_unreadable,
        "distinct": len(set(ks)),
        "sizes": {f"{w}x{h}": n for (w, h), n in sorted(sizes.items())},
        "video_tracks": len(tracks),
        **checker.report(),
        "ratio_p50": rnd(pct(ratios, 50), 3),
        "ratio_max": round(max(ratios), 3) if ratios else None,
        "max_gap_s": round(max(gaps), 3) if gaps else None,
        "gaps_over_1s": [round(g, 2) for g in gaps if g > 1.0],
        "gaps_over_1s_at": [[round(t0, 3), round(g, 3)] for t0, g in zip(times, gaps) if g > 1.0],
        "latency_ms_p50": rnd(pct(lat, 50)),
        "latency_ms_p95": rnd(pct(lat, 95)),
        "added_ms_p50": rnd(pct(added, 50)),
        "added_ms_p95": rnd(pct(added, 95)),
        "added_ms_max": rnd(max(added, default=None)),
        "added_n": len(added),
        "first_frame_at": first_k,
        "first_frame_after_first_send_s": rnd(first_k - min(sent.values()), 3)
        if first_k and sent
        else None,
        "audio_frames": audio["frames"],
        "audio_bursts": len(audio["onsets"]),
        "flashes": len(flashes),
        "av_offset_ms": [round(x, 1) for x in av],
        "av_offset_ms_p50": rnd(pct(av, 50)),
        "av_offset_ms_steady_p50": rnd(pct(av_steady, 50)),
        "av_steady_n": len(av_steady),
        "av_offset_ms_max_abs": rnd(max((abs(x) for x in av), default=None)),
        "fps": round(len(seen) / (times[-1] - times[0]), 1) if len(times) > 1 else 0,
        "added_trace": [[k, round((t - raw_times[k]) * 1000, 1)] for k, t, _ in seen
                        if k is not None and k in raw_times],
    }
    print("viewer: " + json.dumps(out), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh)
    if a.audio and seen and out["censored_whole"] > 0.1 * len(seen):
        print(f"viewer: A/V not judged: {out['censored_whole']} of {len(seen)} frames censored whole",
              flush=True)
    why = failures(out, a)
    print("viewer: " + ("PASS" if not why else "FAIL: " + "; ".join(why)), flush=True)
    common.exit_now(0 if not why else 1)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
