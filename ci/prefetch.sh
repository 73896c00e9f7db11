#!/usr/bin/env bash
# Started in the background by ci/all.sh right after set-up: the installs of the later steps (Galaxy and
# its tools venv, Chromium, nf-core tools, hadolint, nvcc wheels, Nextflow's jars, the real-data file),
# which wait mostly on the network, run while the Rust step compiles. Each runs its own script with
# SCF_INSTALL_ONLY=1; the caches are stamped and flock-serialised (ci/env.sh), so when a step starts it
# reuses what is ready and waits for what is still being built. A failure here is only logged: the step
# then installs again itself and reports the error. Logs: $SCF_CI_WORK/prefetch/.
set -uo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
P=$SCF_CI_WORK/prefetch
rm -rf "$P"
mkdir -p "$P"
T0=$SECONDS
fetch() {  # NAME CMD...
  local name=$1 t=$SECONDS rc=0
  shift
  SCF_INSTALL_ONLY=1 "$@" > "$P/$name.log" 2>&1 || rc=$?
  echo "prefetch: $name $([ $rc = 0 ] && echo ready || echo "FAILED (rc $rc, see $P/$name.log)") in $((SECONDS - t))s" >> "$P/summary"
}
# Two lanes: Galaxy (the largest) alone, the rest one after another.
fetch galaxy bash ci/galaxy.sh &
{
  fetch real-data bash ci/real_data.sh
  fetch nextflow env NXF_HOME="$P/nxf-home" bash ci/nextflow/nextflow.sh -version
  fetch nf-core bash ci/nfcore_lint.sh
  fetch hadolint bash ci/containers.sh
  fetch nvcc bash ci/cuda_check.sh
} &
wait
echo "prefetch: all done in $((SECONDS - T0))s" >> "$P/summary"
