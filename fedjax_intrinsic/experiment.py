"""The run loop: a build's rounds → metrics.jsonl, config.json, summary.json, checkpoints.

    summary = experiment.run(config, workdir)    # what run.py calls

Data flows one way: `build.build(config)` makes, once, everything that does not change from round
to round (data, model, method, round function, cohort sampler, per-client bytes: build.py); the
loop here holds what does (the server state, every client's state in a `ClientStateStore`, the
byte ledger, `comm.ByteLedger`) and writes the files. `Experiment(config)` is the two together,
one round at a time (`init_state`, `run_round`, `evaluate`), for tests and benchmarks.

Files in the workdir:
- `config.json`: the config as run.
- `metrics.jsonl`: one JSON line per round, appended and flushed as the round ends: `round`,
  `train_loss`, byte counts of the round and cumulative, compression ratios, eval metrics
  (`test_*`, `val_*`) on evaluation rounds, and timing fields, all named `time_*` (the only fields
  that differ between two runs of the same config and seed).
- `summary.json` (written atomically at the end, or when the run diverges): final metrics, totals,
  status ('finished' | 'diverged' with the round: the training loss was non-finite or above
  `config.divergence_loss_ratio` times round 1's), git commit, package versions, backend, devices.
- `initial.json` (with `config.eval_initial`): the held-out metrics of θ0, before round 1, also in
  summary.json as `initial` (kept across a resume).
- `checkpoints/` (with `config.checkpoint_every`): see checkpoint.py; a run started again on the
  same workdir resumes from the newest good one (`checkpoint.resume`).
"""
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np

from fedjax_intrinsic import build as build_lib, checkpoint, comm, keys, preflight, sharding
from fedjax_intrinsic import simulation, workdir as workdir_lib
from fedjax_intrinsic.algorithms.base import local_sgd, model_loss, tree_bytes


