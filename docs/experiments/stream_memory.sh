#!/usr/bin/env bash
# Peak RSS of `embed` against the number of cells, per path (README "Benchmarks", memory): synthetic
# raw-count files of 1k, 10k and 100k cells (200 expressed genes each) streamed through the tiny test
# model. A flat peak RSS means the cells are streamed, not held. Usage: stream_memory.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/env.sh
W=${1:-.ci-work/stream-memory}
mkdir -p "$W"
BIN=$SCF_BIN_DIR/scfoundation
GENES=${SCF_GENE_INDEX:-../shared/reference/OS_scRNA_gene_index.19264.tsv}
[ -f "$GENES" ] || GENES=src/data/OS_scRNA_gene_index.19264.tsv
SIZES=${SIZES:-"1000 10000 100000"}
MODES=${MODES:-"cell gene expression"}
for n in $SIZES; do
  [ -f "$W/c$n.h5ad" ] || "$SCF_PYTHON" docs/experiments/synthetic_h5ad.py "$GENES" "$n" 200 "$W/c$n.h5ad" 0 >/dev/null
done
printf '%-10s %8s %10s %12s %12s\n' mode cells seconds "peak MiB" "output MiB"
for mode in $MODES; do
  for n in $SIZES; do
    out=$W/out_${mode}_$n.h5ad
    extra=()
    # Every gene for every cell would be cells x 19,264 x width: the mean over cells (genes x width) instead.
    [ "$mode" = gene ] && extra=(--gene-embedding mean)
    /usr/bin/time -f '%e %M' -o "$W/time" "$BIN" embed --input "$W/c$n.h5ad" \
      --model test-data/reference/tiny_models.ckpt --mode "$mode" --output "$out" --progress none "${extra[@]}" >/dev/null
    read -r secs kb < "$W/time"
    printf '%-10s %8d %10.1f %12.0f %12.0f\n' "$mode" "$n" "$secs" "$((kb / 1024))" "$(($(stat -c %s "$out") / 1048576))"
    rm -f "$out"
  done
done
