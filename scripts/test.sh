#!/usr/bin/env bash
# The test command: fetches what the tests need (idempotent), then runs every
# test on the CPU backend. Used by CI (.ci/run) and by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/nvrtc-setup.sh >/dev/null
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/models/libonnxruntime.so}"
cargo test --locked --all-targets "$@"
