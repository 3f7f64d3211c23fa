#!/usr/bin/env bash
# End-to-end test on loopback: livekit-server, `livecensor serve --room demo`,
# an independent Python broadcaster (libwebrtc, H.264) into demo-raw and a
# Python viewer in demo that checks every frame for the face being hidden,
# frames flowing, and latency. Exit status: 0 pass, 1 fail.
#
#   tests/e2e/run.sh           full test (needs scripts/livekit-setup.sh first)
#   tests/e2e/run.sh --raw     instrument check only: viewer watches demo-raw
#                              directly and must see the face *visible*
#   AUDIO=1 tests/e2e/run.sh    also relay and check a 440 Hz Opus tone
#   tests/e2e/run.sh --webhook livecensor serve without --room: the session
#                              starts from livekit-server's track_published
#                              webhook (signed with devkey/secret)
# Env: SECONDS_LIVE (default 10), WIDTH/HEIGHT (640x360), FPS (30),
#      LIVECENSOR_BIN (default target/release/livecensor, else target/debug),
#      E2E_OUT (default out/e2e), ORT_DYLIB_PATH.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MODE=${1:-full}
LIVE=${SECONDS_LIVE:-10}
W=${WIDTH:-640}; H=${HEIGHT:-360}; FPS=${FPS:-30}
OUT=${E2E_OUT:-out/e2e}
ROOM=${ROOM:-demo}
mkdir -p "$OUT"
export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$ROOT/models/libonnxruntime.so}
PY=$ROOT/.venv/bin/python
[[ -x bin/livekit-server && -x $PY ]] || { echo "run scripts/livekit-setup.sh first" >&2; exit 2; }
BIN=${LIVECENSOR_BIN:-}
if [[ -z $BIN ]]; then
  if [[ -x target/release/livecensor ]]; then BIN=target/release/livecensor; else BIN=target/debug/livecensor; fi
fi

case $BIN in
  target/debug/*) echo "warning: $BIN is an unoptimized build; it may not keep up with 30 fps (cargo build --release)" >&2 ;;
esac

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT

if curl -s -m 1 http://127.0.0.1:7880 >/dev/null 2>&1; then
  echo "port 7880 is busy: another livekit-server runs here" >&2; exit 2
fi
bin/livekit-server --config tests/e2e/livekit.yaml >"$OUT/livekit.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do curl -s -m 1 http://127.0.0.1:7880 >/dev/null 2>&1 && break; sleep 0.2; done
curl -s -m 1 http://127.0.0.1:7880 >/dev/null || { echo "livekit-server did not start:"; tail -20 "$OUT/livekit.log"; exit 1; }
echo "livekit-server up"

VIEW_ARGS=(--room "$ROOM" --width "$W" --height "$H" --fps "$FPS" --sent "$ROOT/$OUT/sent.tsv"
           --seconds $((LIVE + 25)) --min-frames $((LIVE * FPS / 2)) --json "$ROOT/$OUT/viewer.json")
AUDIO_ARGS=()
[[ ${AUDIO:-0} == 1 ]] && AUDIO_ARGS=(--audio)
VIEW_ARGS+=("${AUDIO_ARGS[@]}")
if [[ $MODE == --raw ]]; then
  VIEW_ARGS+=(--raw)
else
  ROOM_ARGS=(--room "$ROOM")
  READY="serving room"
  if [[ $MODE == --webhook ]]; then ROOM_ARGS=(); READY="waiting for webhooks"; fi
  RUST_LOG=${RUST_LOG:-livecensor=info,warn} "$BIN" serve "${ROOM_ARGS[@]}" "${AUDIO_ARGS[@]}" --stats-every "${STATS_EVERY:-5}" --classes "${CLASSES:-FACE_FEMALE,FACE_MALE}" >"$OUT/livecensor.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q "$READY" "$OUT/livecensor.log" && break; sleep 0.2; done
  grep -q "$READY" "$OUT/livecensor.log" || { echo "livecensor serve did not start:"; tail -20 "$OUT/livecensor.log"; exit 1; }
  echo "livecensor up ($READY)"
fi

T0=$(date +%s.%N)
(cd tests/e2e && exec "$PY" viewer.py "${VIEW_ARGS[@]}") >"$OUT/viewer.log" 2>&1 &
VIEWER=$!; PIDS+=($VIEWER)
sleep 1
(cd tests/e2e && exec "$PY" broadcaster.py --room "$ROOM" --width "$W" --height "$H" --fps "$FPS" \
   --seconds "$LIVE" --sent "$ROOT/$OUT/sent.tsv" "${AUDIO_ARGS[@]}") >"$OUT/broadcaster.log" 2>&1 &
PIDS+=($!)
wait "$VIEWER"; RC=$?
cat "$OUT/broadcaster.log" "$OUT/viewer.log"
[[ $MODE == --raw ]] || tail -n 5 "$OUT/livecensor.log"
echo "e2e ($MODE): $([[ $RC == 0 ]] && echo PASS || echo FAIL) in $(echo "$(date +%s.%N) - $T0" | bc) s"
exit $RC
