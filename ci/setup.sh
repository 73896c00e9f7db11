#!/usr/bin/env bash
# Installs what the build and the checks need on a fresh Debian/Ubuntu machine: libhdf5, OpenBLAS
# + pkg-config (apt), a Rust toolchain if missing, and a Python venv with anndata for the h5ad checks (SCF_VENV, cached
# under SCF_CI_CACHE; see ci/env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh

need_apt=()
pkg-config --exists hdf5 2>/dev/null || need_apt+=(libhdf5-dev)
# The default `openblas` feature links the system OpenBLAS (f32 products on the CPU; src/model/matmul.rs).
{ ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so ' ; } || [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] \
  || need_apt+=(libopenblas-dev)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v git >/dev/null || need_apt+=(git)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" != 0 ] && SUDO="sudo -n"
  echo "ci/setup.sh: installing ${need_apt[*]} with apt" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "ci/setup.sh: cargo not found; install Rust from https://rustup.rs" >&2
  exit 1
fi

# scanpy, igraph and leidenalg: tests/gene_modules.rs compares the Leiden clustering with leidenalg and the module
# scores / highly variable genes with scanpy (ci/leiden_compare.py, ci/gene_modules_check.py).
ensure_venv "$SCF_VENV" "import anndata, h5py, numpy, pandas, scanpy, igraph, leidenalg" \
  "anndata>=0.10" "h5py" "numpy" "pandas" "scanpy>=1.10" "igraph>=0.11" "leidenalg>=0.10"
# tests/layouts.rs falls back to <clone>/.venv-ci/bin/python when SCF_PYTHON is unset (a plain `cargo test`):
# point that name at the cached venv, unless a real directory of that name is already there.
if [ ! -e .venv-ci ] || [ -L .venv-ci ]; then ln -sfn "$SCF_VENV" .venv-ci; fi
