#!/usr/bin/env bash
# nf-core modules lint, offline: a venv with nf-core tools, a local stand-in for the nf-core/modules remote
# (schemas vendored in ci/nf-core-offline/), and the real Nextflow from ci/nextflow/nextflow.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
ROOT=$PWD
W=$SCF_CI_WORK/nfcore                 # scratch: the stand-in remote and nf-core's config/cache dirs
mkdir -p "$W"
VENV=$SCF_CI_CACHE/venv-nfcore
ensure_venv "$VENV" "import nf_core" "nf-core==4.2.1"
[ "${SCF_INSTALL_ONLY:-}" = 1 ] && exit 0   # ci/prefetch.sh
# nf-core calls `nextflow config` and (for >= 25.04.4) `nextflow inspect`: give it the real Nextflow.
mkdir -p "$W/bin"
ln -sfn "$ROOT/ci/nextflow/nextflow.sh" "$W/bin/nextflow"
export NXF_HOME=$SCF_CI_WORK/nextflow/home   # NXF_MVN_CACHE (the jars): ci/env.sh
mkdir -p "$NXF_HOME"                         # Nextflow creates only the last level of NXF_HOME
export XDG_CONFIG_HOME=$W/xdg XDG_CACHE_HOME=$W/xdgcache
if [ ! -d "$XDG_CONFIG_HOME/nfcore/nf-core/modules/.git" ]; then
  rm -rf "$W/fakeremote" && mkdir -p "$W/fakeremote/modules"
  (cd "$W/fakeremote" && git init -q -b master . \
    && printf 'repository_type: modules\norg_path: nf-core\n' > .nf-core.yml \
    && cp "$ROOT/ci/nf-core-offline/meta-schema.json" "$ROOT/ci/nf-core-offline/environment-schema.json" modules/ \
    && git add -A && git -c user.name=offline -c user.email=offline@example.invalid commit -qm offline)
  mkdir -p "$XDG_CONFIG_HOME/nfcore/nf-core"
  git clone -q "$W/fakeremote" "$XDG_CONFIG_HOME/nfcore/nf-core/modules"
fi
PATH=$W/bin:$PATH "$VENV/bin/python" ci/nfcore_lint.py "$ROOT"
