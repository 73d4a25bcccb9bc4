#!/usr/bin/env bash
# One lease on a GPU machine, as one script: what runs where and in which order.
#
#   OUT=/tmp/gpu GRID_BUDGET=270 bash bench/gpu_session.sh
#
# 1. the whole Fashion-MNIST teacher cache on the GPU (fp32, TF32 off) -> $OUT/cache.npz
# 2. the CUDA tests:                       pytest -m gpu tests/gpu
# 3. the label-efficiency grid (the paper's protocol, whole 60k train split as the pool,
#    full test split, 15 rounds, seeds 0.. until GRID_BUDGET seconds) -> $OUT/le.tgz
# 4. GPU vs CPU side by side:              bench/bench_gpu.py -> $OUT/bench/gpu.{json,md}
# 5. (only when named in STEPS) the rest of the CNN confirmation of issue #12
#    (bench/results/label_efficiency-cnn-confirm/PROTOCOL.md): its finished runs are copied to
#    $OUT/cnn-confirm first and skipped, the missing seeds run in seed order on the GPU until
#    CNN_BUDGET seconds; it needs the 10k feature cache in .devdata/cache (ACTIVEKD_CACHE_DIR).
#    Copy $OUT/cnn-confirm back over the results folder afterwards; the same call resumes.
#
# STEPS picks the steps (default: cache pytest grid bench; they run in the order above). One
# device call is at most 10 minutes, so e.g. STEPS=cnn_confirm for the confirmation alone:
# no run starts after CNN_BUDGET (240) s and runs in flight get 330 s more. No GPU run of this
# protocol has been timed yet (a round of the small CNN with a 60k pool took 1.8 s on an H100);
# a run killed by the limit writes nothing, and every finished run is kept. Each run records
# its device; the summary names the seeds whose configs ran on different devices.
#
# Where the machine lacks this project's pure-Python dependencies they travel as wheels in .whl/
# and Fashion-MNIST in .devdata/fashion-mnist (see docs/benchmarks.md, GPU section). Every step
# is time-boxed; a failed step is reported and the next one still runs; exit status 1 if any failed.
set -uo pipefail
OUT=${OUT:-bench/results/gpu-session}
GRID_BUDGET=${GRID_BUDGET:-270}
GRID_WORKERS=${GRID_WORKERS:-14}
STEPS=${STEPS:-cache pytest grid bench}
CNN_BUDGET=${CNN_BUDGET:-240}
PY=${PY:-python3}
mkdir -p "$OUT"
LOG="$OUT/session.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:$PWD:${PYTHONPATH:-}
if [ -d .devdata/fashion-mnist ]; then export ACTIVEKD_FASHION_MNIST_DIR=$PWD/.devdata/fashion-mnist; fi
if [ -d .devdata/cache ]; then export ACTIVEKD_CACHE_DIR=$PWD/.devdata/cache; fi
want() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

status=0
step() {  # step NAME TIMEOUT_S CMD...: runs CMD, appends its output to session.log, prints a tail
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  echo "=== $name rc=$rc in $(($(date +%s) - t0)) s" | tee -a "$LOG"
  [ "$rc" = 0 ] || status=1
  return "$rc"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc
  $PY -c "import sys, torch, numpy, open_clip; print(sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__, 'open_clip', open_clip.__version__, torch.cuda.get_device_name(0))"
} 2>&1 | tee -a "$LOG"

CACHE=$OUT/cache.npz
POOL=60000
if want cache; then
  step cache 200 $PY scripts/build_teacher_cache.py --device cuda --precision fp32 \
    --batch-size 1024 --chunk-size 8192 --out "$CACHE" --work-dir /tmp/cache.parts
fi
if [ ! -f "$CACHE" ]; then
  CACHE=src/activekd/data/teacher_cache/fashion-mnist-label-map-224-first20000.npz
  POOL=20000
fi
if want cache; then
  $PY - "$CACHE" <<'EOF' 2>&1 | tee -a "$LOG"
import sys, glob, numpy as np
new = np.load(sys.argv[1])
print("cache meta:", new["meta"])
for old in sorted(glob.glob("src/activekd/data/teacher_cache/fashion-mnist-label-map-224*.npz")):
    o = np.load(old)
    for split in ("train", "test"):
        a, b = o[f"{split}_probs"].astype("f4"), new[f"{split}_probs"][: len(o[f"{split}_probs"])].astype("f4")
        print(f"GPU cache vs {old.split('/')[-1]} {split}: rows {len(a)}, max abs diff {abs(a - b).max():.2e}, top-1 agreement {(a.argmax(1) == b.argmax(1)).mean():.5f}")
EOF
fi

if want pytest; then
  step pytest 150 $PY -m pytest -m gpu --noconftest -p no:cacheprovider -ra -v tests/gpu
fi

if want grid; then
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    step grid $((GRID_BUDGET + 120)) $PY bench/label_efficiency.py --workers "$GRID_WORKERS" \
    --time-budget "$GRID_BUDGET" --seeds $(seq 0 29) --pool-size "$POOL" --test-size 10000 \
    --rounds 15 --cache "$CACHE" --out "$OUT/le"
  tar czf "$OUT/le.tgz" -C "$OUT" le && rm -rf "$OUT/le"
fi

if want cnn_confirm; then
  # issue #12's CNN confirmation: the protocol's command, resumed from the committed runs
  rm -rf "$OUT/cnn-confirm" && cp -r bench/results/label_efficiency-cnn-confirm "$OUT/cnn-confirm"
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    step cnn_confirm $((CNN_BUDGET + 330)) $PY bench/label_efficiency.py --pool-rows 10000 \
    --pool-size 10000 --test-size 10000 --seeds $(seq 320 338) --strategies random typiclust \
    --ce-only --configs typiclust:adapt=clap --workers "$GRID_WORKERS" \
    --time-budget "$CNN_BUDGET" --out "$OUT/cnn-confirm"
fi

if want bench; then
  step bench 170 $PY bench/bench_gpu.py --out "$OUT/bench"
fi
tail -n 40 "$LOG"
exit $status