class Experiment:
  """A build (`build.build`) and the state its rounds change: the client-state store, the ledger.

  Attributes: `build` (the `build.Build`), its fields (`config`, `run_key`, `data`, `model`,
  `params0`, `num_params`, `algorithm`, `mesh`, `round_fn`, `cohort_size`, `upload_per_client`,
  `request_per_client`), `clients` (`simulation.ClientStateStore`, every client's state) and
  `ledger` (`comm.ByteLedger`). No round has run yet.
  """

  def __init__(self, config: ml_collections.ConfigDict, facts: Optional[preflight.Facts] = None):
    """`facts`: what `preflight.check(config)` returned, when the caller ran it (else it runs here,
    first: nothing is loaded or compiled before the whole config is checked)."""
    b = self.build = build_lib.build(config, facts)
    self.config, self.run_key, self.data, self.model = b.config, b.run_key, b.data, b.model
    self.params0, self.num_params, self.algorithm = b.params0, b.num_params, b.algorithm
    self.mesh, self.round_fn, self.cohorts = b.mesh, b.round_fn, b.cohorts
    self.cohort_size = b.cohorts.cohort_size
    self.upload_per_client, self.request_per_client = b.upload_per_client, b.request_per_client
    self.clients = simulation.ClientStateStore(b.client_state0, b.data.num_clients)
    self.ledger = comm.ByteLedger(b.data.num_clients, tree_bytes(b.params0))
    # The next sampled round's (cohort, round_fn inputs), built while the current round runs on the
    # devices (`run_round`); a pure function of the round number, so this changes no result.
    self._prefetched: dict = {}

  def cohort(self, round_num: int) -> np.ndarray:
    """i32[cohort_size]: the round's sampled client ids, then −1 padding (`Cohorts.sample`)."""
    return self.cohorts.sample(round_num)

  def round_inputs(self, round_num: int, client_ids: np.ndarray) -> tuple:
    """(batches, weights) of one round's clients, host-side numpy (`Cohorts.inputs`)."""
    return self.cohorts.inputs(round_num, client_ids)

  def local_round_inputs(self, round_num: int, client_ids: np.ndarray, share: slice) -> tuple:
    """`round_inputs` of the contiguous share `client_ids[share]` only, loading only its data."""
    return self.cohorts.inputs(round_num, client_ids, share)

  def init_state(self):
    """The server state before round 1."""
    return jax.jit(self.algorithm.init)(self.params0)

  def run_round(self, state, round_num: int, client_ids: Optional[np.ndarray] = None):
    """Runs round `round_num` on its sampled cohort (or on `client_ids`); returns (state, line).

    line: {'round', 'train_loss', bytes of the round and cumulative, compression ratios}.
    On a sampled cohort, the next round's cohort and inputs are built while this round runs.
    """
    cohorts = self.cohorts
    if client_ids is None:
      ids, inputs = self._prefetched.pop(round_num, (None, None))
      if ids is None:
        ids = cohorts.sample(round_num)
        inputs = cohorts.device_inputs(round_num, ids, self.mesh)
    else:
      ids = np.asarray(client_ids, np.int32)
      inputs = cohorts.device_inputs(round_num, ids, self.mesh)
    held = self.ledger.held_round[np.maximum(ids, 0)]
    down = np.asarray(self.algorithm.download_bytes(state, held), np.int64)
    down = down + self.request_per_client
    batches, weights, shard_ids = inputs
    result = self.round_fn(state, self.clients.gather(shard_ids), batches, weights, shard_ids,
                           cohorts.round_key(round_num))
    if client_ids is None and round_num < self.config.rounds:   # overlaps the dispatched round
      nxt = cohorts.sample(round_num + 1)
      self._prefetched = {round_num + 1: (nxt, cohorts.device_inputs(round_num + 1, nxt, self.mesh))}
    # Every process keeps the global cohort's ledger and client-state store.
    self.clients.scatter(ids, sharding.to_host(result.client_states))
    loss = float(sharding.to_host(result.metrics['loss']))
    line = {'round': round_num, 'train_loss': loss}
    after = (None if self.algorithm.held_after is None
             else self.algorithm.held_after(state, held))
    line.update(self.ledger.record_round(round_num, ids, self.upload_per_client, down, after))
    return result.server_state, line

  def evaluate(self, params) -> dict:
    """{'test_<metric>', 'val_<metric>'} of `params` on the data's test and validation splits
    (those of config.eval_splits)."""
    if self.mesh is not None:   # replicated over the mesh: evaluate this process's copy
      params = sharding.to_host(params)
    out, wanted = {}, self.config.eval_splits.split(',')
    for name, split, prefix in (('test', self.data.test, 'test_'),
                                ('validation', self.data.validation, 'val_')):
      if name in wanted and split is not None and len(next(iter(split.values()))):
        out.update({prefix + k: float(v) for k, v in self.build.evaluator(params, split).items()})
    return out

  def client_cost(self, server_state, repeats: int = 5) -> dict:
    """Seconds one client spends on a round, measured on round 1's first client (timing fields).

    `time_client_update_s`: the method's whole client step (local training and compression);
    `time_client_train_s`: the same local SGD on θ without compression; `time_client_encode_s`:
    the difference, the client-side cost of compression. Medians of `repeats` jitted calls after a
    warm-up call.
    """
    alg = self.algorithm
    ids = self.cohort(1)[:1]
    batch = jax.tree.map(lambda x: x[0], self.round_inputs(1, ids)[0])
    bc = jax.jit(alg.broadcast)(server_state)
    cstate = alg.init_client(self.params0)
    key = keys.client_key(keys.round_key(self.run_key, 1), int(ids[0]))
    loss = model_loss(self.model)
    lr = self.config.client.lr
    train = jax.jit(lambda params, batches: local_sgd(loss, params, batches, lr))
    update = jax.jit(alg.client_update)
    params = alg.model_params(server_state)
    t_update = _median_seconds(lambda: update(bc, cstate, batch, key), repeats)
    t_train = _median_seconds(lambda: train(params, batch), repeats)
    return {'time_client_update_s': t_update, 'time_client_train_s': t_train,
            'time_client_encode_s': max(t_update - t_train, 0.0)}


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  jax.block_until_ready(fn())          # compile and warm up
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def _initial_evaluation(exp: Experiment, state, workdir: str, fresh: bool, primary: bool):
  """The held-out metrics of θ0 (config.eval_initial), as `Experiment.evaluate` gives them, plus
  'time_eval_s'. A fresh run evaluates and keeps them in <workdir>/initial.json; a resumed one reads
  that file (None when it is missing: the run was started without eval_initial)."""
  path = os.path.join(workdir, 'initial.json')
  if not fresh:
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)
  t0 = time.time()
  initial = exp.evaluate(exp.algorithm.model_params(state))
  initial['time_eval_s'] = time.time() - t0
  if primary:
    _atomic_write_json(path, initial)
  return initial


def _atomic_write_json(path: str, obj: Any) -> None:
  """Strict JSON (non-finite numbers as null), atomic and fsynced: `workdir.write_json`."""
  workdir_lib.write_json(path, obj)


