#!/usr/bin/env bash
# Builds test-data/pretrain/ (run once; the outputs are committed), for the Galaxy pretraining tool's resume test
# and for using a checkpoint archive as a model in the embedding tools:
#   micro_config.json              a model far smaller than 'tiny' (hidden size 8, one layer each; 167,125
#                                  parameters, most of them the 19,266 x 8 position embedding)
#   pbmc_tiny_micro_step2.tar      `init --config micro_config.json --seed 3`, then `pretrain` for 2 steps on
#                                  test-data/pbmc_tiny.h5ad (batch 2), archived as the Galaxy tool archives its
#                                  output: the checkpoint's files at the archive root, names sorted.
# A resume needs the same data bytes (sha256), so the fixture must be rebuilt if pbmc_tiny.h5ad changes, and when
# the checkpoint format changes. Needs the built binary (SCF_BIN_DIR, see ci/env.sh) and GNU tar.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
BIN=$SCF_BIN_DIR/scfoundation
OUT=test-data/pretrain
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$OUT"
python3 - "$OUT/micro_config.json" <<'PY'
import json, sys
enc = dict(depth=1, dim_head=4, heads=2, hidden_dim=8, module_type="transformer", norm_first=False, seq_len=19266)
dec = dict(enc, module_type="performer")
cfg = {"dataset_config": {"rnaseq": {"bin_type": "auto_bin", "decoder_add_zero": True, "mae_encoder_max_seq_len": 15000,
                                     "mask_ignore_token_ids": [0], "mask_prob": 0.3, "random_token_prob": 0.1,
                                     "replace_prob": 0.8, "value_mask_prob": 0.3, "zero_mask_prob": 0.03}},
       "model": "mae_autobin",
       "model_config": {"mae_autobin": {"bin_alpha": 1.0, "bin_num": 100, "decoder": dec, "encoder": enc,
                                        "gene_num": 19266, "mask_gene_name": False, "mask_token_id": 102,
                                        "model": "mae_autobin", "n_class": 104, "pad_token_id": 103,
                                        "rawcount": True, "seq_len": 19266}}}
json.dump(cfg, open(sys.argv[1], "w"), indent=1, sort_keys=True)
PY
"$BIN" init --config "$OUT/micro_config.json" --seed 3 --out "$tmp/m0"
ln -s "$PWD/test-data/pbmc_tiny.h5ad" "$tmp/pbmc_tiny.h5ad"
"$BIN" --threads 1 pretrain --data "$tmp/pbmc_tiny.h5ad" --init "$tmp/m0" --out "$tmp/run" --steps 2 --batch-size 2 \
  --save-every 1 --val-fraction 0.2
(cd "$tmp/run" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - *) > "$OUT/pbmc_tiny_micro_step2.tar"
tar -tvf "$OUT/pbmc_tiny_micro_step2.tar"
