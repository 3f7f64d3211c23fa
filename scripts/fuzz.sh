#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with AFL++ (cargo-afl, stable Rust).
#
#   scripts/fuzz.sh TARGET SECONDS   fuzz TARGET for SECONDS (resumes fuzz/out/TARGET)
#   scripts/fuzz.sh list             the targets
#   scripts/fuzz.sh stats [TARGET]   execs, speed, crashes and hangs so far
#
# Targets: annexb mp4 y4m rtp webhook signal toml (docs/FUZZING.md).
# Findings land in fuzz/out/TARGET/default/{crashes,hangs}; each one goes to
# fuzz/regressions/TARGET/ with its expectation in tests/fuzz_regressions.rs,
# and the bug is fixed. Not part of CI: CI only replays the committed inputs.
# Runs niced; one target at a time on a small machine.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS="annexb mp4 y4m rtp webhook signal toml"

stats() {
    local t=$1 f=fuzz/out/$1/default/fuzzer_stats
    if [[ ! -f $f ]]; then
        echo "$t: no run yet"
        return
    fi
    awk -v t="$t" -F' *: *' '
        { v[$1] = $2 }
        END {
            printf "%-8s execs %s  exec/s %s  run %ss  corpus %s  crashes %s  hangs %s  stability %s\n",
                t, v["execs_done"], v["execs_per_sec"], v["run_time"], v["corpus_count"],
                v["saved_crashes"], v["saved_hangs"], v["stability"]
        }' "$f"
}

case "${1:-}" in
list)
    echo "$TARGETS"
    exit 0
    ;;
stats)
    for t in ${2:-$TARGETS}; do stats "$t"; done
    exit 0
    ;;
"" | -h | --help)
    sed -n '2,13p' "$0"
    exit 2
    ;;
esac

target=$1
seconds=${2:?usage: scripts/fuzz.sh TARGET SECONDS}
if [[ " $TARGETS " != *" $target "* ]]; then
    echo "unknown target '$target'; one of: $TARGETS" >&2
    exit 2
fi
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    echo "SECONDS must be a positive whole number, not '$seconds'" >&2
    exit 2
fi

# cargo-afl builds AFL++ itself; it needs a C compiler and make.
if ! cargo afl --version >/dev/null 2>&1; then
    echo "installing cargo-afl (builds AFL++; needs cc and make)" >&2
    cargo install --locked cargo-afl
fi
if ! cargo afl fuzz -h >/dev/null 2>&1; then
    cargo afl config --build
fi

(cd fuzz && nice -n 10 cargo afl build --release --bin "$target")

out=fuzz/out/$target
mkdir -p "$out"
input=fuzz/corpus/$target
# An earlier run is resumed (its queue is the corpus), not started over.
if [[ -f $out/default/fuzzer_stats ]]; then
    input=-
fi

# No root here: no CPU governor or core_pattern changes (afl-system-config).
# AFL_NO_AFFINITY: the cores are shared, do not pin. -t 1000: an input that
# takes over 1 s is a hang. -V: stop after SECONDS.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_NO_UI=1 AFL_AUTORESUME=1
nice -n 10 cargo afl fuzz -i "$input" -o "$out" -V "$seconds" -t 1000 -m none \
    -- "fuzz/target/release/$target" >"$out/afl.log" 2>&1 || {
    echo "afl-fuzz failed; the end of $out/afl.log:" >&2
    tail -20 "$out/afl.log" >&2
    exit 1
}
stats "$target"
found=$(find "$out/default/crashes" "$out/default/hangs" -type f -name 'id:*' 2>/dev/null | wc -l)
if ((found > 0)); then
    echo "$found finding(s) in $out/default/{crashes,hangs}: reproduce with" >&2
    echo "  fuzz/target/release/$target < FILE" >&2
    exit 1
fi
