#!/usr/bin/env bash
# The one command for a GPU box, in two halves (the GPU box has no Rust):
#
#   scripts/gpu-check.sh build   # HERE: release build with --features cuda,
#                                # test executables, model -> target/gpu-carry/
#   scripts/gpu-check.sh run     # THERE (from the repo root, with
#                                # target/gpu-carry carried): doctor, device
#                                # tests, kernel tests, end-to-end censor +
#                                # audit of a 1080p synthetic clip, timings.
#
# See docs/GPU.md. `run` never needs a network; every step's exit status is
# collected and the table at the end says what passed; `run` exits 1 when a
# step failed (with a GPU present, LIVECENSOR_EXPECT_GPU=1 makes every GPU
# test that would skip fail instead).
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=target/gpu-carry
MAX_MIB=60

build() {
  set -e
  cargo build --release --locked --features cuda
  # Test executables; parse cargo's JSON lines for their paths.
  cargo test --release --locked --features cuda --no-run --message-format=json \
    > target/gpu-tests.json
  rm -rf "$CARRY"
  mkdir -p "$CARRY/tests" "$CARRY/models"
  cp target/release/livecensor "$CARRY/livecensor"
  python3 - "$CARRY/tests" <<'EOF'
import json, shutil, sys
dst = sys.argv[1]
want = {"gpu_device", "kernels_nvrtc", "livecensor"}
for line in open("target/gpu-tests.json"):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    if not m["profile"]["test"]:
        continue
    name = t["name"]
    kind = t["kind"][0]
    if name in want and kind in ("test", "lib"):
        out = f"{dst}/{name}-{kind}"
        shutil.copy(m["executable"], out)
        print("carry", out)
EOF
  strip "$CARRY/livecensor" "$CARRY"/tests/*
  cp -L models/320n.onnx "$CARRY/models/320n.onnx"
  if [ -d models/photos ]; then
    mkdir -p "$CARRY/models/photos"
    cp -L models/photos/*.png "$CARRY/models/photos/"
  fi
  local kib
  kib=$(du -skL "$CARRY" | cut -f1)
  echo "gpu-carry: $((kib / 1024)) MiB in $CARRY"
  du -shL "$CARRY"/* "$CARRY"/tests/* | sed 's/^/  /'
  if [ "$kib" -gt $((MAX_MIB * 1024)) ]; then
    echo "gpu-carry: larger than $MAX_MIB MiB: will not travel" >&2
    exit 1
  fi
  echo "next: run \`bash scripts/gpu-check.sh run\` on the GPU box with carry [\"$CARRY\"]"
}

# Library paths on the GPU box: pip's NVIDIA wheels (libnvrtc.so.13) and
# the Python onnxruntime's libonnxruntime.so.
find_libs() {
  local py
  py=$(command -v python3 || command -v python || true)
  if [ -n "$py" ]; then
    local site
    site=$("$py" -c 'import site,sys; print(":".join(site.getsitepackages()+[site.getusersitepackages()]))' 2>/dev/null || true)
    local IFS=:
    for s in $site; do
      for d in "$s"/nvidia/*/lib; do
        [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      done
      if [ -z "${ORT_DYLIB_PATH:-}" ] && [ ! -e models/libonnxruntime.so ]; then
        for f in "$s"/onnxruntime/capi/libonnxruntime.so*; do
          [ -e "$f" ] && { ORT_DYLIB_PATH="$f"; break; }
        done
      fi
    done
  fi
  if [ -z "${ORT_DYLIB_PATH:-}" ] && [ -e models/libonnxruntime.so ]; then
    ORT_DYLIB_PATH="$PWD/models/libonnxruntime.so"
  fi
  export LD_LIBRARY_PATH ORT_DYLIB_PATH
}

declare -a RESULTS
LOGS=target/gpu-check
# step NAME CMD...: runs CMD, output to the terminal and $LOGS/NAME.log,
# and records its status and wall time for the summary.
step() {
  local name=$1
  shift
  local t0 t1 rc
  echo
  echo "=== $name: $*"
  t0=$(date +%s%N)
  "$@" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || FAILED=1
  t1=$(date +%s%N)
  local ms=$(((t1 - t0) / 1000000))
  RESULTS+=("$(printf '%-24s %-7s %6d.%03d s' "$name" "$([ "$rc" -eq 0 ] && echo ok || echo "rc=$rc")" $((ms / 1000)) $((ms % 1000)))")
  return 0
}

run() {
  [ -x "$CARRY/livecensor" ] || { echo "no $CARRY/livecensor: run \`scripts/gpu-check.sh build\` first and carry $CARRY" >&2; exit 2; }
  # models/ holds symlinks into the build machine's checkout: point the
  # dangling ones at the carried copies.
  local f
  for f in 320n.onnx photos; do
    if [ ! -e "models/$f" ] && [ -e "$CARRY/models/$f" ]; then
      rm -f "models/$f"
      ln -s "$PWD/$CARRY/models/$f" "models/$f"
    fi
  done
  find_libs
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  echo "ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "nvidia-smi not found"
  # A GPU is here: a GPU test that skips is a failure, not a pass.
  if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    export LIVECENSOR_EXPECT_GPU=1
    echo "LIVECENSOR_EXPECT_GPU=1 (nvidia-smi sees a GPU: skips fail)"
  fi
  for l in libcuda.so.1 libnvcuvid.so.1 libnvidia-encode.so.1 libnvinfer.so; do
    if ldconfig -p 2>/dev/null | grep -q "$l"; then echo "ldconfig: $l present"; else echo "ldconfig: $l absent"; fi
  done
  local bin="$PWD/$CARRY/livecensor"
  local model="$PWD/$CARRY/models/320n.onnx"
  local out=$LOGS
  mkdir -p "$out"
  step doctor "$bin" doctor
  # The device tests; their TIMING lines go to the table.
  local t
  for t in "$CARRY"/tests/gpu_device-test; do
    [ -x "$t" ] && step gpu_device "$t" --nocapture --test-threads=1
  done
  for t in "$CARRY"/tests/kernels_nvrtc-test; do
    [ -x "$t" ] && step kernels_nvrtc "$t" --nocapture
  done
  for t in "$CARRY"/tests/livecensor-lib; do
    [ -x "$t" ] && step unit_tests_gpu_build "$t" gpu:: doctor livekit::session::tests::gpu_session --nocapture
  done
  # End to end on a 1080p synthetic clip (CPU pipeline, GPU build).
  step synth_1080p "$bin" synth --scenario constant-pan --frames 60 --width 1920 --height 1080 \
    --photos "$CARRY/models/photos" -o "$out/clip1080.y4m"
  local timev=(); [ -x /usr/bin/time ] && timev=(/usr/bin/time -v)
  step censor_1080p "${timev[@]}" "$bin" censor --model "$model" -i "$out/clip1080.y4m" \
    -o "$out/censored1080.h264"
  step audit_1080p "$bin" audit --model "$model" -i "$out/clip1080.y4m" -o "$out/censored1080.h264" \
    --json "$out/audit1080.json"
  # The device path: NVDEC -> kernels -> detector -> kernels -> one copy to
  # the host -> CPU encoder; and Y4M uploaded. Both audited on the CPU.
  # Skipped, with the reason, where doctor finds no usable CUDA backend.
  if ! grep -q "^CUDA backend  *yes" "$LOGS/doctor.log" 2>/dev/null; then
    if [ "${LIVECENSOR_EXPECT_GPU:-}" = 1 ]; then
      echo "FAILED device path: a GPU is present but doctor finds no usable CUDA backend"
      FAILED=1
    fi
    echo "SKIPPED device path (censor --gpu, bench --gpu): $(grep "^CUDA backend" "$LOGS/doctor.log" 2>/dev/null)"
    RESULTS+=("$(printf '%-24s %-7s' device_path skipped)")
  else
    step synth_1080p_mp4 "$bin" synth --scenario constant-pan --frames 60 --width 1920 --height 1080 \
      --photos "$CARRY/models/photos" -o "$out/clip1080.mp4"
    step censor_1080p_gpu "${timev[@]}" "$bin" censor --gpu --model "$model" -i "$out/clip1080.mp4" \
      -o "$out/censored1080_gpu.h264"
    step audit_1080p_gpu "$bin" audit --model "$model" -i "$out/clip1080.mp4" -o "$out/censored1080_gpu.h264" \
      --json "$out/audit1080_gpu.json"
    step censor_1080p_gpu_y4m "$bin" censor --gpu --model "$model" -i "$out/clip1080.y4m" \
      -o "$out/censored1080_gpu_y4m.h264"
    step audit_1080p_gpu_y4m "$bin" audit --model "$model" -i "$out/clip1080.y4m" \
      -o "$out/censored1080_gpu_y4m.h264" --json "$out/audit1080_gpu_y4m.json"
    # Streams held on the device path (detector on the CPU unless TensorRT).
    step bench_1080p_gpu "$bin" bench --gpu \
      --width 1920 --height 1080 --streams 2 --duration 5 --json "$out/bench1080_gpu.json"
  fi
  echo
  echo "=== summary"
  printf '%s\n' "${RESULTS[@]}"
  echo
  echo "=== kernel and stage timings"
  grep -h "TIMING\|NVDEC .*PSNR\|encode backend\|parity\|SKIPPED" "$out"/gpu_device.log 2>/dev/null | sed 's/^/  /'
  grep -h "Elapsed (wall\|Maximum resident" "$out"/censor_1080p.log 2>/dev/null | sed 's/^/  censor 1080p: /'
  grep -h "fps held\|added latency\|decode \|preprocess \|censor \|encode " "$out"/bench_1080p_gpu.log 2>/dev/null | sed 's/^/  bench 1080p --gpu: /'
  grep -h "^censored\|^per frame\|encoder: \|Elapsed (wall" "$out"/censor_1080p_gpu.log 2>/dev/null | sed 's/^/  censor 1080p --gpu: /'
  grep -h "^decode\|^preprocess\|^detect\|^censor\|^encode" "$out"/doctor.log 2>/dev/null | sed 's/^/  doctor: /'
  if [ "${FAILED:-0}" != 0 ]; then
    echo "gpu-check: FAILED (see the summary)" >&2
    exit 1
  fi
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  *) echo "usage: $0 build|run" >&2; exit 2 ;;
esac
