#!/usr/bin/env bash
# Every check, in the order CI runs them (see README). Each step prints what it checked and how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
step() {
  local name=$1
  shift
  printf '\n==> %s\n' "$name"
  local t=$SECONDS
  "$@"
  printf '<== %s: %ds (total %ds)\n' "$name" $((SECONDS - t)) $((SECONDS - T0))
}
step "set-up"                            bash ci/setup.sh
step "Rust: fmt, clippy, tests"          bash ci/rust.sh
step "h5ad round trip (Python anndata)"  .venv-ci/bin/python ci/h5ad_roundtrip.py
step "real data, old anndata layout"     bash ci/real_data.sh
step "containers"                        bash ci/containers.sh
step "nf-core modules lint"              bash ci/nfcore_lint.sh
step "Galaxy"                            bash ci/galaxy.sh
step "Nextflow"                          bash ci/nextflow.sh
step "cuda feature compiles"             bash ci/cuda_check.sh
printf '\n==> all checks passed in %ds\n' $((SECONDS - T0))
