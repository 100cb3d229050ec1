#!/usr/bin/env bash
# Runs fedjax-intrinsic on a Cloud TPU VM (v4 or v5e, one host or a multi-host slice) with gcloud.
#
# Usage (from the repository root, on a machine with the gcloud CLI logged in):
#   PROJECT=my-project scripts/cloud_tpu.sh all          # create, install, prepare, run, fetch, delete
#   PROJECT=my-project scripts/cloud_tpu.sh create       # or one step at a time:
#   ... install | prepare | check | run | wait | fetch | memory | delete | ssh
#   DRY_RUN=1 scripts/cloud_tpu.sh all                   # print every command, run nothing
#
# Settings (environment variables; defaults below):
#   PROJECT      Google Cloud project (required unless DRY_RUN=1)
#   TPU_NAME     name of the TPU VM                               fedjax-intrinsic
#   TPU          v4 | v5e: picks ZONE, ACCELERATOR and RUNTIME defaults                v4
#   ZONE, ACCELERATOR, RUNTIME   v4: us-central2-b, v4-8, tpu-ubuntu2204-base;
#                                v5e: us-west4-a, v5litepod-8, v2-alpha-tpuv5-lite
#                (v4-8 and v5litepod-8 are one host; v4-32 is 4 hosts, v5litepod-16 is 2 hosts)
#   SPOT=1       create a Spot VM (preemptible, cheaper)
#   REPO_URL     git URL to clone on every worker; empty: copy `git archive HEAD` of this checkout
#   BRANCH       branch to clone                                   main
#   DATA         TFDS data set `prepare` makes in array_record (cifar10, cifar100, mnist,
#                emnist/balanced); empty: `prepare` does nothing (the offline digits data)   (empty)
#   DATA_DIR     TFDS data directory on every worker               /home/$USER/tensorflow_datasets
#   CONFIG       config (with its argument) for run.py             configs/digits_cnn.py
#   WORKDIR      run.py --workdir: a directory on worker 0 (relative to the checkout) or gs://...
#                                                                  workdirs/tpu
#   RUN_CMD      the command every worker runs for `run`:
#                python run.py --config=$CONFIG --workdir=$WORKDIR
#                --config.simulation.num_devices=0 --multihost (every chip of every host), plus
#                --config.data.data_dir=$DATA_DIR when DATA is set (a TFDS config); a paper sweep:
#                RUN_CMD="python -m benchmarks.sweep ... --multihost" (see docs/cloud_tpu.md)
#   RESULTS      local directory that `fetch` copies the workdir into                  tpu_results
#
# Every worker runs the same program (`--worker=all`): on a multi-host slice JAX needs every host's
# process, and a program started on one host alone waits for the others.
# NOT RUN HERE: this script was written without network access or a TPU; every command follows
# gcloud's documented syntax but none was executed.
set -euo pipefail

TPU="${TPU:-v4}"
case "$TPU" in
  v4)  DEF_ZONE=us-central2-b; DEF_ACCEL=v4-8;        DEF_RUNTIME=tpu-ubuntu2204-base ;;
  v5e) DEF_ZONE=us-west4-a;    DEF_ACCEL=v5litepod-8; DEF_RUNTIME=v2-alpha-tpuv5-lite ;;
  *) echo "error: TPU=$TPU is invalid; allowed: v4, v5e" >&2; exit 2 ;;
esac
PROJECT="${PROJECT:-}"
TPU_NAME="${TPU_NAME:-fedjax-intrinsic}"
ZONE="${ZONE:-$DEF_ZONE}"
ACCELERATOR="${ACCELERATOR:-$DEF_ACCEL}"
RUNTIME="${RUNTIME:-$DEF_RUNTIME}"
SPOT="${SPOT:-0}"
REPO_URL="${REPO_URL:-}"
BRANCH="${BRANCH:-main}"
DATA="${DATA:-}"
DATA_DIR="${DATA_DIR:-\$HOME/tensorflow_datasets}"    # expanded on the worker
CONFIG="${CONFIG:-configs/digits_cnn.py}"
WORKDIR="${WORKDIR:-workdirs/tpu}"
DEF_RUN="python run.py --config=$CONFIG --workdir=$WORKDIR --config.simulation.num_devices=0 --multihost"
[[ -n "$DATA" ]] && DEF_RUN="$DEF_RUN --config.data.data_dir=$DATA_DIR"
RUN_CMD="${RUN_CMD:-$DEF_RUN}"
RESULTS="${RESULTS:-tpu_results}"
DRY_RUN="${DRY_RUN:-0}"
CHECKOUT='~/fedjax-intrinsic'       # on every worker (scp paths: relative to the home directory)
REMOTE=fedjax-intrinsic
ACTIVATE="cd $CHECKOUT && . .venv/bin/activate"

if [[ -z "$PROJECT" && "$DRY_RUN" != 1 ]]; then
  echo 'error: PROJECT is empty; allowed: your Google Cloud project id (or DRY_RUN=1)' >&2
  exit 2
fi
GC=(gcloud --project="${PROJECT:-PROJECT}")

run() {   # prints the command, then runs it unless DRY_RUN=1
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ "$DRY_RUN" != 1 ]]; then "$@"; fi
}

