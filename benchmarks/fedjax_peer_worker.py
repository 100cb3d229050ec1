r"""FedJAX's own FedAvg on a task file exported by ``benchmarks.fedjax_peer``: runs INSIDE FedJAX's venv.

  <fedjax-venv>/bin/python -I benchmarks/fedjax_peer_worker.py --task=task.npz --out=result.json
  <fedjax-venv>/bin/python -I benchmarks/fedjax_peer_worker.py --versions

It imports only fedjax (0.0.17), jax/jaxlib (0.4.30), haiku, optax and numpy, never this repository
(``-I``: the script's folder is not put on ``sys.path``). ``benchmarks.fedjax_peer`` imports the
numpy-only parts (``read_task``, ``client_id``, ``mlp_forward``) to test them without FedJAX.

Task file (``.npz``, written by ``benchmarks.fedjax_peer.export_task``; ``FORMAT`` names the version):
  train_x: f32[N, 8, 8, 1], train_y: i32[N], client_offsets: i64[K + 1] (client c owns rows
  client_offsets[c]:client_offsets[c + 1]: the SAME clients as our run); test_x: f32[T, 8, 8, 1],
  test_y: i32[T]; cohorts: i32[R, C] (round e's clients in row e - 1: our run's cohorts);
  layer{i}_w: f32[in, out], layer{i}_b: f32[out] (our θ0, dense layers in order, relu between);
  theta0_test_logits: f32[T, classes] (our model at θ0 on the test set: checks the model here);
  client_lr, server_lr, batch_size, local_epochs, rounds, eval_every, clients_per_round: scalars.

What runs: ``fedjax.algorithms.fed_avg.federated_averaging`` with ``fedjax.model_grad`` of a haiku
MLP (hk.Flatten, hk.Linear, relu, ..., hk.Linear), client and server ``fedjax.optimizers.sgd``,
``ShuffleRepeatBatchHParams(batch_size, num_epochs)`` (FedJAX fills a client's last batch with
re-sampled examples, where ours masks the empty slots), the default ``for_each_client`` backend
(jit), and a client sampler that returns the exported cohort of each round (client keys as
``UniformGetClientSampler`` makes them).

Timing: one round = ``sampler.sample()`` + ``algorithm.apply`` + ``jax.block_until_ready`` of the
new params, wall (``perf_counter``) and process CPU time (``process_time``); evaluation (every
``eval_every`` rounds and at the end, on the test set) is outside it. Round 1 includes tracing and
compilation. Output: one JSON object (see ``run``).
"""
import argparse
import json
import os
import sys
import time
from typing import Any, NamedTuple

import numpy as np

FORMAT = 'fedjax_intrinsic.fedjax_peer.task/1'
PINS = {'fedjax': '0.0.17', 'jax': '0.4.30', 'jaxlib': '0.4.30', 'dm-haiku': '0.0.13',
        'optax': '0.2.3'}
LOGIT_TOLERANCE = 1e-4     # max |logit difference| at θ0 between the haiku MLP and ours
_SCALARS = ('client_lr', 'server_lr', 'batch_size', 'local_epochs', 'rounds', 'eval_every',
            'clients_per_round')


class Task(NamedTuple):
  """A task file's content.

  clients: client_id(c) -> {'x': f32[n_c, 8, 8, 1], 'y': i32[n_c]} for c in 0..K-1.
  test: {'x': f32[T, 8, 8, 1], 'y': i32[T]}. cohorts: i32[R, C]. layers: [(w: f32[in, out],
  b: f32[out]), ...]. theta0_test_logits: f32[T, classes]. hparams: the scalars (python numbers).
  """
  clients: dict
  test: dict
  cohorts: np.ndarray
  layers: list
  theta0_test_logits: np.ndarray
  hparams: dict


def client_id(c: int) -> bytes:
  """FedJAX client id of our client c: zero-padded bytes (sorted like the integers)."""
  if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < 10**6:
    raise ValueError(f'c={c!r} is invalid; allowed: an integer in 0 .. 999999')
  return b'%06d' % c


