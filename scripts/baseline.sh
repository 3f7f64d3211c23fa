#!/usr/bin/env bash
# NudeNet baseline, side by side on this machine: makes a venv in .venv with
# the PyPI `nudenet==3.4.2` package (and onnxruntime 1.32.0, the same runtime
# version livecensor loads), builds livecensor (release) and runs
# scripts/baseline.py. Arguments go to baseline.py, e.g.
#   bash scripts/baseline.sh --frames 150 --repeat 3 --json out/baseline/results.json
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/models/libonnxruntime.so}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import nudenet, onnxruntime, cv2' 2>/dev/null; then
  echo "baseline: installing nudenet==3.4.2 into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check \
    nudenet==3.4.2 onnxruntime==1.32.0 opencv-python-headless numpy
fi
cargo build --release --locked --quiet
exec .venv/bin/python scripts/baseline.py "$@"