on_workers() {   # on_workers WORKER COMMAND: runs COMMAND on worker WORKER (0, 1, ... or all)
  run "${GC[@]}" compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker="$1" --command="$2"
}

create() {
  local spot=()
  [[ "$SPOT" == 1 ]] && spot=(--spot)
  run "${GC[@]}" compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR" --version="$RUNTIME" "${spot[@]}"
}

install() {
  # Python >= 3.11 (the runtimes' Ubuntu 22.04 ships 3.10), the code, a venv, the TPU wheel of JAX.
  on_workers all 'sudo apt-get update -q && sudo apt-get install -y -q python3.11 python3.11-venv git'
  if [[ -n "$REPO_URL" ]]; then
    on_workers all "rm -rf $CHECKOUT && git clone --branch $BRANCH $REPO_URL $CHECKOUT"
  else
    run git archive --format=tar.gz -o /tmp/fedjax-intrinsic.tar.gz HEAD
    run "${GC[@]}" compute tpus tpu-vm scp /tmp/fedjax-intrinsic.tar.gz \
      "$TPU_NAME:fedjax-intrinsic.tar.gz" --zone="$ZONE" --worker=all
    on_workers all "rm -rf $CHECKOUT && mkdir -p $CHECKOUT && tar -xzf ~/fedjax-intrinsic.tar.gz -C $CHECKOUT"
  fi
  on_workers all "cd $CHECKOUT && python3.11 -m venv .venv && . .venv/bin/activate && \
pip install -q -U pip && pip install -q -e '.[test]' 'jax[tpu]>=0.10.2'"
}

check() {   # every host joins; process 0 prints the global device count
  on_workers all "$ACTIVATE && python -c 'import jax; jax.distributed.initialize(); \
print(jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(), \
jax.devices()[0].device_kind)'"
}

prepare() {
  if [[ -z "$DATA" ]]; then echo 'prepare: DATA is empty, nothing to prepare'; return; fi
  # TFDS prepares with TensorFlow: in its own venv, so the run's venv stays without it. The command
  # is the one fedjax_intrinsic/data/tfds_images.py prints when the data is missing.
  on_workers all "python3.11 -m venv ~/tfds-prepare && ~/tfds-prepare/bin/pip install -q \
tensorflow tensorflow-datasets && ~/tfds-prepare/bin/python -c \"import tensorflow_datasets as \
tfds; tfds.builder('$DATA', data_dir='$DATA_DIR').download_and_prepare(file_format='array_record')\""
}

run_experiment() {   # detached, so a dropped ssh session does not stop it; `wait` follows it
  on_workers all "$ACTIVATE && mkdir -p logs && rm -f logs/tpu_run.done && \
(nohup bash -c '$RUN_CMD; echo \$? > logs/tpu_run.done' > logs/tpu_run.log 2>&1 &)"
}

wait_done() {   # polls worker 0 until the run wrote its exit status; prints the log's tail
  while :; do
    if on_workers 0 "test -f $CHECKOUT/logs/tpu_run.done"; then break; fi
    [[ "$DRY_RUN" == 1 ]] && break
    sleep 60
  done
  on_workers 0 "tail -n 20 $CHECKOUT/logs/tpu_run.log; echo exit status: \$(cat $CHECKOUT/logs/tpu_run.done)"
}

fetch() {
  run mkdir -p "$RESULTS"
  if [[ "$WORKDIR" == gs://* ]]; then
    run gcloud storage cp -r "$WORKDIR" "$RESULTS/"
  else
    run "${GC[@]}" compute tpus tpu-vm scp --recurse "$TPU_NAME:$REMOTE/$WORKDIR" "$RESULTS/" \
      --zone="$ZONE" --worker=0
  fi
  run "${GC[@]}" compute tpus tpu-vm scp "$TPU_NAME:$REMOTE/logs/tpu_run.log" "$RESULTS/" \
    --zone="$ZONE" --worker=0
}

memory() {   # the memory benchmark on the TPU backend (one-host slices: v4-8, v5litepod-8)
  on_workers all "$ACTIVATE && python -m benchmarks.memory --preset=full \
--out_json=benchmarks/results/memory_tpu.json"
  run mkdir -p "$RESULTS"
  run "${GC[@]}" compute tpus tpu-vm scp "$TPU_NAME:$REMOTE/benchmarks/results/memory_tpu.json" \
    "$RESULTS/" --zone="$ZONE" --worker=0
}

delete() {
  run "${GC[@]}" compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
}

case "${1:-}" in
  create) create ;;
  install) install ;;
  check) check ;;
  prepare) prepare ;;
  run) run_experiment ;;
  wait) wait_done ;;
  fetch) fetch ;;
  memory) memory ;;
  delete) delete ;;
  ssh) run "${GC[@]}" compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker="${2:-0}" ;;
  all) create; install; check; prepare; run_experiment; wait_done; fetch; delete ;;
  *) echo "error: step '${1:-}' is invalid; allowed: create, install, check, prepare, run, wait, \
fetch, memory, delete, ssh, all" >&2; exit 2 ;;
esac
