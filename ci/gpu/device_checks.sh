#!/usr/bin/env bash
# The GPU measurements, as one bounded script for a lent GPU machine (H100/H200 class, NVIDIA driver and
# Python with the CUDA 13 wheels, no Rust or HDF5): run from the repository root with the folder that
# ci/gpu/bundle.sh made (gpu-bundle/: the CUDA binary and its libraries, plus synthetic data).
#
#   OUT=/some/dir bash ci/gpu/device_checks.sh          # on the GPU machine; results under $OUT
#   SCF_DEVICE=cpu SCF_GPU_QUICK=1 bash ci/gpu/device_checks.sh   # plumbing dry run anywhere (tiny sizes)
#
# Each step has its own time limit and its own log; a failing step is recorded and the next one runs.
# What it measures (issues: performance, pretraining), most important first, within SCF_GPU_DEADLINE seconds
# (default 540, so one 10-minute device call holds it):
#   1. the machine and the build;
#   2. GPU against CPU on the same binary: cell and expression embeddings of test data (max abs, lowest cosine);
#   3. `bench` on the 100M shape, bf16: cell path at 850 genes per cell, expression path (GEMM ceilings in the run);
#   4. pretraining the 100M config in bf16 for up to 300 steps: cells/s, positions/s and MFU;
#   5. the other `bench` rows: f32 beside bf16, 2,000-gene cells;
#   6. `embed --batch-size auto` on synthetic cells (cell and expression modes, bf16): the limits chosen.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
BUNDLE=${SCF_GPU_BUNDLE:-gpu-bundle}
DEVICE=${SCF_DEVICE:-cuda:0}
QUICK=${SCF_GPU_QUICK:-0}
mkdir -p "$OUT"
T0=$(date +%s)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
tar -C "$W" -xJf "$BUNDLE/scfoundation-cuda.tar.xz" || { echo "no bundle in $BUNDLE (run ci/gpu/bundle.sh)"; exit 1; }
cp "$W/BUILD_INFO" "$OUT/"

# The CUDA 13 runtime libraries from the machine's Python wheels (torch's), for the binary only.
CUDA_LIBS=$(python3 - <<'PY'
import glob, os, site
roots = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
dirs = []
for r in roots:
    for name in ("libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libnvrtc.so.13"):
        for p in glob.glob(os.path.join(r, "nvidia", "**", name), recursive=True):
            d = os.path.dirname(p)
            if d not in dirs:
                dirs.append(d)
print(":".join(dirs))
PY
)
# A wrapper (not a function, so `timeout` can run it) that gives only the binary the bundled libraries.
cat > "$W/scf" <<SH
#!/bin/sh
LD_LIBRARY_PATH="$W/lib${CUDA_LIBS:+:$CUDA_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$W/scfoundation" "\$@"
SH
chmod +x "$W/scf"
export RUST_LOG=${RUST_LOG:-info}

# step NAME LIMIT_S CMD...: runs CMD with a time limit (cut to what is left before the deadline), logs to
# $OUT/NAME.log, records status and seconds in $OUT/steps.tsv; skipped when under 20 s are left.
DEADLINE=$(( T0 + ${SCF_GPU_DEADLINE:-540} ))
step() {
  local name=$1 limit=$2 t rc left
  shift 2
  left=$(( DEADLINE - $(date +%s) ))
  if [ "$left" -lt 20 ]; then
    printf '%s\tskipped (deadline)\n' "$name" | tee -a "$OUT/steps.tsv"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  t=$(date +%s)
  [ "$1" = scf ] && set -- "$W/scf" "${@:2}"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\trc=%s\t%ss\n' "$name" "$rc" "$(( $(date +%s) - t ))" | tee -a "$OUT/steps.tsv"
}

if [ "$QUICK" = 1 ]; then
  CFG=tiny; N850=32; N2000=16; NEXPR=4; STEPS=6; PB=4; AUTO_DATA=test-data/pbmc_tiny.h5ad
else
  CFG=100m; N850=2048; N2000=512; NEXPR=32; STEPS=300; PB=16; AUTO_DATA=$BUNDLE/synthetic_850_256.h5ad
fi
DATA=$BUNDLE/synthetic_850.h5ad
TINY=test-data/reference/tiny_models.ckpt

