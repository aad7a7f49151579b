#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS each
# (default 20: the smoke run that scripts/test.sh does), starting from the
# committed seed corpora in fuzz/corpus/ and writing new inputs to a scratch
# dir. A crash stops the run; libFuzzer leaves the input under
# fuzz/artifacts/TARGET/. Longer runs: scripts/fuzz.sh 600.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo-fuzz passes nightly-only flags; the one stable toolchain accepts them so.
export RUSTC_BOOTSTRAP=1
# Its instrumented build must not overwrite the main build's artifacts.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
for target in $(cargo fuzz list); do
  scratch=$(mktemp -d)
  log="$scratch/log"
  status=0
  cargo fuzz run --sanitizer none --release "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "fuzz $target: ${runs:-0} runs in ${seconds}s, exit $status"
  if [[ $status -ne 0 ]]; then
    tail -40 "$log" >&2
    echo "fuzz target $target failed (the input is under fuzz/artifacts/$target/)" >&2
    rm -rf "$scratch"
    exit 1
  fi
  rm -rf "$scratch"
done
