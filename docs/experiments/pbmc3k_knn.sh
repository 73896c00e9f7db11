#!/usr/bin/env bash
# kNN cell type accuracy of cell embeddings on held-out PBMC3k cells, for each model given, beside PCA (all on
# the same stratified subsamples of pbmc3k_pretrain.sh's split: TRAIN_CELLS reference cells, TEST_CELLS
# held-out cells, so CPU runs stay short). Usage: pbmc3k_knn.sh SPLITDIR OUTDIR NAME=MODEL [NAME=MODEL ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/env.sh
SPLIT=${1:?usage: pbmc3k_knn.sh SPLITDIR OUTDIR NAME=MODEL ...}
OUT=${2:?}
shift 2
BIN=$SCF_BIN_DIR/scfoundation
mkdir -p "$OUT"
"$SCF_PYTHON" docs/experiments/subsample.py "$SPLIT/train.h5ad" "$OUT/train.h5ad" "${TRAIN_CELLS:-500}"
"$SCF_PYTHON" docs/experiments/subsample.py "$SPLIT/test.h5ad" "$OUT/test.h5ad" "${TEST_CELLS:-300}"
specs=()
for spec in "$@"; do
  name=${spec%%=*}
  model=${spec#*=}
  for s in train test; do
    "$BIN" embed --input "$OUT/$s.h5ad" --model "$model" --output "$OUT/$s.$name.h5ad" --batch-size 16 --progress none
  done
  specs+=("$name=$OUT/train.$name.h5ad,$OUT/test.$name.h5ad")
done
"$SCF_PYTHON" docs/experiments/knn_eval.py "$OUT/train.h5ad" "$OUT/test.h5ad" "${specs[@]}" | tee "$OUT/knn.json"
