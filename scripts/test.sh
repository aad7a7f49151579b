#!/usr/bin/env bash
# Runs every test of the workspace. The reference vectors are read from
# ../shared/vectors (beside the project root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -d ../shared/vectors ]]; then
  echo "error: ../shared/vectors is missing; tests need the reference vectors beside the project" >&2
  exit 1
fi
cargo test --workspace --locked "$@"
