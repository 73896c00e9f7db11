#!/usr/bin/env bash
# Nextflow checks with a REAL Nextflow (25.04.4, assembled from Maven Central by ci/nextflow/nextflow.sh
# and cached): every module for real and with -stub, then the example pipeline, all with the local
# executor, no containers, the freshly built binary on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${SCF_CI_WORK:-$ROOT/.ci-work}/nextflow
export NXF_MVN_CACHE=$W/mvn NXF_HOME=$W/home NXF_ANSI_LOG=false NXF_DISABLE_CHECK_LATEST=true
BIN=${SCF_BIN_DIR:-$ROOT/target/release}
[ -x "$BIN/scfoundation" ] || { echo "ci/nextflow.sh: $BIN/scfoundation not built" >&2; exit 1; }
export PATH=$BIN:$PATH
NF="$ROOT/ci/nextflow/nextflow.sh"
PY=${SCF_PYTHON:-$ROOT/.venv-ci/bin/python}
"$NF" -version | grep -q version

run_dir() { rm -rf "$W/$1" && mkdir -p "$W/$1" && echo "$W/$1"; }

d=$(run_dir modules)
(cd "$d" && "$NF" run "$ROOT/ci/nextflow/modules_test.nf" -c "$ROOT/ci/nextflow/modules_test.config" --outdir "$d/results" < /dev/null)
"$PY" ci/nextflow/check_outputs.py modules "$d/results"

d=$(run_dir modules-stub)
(cd "$d" && "$NF" run "$ROOT/ci/nextflow/modules_test.nf" -c "$ROOT/ci/nextflow/modules_test.config" -stub --outdir "$d/results" < /dev/null)
"$PY" ci/nextflow/check_outputs.py modules "$d/results" --stub

d=$(run_dir pipeline)
(cd "$d" && "$NF" run "$ROOT/modules/examples/embed_sharded" -profile test --outdir "$d/results" < /dev/null)
"$BIN/scfoundation" embed --input test-data/pbmc_tiny.h5ad --model test-data/reference/tiny_models.ckpt --output "$d/whole.h5ad"
"$PY" ci/nextflow/check_outputs.py pipeline "$d/results" "$d/whole.h5ad"

d=$(run_dir pipeline-stub)
(cd "$d" && "$NF" run "$ROOT/modules/examples/embed_sharded" -profile test -stub --outdir "$d/results" < /dev/null)
ls "$d/results/embeddings/"*.h5ad > /dev/null
echo "nextflow: modules, stubs and example pipeline OK"