def environment() -> dict:
  """Git commit, package versions, backend and devices: what a summary records about the run."""
  import importlib.metadata as md
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    commit = ''
  versions = {}
  for pkg in ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'ml-collections', 'tensorflow-datasets'):
    try:
      versions[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      versions[pkg] = None
  return {'git_commit': commit or None, 'versions': versions, 'python': sys.version.split()[0],
          'backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()]}


def diverged(loss: float, first_loss: float, ratio: float) -> bool:
  """True when a round's training loss is non-finite, or (ratio > 0) above ratio × round 1's."""
  if not math.isfinite(loss):
    return True
  return bool(ratio) and math.isfinite(first_loss) and loss > ratio * abs(first_loss)


def _say(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


def run(config: ml_collections.ConfigDict, workdir: str,
        progress: Optional[Callable[[dict], None]] = None) -> dict:
  """Runs the experiment, writing metrics as it goes; returns the summary dict.

  With `config.checkpoint_every > 0` it checkpoints every that many rounds and, started again on the
  same workdir, resumes from the latest checkpoint (same metrics as an uninterrupted run, timing
  fields aside).
  """
  t_start = time.time()
  facts = preflight.check(config, workdir)
  primary = sharding.is_primary()   # in a multi-process run only process 0 writes files
  with workdir_lib.Lock(workdir) if primary else contextlib.nullcontext():
    return _run_locked(config, workdir, progress, facts, t_start, primary)


def _run_locked(config, workdir, progress, facts, t_start, primary) -> dict:
  del facts      # Experiment checks again (pure and cheap), so subclasses keep Experiment(config)
  exp = Experiment(config)
  os.makedirs(workdir, exist_ok=True)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  alg = exp.algorithm
  state = exp.init_state()
  client_cost = exp.client_cost(state) if config.time_client_cost else {}
  checkpointer = start = None
  if config.checkpoint_every:
    checkpointer = checkpoint.Checkpointer(workdir)
    start, state = checkpoint.resume(checkpointer, workdir, config, state, exp.ledger, exp.clients,
                                     say=_say)
  log = workdir_lib.MetricsLog(metrics_path if primary else None, start or 0)
  if start is not None and primary and len(log.kept) != start:
    log.close()
    raise RuntimeError(f'{metrics_path} has {len(log.kept)} complete lines but the checkpoint '
                       f'resumed is of round {start}: the workdir is inconsistent')
  if log.torn and start:
    _say(f'{metrics_path}: dropped a torn line after round {start} (an interrupted write)')
  if primary:
    _atomic_write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  initial = _initial_evaluation(exp, state, workdir, fresh=start is None,
                                primary=primary) if config.eval_initial else None
  status, diverged_round, last, first_loss = 'finished', None, {}, None
  for line in log.kept:
    last.update(line)
  with log:
    for e in range((start or 0) + 1, config.rounds + 1):
      t0 = time.time()
      state, line = exp.run_round(state, e)
      line['time_round_s'] = time.time() - t0
      line.update(client_cost)
      first_loss = (log.kept or [line])[0]['train_loss'] if first_loss is None else first_loss
      if diverged(line['train_loss'], first_loss, config.get('divergence_loss_ratio', 0.0)):
        status, diverged_round = 'diverged', e
      if e % config.eval_every == 0 or e == config.rounds or status == 'diverged':
        t1 = time.time()
        line.update(exp.evaluate(alg.model_params(state)))
        line['time_eval_s'] = time.time() - t1
      line['time_wall_s'] = time.time() - t_start
      log.append(line)
      last.update(line)
      if checkpointer is not None and e % config.checkpoint_every == 0 and status != 'diverged':
        log.sync()     # the lines a checkpoint vouches for are on disk before it is
        checkpointer.save(e, state, exp.ledger.state_dict(), exp.clients.state_dict())
      if progress is not None:
        progress(line)
      if status == 'diverged':
        break
  if checkpointer is not None:
    checkpointer.close()
  summary = {
      'status': status, 'diverged_round': diverged_round, 'rounds_run': last.get('round', 0),
      'resumed_from_round': start,
      'num_params': exp.num_params, 'method': config.method.name,
      'final': {k: v for k, v in last.items() if not k.startswith('time_')},
      'upload_bytes_per_client': exp.upload_per_client,
      'data': exp.data.metadata,
      **client_cost, 'time_total_s': time.time() - t_start, **environment()}
  if config.eval_initial:
    summary['initial'] = initial
  if primary:
    _atomic_write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary
