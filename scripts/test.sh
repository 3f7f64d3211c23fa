#!/usr/bin/env bash
# The test command: fetches what the tests need (idempotent), then runs every
# test on the CPU backend, then the LiveKit end-to-end suite and a 2-minute
# soak, then the TensorRT feature's build and tests (no TensorRT needed). Used by CI
# (.ci/run) and by hand. Arguments go to `cargo test` (e.g. a test name).
#   LIVECENSOR_E2E=0   skip the end-to-end suite and the soak (they need Go >= 1.23 and
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
  # The soak, 2 minutes (its own ports): RSS, fds and threads of serve flat,
  # no leak, no freeze. The hour: scripts/soak.sh 60.
  LIVECENSOR_BIN="$PWD/target/ci/livecensor" bash scripts/soak.sh 2
fi
# The TensorRT backend (feature `tensorrt`): its shim compiled against the
# pinned TensorRT 11.4 headers (no TensorRT or GPU needed), its tests and the
# `engine` CLI on this TensorRT-less machine; about 70 s on 2 cores. Last,
# because it replaces target/ci/livecensor, which the end-to-end suite runs.
bash scripts/tensorrt-headers.sh >/dev/null
LIVECENSOR_EXPECT_TRT_SHIM=1 cargo test --locked --profile ci --features tensorrt \
  --lib --test engine_cli -- tensorrt engine doctor
