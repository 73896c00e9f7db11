#!/usr/bin/env bash
# Nextflow checks with a REAL Nextflow (25.04.4, assembled from Maven Central by ci/nextflow/nextflow.sh
# and cached): every module for real and with -stub (also on file names and prefixes with spaces and
# quotes), including pretraining: SCFOUNDATION_INIT (tiny) -> SCFOUNDATION_PRETRAIN (2 steps on CPU) -> the same
# module resuming that checkpoint to step 3 -> SCFOUNDATION_EMBED of the result (check_outputs.py: log steps, the
# resumed log continuing the first, sha256 emits, embedding shape); cell type annotation: SCFOUNDATION_ANNOTATETRAIN
# (1 layer fine-tuned) -> SCFOUNDATION_ANNOTATEPREDICT with labels, and SCFOUNDATION_EMBED -> a frozen head reusing
# obsm['X_scfoundation'] -> a prediction without labels (head files, annotate.json, metrics, obs/obsm of the annotated
# query, provenance); a prefix with '/' refused; then the example
# pipeline without a profile on two CPUs (resourceLimits) and with -profile test -stub. All with the local
# executor, no containers, the freshly built binary on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/env.sh
ROOT=$PWD
W=$SCF_CI_WORK/nextflow               # scratch: run directories; the jars are cached in NXF_MVN_CACHE (ci/env.sh)
export NXF_HOME=$W/home NXF_ANSI_LOG=false NXF_DISABLE_CHECK_LATEST=true
mkdir -p "$NXF_HOME"                  # Nextflow creates only the last level of NXF_HOME
BIN=$SCF_BIN_DIR
[ -x "$BIN/scfoundation" ] || { echo "ci/nextflow.sh: $BIN/scfoundation not built" >&2; exit 1; }
export PATH=$BIN:$PATH
NF="$ROOT/ci/nextflow/nextflow.sh"
PY=$SCF_PYTHON
"$NF" -version | grep -q version

run_dir() { rm -rf "$W/$1" && mkdir -p "$W/$1" && echo "$W/$1"; }

# Inputs with spaces and quotes in their names (and in their directory) for the *_ODD module runs; the
# names must match ci/nextflow/modules_test.nf. No '$': Nextflow 25.04's own staging script leaves it
# unescaped, so no module could receive such a file.
odd_inputs() {
  local o="$1/odd in's"
  mkdir -p "$o"
  cp test-data/pbmc_tiny.h5ad "$o/pbmc tiny's \"odd\".h5ad"
  ln -s "$ROOT/test-data/reference/tiny_models.ckpt" "$o/tiny model's.ckpt"
  cp test-data/registry.json "$o/registry it's.json"
  ln -s "$ROOT/test-data/reference" "$o/reference"   # the registry's relative mirror path
  echo "$o"
}

d=$(run_dir modules)
odd=$(odd_inputs "$d")
(cd "$d" && "$NF" run "$ROOT/ci/nextflow/modules_test.nf" -c "$ROOT/ci/nextflow/modules_test.config" --odd_dir "$odd" --outdir "$d/results" < /dev/null)
"$PY" ci/nextflow/check_outputs.py modules "$d/results"

d=$(run_dir modules-stub)
odd=$(odd_inputs "$d")
(cd "$d" && "$NF" run "$ROOT/ci/nextflow/modules_test.nf" -c "$ROOT/ci/nextflow/modules_test.config" -stub --odd_dir "$odd" --outdir "$d/results" < /dev/null)
"$PY" ci/nextflow/check_outputs.py modules "$d/results" --stub

# A prefix with '/' would write outside the task directory: the module must refuse it by name.
d=$(run_dir modules-bad-prefix)
odd=$(odd_inputs "$d")
printf '%s\n' "process { withName: 'SCFOUNDATION_EMBED' { ext.prefix = 'sub/dir' } }" > "$d/bad_prefix.config"
if (cd "$d" && "$NF" run "$ROOT/ci/nextflow/modules_test.nf" -c "$ROOT/ci/nextflow/modules_test.config" -c "$d/bad_prefix.config" \
      -stub --odd_dir "$odd" --outdir "$d/results" < /dev/null > "$d/out.log" 2>&1); then
  echo "ci/nextflow.sh: a prefix with '/' was accepted" >&2; exit 1
