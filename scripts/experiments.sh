#!/usr/bin/env bash
# Regenerates docs/RESULTS.md and its plots (docs/results/) on the real model:
# the detection matrix, the red team, the honest population (the
# false-positive rate on >= 3000 honest checks) and the per-miner sequential
# test. With no arguments it runs the configuration docs/RESULTS.md shows;
# any arguments replace that configuration (see `poi-lab experiment --help`),
# e.g. `--max-tokens 128` for the full 200-prompt matrix.
#
# Check results are JSON lines under docs/results/checks/<configuration>/,
# committed with the report: a run resumes from them on any machine and only
# computes what is missing, so an interrupted run (or one cut short by a
# session) is continued by running this again. Generated artifacts are cached
# under ~/.cache/poi/experiments (POI_EXPERIMENT_CACHE); `--fresh` deletes
# both and recomputes everything.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${POI_EXPERIMENT_CACHE:-$HOME/.cache/poi/experiments}"
records=docs/results/checks
if [[ "${1:-}" == "--fresh" ]]; then
  shift
  rm -rf "$cache" "$records"
fi
if [[ $# -eq 0 ]]; then
  set -- --per-kind 3 --max-tokens 64 --honest-artifacts 3000 --honest-tokens 32 --laundering-artifacts 60
fi
scripts/fetch-model.sh >/dev/null
cargo run --release --locked -p poi-lab -- experiment --cache "$cache" --records "$records" --out docs "$@"
