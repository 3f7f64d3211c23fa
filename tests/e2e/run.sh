#!/usr/bin/env bash
# The LiveKit end-to-end suite on loopback (see tests/e2e/suite.py for the
# scenarios and the environment it reads):
#   tests/e2e/run.sh                 every scenario
#   tests/e2e/run.sh basic kick      only these
# Needs scripts/livekit-setup.sh first, and a built livecensor binary
# (LIVECENSOR_BIN, else target/release, target/ci or target/debug).
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -x bin/livekit-server && -x .venv/bin/python ]] || { echo "run scripts/livekit-setup.sh first" >&2; exit 2; }
exec .venv/bin/python tests/e2e/suite.py "$@"
