#!/usr/bin/env bash
# Installs what the build and the checks need on a fresh Debian/Ubuntu machine: libhdf5 + pkg-config
# (apt), a Rust toolchain if missing, and a Python venv with anndata for the h5ad round-trip check.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
pkg-config --exists hdf5 2>/dev/null || need_apt+=(libhdf5-dev)
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

VENV=${SCF_VENV:-.venv-ci}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import anndata" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "anndata>=0.10" "h5py" "numpy" "pandas"
fi
