"""config → data, model, method → rounds → metrics.jsonl, config.json, summary.json.

Files in the workdir:
- `config.json`: the config as run.
- `metrics.jsonl`: one JSON line per round, appended and flushed as the round ends: `round`,
  `train_loss`, byte counts of the round and cumulative, compression ratios, eval metrics
  (`test_*`, `val_*`) on evaluation rounds, and timing fields, all named `time_*` (the only fields
  that differ between two runs of the same config and seed).
- `summary.json` (written atomically at the end, or when the run diverges): final metrics, totals,
  status ('finished' | 'diverged' with the round: the training loss was non-finite or above
  `config.divergence_loss_ratio` times round 1's), git commit, package versions, backend, devices.
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
import jax.numpy as jnp
import ml_collections
import numpy as np

from fedjax_intrinsic import algorithms, checkpoint, comm, config as config_lib, keys, models, sharding, simulation
from fedjax_intrinsic import preflight, workdir as workdir_lib
from fedjax_intrinsic import data as data_lib
from fedjax_intrinsic.algorithms.base import local_sgd, model_loss, tree_bytes
from fedjax_intrinsic.data import batching


@contextlib.contextmanager
def _as_config_error(prefix: str = ''):
  """A ValueError whose message starts with `prefix` is a config error (exit code 2): for the data
  loaders, which check their files' content as they read them, and the round builder's checks."""
  try:
    yield
  except config_lib.ConfigError:
    raise
  except ValueError as e:
    if not str(e).startswith(prefix):
      raise
    raise config_lib.ConfigError(str(e).splitlines()[0]) from e


class Experiment:
  """Everything a run is built from, made once from a validated config (no rounds run yet)."""

  def __init__(self, config: ml_collections.ConfigDict, facts: Optional[preflight.Facts] = None):
    """`facts`: what `preflight.check(config)` returned, when the caller ran it (else it runs here,
    first: nothing is loaded or compiled before the whole config is checked)."""
    if facts is None:
      facts = preflight.check(config)
    self.config = config
    self.run_key = keys.run_key(config.seed)
    # Every round's sampling and round key, derived once (uint32[rounds + 1, 2], host-side).
    self.sample_keys = keys.per_round(keys.sample_key, self.run_key, config.rounds)
    self.round_keys = keys.per_round(keys.round_key, self.run_key, config.rounds)
    data_options = {k: v for k, v in config.data.items() if k != 'name'}
    with _as_config_error():   # data files are user input: their content is checked as they load
      self.data = data_lib.get(config.data.name, key=keys.data_key(self.run_key), **data_options)
    if config.clients_per_round > self.data.num_clients:
      raise config_lib.ConfigError(
          f'clients_per_round={config.clients_per_round} is invalid; allowed: at most the '
          f'{self.data.num_clients} clients of data set {config.data.name!r}')
    x_shape = self.data.example_spec['x'][0]
    self.model, shapes = preflight.model_shapes(config, x_shape, self.data.num_classes)
    if facts.num_params is None:   # the data's shape was known only now: the checks that need D
      preflight.check_sizes(config, shapes)
    self.params0 = jax.jit(self.model.init)(keys.init_key(self.run_key))
    self.num_params = models.num_params(self.params0)
    ctx = algorithms.BuildContext(
        model=self.model, params0=self.params0, run_key=self.run_key,
        server_optimizer=config_lib.server_optimizer(config.server, config.rounds),
        client_lr=config.client.lr, num_clients=self.data.num_clients, num_rounds=config.rounds,
        server_optimizer_stateless=config_lib.server_optimizer_is_stateless(config.server))
    # Every rule a method checks at build time was checked above (preflight.check_sizes): an
    # error from the build is a bug and keeps its traceback.
    self.algorithm = algorithms.get(config.method.name, config.method, ctx)
    sim = config.simulation
    self.batch_size = config.client.batch_size or int(self.data.client_sizes.max())
    self.num_steps = config.client.local_steps or batching.steps_for_epochs(
        self.data, self.batch_size, config.client.local_epochs)
    # Local epochs: that many passes; a fixed number of steps over the whole data (batch_size 0):
    # one pass; a fixed number of steps of smaller batches: fill every step (passes repeat).
    c = config.client
    self.epochs = c.local_epochs or (1 if c.batch_size == 0 else None)
    self.mesh = sharding.make_mesh(sim.get('num_devices', 1), sim.get('model_devices', 1))
    self.cohort_size = simulation.padded_cohort_size(
        config.clients_per_round, sim.client_parallelism, sim.clients_per_chunk,
        sharding.mesh_size(self.mesh))
    with _as_config_error(prefix='simulation.'):   # its one-line checks of simulation.* fields
      self.round_fn = simulation.build_round(self.algorithm, sim.client_parallelism,
                                             sim.clients_per_chunk, sim.cohort_shortcut,
                                             family=models.family(config.model.name),
                                             mesh=self.mesh)
    client_state0 = self.algorithm.init_client(self.params0)
    config_lib.check_client_memory(
        config.method.name, simulation.ClientStateStore.bytes_needed(client_state0, 1),
        self.data.num_clients)
    self.clients = simulation.ClientStateStore(client_state0, self.data.num_clients)
    self.evaluator = models.make_evaluator(self.model, config.eval_batch_size)
    # The next sampled round's (cohort, round_fn inputs), built while the current round runs on the
    # devices (`run_round`); a pure function of the round number, so this changes no result.
    self._prefetched: dict = {}

  def _key(self, table: np.ndarray, key_fn, round_num: int) -> np.ndarray:
    """Round `round_num`'s key from its precomputed table (derived afresh past the table)."""
    if round_num < len(table):
      return table[round_num]
    return np.asarray(jax.random.key_data(key_fn(self.run_key, round_num)))

  def cohort(self, round_num: int) -> np.ndarray:
    """i32[cohort_size]: the round's sampled client ids (seeded), then −1 for padding clients."""
    rng = keys.numpy_rng(self._key(self.sample_keys, keys.sample_key, round_num))
    ids = rng.choice(self.data.num_clients, self.config.clients_per_round, replace=False)
    pad = self.cohort_size - len(ids)
    return np.concatenate([ids, -np.ones(pad, ids.dtype)]).astype(np.int32)

  def round_inputs(self, round_num: int, client_ids: np.ndarray) -> dict:
    """The padded batches and aggregation weights of one round (host-side numpy)."""
    rng = keys.numpy_rng(self._key(self.round_keys, keys.round_key, round_num))
    batches = batching.client_batches(self.data, client_ids, batch_size=self.batch_size,
                                      num_steps=self.num_steps, rng=rng, epochs=self.epochs)
    weights = simulation.aggregation_weights(batches.pop('num_examples'), client_ids,
                                             self.config.server.weighting)
    return batches, weights

  def local_round_inputs(self, round_num: int, client_ids: np.ndarray, share: slice) -> dict:
    """`round_inputs` of the contiguous share `client_ids[share]` only, loading only its data.

    Equal to slicing `round_inputs(round_num, client_ids)`: the weights come from the client sizes
    (metadata), and the shuffling stream skips the draws of the clients before the share (one
    uniform per example and pass, as `batching.client_batches` draws them).
    """
    ids = np.asarray(client_ids)
    real = ids >= 0
    sizes = np.where(real, self.data.client_sizes[np.maximum(ids, 0)], 0).astype(np.int64)
    weights = simulation.aggregation_weights(sizes.astype(np.float32), ids,
                                             self.config.server.weighting)
    slots = self.num_steps * self.batch_size
    if self.epochs is None:
      used = np.where(sizes > 0, slots, 0)
    else:
      used = np.minimum(np.ceil(sizes * float(self.epochs)).astype(np.int64), slots)
    draws = sizes * (-(-used // np.maximum(sizes, 1)))
    rng = keys.numpy_rng(self._key(self.round_keys, keys.round_key, round_num))
    rng.bit_generator.advance(int(draws[:share.start].sum()))   # one 64-bit output per uniform
    batches = batching.client_batches(self.data, ids[share], batch_size=self.batch_size,
                                      num_steps=self.num_steps, rng=rng, epochs=self.epochs)
    batches.pop('num_examples')
    return batches, weights[share]

  def upload_bytes_per_client(self, server_state) -> int:
    """Bytes one client sends in a round: its payload (and second payload), from shapes alone."""
    alg = self.algorithm
    one_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                             self.round_inputs(1, self.cohort(1))[0])
    bc = jax.eval_shape(alg.broadcast, server_state)
    cstate = jax.eval_shape(lambda: alg.init_client(self.params0))
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    payload = jax.eval_shape(alg.client_update, bc, cstate, one_batch, key)[0]
    total = tree_bytes(payload)
    if alg.query is not None:
      agg = jax.eval_shape(lambda p: alg.aggregate(jax.tree.map(lambda x: x[None], p),
                                                   jnp.ones((1,))), payload)
      request = jax.eval_shape(alg.query, server_state, agg)
      total += tree_bytes(jax.eval_shape(alg.respond, bc, request, cstate, one_batch, key)[0])
    return total

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

  def request_bytes(self, server_state) -> int:
    """Bytes every participant downloads besides its catch-up: the second exchange's request and
    the method's end-of-round notice (0 without them)."""
    alg = self.algorithm
    note = tree_bytes(jax.eval_shape(alg.notice, server_state)) if alg.finish is not None else 0
    if alg.query is None:
      return note
    bc = jax.eval_shape(alg.broadcast, server_state)
    cstate = jax.eval_shape(lambda: alg.init_client(self.params0))
    one_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                             self.round_inputs(1, self.cohort(1))[0])
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    payload = jax.eval_shape(alg.client_update, bc, cstate, one_batch, key)[0]
    agg = jax.eval_shape(lambda p: alg.aggregate(jax.tree.map(lambda x: x[None], p),
                                                 jnp.ones((1,))), payload)
    return tree_bytes(jax.eval_shape(alg.query, server_state, agg)) + note

  def init_state(self):
    """The server state before round 1 (and a fresh byte ledger)."""
    state = jax.jit(self.algorithm.init)(self.params0)
    self.ledger = comm.ByteLedger(self.data.num_clients, tree_bytes(self.params0))
    self.upload_per_client = self.upload_bytes_per_client(state)
    self.request_per_client = self.request_bytes(state)
    return state

  def device_inputs(self, round_num: int, client_ids: np.ndarray) -> tuple:
    """(batches, weights, ids) as `round_fn` takes them for this cohort: without a mesh, batches
    and weights put on the device (asynchronously); with one, this process's share
    (`local_round_inputs` when there are several processes: every process samples the global
    cohort, loads its own share only). ids stay host-side: they also index the client-state store."""
    if self.mesh is None:
      return jax.device_put(self.round_inputs(round_num, client_ids)) + (client_ids,)
    share = sharding.process_share(len(client_ids))
    if jax.process_count() > 1:
      batches, weights = self.local_round_inputs(round_num, client_ids, share)
    else:
      batches, weights = self.round_inputs(round_num, client_ids)
    return batches, weights, client_ids[share]

  def run_round(self, state, round_num: int, client_ids: Optional[np.ndarray] = None):
    """Runs round `round_num` on its sampled cohort (or on `client_ids`); returns (state, line).

    line: {'round', 'train_loss', bytes of the round and cumulative, compression ratios}.
    On a sampled cohort, the next round's cohort and inputs are built while this round runs.
    """
    if client_ids is None:
      ids, inputs = self._prefetched.pop(round_num, (None, None))
      if ids is None:
        ids = self.cohort(round_num)
        inputs = self.device_inputs(round_num, ids)
    else:
      ids = np.asarray(client_ids, np.int32)
      inputs = self.device_inputs(round_num, ids)
    held = self.ledger.held_round[np.maximum(ids, 0)]
    down = np.asarray(self.algorithm.download_bytes(state, held), np.int64)
    down = down + self.request_per_client
    round_key = self._key(self.round_keys, keys.round_key, round_num)
    batches, weights, shard_ids = inputs
    result = self.round_fn(state, self.clients.gather(shard_ids), batches, weights, shard_ids,
                           round_key)
    if client_ids is None and round_num < self.config.rounds:   # overlaps the dispatched round
      nxt = self.cohort(round_num + 1)
      self._prefetched = {round_num + 1: (nxt, self.device_inputs(round_num + 1, nxt))}
    # Every process keeps the global cohort's ledger and client-state store.
    self.clients.scatter(ids, sharding.to_host(result.client_states))
    loss = float(sharding.to_host(result.metrics['loss']))
    line = {'round': round_num, 'train_loss': loss}
    after = (None if self.algorithm.held_after is None
             else self.algorithm.held_after(state, held))
    line.update(self.ledger.record_round(round_num, ids, self.upload_per_client, down, after))
    return result.server_state, line

  def evaluate(self, params) -> dict:
    if self.mesh is not None:   # replicated over the mesh: evaluate this process's copy
      params = sharding.to_host(params)
    out = {}
    for split, prefix in ((self.data.test, 'test_'), (self.data.validation, 'val_')):
      if split is not None and len(next(iter(split.values()))):
        out.update({prefix + k: float(v) for k, v in self.evaluator(params, split).items()})
    return out


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  jax.block_until_ready(fn())          # compile and warm up
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


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


def _check_same_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old != workdir_lib.strict(config.to_dict()):
      raise config_lib.ConfigError(
          f'--workdir={workdir} holds checkpoints of a different config; allowed: the same config '
          '(to resume) or a new --workdir')


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
    if checkpointer.latest_round() is not None:
      _check_same_config(workdir, config)
      start, restored = checkpointer.restore_newest_good(
          state, exp.ledger.state_dict(), exp.clients.state_dict(), say=_say)
      if start is not None:
        state, ledger_state, tables = restored
        exp.ledger.load_state_dict(ledger_state)
        exp.clients.load_state_dict(tables)
  log = workdir_lib.MetricsLog(metrics_path if primary else None, start or 0)
  if start is not None and primary and len(log.kept) != start:
    log.close()
    raise RuntimeError(f'{metrics_path} has {len(log.kept)} complete lines but the checkpoint '
                       f'resumed is of round {start}: the workdir is inconsistent')
  if log.torn and start:
    _say(f'{metrics_path}: dropped a torn line after round {start} (an interrupted write)')
  if primary:
    _atomic_write_json(os.path.join(workdir, 'config.json'), config.to_dict())
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
  if primary:
    _atomic_write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary
