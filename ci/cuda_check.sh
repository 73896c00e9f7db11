#!/usr/bin/env bash
# The `cuda` feature must keep compiling: `cargo check --features cuda` with nvcc from NVIDIA's PyPI
# wheels (no CUDA toolkit or GPU on CI machines; nothing here runs on a GPU). About 10 minutes cold,
# almost all of it nvcc compiling candle's kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${SCF_CI_WORK:-$PWD/.ci-work}/cuda
VENV=$W/venv
C=$VENV/lib/python3.11/site-packages/nvidia/cu13
if [ ! -x "$C/bin/nvcc" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "nvidia-cuda-nvcc==13.4.92" "nvidia-cuda-runtime==13.4.*" \
    "nvidia-cuda-crt==13.4.92" "nvidia-nvvm==13.4.92" nvidia-cuda-cccl
fi
[ -x "$C/bin/nvcc" ] || { echo "ci/cuda_check.sh: nvcc not found under $C (python3 is not 3.11?)" >&2; exit 1; }
PATH=$C/bin:$PATH CUDA_HOME=$C CUDA_PATH=$C CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CARGO_TARGET_DIR=$W/target \
  cargo check --locked --features cuda
echo "cuda feature: compiles (nvcc $("$C/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
