#!/usr/bin/env bash
# The test command: fetches what the tests need (idempotent), then runs every
# test on the CPU backend, then the LiveKit end-to-end suite. Used by CI
# (.ci/run) and by hand. Arguments go to `cargo test` (e.g. a test name).
#   LIVECENSOR_E2E=0   skip the end-to-end suite (it needs Go >= 1.23 and
#                      python3 to build livekit-server and the test clients)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/nvrtc-setup.sh >/dev/null
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/models/libonnxruntime.so}"
# The `ci` profile: release speed with debug assertions (see Cargo.toml).
cargo test --locked --profile ci --all-targets "$@"
if [[ ${LIVECENSOR_E2E:-1} == 1 ]]; then
  bash scripts/livekit-setup.sh
  LIVECENSOR_BIN="$PWD/target/ci/livecensor" .venv/bin/python tests/e2e/suite.py
fi
