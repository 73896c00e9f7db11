#!/usr/bin/env bash
# Every check, in the order CI runs them (see README). Each step prints what it checked and how long it took.
# Build caches (cargo target dir, venvs, Nextflow's jars, real data) live in SCF_CI_CACHE, outside the clone
# (default $HOME/.cache/scfoundation-ci; layout in ci/env.sh): a rerun on the same machine is warm, a fresh
# machine installs everything itself. Per-run scratch goes to SCF_CI_WORK (default .ci-work/ in the clone).
set -euo pipefail
cd "$(dirname "$0")/.."
export SCF_CI_CACHE=${SCF_CI_CACHE:-${HOME:-/tmp}/.cache/scfoundation-ci}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$SCF_CI_CACHE/target}
. ci/env.sh   # SCF_BIN_DIR=$CARGO_TARGET_DIR/release, SCF_PYTHON (anndata venv, also used by tests/layouts.rs), ...
mkdir -p "$SCF_CI_CACHE"
# cargo never deletes stale artifacts: start the target dir afresh once it grows past SCF_CI_TARGET_MAX_GB
# (default 30), e.g. after many dependency updates.
if [ -d "$CARGO_TARGET_DIR" ] && [ "$(du -s --block-size=1G "$CARGO_TARGET_DIR" | cut -f1)" -gt "${SCF_CI_TARGET_MAX_GB:-30}" ]; then
  echo "ci/all.sh: $CARGO_TARGET_DIR is over ${SCF_CI_TARGET_MAX_GB:-30} GB; removing it" >&2
  rm -rf "$CARGO_TARGET_DIR"
fi
echo "caches: $SCF_CI_CACHE (cargo target: $CARGO_TARGET_DIR); scratch: $SCF_CI_WORK"
T0=$SECONDS
# CPU seconds (user + system) of the finished child processes so far, into CPU (`times` must run in this shell,
# not in a $(...) subshell): on a machine shared with other work the wall time of a step says little, its CPU
# time says what it costs.
cpu_s() {
  local f=$SCF_CI_WORK/.times
  mkdir -p "$SCF_CI_WORK"
  times > "$f"
  CPU=$(sed -n 2p "$f" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } printf "%d", s }')
}
step() {
  local name=$1
  shift
  printf '\n==> %s\n' "$name"
  local t=$SECONDS c
  cpu_s
  c=$CPU
  "$@"
  cpu_s
  printf '<== %s: %ds, cpu %ds (total %ds)\n' "$name" $((SECONDS - t)) $((CPU - c)) $((SECONDS - T0))
}
step "set-up"                            bash ci/setup.sh
# The later steps' installs (network-bound) overlap the Rust step's compiling (CPU-bound); see ci/prefetch.sh.
if [ "${SCF_CI_PREFETCH:-1}" = 1 ]; then
  setsid bash ci/prefetch.sh &
  PREFETCH_PID=$!
  # Stop it (its whole process group) if a step fails first.
  trap 'kill -TERM -- "-$PREFETCH_PID" 2>/dev/null || true' EXIT
fi
step "Rust: fmt, clippy, tests"          bash ci/rust.sh
if [ -n "${PREFETCH_PID:-}" ]; then
  wait "$PREFETCH_PID" || true
  cat "$SCF_CI_WORK/prefetch/summary" 2>/dev/null || true
fi
step "h5ad round trip (Python anndata)"  "$SCF_PYTHON" ci/h5ad_roundtrip.py
step "real data, old anndata layout"     bash ci/real_data.sh
step "containers"                        bash ci/containers.sh
step "Galaxy"                            bash ci/galaxy.sh
# The cuda/nccl compile check (compiler-bound, no cargo use by the steps below) overlaps the Java-bound
# nf-core lint and Nextflow steps; its output and time are printed when it is waited for.
mkdir -p "$SCF_CI_WORK"
CUDA_T0=$SECONDS
if [ "${SCF_CI_CUDA_OVERLAP:-1}" = 1 ]; then
  setsid bash ci/cuda_check.sh > "$SCF_CI_WORK/cuda_check.log" 2>&1 &
  CUDA_PID=$!
  trap 'kill -TERM -- "-$CUDA_PID" 2>/dev/null || true; kill -TERM -- "-${PREFETCH_PID:-0}" 2>/dev/null || true' EXIT
fi
step "nf-core modules lint"              bash ci/nfcore_lint.sh
step "Nextflow"                          bash ci/nextflow.sh
cuda_step() {
  if [ -n "${CUDA_PID:-}" ]; then
    local rc=0
    wait "$CUDA_PID" || rc=$?
    tail -n 25 "$SCF_CI_WORK/cuda_check.log"
    echo "(started $((SECONDS - CUDA_T0))s ago, beside the two steps before)"
    return "$rc"
  fi
  bash ci/cuda_check.sh
}
step "cuda + nccl features compile"      cuda_step
cpu_s
printf '\n==> all checks passed in %ds (cpu %ds)\n' $((SECONDS - T0)) "$CPU"
