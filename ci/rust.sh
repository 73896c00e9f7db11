#!/usr/bin/env bash
# Format, lints and the Rust test suite (release profile: the same build the workflow checks use). Builds into
# CARGO_TARGET_DIR (ci/all.sh: $SCF_CI_CACHE/target); tests/layouts.rs and tests/gene_modules.rs run SCF_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
# The build without OpenBLAS (candle's own CPU products) stays warning-free too.
cargo clippy --release --locked --no-default-features --all-targets -- -D warnings
cargo test --release --locked