def read_task(path: str) -> Task:
  """Reads a task file (see the module docstring); raises ValueError on a malformed one."""
  with np.load(path, allow_pickle=False) as z:
    files = dict(z.items())
  fmt = str(files.get('format', ''))
  if fmt != FORMAT:
    raise ValueError(f'{path}: format={fmt!r} is invalid; allowed: {FORMAT!r}')
  missing = [k for k in ('train_x', 'train_y', 'client_offsets', 'test_x', 'test_y', 'cohorts',
                         'theta0_test_logits', *_SCALARS) if k not in files]
  if missing:
    raise ValueError(f'{path}: fields {missing} are missing; allowed: a task file with all fields')
  offsets = files['client_offsets']
  n = len(files['train_y'])
  if (offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != n
      or np.any(np.diff(offsets) < 0)):
    raise ValueError(f'{path}: client_offsets={offsets!r} is invalid; allowed: non-decreasing '
                     f'from 0 to the {n} train examples')
  clients = {client_id(c): {'x': files['train_x'][lo:hi], 'y': files['train_y'][lo:hi]}
             for c, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:]))}
  cohorts = files['cohorts']
  if cohorts.ndim != 2 or cohorts.min() < 0 or cohorts.max() >= len(clients):
    raise ValueError(f'{path}: cohorts with shape {cohorts.shape} and values in '
                     f'[{cohorts.min()}, {cohorts.max()}] are invalid; allowed: i32[R, C] in '
                     f'0 .. {len(clients) - 1}')
  layers = []
  while f'layer{len(layers)}_w' in files:
    i = len(layers)
    layers.append((files[f'layer{i}_w'], files[f'layer{i}_b']))
  if not layers:
    raise ValueError(f'{path}: no layer0_w; allowed: a task file with the model θ0')
  hparams = {k: files[k].item() for k in _SCALARS}
  if hparams['rounds'] != len(cohorts) or hparams['clients_per_round'] != cohorts.shape[1]:
    raise ValueError(f'{path}: cohorts shape {cohorts.shape} is invalid; allowed: '
                     f'(rounds={hparams["rounds"]}, clients_per_round='
                     f'{hparams["clients_per_round"]})')
  return Task(clients, {'x': files['test_x'], 'y': files['test_y']}, cohorts, layers,
              files['theta0_test_logits'], hparams)


def mlp_forward(layers: list, x: np.ndarray) -> np.ndarray:
  """The MLP both sides train, in numpy: x: [B, ...] -> logits f32[B, classes] (relu between)."""
  h = np.asarray(x, np.float32).reshape(len(x), -1)
  for i, (w, b) in enumerate(layers):
    h = h @ w + b
    if i + 1 < len(layers):
      h = np.maximum(h, 0)
  return h


def haiku_params(layers: list) -> dict:
  """Our dense layers as the params of ``hk.Sequential([hk.Flatten(), hk.Linear, ...])``."""
  return {('linear' if i == 0 else f'linear_{i}'): {'w': w, 'b': b}
          for i, (w, b) in enumerate(layers)}


def versions() -> dict:
  """Installed versions of FedJAX's side (python, the pinned packages, numpy)."""
  import importlib.metadata as md
  out = {'python': sys.version.split()[0]}
  for pkg in (*PINS, 'numpy'):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      out[pkg] = None
  return out


