#!/usr/bin/env bash
# The soak (tests/e2e/soak.py): a real livekit-server, `serve --room` and a
# broadcaster/viewer pair for MINUTES minutes on ports of their own;
# samples serve's RSS, fds and threads every 30 s and fails on growth over
# 5% after the warm-up, on any leak or on a freeze over 1 s at the viewer.
# Writes out/soak/{samples.tsv,soak.json,soak.svg}.
#   scripts/soak.sh 2          CI's run
#   scripts/soak.sh 60         the hour (extra flags go to soak.py)
# Needs scripts/livekit-setup.sh first, and a built livecensor binary
# (LIVECENSOR_BIN, else target/release, target/ci or target/debug).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { echo "usage: scripts/soak.sh MINUTES [soak.py flags]" >&2; exit 2; }
[[ -x bin/livekit-server && -x .venv/bin/python ]] || { echo "run scripts/livekit-setup.sh first" >&2; exit 2; }
exec .venv/bin/python tests/e2e/soak.py "$@"
