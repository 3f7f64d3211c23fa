#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with AFL++ (cargo-afl, stable Rust).
#
#   scripts/fuzz.sh TARGET SECONDS [EXECS]
#                                    fuzz TARGET for SECONDS, or until it has made
#                                    about EXECS executions in all (resumes
#                                    fuzz/out/TARGET; earlier runs' count)
#   scripts/fuzz.sh list             the targets
#   scripts/fuzz.sh stats [TARGET]   execs, speed, crashes and hangs so far
#   scripts/fuzz.sh replay [TARGET]  run the seeds and regressions through the
#                                    built targets (rtp's only replay; the others
#                                    also replay in tests/fuzz_regressions.rs)
#
# Targets: annexb sps mp4 y4m rtp webhook signal toml (docs/FUZZING.md).
# Findings land in fuzz/out/TARGET/default/{crashes,hangs}; each one goes to
# fuzz/regressions/TARGET/ with its expectation in tests/fuzz_regressions.rs,
# and the bug is fixed. Not part of CI: CI only replays the committed inputs.
# Runs niced; one target at a time on a small machine.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS="annexb sps mp4 y4m rtp webhook signal toml"

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

replay() {
    local t=$1 bin=target/ci/$1 n=0 f
    if [[ ! -x $bin ]]; then
        echo "$t: not built (run scripts/fuzz.sh $t 1 first)" >&2
        return 1
    fi
    for f in fuzz/corpus/"$t"/* fuzz/regressions/"$t"/*; do
        [[ -f $f ]] || continue
        if ! timeout 10 "$bin" <"$f" >/dev/null 2>&1; then
            echo "$t: $f fails or hangs" >&2
            return 1
        fi
        n=$((n + 1))
    done
    echo "$t: $n inputs replayed"
}

case "${1:-}" in
replay)
    for t in ${2:-$TARGETS}; do replay "$t"; done
    exit 0
    ;;
list)
    echo "$TARGETS"
    exit 0
    ;;
stats)
    for t in ${2:-$TARGETS}; do stats "$t"; done
    exit 0
    ;;
"" | -h | --help)
    sed -n '2,18p' "$0"
    exit 2
    ;;
esac

target=$1
seconds=${2:?usage: scripts/fuzz.sh TARGET SECONDS [EXECS]}
execs=${3:-}
if [[ " $TARGETS " != *" $target "* ]]; then
    echo "unknown target '$target'; one of: $TARGETS" >&2
    exit 2
fi
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    echo "SECONDS must be a positive whole number, not '$seconds'" >&2
    exit 2
fi
limit=(-V "$seconds")
if [[ -n $execs ]]; then
    if ! [[ $execs =~ ^[0-9]+$ ]] || ((execs == 0)); then
        echo "EXECS must be a positive whole number, not '$execs'" >&2
        exit 2
    fi
    limit+=(-E "$execs")
fi

# cargo-afl builds AFL++ itself; it needs a C compiler and make.
if ! cargo afl --version >/dev/null 2>&1; then
    echo "installing cargo-afl (builds AFL++; needs cc and make)" >&2
    cargo install --locked cargo-afl
fi
# (`afl-fuzz -h` exits 1 even when AFL++ is built: look for its runtime.)
afl_runtime() {
    ls "${XDG_DATA_HOME:-$HOME/.local/share}"/afl.rs/rustc-*/afl.rs-*/afl-llvm/afl-compiler-rt.o 2>/dev/null | tail -1
}
if [[ -z $(afl_runtime) ]]; then
    cargo afl config --build
fi

# Build: the main target dir and `ci` profile, so only our crate, the
# harnesses and the parsers they drive compile (instrumented, by
# fuzz/afl-rustc.sh); every other dependency is the main build's artifact.
runtime=$(afl_runtime)
if [[ -z $runtime ]]; then
    echo "no afl-compiler-rt.o: run 'cargo afl config --build'" >&2
    exit 1
fi
(cd fuzz && RUSTC_WRAPPER=$PWD/afl-rustc.sh AFL_RS_RUNTIME=$runtime \
    AFL_RS_INSTRUMENT="livecensor livecensor_fuzz mp4 y4m str0m $TARGETS seeds" \
    CARGO_TARGET_DIR=$PWD/../target nice -n 10 cargo build --profile ci --bin "$target" --bin seeds)

out=fuzz/out/$target
mkdir -p "$out"
input=fuzz/corpus/$target
# An earlier run is resumed (its queue is the corpus), not started over.
if [[ -f $out/default/fuzzer_stats ]]; then
    input=-
fi

# No root here: no CPU governor or core_pattern changes (afl-system-config).
# AFL_NO_AFFINITY: the cores are shared, do not pin. -t 1000: an input that
# takes over 1 s is a hang. -V: stop after SECONDS; -E: once about EXECS
# executions are done, counting those of the runs resumed.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_NO_UI=1 AFL_AUTORESUME=1
nice -n 10 cargo afl fuzz -i "$input" -o "$out" "${limit[@]}" -t 1000 -m none \
    -- "target/ci/$target" >"$out/afl.log" 2>&1 || {
    echo "afl-fuzz failed; the end of $out/afl.log:" >&2
    tail -20 "$out/afl.log" >&2
    exit 1
}
stats "$target"
# afl-fuzz times inputs by the wall clock: on a loaded machine a stalled
# process can be saved as a hang. Each hang is run again; one that finishes
# within 1 s here is reported as spurious, not as a finding.
for h in "$out"/default/hangs/id:*; do
    [[ -f $h ]] || continue
    if timeout 1 "target/ci/$target" <"$h" >/dev/null 2>&1; then
        echo "spurious hang (reruns in under 1 s): $h" >&2
        mv "$h" "$out/default/hangs/spurious-${h##*/}"
    fi
done
found=$(find "$out/default/crashes" "$out/default/hangs" -type f -name 'id:*' 2>/dev/null | wc -l)
if ((found > 0)); then
    echo "$found finding(s) in $out/default/{crashes,hangs}: reproduce with" >&2
    echo "  target/ci/$target < FILE" >&2
    exit 1
fi
