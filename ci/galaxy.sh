#!/usr/bin/env bash
# Galaxy checks, offline: planemo lint on every tool, then every <test> of every tool (data manager
# included) rendered with Galaxy's own parser and Cheetah, run against the freshly built binary, and
# verified with Galaxy's verify code (ci/galaxy/galaxy_test_harness.py).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
ROOT=$PWD
VENV=$SCF_CI_CACHE/venv-galaxy
PINS=(planemo==0.75.47 galaxy-tool-util==26.1.2 galaxy-util==26.1.2 edam-ontology==1.25.3 h5py==3.16.0)
ensure_venv "$VENV" "import galaxy.tool_util, planemo, h5py" -c ci/galaxy/constraints.txt "${PINS[@]}"
BIN=$SCF_BIN_DIR
[ -x "$BIN/scfoundation" ] || { echo "ci/galaxy.sh: $BIN/scfoundation not built (cargo build --release)" >&2; exit 1; }

"$VENV/bin/planemo" lint --skip BioToolsValid -r galaxy-tools/
# The data manager installs from the test registry (relative mirror paths inside test-data/).
SCFOUNDATION_REGISTRY=$ROOT/test-data/registry.json \
  "$VENV/bin/python" ci/galaxy/galaxy_test_harness.py galaxy-tools/ --path-prepend "$BIN" --slots 2
