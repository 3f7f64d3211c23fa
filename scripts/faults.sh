#!/usr/bin/env bash
# The bench under detector faults and overload (numbers, not a timed test):
#   1. one 640x360 stream, 12 s, under each injected fault (hidden
#      `--fault-detector-*` flags), from 4 s after the run's first batch:
#      stall 500 ms per batch for 2 s; fail every 3rd batch for 3 s; hang
#      (2 s stall) for 1 s; fail every batch for 3 s; and no fault;
#   2. overload x2: `bench --scenario mixed --find-capacity
#      --latency-budget-ms 100` at WxH (default 1280x720), then twice the
#      streams it held, audited, admitted as `serve` admits live tracks
#      (`--live`: behind real time frames are skipped, not queued).
# Prints one table (ground-truth leaks, fail-closed frames before / inside
# / after each fault, recovered, p99 against the 250 ms deadline, peak
# RSS); JSON reports in out/faults/. bench exits 1 on a ground-truth leak
# in strict mode or a run that did not recover: so does this script.
#   scripts/faults.sh [WxH]
set -euo pipefail
cd "$(dirname "$0")/.."
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/models/libonnxruntime.so}"
B=${LIVECENSOR_BIN:-target/ci/livecensor}
[[ -x $B ]] || { echo "no $B: cargo build --profile ci (or set LIVECENSOR_BIN)" >&2; exit 2; }
SIZE=${1:-1280x720}
O=out/faults
mkdir -p "$O"
rc=0
one="bench --streams 1 --duration 12 --width 640 --height 360"
for spec in \
  "stall:--fault-detector-stall 500 --fault-detector-window 4:2" \
  "fail3:--fault-detector-fail-every 3 --fault-detector-window 4:3" \
  "hang:--fault-detector-stall 2000 --fault-detector-window 4:1" \
  "fail1:--fault-detector-fail-every 1 --fault-detector-window 4:3" \
  "none:"; do
  name=${spec%%:*}
  # shellcheck disable=SC2086
  if ! $B $one ${spec#*:} --json "$O/$name.json" >"$O/$name.txt" 2>&1; then
    echo "faults: $name: bench failed (see $O/$name.txt)" >&2
    rc=1
  fi
done
W=${SIZE%x*}
H=${SIZE#*x}
$B bench --scenario mixed --latency-budget-ms 100 --find-capacity --step-duration 6 --max-streams 12 \
  --no-audit --width "$W" --height "$H" \
  --json "$O/capacity.json" >"$O/capacity.txt" 2>&1 || true
cap=$(python3 -c "import json; print(json.load(open('$O/capacity.json')).get('capacity_realtime') or 1)")
if ! $B bench --streams $((2 * cap)) --live --scenario mixed --latency-budget-ms 100 --duration 10 \
  --width "$W" --height "$H" \
  --json "$O/overload.json" >"$O/overload.txt" 2>&1; then
  echo "faults: overload x2: bench failed (see $O/overload.txt)" >&2
  rc=1
fi
python3 - "$O" "$cap" "$SIZE" <<'EOF'
import json, sys
o, cap, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(f"{'run':<26} {'frames':>6} {'GT-leak':>7} {'faulted':>7} {'fail-closed before/inside/after':>32} "
      f"{'settled':>9} {'recovered':>9} {'p99 ms':>7} {'RSS MiB':>7}")
rows = [(n, n) for n in ("stall", "fail3", "hang", "fail1", "none")]
rows += [("capacity", f"capacity: {cap} x {size}"), ("overload", f"overload x2: {2 * cap} x {size}")]
for f, label in rows:
    try:
        d = json.load(open(f"{o}/{f}.json"))
    except (OSError, ValueError):
        print(f"{label:<26} (no report)")
        continue
    r = [x for x in d["runs"] if x["setup"]["streams"] == cap][-1] if f == "capacity" else d["runs"][-1]
    fa = r.get("faults")
    if fa:
        ph = "/".join(f"{c} of {n}" for c, n in zip(fa["fail_closed"], fa["frames"]))
        settled = f"{fa['settled_fail_closed']}/{fa['settled_frames']}"
        before = fa["fail_closed"][0] / max(1, fa["frames"][0])
        rec = "yes" if fa["settled_fail_closed"] / max(1, fa["settled_frames"]) <= before + 0.05 else "NO"
        faulted = fa["faulted_frames"]
    else:
        ph, settled, rec, faulted = f"{r['fail_closed']} of {r['frames_out']} (all)", "-", "-", "-"
    print(f"{label:<26} {r['frames_out']:>6} {r['truth_uncensored']:>7} {faulted:>7} {ph:>32} {settled:>9} "
          f"{rec:>9} {r['latency_ms']['p99']:>7.1f} {r['resources']['peak_rss_mib']:>7.0f}")
print("deadline 250 ms (scheduler.deadline_ms); p99 is added latency in -> out, so the deadline plus "
      "censor and encode; RSS is the bench process's peak")
EOF
exit $rc
