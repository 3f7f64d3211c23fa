"""Publishes the test picture (astronaut face moving over a photo, frame
counter in the bottom-left corner) as an H.264 camera track into ROOM-raw,
and writes `k<TAB>send time` for every frame so the viewer can measure
latency on the same clock.

usage: broadcaster.py --room demo [--width 640 --height 360 --fps 30 --seconds 12 --sent FILE]
"""

import argparse
import asyncio
import sys
import time

from livekit import rtc

import numpy as np

import common
import tokens


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--room", default="demo")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--sent", default="sent.tsv")
    ap.add_argument("--identity", default="broadcaster")
    ap.add_argument("--audio", action="store_true", help="also publish a 440 Hz tone")
    ap.add_argument("--bitrate", type=int, default=0, help="max bps (0: ~0.15 bit/px/frame)")
    a = ap.parse_args()

    room_name = a.room if a.room.endswith("-raw") else a.room + "-raw"
    scene = common.Scene(a.width, a.height, a.fps)
    room = rtc.Room()
    await room.connect(tokens.URL, tokens.token(a.identity, room_name, True, False))
    print(f"broadcaster: joined {room_name} as {a.identity}", flush=True)

    source = rtc.VideoSource(a.width, a.height)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    bitrate = a.bitrate or int(0.15 * a.width * a.height * a.fps)
    opts = rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA,
        video_codec=rtc.VideoCodec.H264,
        simulcast=False,
        video_encoding=rtc.VideoEncoding(max_bitrate=bitrate, max_framerate=a.fps),
        degradation_preference=rtc.DegradationPreference.MAINTAIN_RESOLUTION,
    )
    await room.local_participant.publish_track(track, opts)
    print(f"broadcaster: publishing {a.width}x{a.height}@{a.fps} H.264", flush=True)
    audio_task = None
    if a.audio:
        asrc = rtc.AudioSource(48000, 1)
        atrack = rtc.LocalAudioTrack.create_audio_track("tone", asrc)
        await room.local_participant.publish_track(
            atrack, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        print("broadcaster: publishing a 440 Hz tone (Opus)", flush=True)

        async def tone():
            n = 480  # 10 ms
            t = 0
            while True:
                x = np.arange(t, t + n) / 48000.0
                pcm = (np.sin(2 * np.pi * 440 * x) * 8000).astype(np.int16)
                await asrc.capture_frame(rtc.AudioFrame(pcm.tobytes(), 48000, 1, n))
                t += n

        audio_task = asyncio.create_task(tone())

    period = 1.0 / a.fps
    n = int(a.seconds * a.fps)
    start = time.monotonic()
    late = 0
    with open(a.sent, "w") as sent:
        for k in range(n):
            due = start + k * period
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -period:
                late += 1
            img = scene.render(k)
            frame = rtc.VideoFrame(a.width, a.height, rtc.VideoBufferType.RGBA, img.tobytes())
            sent.write(f"{k}\t{time.time():.6f}\n")
            source.capture_frame(frame, timestamp_us=int(k * period * 1e6))
            if k % 30 == 0:
                sent.flush()
    print(f"broadcaster: sent {n} frames ({late} late by > 1 frame)", flush=True)
    if audio_task:
        audio_task.cancel()
    await room.disconnect()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
