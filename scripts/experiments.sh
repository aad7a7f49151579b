#!/usr/bin/env bash
# Regenerates docs/RESULTS.md and its plots (docs/results/) with the full
# detection matrix: 200 prompts, 128 tokens, every pair, sampled and greedy.
# Generated artifacts and check results are cached (default
# ~/.cache/poi/experiments), so an interrupted run resumes; `--fresh` deletes
# the cache first and recomputes everything. Other arguments go to
# `poi-lab experiment` (see `poi-lab experiment --help`), e.g. `--per-kind 10`.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${POI_EXPERIMENT_CACHE:-$HOME/.cache/poi/experiments}"
if [[ "${1:-}" == "--fresh" ]]; then
  shift
  rm -rf "$cache"
fi
scripts/fetch-model.sh >/dev/null
cargo run --release --locked -p poi-lab -- experiment --cache "$cache" --out docs "$@"
