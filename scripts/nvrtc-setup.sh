#!/usr/bin/env bash
# Fetches NVIDIA's run-time CUDA compiler (libnvrtc) from its PyPI wheel into
# models/nvrtc/ (git-ignored) so that tests/kernels_nvrtc.rs can compile every
# kernel on a machine without a GPU or a CUDA toolkit. Prints the library
# path on stdout; everything else goes to stderr.
#
#   bash scripts/nvrtc-setup.sh            # default: the newest 13.x wheel
#   bash scripts/nvrtc-setup.sh cu12       # NVRTC 12.9 (drivers older than R580)
#   bash scripts/nvrtc-setup.sh both       # 13.x and 12.9 side by side; the
#                                          # binary picks by the driver
#   NVRTC_SPEC='nvidia-cuda-nvrtc==13.5.37' bash scripts/nvrtc-setup.sh
#
# Then: LIVECENSOR_NVRTC_LIB=<printed path> cargo test --test kernels_nvrtc
# (the test also finds models/nvrtc/ by itself).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${NVRTC_DIR:-$root/models/nvrtc}"
case "${1:-}" in
    cu12) spec="${NVRTC_SPEC:-nvidia-cuda-nvrtc-cu12==12.9.86}"; want=12 ;;
    both)
        "$0" cu12 >/dev/null
        exec "$0"
        ;;
    *) spec="${NVRTC_SPEC:-nvidia-cuda-nvrtc>=13,<14}"; want=13 ;;
esac

find_lib() {
    find -H "$dest" -maxdepth 1 -name "libnvrtc.so.$want*" ! -name 'libnvrtc-builtins*' 2>/dev/null \
        | sort | head -n 1 || true
}

lib="$(find_lib)"
if [[ -n "$lib" ]]; then
    echo "nvrtc already present in $dest" >&2
    echo "$lib"
    exit 0
fi

pip_cmd=()
if command -v pip >/dev/null 2>&1; then
    pip_cmd=(pip)
elif command -v python3 >/dev/null 2>&1; then
    pip_cmd=(python3 -m pip)
else
    echo "nvrtc-setup: neither pip nor python3 found" >&2
    exit 1
fi
command -v unzip >/dev/null 2>&1 || { echo "nvrtc-setup: unzip not found" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "downloading $spec (about 60 MB) ..." >&2
"${pip_cmd[@]}" download --quiet --no-deps --only-binary=:all: \
    -d "$tmp" "$spec" >&2
wheel="$(ls "$tmp"/*.whl | head -n 1)"
mkdir -p "$dest"
# The wheel holds nvidia/cu13/lib/libnvrtc.so.13 and libnvrtc-builtins.so.*;
# libnvrtc loads the builtins from its own folder.
unzip -q -o -j "$wheel" '*/lib/libnvrtc*.so*' -d "$dest"
unzip -q -o -j "$wheel" '*/licenses/License.txt' -d "$dest" 2>/dev/null || true
lib="$(find_lib)"
if [[ -z "$lib" ]]; then
    echo "nvrtc-setup: no libnvrtc.so.* in $(basename "$wheel")" >&2
    exit 1
fi
echo "installed $(basename "$wheel") into $dest" >&2
echo "$lib"
