#!/usr/bin/env bash
# The main job on bundled test data: embed the 16 PBMC cells of test-data/pbmc_tiny.h5ad with the tiny test model.
# Builds like a developer's `cargo build --release` (into CARGO_TARGET_DIR if set, else target/); the anndata venv
# is cached outside the clone (ci/env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
bash ci/setup.sh
cargo build --release --locked
mkdir -p work
"$SCF_BIN_DIR/scfoundation" embed \
  --input test-data/pbmc_tiny.h5ad \
  --model test-data/reference/tiny_models.ckpt \
  --output work/pbmc_tiny.scfoundation.h5ad
"$SCF_PYTHON" - <<'PY'
import anndata as ad
a = ad.read_h5ad("work/pbmc_tiny.scfoundation.h5ad")
print(a)
print("X_scfoundation:", a.obsm["X_scfoundation"].shape, a.obsm["X_scfoundation"].dtype)
print("provenance:", dict(a.uns["scfoundation"]))
PY
