#!/usr/bin/env bash
# Cell type annotation on real data: 10x PBMC3k (labels: obs['celltype']), the same seeded stratified 70/30
# split as pbmc3k_pretrain.sh; `annotate train` on the 70%, `annotate predict` on the 30%, for each model
# given, beside a PCA + logistic-regression baseline on the same split. Not part of CI.
# Usage: docs/experiments/pbmc3k_annotate.sh OUTDIR NAME=MODEL [NAME=MODEL ...] (extra annotate train
# options in ANNOTATE_ARGS, default: --finetune-layers 0)
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/env.sh
OUT=${1:?usage: pbmc3k_annotate.sh OUTDIR NAME=MODEL ...}
shift
BIN=$SCF_BIN_DIR/scfoundation
F=$SCF_CI_CACHE/real-data/rna_10xpmbc3k.h5ad
[ -s "$F" ] || { echo "run ci/real_data.sh first (downloads $F)" >&2; exit 1; }
mkdir -p "$OUT"
[ -s "$OUT/train.h5ad" ] || "$SCF_PYTHON" docs/experiments/pbmc3k_split.py "$F" "$OUT/train.h5ad" "$OUT/test.h5ad" 0
"$SCF_PYTHON" docs/experiments/pca_logreg.py "$OUT/train.h5ad" "$OUT/test.h5ad" celltype | tee "$OUT/baseline.json"
for spec in "$@"; do
  name=${spec%%=*}
  model=${spec#*=}
  t0=$SECONDS
  # shellcheck disable=SC2086
  "$BIN" annotate train --input "$OUT/train.h5ad" --label-key celltype --model "$model" --out "$OUT/head-$name" \
    --seed 0 ${ANNOTATE_ARGS:---finetune-layers 0}
  "$BIN" annotate predict --input "$OUT/test.h5ad" --head "$OUT/head-$name" --model "$model" \
    --output "$OUT/pred-$name.h5ad" --label-key celltype --metrics "$OUT/pred-$name.metrics.json"
  "$SCF_PYTHON" - "$OUT/pred-$name.metrics.json" "$name" $((SECONDS - t0)) <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({"model": sys.argv[2], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "seconds": int(sys.argv[3])}))
PY
done
