"""Publishes the test picture (astronaut face moving over a photo, frame
counter in the bottom-left corner, a flash square every two seconds) as an
H.264 camera track into ROOM-raw, and writes `k<TAB>send time` for every
frame so the viewer can measure latency on the same clock. With --audio it
also publishes an Opus track that is silent except for a 1 kHz burst at
each flash, captured on the same clock as the video (the A/V sync mark).

usage: broadcaster.py --room demo [--width 640 --height 360 --fps 30 --seconds 12
                      --sent FILE --audio --resize-at S --resize-to WxH
                      --spells PERIOD,ON]
"""

import argparse
import asyncio
import sys
import time

from livekit import rtc

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
    ap.add_argument("--audio", action="store_true", help="also publish the audio burst track")
    ap.add_argument("--bitrate", type=int, default=0, help="max bps (0: ~0.15 bit/px/frame)")
    ap.add_argument("--resize-at", type=float, default=0, help="switch resolution after S seconds")
    ap.add_argument("--resize-to", default="", help="WxH to switch to")
    ap.add_argument("--token", default="", help="join with this token (e.g. `livecensor token`)")
    ap.add_argument("--spells", default="", metavar="PERIOD,ON",
                    help="the face in view only the last ON seconds of every PERIOD")
    a = ap.parse_args()
    spells = common.parse_spells(a.spells)

    room_name = a.room if a.room.endswith("-raw") else a.room + "-raw"
    scenes = {(a.width, a.height): common.Scene(a.width, a.height, a.fps, spells)}
    room = rtc.Room()
    await room.connect(tokens.URL, a.token or tokens.token(a.identity, room_name, True, False))
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
    asrc = None
    if a.audio:
        # A short queue: capture_frame then blocks, so a sample leaves at
        # about the time the pacing below gives it.
        asrc = rtc.AudioSource(48000, 1, queue_size_ms=30)
        atrack = rtc.LocalAudioTrack.create_audio_track("mic", asrc)
        await room.local_participant.publish_track(
            atrack, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
    await room.local_participant.publish_track(track, opts)
    print(f"broadcaster: published {time.time():.6f}", flush=True)
    print(f"broadcaster: publishing {a.width}x{a.height}@{a.fps} H.264"
          + (" + Opus bursts" if a.audio else ""), flush=True)

    period = 1.0 / a.fps
    n = int(a.seconds * a.fps)
    start = time.monotonic()

    async def audio_loop():
        chunk = 480  # 10 ms
        t = 0
        while True:
            due = start + t / 48000
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pcm = common.burst(t, chunk)
            await asrc.capture_frame(rtc.AudioFrame(pcm.tobytes(), 48000, 1, chunk))
            t += chunk

    audio_task = asyncio.create_task(audio_loop()) if asrc else None
    size = (a.width, a.height)
    late = 0
    with open(a.sent, "w") as sent:
        for k in range(n):
            due = start + k * period
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -period:
                late += 1
            if a.resize_at and a.resize_to and k == int(a.resize_at * a.fps):
                size = tuple(int(v) for v in a.resize_to.split("x"))
                print(f"broadcaster: frame {k}: switching to {size[0]}x{size[1]}", flush=True)
            if size not in scenes:
                scenes[size] = common.Scene(size[0], size[1], a.fps, spells)
            img = scenes[size].render(k)
            frame = rtc.VideoFrame(size[0], size[1], rtc.VideoBufferType.RGBA, img.tobytes())
            sent.write(f"{k}\t{time.time():.6f}\n")
            source.capture_frame(frame, timestamp_us=int(k * period * 1e6))
            if k % 30 == 0:
                sent.flush()
    print(f"broadcaster: sent {n} frames ({late} late by > 1 frame)", flush=True)
    if audio_task:
        audio_task.cancel()
    await room.disconnect()
    common.exit_now(0)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