def run(task: Task) -> dict[str, Any]:
  """Trains FedJAX's FedAvg on ``task``; returns the result dict (times, accuracy, versions)."""
  import fedjax
  from fedjax.algorithms import fed_avg
  import haiku as hk
  import jax

  hp = task.hparams
  widths = [w.shape[1] for w, _ in task.layers]

  def forward_pass(batch):
    mods = [hk.Flatten()]
    for i, width in enumerate(widths):
      mods.append(hk.Linear(width))
      if i + 1 < len(widths):
        mods.append(jax.nn.relu)
    return hk.Sequential(mods)(batch['x'])

  sample = {'x': task.test['x'][:1], 'y': task.test['y'][:1]}
  model = fedjax.create_model_from_haiku(
      transformed_forward_pass=hk.transform(forward_pass), sample_batch=sample,
      train_loss=lambda b, p: fedjax.metrics.unreduced_cross_entropy_loss(b['y'], p),
      eval_metrics={'loss': fedjax.metrics.CrossEntropyLoss(),
                    'accuracy': fedjax.metrics.Accuracy()})
  params = jax.tree_util.tree_map(np.asarray, haiku_params(task.layers))
  ref = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), model.init(jax.random.PRNGKey(0)))
  got = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), params)
  if jax.tree_util.tree_structure(ref) != jax.tree_util.tree_structure(got) or \
      jax.tree_util.tree_leaves(ref) != jax.tree_util.tree_leaves(got):
    raise ValueError(f'task layers give params {got}; allowed: the haiku MLP\'s {ref}')
  logits = np.asarray(model.apply_for_eval(params, task.test))
  logit_diff = float(np.max(np.abs(logits - task.theta0_test_logits)))
  if not logit_diff <= LOGIT_TOLERANCE:
    raise ValueError(f'theta0_test_logits differ from the haiku MLP by {logit_diff:.3g}; '
                     f'allowed: at most {LOGIT_TOLERANCE}')

  fd = fedjax.InMemoryFederatedData(task.clients)

  class FixedCohortSampler(fedjax.client_samplers.ClientSampler):
    """Round e (1-based) gets row e - 1 of the exported cohorts; keys as UniformGetClientSampler."""

    def __init__(self):
      self._round_num = 0

    def sample(self):
      ids = [client_id(int(c)) for c in task.cohorts[self._round_num]]
      rngs = jax.random.split(jax.random.PRNGKey(self._round_num), len(ids))
      self._round_num += 1
      return [(cid, cds, rngs[i]) for i, (cid, cds) in enumerate(fd.get_clients(ids))]

    def set_round_num(self, round_num):
      self._round_num = round_num

  algorithm = fed_avg.federated_averaging(
      grad_fn=fedjax.model_grad(model),
      client_optimizer=fedjax.optimizers.sgd(hp['client_lr']),
      server_optimizer=fedjax.optimizers.sgd(hp['server_lr']),
      client_batch_hparams=fedjax.ShuffleRepeatBatchHParams(
          batch_size=int(hp['batch_size']), num_epochs=int(hp['local_epochs'])))
  sampler = FixedCohortSampler()
  state = algorithm.init(params)
  test_batches = fedjax.ClientDataset(task.test).padded_batch(batch_size=512)

  def evaluate(p):
    out = fedjax.evaluate_model(model, p, test_batches)
    return {f'test_{k}': float(v) for k, v in out.items()}

  wall, cpu, evals = [], [], []
  start = time.perf_counter()
  for e in range(1, int(hp['rounds']) + 1):
    w0, c0 = time.perf_counter(), time.process_time()
    clients = sampler.sample()
    state, _ = algorithm.apply(state, clients)
    jax.block_until_ready(state.params)
    wall.append(time.perf_counter() - w0)
    cpu.append(time.process_time() - c0)
    if e % int(hp['eval_every']) == 0 or e == int(hp['rounds']):
      evals.append({'round': e, **evaluate(state.params)})
  return {
      'peer': 'fedjax', 'algorithm': 'fedjax.algorithms.fed_avg.federated_averaging',
      'for_each_client_backend': type(fedjax.get_for_each_client_backend()).__name__,
      'versions': versions(), 'backend': jax.default_backend(),
      'devices': [str(d) for d in jax.devices()],
      'clients_per_round': int(task.cohorts.shape[1]), 'rounds': int(hp['rounds']),
      'num_params': int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params))),
      'theta0_max_abs_logit_diff': logit_diff,
      'round_wall_s': wall, 'round_cpu_s': cpu, 'eval': evals, 'final': evals[-1],
      'time_train_s': time.perf_counter() - start,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--task', help='task .npz from benchmarks.fedjax_peer')
  parser.add_argument('--out', help='where to write the result JSON')
  parser.add_argument('--versions', action='store_true',
                      help='print the installed versions as JSON and exit')
  args = parser.parse_args(argv)
  if args.versions:
    print(json.dumps(versions()))
    return
  if not args.task or not args.out:
    parser.error('--task and --out are required (or --versions)')
  t0 = time.perf_counter()
  task = read_task(args.task)
  result = run(task)
  result['time_process_s'] = time.perf_counter() - t0
  tmp = f'{args.out}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, args.out)


if __name__ == '__main__':
  main()
