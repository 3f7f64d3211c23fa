"""Subscribes to the censored video in ROOM (or, with --raw, to the
broadcaster's own track in ROOM-raw), decodes every frame, reads its counter
and checks frame by frame that the face (whose position follows from the
counter) is hidden: the detail (mean |Laplacian|) of the face's centre must
be far below the raw picture's. Also checks that frames keep flowing and
measures latency against the broadcaster's send-time file.

Exit status 0 when: at least --min-frames frames, zero leaks, no gap over
--max-gap seconds; 1 otherwise. With --raw the check is inverted (the face
must be visible): it validates the instrument itself.
"""

import argparse
import asyncio
import json
import sys
import time

import numpy as np
from livekit import rtc

import common
import tokens


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--room", default="demo")
    ap.add_argument("--raw", action="store_true", help="watch ROOM-raw, expect the face visible")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=20.0, help="give up after this long")
    ap.add_argument("--idle", type=float, default=3.0, help="stop after this long without frames")
    ap.add_argument("--sent", default="sent.tsv")
    ap.add_argument("--min-frames", type=int, default=60)
    ap.add_argument("--max-gap", type=float, default=1.0)
    ap.add_argument("--ratio", type=float, default=0.35, help="leak if detail ratio is above")
    ap.add_argument("--json", default="")
    ap.add_argument("--identity", default="viewer")
    ap.add_argument("--audio", action="store_true", help="also expect the 440 Hz tone")
    a = ap.parse_args()

    room_name = a.room + "-raw" if a.raw else a.room
    scene = common.Scene(a.width, a.height, a.fps)
    raw_detail = {}

    room = rtc.Room()
    got_track = asyncio.get_running_loop().create_future()

    audio = {"frames": 0, "rms": []}

    async def listen(track):
        async for ev in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
            pcm = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float32)
            audio["frames"] += 1
            if pcm.size:
                audio["rms"].append(float(np.sqrt((pcm**2).mean())))

    audio_tasks = []

    @room.on("track_subscribed")
    def _on_sub(track, pub, participant):
        if track.kind == rtc.TrackKind.KIND_VIDEO and not got_track.done():
            got_track.set_result((track, participant.identity))
        if track.kind == rtc.TrackKind.KIND_AUDIO and a.audio:
            audio_tasks.append(asyncio.ensure_future(listen(track)))

    t_start = time.time()
    await room.connect(tokens.URL, tokens.token(a.identity, room_name, False, True))
    print(f"viewer: joined {room_name}", flush=True)
    try:
        track, who = await asyncio.wait_for(got_track, a.seconds)
    except asyncio.TimeoutError:
        print("viewer: no video track", flush=True)
        await room.disconnect()
        return 1
    print(f"viewer: subscribed to {who}'s video", flush=True)

    stream = rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA)
    it = stream.__aiter__()
    seen = []  # (k or None, recv time, ratio)
    leaks = []
    sizes = set()
    deadline = t_start + a.seconds
    while time.time() < deadline:
        try:
            ev = await asyncio.wait_for(it.__anext__(), a.idle if seen else deadline - time.time())
        except (asyncio.TimeoutError, StopAsyncIteration):
            break
        now = time.time()
        f = ev.frame
        if f.width < 32 or f.height < 32:
            continue  # libwebrtc's placeholder before the first real frame
        img = np.frombuffer(f.data, dtype=np.uint8).reshape(f.height, f.width, 4)
        sizes.add((f.width, f.height))
        k = common.read_counter(img, a.height)
        ratio = None
        if k is not None:
            s = f.height / a.height
            box = common.inner(scene.face_box(k))
            got = common.detail(common.gray(common.crop(img, box, s)))
            if k not in raw_detail:
                raw_detail[k] = common.detail(common.gray(common.crop(scene.render(k), box)))
            ratio = got / max(raw_detail[k], 1e-6)
            bad = ratio < a.ratio if a.raw else ratio > a.ratio
            if bad:
                leaks.append((k, round(ratio, 3)))
        seen.append((k, now, ratio))
    for t in audio_tasks:
        t.cancel()
    await stream.aclose()
    await room.disconnect()

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
    times = [t for _, t, _ in seen]
    gaps = [b - a_ for a_, b in zip(times, times[1:])]
    ks = [k for k, _, _ in seen if k is not None]
    ratios = [r for _, _, r in seen if r is not None]
    first_sent = min(sent.values()) if sent else float("nan")
    out = {
        "room": room_name,
        "frames": len(seen),
        "unreadable": sum(1 for k, _, _ in seen if k is None),
        "distinct": len(set(ks)),
        "sizes": sorted(sizes),
        "leaks": len(leaks),
        "leak_examples": leaks[:5],
        "ratio_p50": round(pct(ratios, 50), 3),
        "ratio_max": round(max(ratios), 3) if ratios else None,
        "max_gap_s": round(max(gaps), 3) if gaps else None,
        "latency_ms_p50": round(pct(lat, 50), 1),
        "latency_ms_p95": round(pct(lat, 95), 1),
        "first_frame_after_first_send_s": round(times[0] - first_sent, 3) if times else None,
        "audio_frames": audio["frames"],
        "audio_rms_p50": round(pct(audio["rms"], 50), 1) if audio["rms"] else None,
        "fps": round(len(seen) / (times[-1] - times[0]), 1) if len(times) > 1 else 0,
    }
    print("viewer: " + json.dumps(out), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh)
    ok = (
        len(seen) >= a.min_frames
        and not leaks
        and (out["max_gap_s"] or 0) <= a.max_gap
        and out["distinct"] >= a.min_frames * 0.9
        # 10 ms frames: at least a third of the video time, and a tone.
        and (not a.audio or (audio["frames"] >= a.min_frames and (out["audio_rms_p50"] or 0) > 1000))
    )
    print("viewer: " + ("PASS" if ok else "FAIL"), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
