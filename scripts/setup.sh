#!/usr/bin/env bash
# Fetches what livecensor needs at run time but must not commit: the NudeNet
# 320n model (AGPL-3.0, from the PyPI `nudenet` wheel), the onnxruntime shared
# library (MIT, from the PyPI `onnxruntime` wheel) and public-domain test
# photos (from the scikit-image wheel). Everything lands in models/ and is
# checked against pinned sha256 sums. Idempotent: a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=models
mkdir -p "$MODELS/photos"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

MODEL_SHA=c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f
ORT_SHA=6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f

check() { # path sha
  echo "$2  $1" | sha256sum -c --quiet - >/dev/null 2>&1
}

if ! check "$MODELS/320n.onnx" "$MODEL_SHA"; then
  echo "setup: fetching NudeNet 320n model (nudenet==3.4.2 wheel)"
  pip download --quiet --no-deps nudenet==3.4.2 -d "$tmp"
  unzip -o -q -j "$tmp"/nudenet-3.4.2-*.whl 'nudenet/320n.onnx' -d "$MODELS"
  check "$MODELS/320n.onnx" "$MODEL_SHA" || { echo "setup: sha256 mismatch for $MODELS/320n.onnx" >&2; exit 1; }
fi

if ! check "$MODELS/libonnxruntime.so" "$ORT_SHA"; then
  echo "setup: fetching onnxruntime 1.32.0 shared library"
  pip download --quiet --no-deps --only-binary=:all: onnxruntime==1.32.0 -d "$tmp"
  unzip -o -q -j "$tmp"/onnxruntime-1.32.0-*.whl 'onnxruntime/capi/libonnxruntime.so.1.32.0' -d "$tmp/ort"
  mv "$tmp/ort/libonnxruntime.so.1.32.0" "$MODELS/libonnxruntime.so"
  check "$MODELS/libonnxruntime.so" "$ORT_SHA" || { echo "setup: sha256 mismatch for $MODELS/libonnxruntime.so" >&2; exit 1; }
fi

if [ ! -f "$MODELS/photos/astronaut.png" ]; then
  echo "setup: fetching public-domain test photos (scikit-image wheel)"
  pip download --quiet --no-deps --only-binary=:all: scikit-image==0.26.0 -d "$tmp"
  for p in astronaut coffee chelsea rocket motorcycle_left brick grass; do
    unzip -o -q -j "$tmp"/scikit_image-*.whl "skimage/data/$p.png" -d "$MODELS/photos" 2>/dev/null || true
  done
  [ -f "$MODELS/photos/astronaut.png" ] || { echo "setup: astronaut.png missing from the scikit-image wheel" >&2; exit 1; }
fi
echo "setup: models/ ready (320n.onnx, libonnxruntime.so, photos/)"
