#!/usr/bin/env bash
# The test command: fetches what the tests need (idempotent), then runs every
# test on the CPU backend. Used by CI (.ci/run) and by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/nvrtc-setup.sh >/dev/null
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/models/libonnxruntime.so}"
cargo test --locked --all-targets "$@"
# Opt-in LiveKit end-to-end test (builds livekit-server with Go, a Python
# venv from PyPI, and the release binary; runs on loopback only).
if [[ ${LIVECENSOR_E2E:-0} == 1 ]]; then
  bash scripts/livekit-setup.sh
  cargo build --release --locked
  tests/e2e/run.sh
fi
