"""Numbers for `livecensor worker` (not run by CI; prints figures, asserts
nothing): a real livekit-server, two workers, PyPI broadcasters/viewers.

  spread    N broadcasters (tokens from `livecensor token`) at once, two
            workers with --max-sessions 8 each: jobs per worker, and per
            room the time from the job's assignment (worker log) to the
            viewer's first censored frame: p50/p95. Repeated for each N in
            --rooms (default 4,8).
  failover  one long broadcast, two workers; --kills times: SIGKILL the
            worker serving the room, start a fresh one in its place; the
            longest gap the viewer saw ending after each kill and beginning
            within 5 s of it is that failover's gap: p50/max.

Usage: LIVECENSOR_BIN=target/ci/livecensor .venv/bin/python tests/e2e/workers_bench.py
       [--rooms 4,8] [--kills 5] [--size 480x270] [--fps 15]
Env as suite.py (E2E_LK_PORT, E2E_LISTEN, E2E_OUT). Figures also go to
OUT/workers_bench/summary.json.
"""

import argparse
import json
import os
import statistics
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import suite  # noqa: E402
from suite import Proc, Suite, dispatch_token, jobs_of, listen_plus  # noqa: E402


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    i = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return round(xs[i], 3)


def viewer_report(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def spread(s, n, w, h, fps, seconds):
    s.scenario = f"workers_bench/spread{n}"
    workers = [s.worker(f"worker-{k}", listen_plus(10 + k), "--max-sessions", "8") for k in (0, 1)]
    time.sleep(1.0)
    runs = []
    for i in range(n):
        room = f"wb{n}-{i}"
        tok = dispatch_token(s.bin, room, f"bc{i}")
        runs.append((room, s.clients(room, w=w, h=h, fps=fps, seconds=seconds, tag=str(i),
                                     broadcaster_args=("--token", tok),
                                     viewer_args=("--idle", "10"))))
    for room, (v, b, j) in runs:
        v.wait(seconds + 60)
        b.wait(15)
    per_worker = [sorted(r for _, _, r in jobs_of(p)) for p in workers]
    assigned = {r: t for p in workers for _, t, r in jobs_of(p)}
    lat = []
    for room, (_, _, vjson) in runs:
        first = viewer_report(vjson).get("first_frame_at")
        if first and room in assigned:
            lat.append(first - assigned[room])
    s.stop_all(keep=(s.lk,))
    return {
        "rooms": n,
        "jobs_per_worker": [len(x) for x in per_worker],
        "assignment_to_first_censored_frame_s": {
            "n": len(lat), "p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "all": [round(x, 3) for x in lat]},
    }


def failover(s, kills, w, h, fps):
    s.scenario = "workers_bench/failover"
    ports = {0: listen_plus(20), 1: listen_plus(21)}
    gen = {0: 0, 1: 0}
    procs = {k: s.worker(f"worker-{k}-0", ports[k], "--max-sessions", "4") for k in (0, 1)}
    room = "wb-failover"
    seconds = 12 + kills * 12
    tok = dispatch_token(s.bin, room, "bc")
    v, b, vjson = s.clients(room, w=w, h=h, fps=fps, seconds=seconds, max_gap=10.0,
                            broadcaster_args=("--token", tok), viewer_args=("--idle", "15"))
    time.sleep(8.0)
    kill_to_job = []
    kill_times = []
    for _ in range(kills):
        # The worker serving the room: the one with the latest job for it.
        latest = {k: max((t for _, t, r in jobs_of(p) if r == room), default=0) for k, p in procs.items()}
        k = max(latest, key=latest.get)
        t_kill = time.time()
        kill_times.append(t_kill)
        procs[k].p.kill()
        procs[k].p.wait()
        gen[k] += 1
        other = procs[1 - k]
        end = time.time() + 15
        while time.time() < end and not any(r == room and t > t_kill for _, t, r in jobs_of(other)):
            time.sleep(0.1)
        took = [t for _, t, r in jobs_of(other) if r == room and t > t_kill]
        kill_to_job.append(round(took[0] - t_kill, 3) if took else None)
        procs[k] = s.worker(f"worker-{k}-{gen[k]}", ports[k], "--max-sessions", "4")
        time.sleep(8.0)
    v.wait(seconds + 60)
    b.wait(15)
    rep = viewer_report(vjson)
    spans = rep.get("gaps_over_1s_at", [])
    gaps = [max((g for t0, g in spans if t0 + g > t and t0 < t + 5), default=None) for t in kill_times]
    s.stop_all(keep=(s.lk,))
    return {
        "kills": kills,
        "kill_to_new_job_s": kill_to_job,
        "failover_gap_s": {"n": len([g for g in gaps if g is not None]),
                           "p50": pct([g for g in gaps if g is not None], 0.5),
                           "max": max((g for g in gaps if g is not None), default=None), "all": gaps},
        "viewer": {k: rep.get(k) for k in ("frames", "leaks", "video_tracks", "max_gap_s")},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", default="4,8")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--size", default="480x270")
    ap.add_argument("--fps", type=float, default=15)
    ap.add_argument("--seconds", type=float, default=12)
    a = ap.parse_args()
    w, h = (int(x) for x in a.size.split("x"))
    os.makedirs(os.path.join(suite.OUT, "workers_bench"), exist_ok=True)
    s = Suite(suite.binary())
    s.lk = Proc("workers_bench/livekit-server", [os.path.join(suite.ROOT, "bin/livekit-server"), "--config",
                suite.livekit_config(os.path.join(suite.OUT, "workers_bench", "livekit.yaml"))])
    s.procs.append(s.lk)
    out = {"size": a.size, "fps": a.fps}
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{suite.LK_PORT}", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.2)
        out["spread"] = [spread(s, int(n), w, h, a.fps, a.seconds) for n in a.rooms.split(",") if n]
        for r in out["spread"]:
            print(f"workers_bench spread: {json.dumps(r)}", flush=True)
        if a.kills > 0:
            out["failover"] = failover(s, a.kills, w, h, a.fps)
            print(f"workers_bench failover: {json.dumps(out['failover'])}", flush=True)
    finally:
        s.stop_all()
    with open(os.path.join(suite.OUT, "workers_bench", "summary.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    common.exit_now(main())
