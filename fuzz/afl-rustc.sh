#!/usr/bin/env bash
# RUSTC_WRAPPER for the fuzz build (scripts/fuzz.sh): AFL++ coverage
# instrumentation (the flags cargo-afl uses) for our crate, the harnesses and
# the parsers they drive; every other crate is the main build's `ci`
# artifact, reused as is. `cargo afl build` instruments every dependency with
# one codegen unit each: hours on a small shared machine.
# The runtime object is linked into the harness binaries.
set -euo pipefail
rustc=$1
shift
name= type=
prev=
for a in "$@"; do
    case $prev in
    --crate-name) name=$a ;;
    --crate-type) type=$a ;;
    esac
    prev=$a
done
case " ${AFL_RS_INSTRUMENT:-} " in
*" $name "*) ;;
*) exec "$rustc" "$@" ;;
esac
flags=(-C debug-assertions -C overflow-checks -C codegen-units=1 --cfg fuzzing
    -C passes=sancov-module
    -C llvm-args=-sanitizer-coverage-level=3
    -C llvm-args=-sanitizer-coverage-trace-pc-guard
    -C llvm-args=-sanitizer-coverage-prune-blocks=0
    -C llvm-args=-sanitizer-coverage-trace-compares)
if [[ $type == bin ]]; then
    flags+=(-C "link-arg=${AFL_RS_RUNTIME:?}")
fi
exec "$rustc" "$@" "${flags[@]}"
