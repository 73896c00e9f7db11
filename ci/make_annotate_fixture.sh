#!/usr/bin/env bash
# Builds test-data/annotate/ (run once; the output is committed), for the Galaxy cell type annotation tools' tests:
#   pbmc_tiny_head.tar   `annotate train` on test-data/pbmc_tiny.h5ad (16 PBMC cells, 2 of each of 8 cell types in
#                        obs['cell_type']) with the tiny test model (test-data/reference/tiny_models.ckpt): the last
#                        encoder layer fine-tuned, a 16-wide head, 2 epochs of 4-cell micro-batches, one cell of each
#                        type held out; archived as scfoundation_annotate_train archives its output: the head
#                        directory's files at the archive root, names sorted.
# The head names the model's sha256, so it is only usable with tiny_models.ckpt; rebuild it when the head format
# changes. Needs the built binary (SCF_BIN_DIR, see ci/env.sh) and GNU tar.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
BIN=$SCF_BIN_DIR/scfoundation
OUT=test-data/annotate
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$OUT"
"$BIN" --threads 1 annotate train --input test-data/pbmc_tiny.h5ad --label-key cell_type \
  --model test-data/reference/tiny_models.ckpt --out "$tmp/head" \
  --epochs 2 --batch-size 4 --accumulate 1 --hidden 16 --val-fraction 0.5 --seed 0
(cd "$tmp/head" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - *) > "$OUT/pbmc_tiny_head.tar"
tar -tvf "$OUT/pbmc_tiny_head.tar"
