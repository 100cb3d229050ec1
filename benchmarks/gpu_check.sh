#!/usr/bin/env bash
# The GPU checks and timings, as one script for a lent GPU machine (see benchmarks/README.md).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh [smoke|full]
#
# smoke: imports, the device, and the benchmarks' tiny `test` presets (a minute: catches API
#        breaks of the machine's JAX before the long run).
# full:  1. benchmarks.simulation --preset=gpu, strategies (sweep: step 3);
#        2. benchmarks.memory --preset=gpu (GPT-2 124M, 64 clients, chunks 4 and 8, compiled AND
#           run) with JAX allowed 75 GiB of the card (XLA_PYTHON_CLIENT_MEM_FRACTION), so a round
#           that runs fits an 80 GB GPU;
#        3. the simulation sweep, 10..10,000 clients; benchmarks.projections --preset=quick;
#        4. part of the test suite on the GPU, in whatever time is left.
# Every step has its own time limit and writes its JSON as it goes (results survive a timeout).
# Needs python3 with jax[cuda], flax, optax, absl-py, orbax-checkpoint; ml_collections is
# installed from .whl/ when present (machines without network access).
set -u
MODE=${1:-full}
OUT=${OUT:?set OUT to the output folder}
LIMIT=${LIMIT:-520}          # seconds for the whole script
T0=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/log.txt"; }
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site" || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee -a "$OUT/log.txt"
python3 -c "import jax, flax, optax, ml_collections; print('jax', jax.__version__, 'flax',
flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/log.txt"

step() {   # step NAME SECONDS CMD...: runs CMD with a limit, its output appended to log.txt
  local name=$1 secs=$2; shift 2
  local budget=$(( $(left) < secs ? $(left) : secs ))
  if (( budget < 20 )); then log "skip $name (only $(left)s left)"; return; fi
  log "start $name (limit ${budget}s)"
  timeout "$budget" "$@" >>"$OUT/log.txt" 2>&1
  log "end $name: rc=$?"
}

if [[ $MODE == smoke ]]; then
  step sim_test 90 python3 -m benchmarks.simulation --preset=test --out_json=/tmp/sim_test.json
  step mem_test 60 python3 -m benchmarks.memory --preset=test --out_json=/tmp/mem_test.json
  exit 0
fi

step simulation 150 python3 -m benchmarks.simulation --preset=gpu --sections=strategies \
  --out_json="$OUT/simulation_gpu_strategies.json"
# JAX may allocate 75 GiB of the card, whatever its size: what an 80 GB GPU gives it at
# XLA_PYTHON_CLIENT_MEM_FRACTION=.95.
TOTAL_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n1)
FRAC=$(python3 -c "print(f'{min(0.95, 75 * 1024 / $TOTAL_MIB):.4f}')")
log "memory: XLA_PYTHON_CLIENT_MEM_FRACTION=$FRAC of $TOTAL_MIB MiB"
step memory 170 env XLA_PYTHON_CLIENT_MEM_FRACTION="$FRAC" python3 -m benchmarks.memory \
  --preset=gpu --out_json="$OUT/memory_gpu.json"
step simulation 100 python3 -m benchmarks.simulation --preset=gpu --sections=sweep \
  --out_json="$OUT/simulation_gpu_sweep.json"
step projections 60 python3 -m benchmarks.projections --preset=quick \
  --out_json="$OUT/projections_gpu_quick.json"
step pytest 200 env XLA_PYTHON_CLIENT_PREALLOCATE=false python3 -m pytest -p no:cacheprovider \
  -n 8 tests/projections tests/algorithms/test_all_methods.py tests/simulation
log "done"
