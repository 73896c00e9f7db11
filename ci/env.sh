# Sourced by every ci/ script: where the build caches and the per-run scratch live.
#
# Caches are kept OUTSIDE the clone, so a rerun on the same machine (even from a fresh clone) is warm:
#   SCF_CI_CACHE (default $HOME/.cache/scfoundation-ci)
#     target/          cargo target dir of ci/all.sh (release build, clippy, tests, and the cuda check)
#     venv-anndata/    Python + anndata, scanpy, leidenalg: h5ad round trip, real data, tests/layouts.rs and
#                      tests/gene_modules.rs (SCF_VENV, SCF_PYTHON)
#     galaxy/          server-<version>/ (the real Galaxy), tools/ (planemo, galaxy-tool-util, playwright)
#     venv-nfcore/     nf-core tools
#     venv-hadolint/   hadolint                            venv-cuda/     nvcc from NVIDIA's wheels
#     nextflow-mvn/    Nextflow jars assembled from Maven Central (+ its local Maven repository)
#     real-data/       the 10x PBMC3k h5ad (sha256-checked)
#   A venv is reused only while its stamp (hash of python3's version and the pinned requirements) matches and it
#   imports what its check needs; otherwise it is rebuilt. Delete SCF_CI_CACHE to start cold.
# Scratch (outputs of one run, never reused): SCF_CI_WORK, default <clone>/.ci-work.
# Binary under test: SCF_BIN_DIR, default $CARGO_TARGET_DIR/release, else <clone>/target/release (where a plain
# `cargo build --release` puts it); ci/all.sh sets CARGO_TARGET_DIR to $SCF_CI_CACHE/target unless already set.
SCF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export SCF_CI_CACHE=${SCF_CI_CACHE:-${HOME:-/tmp}/.cache/scfoundation-ci}
export SCF_CI_WORK=${SCF_CI_WORK:-$SCF_ROOT/.ci-work}
export SCF_VENV=${SCF_VENV:-$SCF_CI_CACHE/venv-anndata}
export SCF_PYTHON=${SCF_PYTHON:-$SCF_VENV/bin/python}
export SCF_BIN_DIR=${SCF_BIN_DIR:-${CARGO_TARGET_DIR:-$SCF_ROOT/target}/release}
# Nextflow's jars (ci/nextflow/nextflow.sh) are shared by ci/nfcore_lint.sh and ci/nextflow.sh.
export NXF_MVN_CACHE=${NXF_MVN_CACHE:-$SCF_CI_CACHE/nextflow-mvn}

# ensure_venv DIR CHECK PIP_ARGS...: a venv at DIR with `pip install PIP_ARGS`. Reused when its stamp matches
# (python3's version and the PIP_ARGS, including the contents of any file they name, e.g. a constraints file)
# and `python -c CHECK` succeeds; otherwise rebuilt from scratch. Serialised with flock, so two runs sharing
# the cache do not build the same venv at once.
ensure_venv() {
  local dir=$1 check=$2
  shift 2
  local stamp a
  stamp=$({
    python3 -c 'import sys; print(sys.version, sys.base_prefix)'
    for a in "$@"; do
      printf '%s\n' "$a"
      if [ -f "$a" ]; then cat "$a"; fi
    done
  } | sha256sum | cut -c1-32)
  mkdir -p "$(dirname "$dir")"
  (
    if command -v flock >/dev/null; then flock 9; fi
    if [ "$(cat "$dir/.scf-ci-stamp" 2>/dev/null)" = "$stamp" ] && "$dir/bin/python" -c "$check" 2>/dev/null; then
      exit 0
    fi
    echo "ci: building venv $dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
    "$dir/bin/python" -c "$check"
    echo "$stamp" > "$dir/.scf-ci-stamp"
  ) 9>"$dir.lock"
}
