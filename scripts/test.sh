#!/usr/bin/env bash
# Checks formatting and lints (rustfmt, clippy with warnings as errors), runs
# every test of the workspace, after fetching the pinned model if it is
# missing, then a short run of every fuzz target (scripts/fuzz.sh). The
# reference vectors are read from ../shared/vectors (beside the project root).
# Ends with one totals line, since cargo's own last line belongs to whichever
# crate ran last.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -d ../shared/vectors ]]; then
  echo "error: ../shared/vectors is missing; tests need the reference vectors beside the project" >&2
  exit 1
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The real-model tests need the pinned GGUF; fetching is idempotent.
scripts/fetch-model.sh >/dev/null
# The `poi serve` test drives it with the official openai SDK (and signs a
# requester binding with `cryptography`), from a virtual environment.
venv="${POI_VENV:-$HOME/.cache/poi/venv}"
if ! "$venv/bin/python" -c "import openai, cryptography" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q openai==3.60.0 cryptography==50.0.2
fi
export POI_PYTHON="$venv/bin/python"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
# Long runs: scripts/fuzz.sh 600.
scripts/fuzz.sh "${POI_FUZZ_SECONDS:-20}"
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed; fuzz smoke passed\n", passed, failed }' "$log"
