#!/usr/bin/env bash
# Every check, in the order CI runs them (see README). Each step prints what it checked.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }
step "set-up";                 bash ci/setup.sh
step "Rust: fmt, clippy, tests"; bash ci/rust.sh
step "h5ad round trip (Python anndata)"; .venv-ci/bin/python ci/h5ad_roundtrip.py
step "containers";             bash ci/containers.sh
step "nf-core modules lint";   bash ci/nfcore_lint.sh
step "Galaxy";                 bash ci/galaxy.sh
step "Nextflow";               bash ci/nextflow.sh
step "cuda feature compiles";  bash ci/cuda_check.sh
step "all checks passed"
