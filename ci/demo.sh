#!/usr/bin/env bash
# The main job on bundled test data: embed 8 cells with the tiny reference model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo build --release --locked
mkdir -p work
./target/release/scfoundation embed \
  --input test-data/pbmc_tiny.h5ad \
  --model test-data/reference/tiny_models.ckpt \
  --output work/pbmc_tiny.scfoundation.h5ad
.venv-ci/bin/python - <<'PY'
import anndata as ad
a = ad.read_h5ad("work/pbmc_tiny.scfoundation.h5ad")
print(a)
print("X_scfoundation:", a.obsm["X_scfoundation"].shape, a.obsm["X_scfoundation"].dtype)
print("provenance:", dict(a.uns["scfoundation"]))
PY
