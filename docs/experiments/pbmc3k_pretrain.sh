#!/usr/bin/env bash
# Pretrain the `small` config on 70% of 10x PBMC3k (CPU, bounded steps), then compare kNN cell type
# accuracy on the held-out 30% (8 cells per step as 4 micro-batches of 2: about 2.6 GB of activations per cell
# in a micro-batch with the small config) for: the pretrained model, the same random init, and PCA. Not part of CI
# (about 90 s per step of 8 cells on a loaded 2-core machine); results and the loss curve are reported in docs/pretraining.md.
# Usage: docs/experiments/pbmc3k_pretrain.sh OUTDIR [STEPS]   (STOP_AFTER=N: stop after N steps of the schedule)
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/env.sh
OUT=${1:?usage: pbmc3k_pretrain.sh OUTDIR [STEPS]}
STEPS=${2:-40}
BIN=$SCF_BIN_DIR/scfoundation
F=$SCF_CI_CACHE/real-data/rna_10xpmbc3k.h5ad
[ -s "$F" ] || { echo "run ci/real_data.sh first (downloads $F)" >&2; exit 1; }
mkdir -p "$OUT"
"$SCF_PYTHON" docs/experiments/pbmc3k_split.py "$F" "$OUT/train.h5ad" "$OUT/test.h5ad" 0
"$BIN" init --config small --seed 0 --out "$OUT/init"
t0=$SECONDS
"$BIN" pretrain --data "$OUT/train.h5ad" --init "$OUT/init" --out "$OUT/run" --steps "$STEPS" \
  --batch-size 2 --accumulate 4 --lr 1e-3 --warmup 5 --save-every 20 --val-fraction 0.05 --val-max-cells 24 --seed 0 \
  ${STOP_AFTER:+--stop-after "$STOP_AFTER"}
echo "pretraining: $((SECONDS - t0)) s for $STEPS steps"
# Cell embeddings of held-out cells, pretrained vs the same random init vs PCA (kNN on subsamples).
bash docs/experiments/pbmc3k_knn.sh "$OUT" "$OUT/knn" random_init="$OUT/init" pretrained="$OUT/run"