fi
grep -q "SCFOUNDATION_EMBED: task.ext.prefix 'sub/dir' contains '/'" "$d/out.log" \
  || { cat "$d/out.log" >&2; echo "ci/nextflow.sh: no clear error for a prefix with '/'" >&2; exit 1; }
echo "nextflow modules: a prefix with '/' is refused"

# The example pipeline as on a 2-core laptop: no profile (the embedding label asks 8 CPUs, 32 GB), two CPUs
# visible to Nextflow; resourceLimits must lower the requests (the trace shows what each task got).
d=$(run_dir pipeline)
two=$("$PY" -c 'import os; print(",".join(map(str, sorted(os.sched_getaffinity(0))[:2])))')
printf '%s\n' "trace { enabled = true; file = '$d/trace.tsv'; fields = 'name,status,cpus,memory,time' }" > "$d/trace.config"
(cd "$d" && taskset -c "$two" "$NF" run "$ROOT/modules/examples/embed_sharded" -c "$d/trace.config" \
   --input "$ROOT/test-data/pbmc_tiny.h5ad" --model scfoundation-tiny@1.0 --registry "$ROOT/test-data/registry.json" \
   --cells_per_shard 5 --outdir "$d/results" < /dev/null)
"$BIN/scfoundation" embed --input test-data/pbmc_tiny.h5ad --model test-data/reference/tiny_models.ckpt --output "$d/whole.h5ad"
"$PY" ci/nextflow/check_outputs.py pipeline "$d/results" "$d/whole.h5ad" "$d/trace.tsv" "$(tr ',' '\n' <<< "$two" | wc -l)"

d=$(run_dir pipeline-stub)
(cd "$d" && "$NF" run "$ROOT/modules/examples/embed_sharded" -profile test -stub --outdir "$d/results" < /dev/null)
ls "$d/results/embeddings/"*.h5ad > /dev/null
# Gene modules: SCFOUNDATION_GENEMODULES real and -stub (ci/nextflow/gene_modules_test.nf: --n-hvg 40; a genes file,
# names with quotes, 1 cell per cell type), checked by check_gene_modules.py; neither genes nor --n-hvg is refused.
gm_inputs() { local o; o=$(odd_inputs "$1"); cp test-data/pbmc_markers.txt "$o/marker genes, it's.txt"; echo "$o"; }
for mode in real stub; do
  d=$(run_dir "gene-modules-$mode")
  odd=$(gm_inputs "$d")
  opt=(); check=(); [ "$mode" = stub ] && { opt=(-stub); check=(--stub); }
  (cd "$d" && "$NF" run "$ROOT/ci/nextflow/gene_modules_test.nf" -c "$ROOT/ci/nextflow/gene_modules_test.config" "${opt[@]}" \
     --odd_dir "$odd" --outdir "$d/results" < /dev/null)
  "$PY" ci/nextflow/check_gene_modules.py "$d/results" "${check[@]}"
done
d=$(run_dir gene-modules-no-genes)
odd=$(gm_inputs "$d")
printf '%s\n' "process { withName: 'SCFOUNDATION_GENEMODULES' { ext.args = '--k 5' } }" > "$d/no_genes.config"
if (cd "$d" && "$NF" run "$ROOT/ci/nextflow/gene_modules_test.nf" -c "$ROOT/ci/nextflow/gene_modules_test.config" -c "$d/no_genes.config" \
      -stub --odd_dir "$odd" --outdir "$d/results" < /dev/null > "$d/out.log" 2>&1); then
  echo "ci/nextflow.sh: SCFOUNDATION_GENEMODULES ran without genes or --n-hvg" >&2; exit 1
fi
grep -q "SCFOUNDATION_GENEMODULES: give a genes file (one symbol per line) or --n-hvg N" "$d/out.log" \
  || { cat "$d/out.log" >&2; echo "ci/nextflow.sh: no clear error without genes or --n-hvg" >&2; exit 1; }
echo "nextflow gene modules: real, stub, and no genes source refused"

echo "nextflow: modules, stubs and example pipeline OK"
