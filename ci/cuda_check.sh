#!/usr/bin/env bash
# The `cuda` and `nccl` features must keep compiling: `cargo check --release --features nccl` (nccl implies cuda) with nvcc from NVIDIA's PyPI
# wheels (no CUDA toolkit or GPU on CI machines; nothing here runs on a GPU). The nvcc venv is cached
# (SCF_CI_CACHE/venv-cuda). The check uses the main target dir (ci/all.sh: SCF_CI_CACHE/target) and the release
# profile, so every dependency the cuda feature does not change is the one `cargo clippy --release` already
# checked and only candle, cudarc, candle's kernels (nvcc, most of the cold time) and this crate are new; they
# get their own artifacts there (features are part of cargo's hashes), so a warm rerun checks only this crate.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
VENV=$SCF_CI_CACHE/venv-cuda
NVCC_CHECK="import os, sysconfig; assert os.access(os.path.join(sysconfig.get_paths()['purelib'], 'nvidia/cu13/bin/nvcc'), os.X_OK)"
ensure_venv "$VENV" "$NVCC_CHECK" "nvidia-cuda-nvcc==13.4.92" "nvidia-cuda-runtime==13.4.*" \
  "nvidia-cuda-crt==13.4.92" "nvidia-nvvm==13.4.92" nvidia-cuda-cccl
[ "${SCF_INSTALL_ONLY:-}" = 1 ] && exit 0   # ci/prefetch.sh
C=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/nvidia/cu13
PATH=$C/bin:$PATH CUDA_HOME=$C CUDA_PATH=$C CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} \
  cargo check --release --locked --features nccl
echo "cuda + nccl features: compile (nvcc $("$C/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
