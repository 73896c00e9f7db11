#!/usr/bin/env bash
# Builds the CUDA binary for a GPU machine that has the NVIDIA driver and CUDA 13.0 runtime libraries but no
# Rust, HDF5 or OpenBLAS (the project's lent H200 machine), and packs it with the shared libraries it needs.
#
#   bash ci/gpu/bundle.sh   # -> gpu-bundle/: scfoundation-cuda.tar.xz, BUILD_INFO, synthetic_850.h5ad; ~35 min cold on 2 cores
#
# - nvcc comes from NVIDIA's PyPI wheels pinned to 13.0: a newer nvcc's PTX may not load on a 13.0 driver (580).
# - candle links the CUDA libraries dynamically at build time; no toolkit is installed here, so the link is made
#   against stub libraries with the right sonames, built from cudarc's own function lists. At run time the real
#   libraries (driver, and the CUDA 13.0 wheels' libcublas/libcublasLt/libcurand/libnvrtc) are found through
#   LD_LIBRARY_PATH (ci/gpu/device_checks.sh).
# - The archive holds the stripped binary and every non-glibc library `ldd` lists (HDF5, OpenBLAS and their
#   dependencies), so the binary runs with only glibc on the other side.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/env.sh
OUT_DIR=${SCF_GPU_BUNDLE:-$SCF_ROOT/gpu-bundle}
FEATURES=${SCF_GPU_FEATURES:-cuda}
VENV=$SCF_CI_CACHE/venv-cuda13.0
NVCC_CHECK="import os, sysconfig; assert os.access(os.path.join(sysconfig.get_paths()['purelib'], 'nvidia/cu13/bin/nvcc'), os.X_OK)"
ensure_venv "$VENV" "$NVCC_CHECK" "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.96" \
  "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-cccl==13.0.*"
C=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/nvidia/cu13

# Stub libraries: one empty function per `pub unsafe fn` of cudarc's bindings for each library candle links.
CUDARC=$(cargo metadata --locked --format-version 1 --features "$FEATURES" 2>/dev/null |
  python3 -c "import json,sys; m=json.load(sys.stdin); print(next(p['manifest_path'] for p in m['packages'] if p['name']=='cudarc').rsplit('/',1)[0])")
STUBS=$SCF_CI_CACHE/cuda-stubs
rm -rf "$STUBS" && mkdir -p "$STUBS"
stub() { # stub MODULE SONAME LINKNAME
  local src=$CUDARC/src/$1/sys/mod.rs
  [ -f "$src" ] || { echo "bundle: $src not found" >&2; exit 1; }
  sed -n 's/^pub unsafe fn \([A-Za-z0-9_]*\).*/void \1(void){}/p' "$src" | sort -u > "$STUBS/$1.c"
  cc -shared -fPIC -Wl,-soname,"$2" -o "$STUBS/$2" "$STUBS/$1.c"
  ln -sf "$2" "$STUBS/$3"
}
stub driver libcuda.so.1 libcuda.so
stub cublas libcublas.so.13 libcublas.so
stub cublaslt libcublasLt.so.13 libcublasLt.so
stub curand libcurand.so.10 libcurand.so
stub nvrtc libnvrtc.so.13 libnvrtc.so
case ",$FEATURES," in *,nccl,*) stub nccl libnccl.so.2 libnccl.so ;; esac
# candle's kernels also link the CUDA runtime: the wheel's real one (bundled below), under its link name.
ln -sf "$(ls "$C"/lib/libcudart.so.13* | head -n 1)" "$STUBS/libcudart.so"

export CARGO_TARGET_DIR=${SCF_GPU_TARGET:-$SCF_CI_CACHE/target-cuda}
PATH=$C/bin:$PATH CUDA_HOME=$C CUDA_PATH=$C CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} \
  LIBRARY_PATH=$STUBS:$C/lib${LIBRARY_PATH:+:$LIBRARY_PATH} \
  cargo build --release --locked --features "$FEATURES"
BIN=$CARGO_TARGET_DIR/release/scfoundation

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/lib"
strip -o "$STAGE/scfoundation" "$BIN"
# Every resolved library except glibc's own and the CUDA ones (those come from the GPU machine).
LD_LIBRARY_PATH=$STUBS:$C/lib ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
  case "$name" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libresolv.so.*) ;;
    libcuda.so.*|libcublas*|libcurand*|libnvrtc*|libnccl*) ;;
    *) cp -L "$path" "$STAGE/lib/$name" ;;
  esac
done
{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (dirty)')"
  echo "features $FEATURES"
  echo "nvcc $("$C/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
  echo "compute_cap ${CUDA_COMPUTE_CAP:-90}"
  echo "built $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m)"
} > "$STAGE/BUILD_INFO"
mkdir -p "$OUT_DIR"
tar -C "$STAGE" -cJf "$OUT_DIR/scfoundation-cuda.tar.xz" scfoundation lib BUILD_INFO
# Synthetic raw counts for the device checks (850 genes per cell: PBMC-like lengths): 2,000 cells for
# pretraining, 256 for `embed --batch-size auto`.
for n in 2000 256; do
  f=$OUT_DIR/synthetic_850.h5ad
  [ "$n" = 2000 ] || f=$OUT_DIR/synthetic_850_$n.h5ad
  [ -f "$f" ] && continue
  "$SCF_PYTHON" -c "import anndata, h5py" || { echo "bundle: run ci/setup.sh first (anndata venv)" >&2; exit 1; }
  "$SCF_PYTHON" docs/experiments/synthetic_h5ad.py "$SCF_ROOT/src/data/OS_scRNA_gene_index.19264.tsv" \
    "$n" 850 "$f" 7
done
cp "$STAGE/BUILD_INFO" "$OUT_DIR/BUILD_INFO"
ls -l "$OUT_DIR"
cat "$OUT_DIR/BUILD_INFO"
