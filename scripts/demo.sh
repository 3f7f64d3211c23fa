#!/usr/bin/env bash
# The main job on an embedded default: fetch the model, build a 720p clip of
# a moving face from the public-domain astronaut photo, censor the faces,
# audit the output. Results land in out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/models/libonnxruntime.so}"
cargo run --release --locked -- demo "$@"
