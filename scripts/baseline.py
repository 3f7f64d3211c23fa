#!/usr/bin/env python3
"""Side-by-side baseline: NudeNet's own detector vs. the whole livecensor pipeline.

Both see the same frames: `livecensor synth` renders one clip as Y4M (I420,
lossless) and as a 720p H.264 MP4 of the same pictures. Then, on this machine
in this run:

1. NudeNet 3.4.2 `NudeDetector().detect(ndarray)` (the 320n model it ships,
   Python onnxruntime) is timed per frame on the Y4M frames, converted to RGB
   outside the timed region. This is detector-only: no decode, no censoring,
   no encode.
2. `livecensor censor` (strict mode: the detector runs on every frame) is run
   on the Y4M (no decode) and on the MP4 (openh264 decode included); both
   write an H.264 MP4 and the sidecar. Its own fps line (wall time from the
   first frame to the last, model loading excluded) and the process wall time
   (everything included) are reported.

The table's ratio is livecensor whole-pipeline fps / NudeNet detector-only fps.

Usage: scripts/baseline.sh [--frames 150] [--repeat 3] ... (see --help).
Needs the `nudenet` package (scripts/baseline.sh makes a venv with it).
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, text=True, capture_output=True, cwd=ROOT, **kw)


def read_y4m(path):
    """Yields (width, height, Y, U, V) uint8 planes of a 4:2:0 Y4M file."""
    with open(path, "rb") as f:
        header = f.readline().decode("ascii").split()
        if not header or header[0] != "YUV4MPEG2":
            raise ValueError(f"{path}: not a Y4M file")
        params = {p[0]: p[1:] for p in header[1:]}
        w, h = int(params["W"]), int(params["H"])
        colour = params.get("C", "420")
        if not colour.startswith("420"):
            raise ValueError(f"{path}: colour space C{colour}, need 4:2:0")
        cw, ch = (w + 1) // 2, (h + 1) // 2
        size = w * h + 2 * cw * ch
        while True:
            line = f.readline()
            if not line:
                return
            if not line.startswith(b"FRAME"):
                raise ValueError(f"{path}: bad frame header {line[:20]!r}")
            buf = f.read(size)
            if len(buf) < size:
                raise ValueError(f"{path}: truncated frame")
            a = np.frombuffer(buf, np.uint8)
            y = a[: w * h].reshape(h, w)
            u = a[w * h : w * h + cw * ch].reshape(ch, cw)
            v = a[w * h + cw * ch :].reshape(ch, cw)
            yield w, h, y, u, v


def i420_to_rgb(w, h, y, u, v):
    """BT.601 limited range, the same formula as livecensor's frame::yuv_to_rgb."""
    u = u.repeat(2, 0).repeat(2, 1)[:h, :w].astype(np.float32) - 128.0
    v = v.repeat(2, 0).repeat(2, 1)[:h, :w].astype(np.float32) - 128.0
    c = 1.164 * (y.astype(np.float32) - 16.0)
    rgb = np.stack([c + 1.596 * v, c - 0.392 * u - 0.813 * v, c + 2.017 * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def time_nudenet(y4m, warmup, classes):
    import nudenet
    import onnxruntime
    from nudenet import NudeDetector

    det = NudeDetector()  # the 320n.onnx shipped in the wheel
    times, found = [], 0
    frames = list(read_y4m(y4m))
    for i, (w, h, y, u, v) in enumerate(frames):
        rgb = i420_to_rgb(w, h, y, u, v)
        if i == 0:
            for _ in range(warmup):
                det.detect(rgb)
        # detect() on a 3-channel ndarray: cvtColor(RGBA2BGR) swaps R/B and
        # blobFromImage(swapRB=True) swaps back, so the model sees the array's
        # own channel order: RGB, the order the model was trained on.
        t0 = time.perf_counter()
        dets = det.detect(rgb)
        times.append(time.perf_counter() - t0)
        if any(d["class"] in classes for d in dets):
            found += 1
    return {
        "frames": len(times),
        "median_ms": 1e3 * statistics.median(times),
        "p90_ms": 1e3 * sorted(times)[int(0.9 * (len(times) - 1))],
        "fps": len(times) / sum(times),
        "frames_with_class": found,
        "nudenet": getattr(nudenet, "__version__", "3.4.2"),
        "onnxruntime": onnxruntime.__version__,
        "size": f"{frames[0][0]}x{frames[0][1]}" if frames else "",
    }


CENSORED = re.compile(
    r"censored (\d+) frames in ([\d.]+) s \(([\d.]+) fps\): (\d+) verified, (\d+) predicted, (\d+) fail-closed"
)
PER_FRAME = re.compile(r"per frame \(ms\): (.*)")


def time_livecensor(exe, src, out, classes, repeat, extra):
    runs = []
    for r in range(repeat):
        t0 = time.perf_counter()
        p = run([exe, "censor", "--input", src, "--output", out, "--classes", ",".join(classes), *extra])
        wall = time.perf_counter() - t0
        m = CENSORED.search(p.stdout)
        if not m:
            raise RuntimeError(f"unexpected output of livecensor censor:\n{p.stdout}\n{p.stderr}")
        stages = PER_FRAME.search(p.stdout)
        frames = int(m.group(1))
        runs.append(
            {
                "frames": frames,
                "fps": float(m.group(3)),
                "process_fps": frames / wall,
                "stages": stages.group(1) if stages else "",
                "verified": int(m.group(4)),
                "fail_closed": int(m.group(6)),
            }
        )
        print(
            f"  run {r + 1}: {runs[-1]['fps']:.1f} fps (process {runs[-1]['process_fps']:.1f} fps), "
            f"{runs[-1]['verified']} verified, {runs[-1]['fail_closed']} fail-closed"
        )
    best = sorted(runs, key=lambda x: x["fps"])[len(runs) // 2]  # median run
    sidecar = Path(str(out) + ".censor.jsonl")
    found = 0
    if sidecar.is_file():
        for line in sidecar.read_text().splitlines():
            rec = json.loads(line)
            if "header" in rec:  # the first line: the policy, not a frame
                continue
            if rec.get("detections"):
                found += 1
    best = dict(best)
    best["frames_with_class"] = found
    best["all_fps"] = [r["fps"] for r in runs]
    best["all_fail_closed"] = [r["fail_closed"] for r in runs]
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--livecensor", default=str(ROOT / "target/release/livecensor"))
    ap.add_argument("--dir", default=str(ROOT / "out/baseline"), help="work folder")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--warmup", type=int, default=5, help="untimed NudeNet calls first")
    ap.add_argument("--repeat", type=int, default=3, help="livecensor runs per input (median reported)")
    ap.add_argument("--classes", default="FACE_FEMALE,FACE_MALE")
    ap.add_argument("--threads", type=int, help="livecensor --threads (default: its config, 2)")
    ap.add_argument(
        "--deadline-ms",
        type=int,
        default=10000,
        help="livecensor scheduler.deadline_ms (default 10000, the most allowed, so that a busy "
        "machine does not fail frames closed and skip detection on them; 250 is livecensor's own default)",
    )
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    exe = Path(args.livecensor)
    if not exe.is_file():
        sys.exit(f"{exe}: not built (cargo build --release)")
    classes = args.classes.split(",")
    env_lib = os.environ.get("ORT_DYLIB_PATH", "")
    models = ROOT / "models"
    if not env_lib and not (models / "libonnxruntime.so").is_file():
        sys.exit("models/libonnxruntime.so missing: run scripts/setup.sh")

    size = ["--frames", args.frames, "--width", args.width, "--height", args.height]
    y4m, mp4 = work / "clip.y4m", work / "clip.mp4"
    run([exe, "synth", "--scenario", "constant-pan", *size, "--output", y4m])
    run([exe, "synth", "--scenario", "constant-pan", *size, "--output", mp4])

    load_before = os.getloadavg()[0]
    print(f"NudeNet detect() on {args.frames} frames ...", flush=True)
    nn = time_nudenet(y4m, args.warmup, classes)
    print(f"  median {nn['median_ms']:.2f} ms/frame, {nn['fps']:.1f} fps")

    # Every frame must be run through the detector for the comparison to be
    # fair: a frame that misses scheduler.deadline_ms is censored whole and
    # its detection result is no longer waited for.
    conf = work / "baseline.toml"
    conf.write_text(f"[scheduler]\ndeadline_ms = {args.deadline_ms}\n")
    extra = ["--config", conf.resolve()]
    if args.threads:
        extra += ["--threads", args.threads]
    ours_y4m = time_livecensor(exe, y4m, work / "censored_from_y4m.mp4", classes, args.repeat, extra)
    ours_mp4 = time_livecensor(exe, mp4, work / "censored_from_mp4.mp4", classes, args.repeat, extra)

    rows = [
        ("NudeNet 3.4.2 NudeDetector.detect() (detector only)", nn["fps"], nn["median_ms"], nn["frames_with_class"], "-"),
        (
            "livecensor censor Y4M -> H.264 MP4 (whole pipeline)",
            ours_y4m["fps"],
            None,
            ours_y4m["frames_with_class"],
            ours_y4m["fail_closed"],
        ),
        (
            "livecensor censor H.264 MP4 -> MP4 (+ decode)",
            ours_mp4["fps"],
            None,
            ours_mp4["frames_with_class"],
            ours_mp4["fail_closed"],
        ),
    ]
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print()
    print(f"machine: {cpu or platform.processor()}, {os.cpu_count()} logical CPUs; "
          f"python {platform.python_version()}, onnxruntime {nn['onnxruntime']} (NudeNet)")
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
          "(a busy machine slows both sides; compare the ratio)")
    print(f"clip: constant-pan, {args.frames} frames {args.width}x{args.height}; "
          f"classes {args.classes}; livecensor median of {args.repeat} runs")
    print()
    print("| pipeline | fps | ms/frame | frames with a face found | fail-closed | ratio vs NudeNet |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, fps, med, found, failed in rows:
        ms = f"{med:.2f} (median)" if med is not None else f"{1e3 / fps:.2f} (wall)"
        print(f"| {name} | {fps:.1f} | {ms} | {found}/{args.frames} | {failed} | {fps / nn['fps']:.2f}x |")
    print()
    print(f"livecensor stages (Y4M input): {ours_y4m['stages']}")
    print(f"livecensor stages (MP4 input): {ours_mp4['stages']}")
    if ours_y4m["fail_closed"] or ours_mp4["fail_closed"]:
        print("WARNING: livecensor failed frames closed (no detection on them): its fps is not comparable")
    print(f"livecensor process fps incl. model load and start-up: "
          f"Y4M {ours_y4m['process_fps']:.1f}, MP4 {ours_mp4['process_fps']:.1f}")

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "nudenet": nn,
                    "livecensor_y4m": ours_y4m,
                    "livecensor_mp4": ours_mp4,
                    "cpu": cpu,
                    "loadavg": [load_before, os.getloadavg()[0]],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
