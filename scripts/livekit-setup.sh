#!/usr/bin/env bash
# Installs what the LiveKit end-to-end test needs, idempotently:
#   bin/livekit-server  (livekit-server v1.13.5 built from source with Go;
#                        the module's cmd/server builds a binary named `server`)
#   .venv               (Python: livekit 1.2.x, livekit-api 1.2.x, numpy, pillow, selenium
#                        for the independent test clients in tests/e2e/)
# Needs Go >= 1.23 and python3 with venv; reaches only the Go module proxy and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LK_VERSION=v1.13.5

if [[ -x bin/livekit-server ]] && bin/livekit-server --version 2>/dev/null | grep -q "${LK_VERSION#v}"; then
  echo "bin/livekit-server $LK_VERSION present"
else
  command -v go >/dev/null || { echo "go not found: install Go >= 1.23" >&2; exit 1; }
  mkdir -p bin
  echo "building livekit-server $LK_VERSION (a few minutes)..."
  GOBIN="$ROOT/bin" go install "github.com/livekit/livekit-server/cmd/server@$LK_VERSION"
  mv -f bin/server bin/livekit-server
  bin/livekit-server --version
fi

if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import livekit.rtc, livekit.api, numpy, PIL, selenium' 2>/dev/null; then
  echo ".venv present ($(.venv/bin/pip list 2>/dev/null | grep -E '^livekit ' | tr -s ' '))"
else
  python3 -m venv .venv
  .venv/bin/pip install -q 'livekit>=1.2,<1.3' 'livekit-api>=1.2,<1.3' numpy pillow 'selenium>=4.20,<5'
  echo ".venv ready"
fi
