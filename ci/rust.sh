#!/usr/bin/env bash
# Format, lints and the Rust test suite (release profile: the same build the workflow checks use).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
cargo test --release --locked
