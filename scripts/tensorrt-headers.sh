#!/usr/bin/env bash
# Fetches the headers the TensorRT shim (src/detect/tensorrt/shim.cpp) is
# compiled against, so `cargo build --features tensorrt` builds the real
# backend on a machine without TensorRT or CUDA (CI). Nothing is linked: the
# shim loads libnvinfer at run time. Idempotent; pinned by sha256.
#
#   TensorRT 11.4 headers (Apache-2.0): NVIDIA's own files as vendored in the
#     crates.io crate trtx-sys 0.9.1 (TensorRT-Headers/TRT-Enterprise-11.4).
#
# They land in .cache/tensorrt/include (git-ignored; TENSORRT_HEADERS_DIR
# moves the parent), where build.rs looks for them. Prints
#   TENSORRT_INCLUDE_DIR=...
# on stdout; everything else goes to stderr. To compile against an installed
# TensorRT instead, set TENSORRT_INCLUDE_DIR yourself.
#
# CUDA headers are not fetched: TensorRT's headers take only cudaStream_t and
# cudaEvent_t from cuda_runtime_api.h, and build.rs uses a two-line stand-in
# (src/detect/tensorrt/cuda/) when no CUDA toolkit is found. (The PyPI
# nvidia-cuda-runtime wheels carry cuda_runtime_api.h but not the
# crt/host_defines.h it includes, which only the 300 MB nvcc wheel has.)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${TENSORRT_HEADERS_DIR:-$root/.cache/tensorrt}"

CRATE_URL='https://static.crates.io/crates/trtx-sys/trtx-sys-0.9.1%2Brtx1.7.crate'
CRATE_SHA=5480ee056292951daa1bc74532162d6cb75190f091e45d7d97c0c356916ae171
CRATE_DIR='trtx-sys-0.9.1+rtx1.7/TensorRT-Headers/TRT-Enterprise-11.4'

trt_inc="$dest/include"

check() { # file sha
  echo "$2  $1" | sha256sum -c --quiet - >/dev/null 2>&1
}

# A folder is complete when its stamp holds the pinned sum (written last).
done_stamp() { # dir sha
  [[ -f "$1/.sha256" && "$(cat "$1/.sha256")" == "$2" ]]
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dest"

if ! done_stamp "$trt_inc" "$CRATE_SHA"; then
  command -v curl >/dev/null 2>&1 || { echo "tensorrt-headers: curl not found" >&2; exit 1; }
  echo "tensorrt-headers: fetching TensorRT 11.4 headers (trtx-sys 0.9.1 crate, 1 MB)" >&2
  curl -sSfL --retry 3 -o "$tmp/trtx-sys.crate" "$CRATE_URL"
  check "$tmp/trtx-sys.crate" "$CRATE_SHA" || { echo "tensorrt-headers: sha256 mismatch for $CRATE_URL" >&2; exit 1; }
  mkdir -p "$tmp/trt"
  tar -xzf "$tmp/trtx-sys.crate" -C "$tmp/trt" --strip-components=3 "$CRATE_DIR"
  [[ -f "$tmp/trt/NvInfer.h" && -f "$tmp/trt/NvOnnxParser.h" ]] \
    || { echo "tensorrt-headers: NvInfer.h / NvOnnxParser.h missing from the crate" >&2; exit 1; }
  echo "$CRATE_SHA" > "$tmp/trt/.sha256"
  rm -rf "$trt_inc"
  mv "$tmp/trt" "$trt_inc"
fi

echo "tensorrt-headers: ready in $dest" >&2
echo "TENSORRT_INCLUDE_DIR=$trt_inc"