# 1. Machine and build.
{
  cat "$W/BUILD_INFO"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  echo "CUDA libraries: $CUDA_LIBS"
  "$W/scf" --version
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# Steps in order of importance, so a slow machine still gives the main figures before the deadline.
# 2. The device against the CPU, same binary, same cells (tiny model: seconds).
for mode in cell expression; do
  for p in f32 bf16; do
    for where in host:cpu "dev:$DEVICE"; do
      step "same_${mode}_${p}_${where%%:*}" 60 scf embed --input test-data/pbmc_tiny.h5ad --model "$TINY" \
        --output "$OUT/same_${mode}_${p}_${where%%:*}.npy" --mode "$mode" --precision "$p" --device "${where#*:}"
    done
  done
done

# 3. bench rows (100M shape): the issue's goals first.
bench_row() { # NAME NNZ CELLS BATCH PATH PRECISION
  step "bench_$1" 120 scf bench --config "$CFG" --nnz "$2" --cells "$3" --batch-size "$4" --paths "$5" \
    --precision "$6" --device "$DEVICE" --ceiling-seconds 1 --json "$OUT/bench_$1.json"
}
bench_row cell850_bf16 850 "$N850" 256 cell bf16
bench_row expr850_bf16 850 "$NEXPR" 8 expression bf16
bench_row cell850_bf16_b1024 850 "$(( 2 * N850 ))" 1024 cell bf16

# 4. Pretraining, bf16, a few hundred steps (validation only at the end). The log is followed into $OUT as
# it grows: a run cut by the time limit removes its partial output directory.
step init_model 60 scf init --config "$CFG" --seed 1 --out "$W/model"
mkdir -p "$W/run"
touch "$W/run/train_log.jsonl"
tail -n +1 -F "$W/run/train_log.jsonl" > "$OUT/train_log.jsonl" 2>/dev/null &
TAIL=$!
step pretrain 240 scf pretrain --data "$DATA" --init "$W/model" --out "$W/run" --device "$DEVICE" \
  --precision bf16 --steps "$STEPS" --batch-size "$PB" --warmup 20 --save-every 100000 --val-max-cells 64 --seed 0
sleep 1
kill "$TAIL" 2>/dev/null
cp "$W/run/provenance.json" "$OUT/pretrain_provenance.json" 2>/dev/null

# 5. The other bench rows: f32 beside bf16, 2,000-gene cells.
bench_row cell850_f32 850 "$N850" 256 cell f32
bench_row expr_bf16 2000 "$NEXPR" 8 expression bf16
bench_row expr_f32 2000 "$NEXPR" 8 expression f32
bench_row cell2000_bf16 2000 "$N2000" 64 cell bf16

# 6. --batch-size auto on synthetic cells (the random 100M model from step 4).
for mode in cell expression; do
  step "auto_$mode" 90 scf embed --input "$AUTO_DATA" --model "$W/model" --output "$W/auto_$mode.npy" \
    --mode "$mode" --precision bf16 --batch-size auto --device "$DEVICE"
  cp "$W/auto_$mode.npy.provenance.json" "$OUT/" 2>/dev/null
done

# Summary: same-binary device comparison, bench figures, pretraining throughput and MFU.
python3 - "$OUT" "$CFG" <<'PY' | tee "$OUT/summary.txt"
import glob, json, os, struct, sys
out, cfg = sys.argv[1], sys.argv[2]

def npy(path):
    with open(path, "rb") as f:
        assert f.read(6) == b"\x93NUMPY"
        major = f.read(2)[0]
        n = struct.unpack("<H" if major == 1 else "<I", f.read(2 if major == 1 else 4))[0]
        header = eval(f.read(n).decode("latin1"))
        assert header["descr"] == "<f4" and not header["fortran_order"]
        count = 1
        for d in header["shape"]:
            count *= d
        vals = struct.unpack(f"<{count}f", f.read(4 * count))
        cols = count // header["shape"][0]
        return [vals[i:i + cols] for i in range(0, count, cols)]

for mode in ("cell", "expression"):
    for p in ("f32", "bf16"):
        a, b = (os.path.join(out, f"same_{mode}_{p}_{d}.npy") for d in ("host", "dev"))
        if not (os.path.exists(a) and os.path.exists(b)):
            print(f"device vs cpu {mode} {p}: missing output")
            continue
        x, y = npy(a), npy(b)
        mx = max(abs(u - v) for r, s in zip(x, y) for u, v in zip(r, s))
        cos = min(sum(u * v for u, v in zip(r, s)) / max((sum(u * u for u in r) * sum(v * v for v in s)) ** 0.5, 1e-30)
                  for r, s in zip(x, y))
        print(f"device vs cpu {mode} {p}: max abs {mx:.3g}, lowest cosine {cos:.7f}")

for path in sorted(glob.glob(os.path.join(out, "bench_*.json"))):
    r = json.load(open(path))
    print(os.path.basename(path), json.dumps(r, sort_keys=True)[:1500])

log = os.path.join(out, "train_log.jsonl")
if os.path.exists(log):
    recs = [json.loads(l) for l in open(log) if l.strip()]
    later = [r["cells_per_s"] for r in recs[len(recs) // 2:] if "cells_per_s" in r]
    if later:
        later.sort()
        cps = later[len(later) // 2]
        # Forward FLOP per cell of the expression path at 850 genes from bench's formula (the bench JSON
        # reports gflop_per_cell); training is forward + backward, about 3x the forward.
        gf = ceiling = None
        path = os.path.join(out, "bench_expr850_bf16.json")
        if os.path.exists(path):
            r = json.load(open(path))
            gf = r["paths"][0]["gflop_per_cell"]
            ceiling = r["gemm_ceiling_tflops"].get("bf16")
        tokens = 19266 + 850 + 2
        losses = [r["loss"] for r in recs if "loss" in r]
        print(f"pretrain: {len(losses)} steps logged, median cells/s over the second half {cps:.2f}, "
              f"~{cps * tokens:.0f} positions/s (19,266 decoder + ~852 encoder per cell), first loss "
              f"{losses[0]:.4f}, last loss {losses[-1]:.4f}")
        if gf and ceiling:
            print(f"pretrain MFU ~ {cps * 3 * gf / 1e3 / ceiling:.3f} of the measured bf16 GEMM ceiling ({ceiling} TFLOP/s)"
                  " (expression-path forward FLOP at 850 genes x 3; the encoder sees only unmasked genes, so an upper estimate)")
PY
echo "total $(( $(date +%s) - T0 )) s"
