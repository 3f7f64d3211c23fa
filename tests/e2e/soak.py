"""The soak: a real livekit-server, `livecensor serve --room soak --audio`
and a broadcaster/viewer pair (the e2e suite's, PyPI `livekit` SDK) for
MINUTES minutes, on ports of its own so it can run beside the e2e suite.
Every --every seconds (30) it samples `serve`'s resident memory (VmRSS),
open file descriptors and threads from /proc, and a few /metrics counters.

It fails when, after the warm-up (--warmup seconds, default the larger of
30 s and a tenth of the run), any of RSS, fds or threads grows more than
--max-growth (5%): the mean of the last quarter of the samples after the
warm-up against the mean of their first quarter; when the viewer
sees a leak, an unchecked frame, a freeze (no frame for over 1 s) or too
few frames; or when `serve` dies. Writes OUT/samples.tsv, OUT/soak.json
(the verdict and the curve's summary) and OUT/soak.svg (the curve).

usage: soak.py MINUTES   (scripts/soak.sh MINUTES)
Env: SOAK_OUT (out/soak), SOAK_LK_PORT (7980: TCP +1, UDP +2),
SOAK_LISTEN (127.0.0.1:7990), SOAK_SIZE (640x360), SOAK_FPS (30),
LIVECENSOR_BIN.
"""

import argparse
import json
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.environ.get("SOAK_OUT", "out/soak")
# suite.py reads these when imported: the soak's own ports and folder.
os.environ["E2E_OUT"] = OUT
os.environ["E2E_LK_PORT"] = os.environ.get("SOAK_LK_PORT", "7980")
os.environ["E2E_LISTEN"] = os.environ.get("SOAK_LISTEN", "127.0.0.1:7990")
sys.path.insert(0, HERE)

import suite  # noqa: E402
import common  # noqa: E402

ROOM = "soak"
KEYS = ("rss_mib", "fds", "threads")
LABELS = {"rss_mib": "RSS (MiB)", "fds": "open fds", "threads": "threads"}


