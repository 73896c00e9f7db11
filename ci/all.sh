#!/usr/bin/env bash
# Every check, in the order CI runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
bash ci/rust.sh
.venv-ci/bin/python ci/h5ad_roundtrip.py