def proc_sample(pid):
    """VmRSS (MiB), open fds and threads of `pid`, from /proc."""
    st = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            st[k] = v.strip()
    return {
        "rss_mib": round(int(st["VmRSS"].split()[0]) / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(st["Threads"]),
    }


def growth(samples, warmup_s):
    """Per key, over the samples at or after the warm-up: the baseline (the
    mean of their first quarter, at least one sample), the end (the mean of
    their last quarter), the growth (end / baseline - 1), and the peak. A
    leak is a trend, so one fd or thread more in a single sample (an HTTP
    connection being closed) does not count as growth."""
    after = [s for s in samples if s["t_s"] >= warmup_s]
    q = max(1, len(after) // 4)
    out = {}
    for k in KEYS:
        if not after:
            out[k] = None
            continue
        base = round(sum(s[k] for s in after[:q]) / q, 2)
        end = round(sum(s[k] for s in after[-q:]) / q, 2)
        out[k] = {"baseline": base, "end": end, "peak": max(s[k] for s in after),
                  "min": min(s[k] for s in after), "first": samples[0][k], "last": samples[-1][k],
                  "growth": round(end / base - 1, 4) if base else 0.0}
    return out


def svg(samples, warmup_s, max_growth, title, path):
    """The curve as SVG, one panel per key: samples, the warm-up shaded,
    the limit (baseline x (1 + max_growth)) dashed. Stdlib only."""
    w, ph, ml, mr, mt, gap = 760, 170, 70, 20, 56, 50
    h = mt + len(KEYS) * (ph + gap)
    tmax = max(s["t_s"] for s in samples) or 1.0
    g = growth(samples, warmup_s)
    el = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
          f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
          f'<text x="{ml}" y="22" font-size="15">{title}</text>']
    pw = w - ml - mr
    for i, k in enumerate(KEYS):
        y0 = mt + i * (ph + gap)
        vals = [s[k] for s in samples]
        lim = g[k]["baseline"] * (1 + max_growth) if g[k] else max(vals)
        hi = max(max(vals), lim) * 1.1 or 1.0
        x = lambda t: ml + pw * t / tmax  # noqa: E731
        y = lambda v: y0 + ph - ph * v / hi  # noqa: E731
        el.append(f'<rect x="{ml}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        wx = min(x(warmup_s), ml + pw)
        el.append(f'<rect x="{ml}" y="{y0}" width="{wx - ml:.1f}" height="{ph}" fill="#eee"/>')
        el.append(f'<text x="{ml + 4}" y="{y0 + 14}" fill="#777">warm-up</text>')
        for f in (0, 0.5, 1):
            v = hi * f
            el.append(f'<text x="{ml - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
        el.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y(lim):.1f}" y2="{y(lim):.1f}" stroke="#c33" '
                  f'stroke-dasharray="5,4"/>')
        el.append(f'<text x="{ml + pw - 4}" y="{y(lim) - 4:.1f}" text-anchor="end" fill="#c33">'
                  f'+{max_growth:.0%} limit</text>')
        pts = " ".join(f"{x(s['t_s']):.1f},{y(s[k]):.1f}" for s in samples)
        el.append(f'<polyline points="{pts}" fill="none" stroke="#1f5fbf" stroke-width="2"/>')
        for s in samples:
            el.append(f'<circle cx="{x(s["t_s"]):.1f}" cy="{y(s[k]):.1f}" r="2.5" fill="#1f5fbf"/>')
        gr = g[k]
        note = (f"baseline {gr['baseline']}, end {gr['end']}, peak {gr['peak']}, growth {gr['growth']:+.1%}"
                if gr else "")
        el.append(f'<text x="{ml}" y="{y0 - 6}" font-weight="bold">{LABELS[k]}</text>')
        el.append(f'<text x="{ml + pw}" y="{y0 - 6}" text-anchor="end">{note}</text>')
        for m in range(0, 6):
            t = tmax * m / 5
            el.append(f'<text x="{x(t):.1f}" y="{y0 + ph + 16}" text-anchor="middle">{t / 60:.1f}</text>')
        el.append(f'<text x="{ml + pw / 2}" y="{y0 + ph + 32}" text-anchor="middle" fill="#555">'
                  f'minutes</text>')
    el.append("</svg>")
    with open(path, "w") as fh:
        fh.write("\n".join(el) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("minutes", type=float)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before the growth baseline (default max(30, run / 10))")
    ap.add_argument("--max-growth", type=float, default=0.05)
    a = ap.parse_args()
    # SIGTERM ends the run like Ctrl-C: children stopped, partial results
    # written.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    secs = a.minutes * 60
    warmup = a.warmup if a.warmup is not None else max(30.0, secs / 10)
    w, h = (int(v) for v in os.environ.get("SOAK_SIZE", "640x360").split("x"))
    fps = float(os.environ.get("SOAK_FPS", 30))
    out = suite.OUT
    os.makedirs(out, exist_ok=True)
    s = suite.Suite(suite.binary())
    s.scenario = "run"
    samples = []
    why = []
    res = {"minutes": a.minutes, "size": f"{w}x{h}", "fps": fps, "every_s": a.every, "warmup_s": warmup,
           "max_growth": a.max_growth, "livekit_port": suite.LK_PORT, "listen": suite.LISTEN}
    tsv = open(os.path.join(out, "samples.tsv"), "w")
    tsv.write("t_s\trss_mib\tfds\tthreads\tfps\tframes_released\tfail_closed\treconnects\taudio_delay_ms\n")
    try:
        s.lk = suite.start_livekit("livekit-server")
        serve = s.serve("--room", ROOM, "--audio")
        # Lip sync and frames censored whole (missed deadlines: on a busy
        # machine, many) are reported, not judged: the soak is about leaks,
        # freezes and growth (the e2e `basic` scenario judges the others).
        v, b, j = s.clients(ROOM, w=w, h=h, fps=fps, seconds=secs, audio=True, max_gap=1.0,
                            viewer_args=("--max-av-ms", "1e9", "--max-whole", "1.0"))
        t0 = time.time()
        next_at = t0
        while True:
            now = time.time()
            if now >= next_at:
                if serve.p.poll() is not None:
                    why.append(f"serve exited with {serve.p.returncode}")
                    break
                smp = {"t_s": round(now - t0, 1), **proc_sample(serve.p.pid)}
                try:
                    m = suite.metrics()
                except OSError:
                    m = {}
                smp.update(fps=suite.metric(m, "livecensor_fps"),
                           frames_released=suite.metric(m, "livecensor_frames_released_total"),
                           fail_closed=suite.metric(m, "livecensor_fail_closed_total"),
                           reconnects=suite.metric(m, "livecensor_reconnects_total"),
                           audio_delay_ms=suite.metric(m, "livecensor_audio_delay_ms"))
                samples.append(smp)
                tsv.write("\t".join(str(smp[k]) for k in ("t_s", "rss_mib", "fds", "threads", "fps",
                                                          "frames_released", "fail_closed",
                                                          "reconnects", "audio_delay_ms")) + "\n")
                tsv.flush()
                print(f"soak: {smp}", flush=True)
                next_at += a.every
            if b.p.poll() is not None and now - t0 >= secs:
                break
            time.sleep(min(1.0, max(0.05, next_at - time.time())))
        r = s.finish_clients(v, b, j, 60)
        res["viewer"] = {k: r.get(k) for k in ("verdict", "viewer_rc", "frames", "distinct", "leaks",
                                                "unchecked", "censored_whole", "whole_share",
                                                "max_gap_s", "gaps_over_1s", "latency_ms_p50",
                                                "latency_ms_p95", "av_offset_ms_steady_p50", "fps",
                                                "error")}
        if r.get("viewer_rc") != 0:
            why.append(f"viewer: {r.get('verdict')}")
        if serve.p.poll() is not None:
            why.append(f"serve exited with {serve.p.returncode}")
    except BaseException as e:  # a broken or interrupted run fails with its reason
        why.append(f"{type(e).__name__}: {e}")
    finally:
        s.stop_all()
        if s.lk:
            s.lk.stop()
        tsv.close()
    res["samples"] = len(samples)
    if samples:
        g = growth(samples, warmup)
        res["curve"] = g
        late = [smp for smp in samples if smp["t_s"] >= warmup]
        if len(late) < 2:
            why.append(f"only {len(late)} sample(s) after the {warmup:.0f} s warm-up")
        for k in KEYS:
            if g[k] and g[k]["growth"] > a.max_growth:
                why.append(f"{k} grew {g[k]['growth']:+.1%} after the warm-up "
                           f"({g[k]['baseline']} -> {g[k]['end']}) > {a.max_growth:.0%}")
        title = (f"livecensor serve soak: {a.minutes:g} min, {w}x{h}@{fps:g} + audio, "
                 f"sampled every {a.every:g} s")
        svg(samples, warmup, a.max_growth, title, os.path.join(out, "soak.svg"))
        res["svg"] = os.path.join(out, "soak.svg")
    res["pass"] = not why
    res["why"] = why
    with open(os.path.join(out, "soak.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    print("soak: " + json.dumps({k: res.get(k) for k in ("curve", "viewer", "svg")}), flush=True)
    print("soak: " + ("PASS" if not why else "FAIL: " + "; ".join(why)), flush=True)
    return 0 if not why else 1


if __name__ == "__main__":
    common.exit_now(main())
