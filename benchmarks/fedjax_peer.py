r"""A peer, side by side: FedJAX's own FedAvg and ours on the same digits task, clients and cohorts.

  python -m benchmarks.fedjax_peer                    # full: JSON + the README's fedjax section
  python -m benchmarks.fedjax_peer --preset=quick     # 20 rounds, 10 clients, once; JSON only
  python -m benchmarks.fedjax_peer --render_only      # README section from the saved JSON
  python -m benchmarks.fedjax_peer --venv=/path/to/venv --repeats=5 --max_load=2

Task (docs/paper.md §5, the setting FedJAX was timed on): digits, 100 shard clients (split seed 0),
FedAvg with one local epoch, batch 5, client lr 0.1, server SGD lr 1.0, MLP 64-128-10, 200 rounds,
10 and 100 clients per round. Ours is ``python run.py
--config=configs/digits_cnn.py:method=fedavg,model=mlp,clients_per_round=C`` run in-process
(``experiment.run``), with ``simulation.client_parallelism`` at the config's default and, for
reference, ``vmap``, ``map`` and ``loop``.

Same inputs on both sides: ``export_task`` writes our run's clients (the arrays of every client of
``FederatedData``), the cohort of every round, θ0 and θ0's test logits to an ``.npz`` that the
worker (``benchmarks/fedjax_peer_worker.py``) reads into a ``fedjax.InMemoryFederatedData``; its
haiku MLP starts from our θ0 and must reproduce our θ0 logits (max |difference| <= 1e-4) before it
trains. Differences left: the order in which a client shuffles its examples (each side its own
RNG), and a client's last, partial batch (FedJAX fills it with re-sampled examples; ours masks the
empty slots; a 14-example client sees 15 examples on FedJAX's side, 14 on ours).

FedJAX's side runs in its own virtual environment (default ``~/.cache/fedjax-intrinsic/fedjax-venv``,
``--venv``), created on demand with ONE pip command pinning fedjax 0.0.17, jax/jaxlib 0.4.30,
dm-haiku 0.0.13 and optax 0.2.3 (docs/peers.md: a plain ``pip install fedjax`` pulls a jax without
``jax.tree_map`` and its FedAvg crashes). The worker runs with ``python -I`` and imports nothing
from this repository.

Timing. A round's wall time: ours is metrics.jsonl's ``time_round_s`` (cohort sampling, host-side
batching, the compiled round, the byte ledger; the next round's sampling and batching are done
while the compiled round runs, and counted in this round); FedJAX's is ``sampler.sample()`` +
``algorithm.apply`` + ``block_until_ready`` of the new params. Evaluation is outside both. Round 1
(tracing and compilation) is reported apart (``first_round_ms``); a run's figure is the MEDIAN over
rounds 2..R. Process CPU time per round is kept too (steadier under load; ours: CPU time between
consecutive rounds' progress callbacks, evaluation rounds left out). The machine is shared: before
each repeat the script waits (up to ``--max_wait_s``) for the 1-minute load average to drop below
``--max_load``, runs every side back to back (the order reversed on odd repeats, so drift hits
both alike), records the load before and after each run, and reports medians over repeats and the
median of the per-repeat speed-ups (FedJAX ms / ours ms, paired within a repeat).

Output: ``benchmarks/results/fedjax_peer_<backend>.json`` (``_<preset>`` appended for presets other
than full) and, for the full preset, the ``fedjax`` section of ``benchmarks/README.md``.
"""
import dataclasses
import hashlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional, Sequence

from absl import app
from absl import flags
import numpy as np

from benchmarks import common
from benchmarks import fedjax_peer_worker as worker
from fedjax_intrinsic import cli, fields

README_SECTION = 'fedjax'
WORKER = os.path.abspath(worker.__file__)
DEFAULT_VENV = os.path.join(os.path.expanduser('~'), '.cache', 'fedjax-intrinsic', 'fedjax-venv')
PIP_PINS = tuple(f'{pkg}=={v}' for pkg, v in worker.PINS.items())
CONFIG_FILE = os.path.join(common.REPO_ROOT, 'configs', 'digits_cnn.py')
CONFIG_ARG = 'method=fedavg,model=mlp'
DEFAULT = 'default'             # the config's own simulation.client_parallelism
FEDJAX = 'fedjax'
TARGET_SPEEDUP = 5.0            # the target for our round over FedJAX's (measured, reported)


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to run: `rounds` rounds at each cohort size, `repeats` times, our `strategies`."""
  preset: str
  rounds: int
  cohorts: tuple[int, ...]
  repeats: int
  strategies: tuple[str, ...]


PRESETS = {
    'full': Settings('full', 200, (10, 100), 3, (DEFAULT, 'vmap', 'map', 'loop')),
    'quick': Settings('quick', 20, (10,), 1, (DEFAULT,)),
}


# ----------------------------------------------------------------------------- our side


def digits_config(clients_per_round: int, rounds: int, strategy: str = DEFAULT):
  """``configs/digits_cnn.py:method=fedavg,model=mlp`` with C clients a round, R rounds.

  strategy: 'default' keeps the config's ``simulation.client_parallelism``; any other value sets it.
  """
  for name, value in (('clients_per_round', clients_per_round), ('rounds', rounds)):
    if not fields.is_int(value, 1):
      raise ValueError(f'{name}={value!r} is invalid; allowed: a positive integer')
  spec = importlib.util.spec_from_file_location('digits_cnn_config', CONFIG_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f'{CONFIG_ARG},clients_per_round={clients_per_round},rounds={rounds}')
  if strategy != DEFAULT:
    from fedjax_intrinsic import simulation
    allowed = getattr(simulation, 'CLIENT_PARALLELISM', simulation.STRATEGIES)
    if strategy not in allowed:
      raise ValueError(f'strategy={strategy!r} is invalid; allowed: {DEFAULT}, '
                       f'{", ".join(allowed)}')
    config.simulation.client_parallelism = strategy
  return config


def resolved_strategy(config) -> str:
  """The client parallelism a config runs (``auto`` resolved where the project has it)."""
  from fedjax_intrinsic import models, simulation
  value = config.simulation.client_parallelism
  resolve = getattr(simulation, 'resolve_strategy', None)
  return resolve(value, models.family(config.model.name)) if resolve is not None else value


def _mlp_layers(params) -> list[tuple[np.ndarray, np.ndarray]]:
  """Our mlp/logreg params -> [(w: f32[in, out], b: f32[out]), ...] in forward order."""
  hidden = sorted((k for k in params if k.startswith('hidden_')), key=lambda k: int(k[7:]))
  names = hidden + ['logits']
  if set(params) != set(names):
    raise ValueError(f'params with layers {sorted(params)} are invalid; allowed: the mlp/logreg '
                     'layers hidden_0.. and logits')
  return [(np.asarray(params[n]['kernel'], np.float32), np.asarray(params[n]['bias'], np.float32))
          for n in names]


def export_task(config, path: str) -> dict[str, Any]:
  """Writes the task file FedJAX's worker trains on (see ``fedjax_peer_worker``'s docstring).

  Builds our ``Experiment(config)`` (no round runs): its clients, the cohorts of rounds 1..R
  (``Experiment.cohort``), θ0 and θ0's test logits. Returns {'path', 'sha256' (of the clients and
  cohorts: the same file means the same inputs), 'num_clients', 'num_params', 'client_sizes'}.
  """
  from fedjax_intrinsic import experiment
  if config.model.name not in ('mlp', 'logreg'):
    raise ValueError(f'model.name={config.model.name!r} is invalid; allowed: mlp, logreg (the '
                     'dense models the haiku worker rebuilds)')
  if config.method.name != 'fedavg' or not config.client.local_epochs or config.client.local_steps:
    raise ValueError(f'method.name={config.method.name!r} with client.local_steps='
                     f'{config.client.local_steps}, local_epochs={config.client.local_epochs} is '
                     'invalid; allowed: fedavg with local_epochs > 0 and local_steps = 0')
  if config.server.optimizer != 'sgd' or config.server.schedule != 'constant' or \
      config.server.momentum or config.server.weight_decay or config.server.weighting != 'examples':
    raise ValueError(f'server={dict(config.server)!r} is invalid; allowed: plain sgd at a constant '
                     "rate, weighting 'examples' (what FedJAX's FedAvg does)")
  exp = experiment.Experiment(config)
  data = exp.data
  c = config.clients_per_round
  cohorts = np.stack([exp.cohort(e)[:c] for e in range(1, config.rounds + 1)]).astype(np.int32)
  layers = _mlp_layers(exp.params0)
  logits = np.asarray(exp.model.apply(exp.params0, data.test['x']), np.float32)
  fields = {
      'format': np.array(worker.FORMAT),
      'train_x': data.train['x'], 'train_y': data.train['y'],
      'client_offsets': data.client_offsets, 'test_x': data.test['x'], 'test_y': data.test['y'],
      'cohorts': cohorts, 'theta0_test_logits': logits,
      'client_lr': np.float64(config.client.lr), 'server_lr': np.float64(config.server.lr),
      'batch_size': np.int64(config.client.batch_size),
      'local_epochs': np.int64(config.client.local_epochs),
      'rounds': np.int64(config.rounds), 'eval_every': np.int64(config.eval_every),
      'clients_per_round': np.int64(c),
  }
  for i, (w, b) in enumerate(layers):
    fields[f'layer{i}_w'], fields[f'layer{i}_b'] = w, b
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **fields)
  digest = hashlib.sha256()
  for k in ('train_x', 'train_y', 'client_offsets', 'test_x', 'test_y', 'cohorts'):
    digest.update(np.ascontiguousarray(fields[k]).tobytes())
  return {'path': path, 'sha256': digest.hexdigest(), 'num_clients': data.num_clients,
          'num_params': exp.num_params, 'client_sizes': sorted(set(data.client_sizes.tolist()))}


def summarize(wall_s: Sequence[float], cpu_s: Optional[Sequence[Optional[float]]] = None
              ) -> dict[str, Any]:
  """Per-round times of one run -> ms figures; round 1 (compilation) is kept apart.

  wall_s: seconds of rounds 1..R. cpu_s: the same in process CPU time, None where not measured.
  Returns first_round_ms, median_ms / mean_ms / min_ms over rounds 2..R, n (that many rounds),
  cpu_median_ms (over rounds 2..R with a CPU figure; None without any).
  """
  if len(wall_s) < 2:
    raise ValueError(f'wall_s has {len(wall_s)} rounds; allowed: at least 2 (round 1 is excluded)')
  rest = [1e3 * t for t in wall_s[1:]]
  cpu = [1e3 * t for t in (cpu_s or [])[1:] if t is not None]
  return {'first_round_ms': 1e3 * wall_s[0], 'median_ms': statistics.median(rest),
          'mean_ms': statistics.fmean(rest), 'min_ms': min(rest), 'n': len(rest),
          'cpu_median_ms': statistics.median(cpu) if cpu else None}


def cpu_per_round(stamps: Sequence[float], eval_rounds: Sequence[bool]) -> list[Optional[float]]:
  """CPU seconds of rounds 1..R from the process CPU clock at each round's progress callback.

  stamps: R + 1 readings (before round 1, then after each round's callback). Round 1 and rounds
  that evaluated get None (their interval holds compilation or evaluation).
  """
  if len(stamps) != len(eval_rounds) + 1:
    raise ValueError(f'stamps has {len(stamps)} readings; allowed: rounds + 1 = '
                     f'{len(eval_rounds) + 1}')
  return [None if e == 0 or ev else stamps[e + 1] - stamps[e] for e, ev in enumerate(eval_rounds)]


def run_ours(config) -> dict[str, Any]:
  """Runs ``experiment.run(config)`` in a temporary workdir; returns its round times and accuracy."""
  from fedjax_intrinsic import experiment
  stamps, evals = [], []

  def progress(line):
    stamps.append(time.process_time())
    evals.append('test_accuracy' in line)

  with tempfile.TemporaryDirectory(prefix='fedjax_peer_ours_') as workdir:
    stamps.append(time.process_time())
    summary = experiment.run(config, workdir, progress=progress)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      lines = [json.loads(t) for t in f]
  if summary['status'] != 'finished':
    raise RuntimeError(f'our run stopped: status={summary["status"]} at round '
                       f'{summary["diverged_round"]}')
  wall = [line['time_round_s'] for line in lines]
  return {'round_wall_s': wall, 'round_cpu_s': cpu_per_round(stamps[:len(wall) + 1], evals),
          'final': {k: v for k, v in summary['final'].items() if k.startswith('test_')},
          'eval': [{k: v for k, v in line.items() if k == 'round' or k.startswith('test_')}
                   for line in lines if 'test_accuracy' in line],
          'num_params': summary['num_params'], 'versions': summary['versions'],
          'backend': summary['backend']}


# ----------------------------------------------------------------------------- FedJAX's side


def venv_python(venv: str) -> str:
  return os.path.join(venv, 'bin', 'python')


def pip_command(venv: str) -> list[str]:
  """The ONE pip command that installs FedJAX's side (all pins together, docs/peers.md)."""
  return [venv_python(venv), '-m', 'pip', 'install', *PIP_PINS]


def installed_versions(venv: str) -> Optional[dict]:
  """The versions the worker reports from ``venv`` (None if it has no python or cannot run)."""
  if not os.path.exists(venv_python(venv)):
    return None
  proc = subprocess.run([venv_python(venv), '-I', WORKER, '--versions'], capture_output=True,
                        text=True, timeout=300)
  if proc.returncode != 0:
    return None
  return json.loads(proc.stdout)


def pins_ok(versions: Optional[dict]) -> bool:
  return versions is not None and all(versions.get(k) == v for k, v in worker.PINS.items())


def ensure_venv(venv: str, python: str = sys.executable,
                log: Callable[[str], None] = print) -> dict:
  """FedJAX's venv at ``venv``, created and installed on demand; returns its versions."""
  versions = installed_versions(venv)
  if pins_ok(versions):
    return versions
  if not os.path.exists(venv_python(venv)):
    log(f'creating {venv} with {python} -m venv')
    os.makedirs(os.path.dirname(os.path.abspath(venv)), exist_ok=True)
    subprocess.run([python, '-m', 'venv', venv], check=True)
  log('installing: ' + ' '.join(pip_command(venv)[1:]))
  subprocess.run(pip_command(venv), check=True)
  versions = installed_versions(venv)
  if not pins_ok(versions):
    raise RuntimeError(f'{venv}: versions {versions} after pip install; need {worker.PINS}')
  return versions


def run_fedjax(venv: str, task_path: str, timeout_s: float = 3600) -> dict[str, Any]:
  """Runs the worker on ``task_path`` in FedJAX's venv; returns its result dict."""
  with tempfile.TemporaryDirectory(prefix='fedjax_peer_worker_') as tmp:
    out = os.path.join(tmp, 'result.json')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run([venv_python(venv), '-I', WORKER, '--task', task_path, '--out', out],
                          capture_output=True, text=True, timeout=timeout_s, env=env)
    if proc.returncode != 0:
      tail = '\n'.join(proc.stderr.strip().splitlines()[-15:])
      raise RuntimeError(f'FedJAX worker failed (exit {proc.returncode}):\n{tail}')
    with open(out) as f:
      return json.load(f)


# ----------------------------------------------------------------------------- the benchmark


def wait_for_load(max_load: float, max_wait_s: float, poll_s: float = 15.0,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
  """Sleeps until the 1-minute load average is below ``max_load`` or ``max_wait_s`` passed."""
  start = time.time()
  load = common.load_average()
  while load is not None and load[0] >= max_load and time.time() - start < max_wait_s:
    log(f'load {load[0]:.2f} >= {max_load}: waiting ({time.time() - start:.0f}/{max_wait_s:.0f} s)')
    time.sleep(min(poll_s, max(max_wait_s - (time.time() - start), 0.1)))
    load = common.load_average()
  return {'waited_s': round(time.time() - start, 1), 'load_average': load}


def _side_name(strategy: str) -> str:
  return FEDJAX if strategy == FEDJAX else f'ours:{strategy}'


def run_benchmark(settings: Settings, venv: str, task_dir: str, max_load: float,
                  max_wait_s: float, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Exports the tasks, runs every side ``settings.repeats`` times; returns the result dict."""
  fedjax_versions = ensure_venv(venv, log=log)
  tasks, configs = {}, {}
  for c in settings.cohorts:
    configs[c] = {s: digits_config(c, settings.rounds, s) for s in settings.strategies}
    tasks[c] = export_task(configs[c][settings.strategies[0]],
                           os.path.join(task_dir, f'digits_c{c}_r{settings.rounds}.npz'))
  runs = []
  for r in range(settings.repeats):
    waited = wait_for_load(max_load, max_wait_s, log=log)
    for c in settings.cohorts:
      order = list(settings.strategies) + [FEDJAX]
      if r % 2:
        order.reverse()
      for strategy in order:
        load_before = common.load_average()
        if strategy == FEDJAX:
          out = run_fedjax(venv, tasks[c]['path'])
        else:
          out = run_ours(configs[c][strategy])
        summary = summarize(out['round_wall_s'], out['round_cpu_s'])
        run = {'repeat': r, 'clients_per_round': c, 'side': _side_name(strategy),
               'load_before': load_before, 'load_after': common.load_average(),
               'waited_s': waited['waited_s'], **summary,
               'test_accuracy': out['final']['test_accuracy'],
               'test_loss': out['final']['test_loss'],
               'round_wall_ms': [round(1e3 * t, 4) for t in out['round_wall_s']]}
        if strategy == FEDJAX:
          run['theta0_max_abs_logit_diff'] = out['theta0_max_abs_logit_diff']
        runs.append(run)
        log(f'repeat {r} C={c} {run["side"]:>14}: {summary["median_ms"]:8.2f} ms/round (median '
            f'rounds 2..{settings.rounds}), first {summary["first_round_ms"]:.0f} ms, acc '
            f'{run["test_accuracy"]:.4f}, load {load_before[0] if load_before else "?"}')
  last_ours = {s: _side_name(s) for s in settings.strategies}
  ours_info = {
      'command': f'python run.py --config=configs/digits_cnn.py:{CONFIG_ARG}'
                 ',clients_per_round=C',
      'strategies': {_side_name(s): {
          'client_parallelism': configs[settings.cohorts[0]][s].simulation.client_parallelism,
          'resolved': resolved_strategy(configs[settings.cohorts[0]][s])}
          for s in last_ours},
      'versions': _our_versions()}
  return {'settings': dataclasses.asdict(settings), 'machine': common.machine_info(),
          'ours': ours_info,
          'fedjax': {'versions': fedjax_versions, 'venv': venv, 'pip': ' '.join(PIP_PINS)},
          'tasks': {str(c): {k: v for k, v in t.items() if k != 'path'} for c, t in tasks.items()},
          'runs': runs, 'aggregate': aggregate(runs, settings)}


def _our_versions() -> dict:
  from fedjax_intrinsic import experiment
  env = experiment.environment()
  return {'python': env['python'], **env['versions'], 'git_commit': env['git_commit']}


def aggregate(runs: Sequence[dict], settings: Settings) -> list[dict[str, Any]]:
  """One row per (cohort, side): medians over repeats and the paired speed-up over FedJAX.

  speedup: median over repeats of FedJAX's median ms / this side's median ms in the same repeat.
  """
  rows = []
  for c in settings.cohorts:
    fedjax_ms = {r['repeat']: r['median_ms'] for r in runs
                 if r['clients_per_round'] == c and r['side'] == FEDJAX}
    for side in [_side_name(s) for s in settings.strategies] + [FEDJAX]:
      mine = [r for r in runs if r['clients_per_round'] == c and r['side'] == side]
      if not mine:
        continue
      ratios = [fedjax_ms[r['repeat']] / r['median_ms'] for r in mine if r['repeat'] in fedjax_ms]
      cpu = [r['cpu_median_ms'] for r in mine if r['cpu_median_ms'] is not None]
      loads = [r['load_before'][0] for r in mine if r['load_before']]
      rows.append({
          'clients_per_round': c, 'side': side, 'repeats': len(mine),
          'median_ms': statistics.median(r['median_ms'] for r in mine),
          'min_run_median_ms': min(r['median_ms'] for r in mine),
          'cpu_median_ms': statistics.median(cpu) if cpu else None,
          'first_round_ms': statistics.median(r['first_round_ms'] for r in mine),
          'test_accuracy': [r['test_accuracy'] for r in mine],
          'speedup_vs_fedjax': statistics.median(ratios) if ratios else None,
          'speedups_vs_fedjax': ratios,
          'load_before': loads})
  return rows


def render(result: dict[str, Any]) -> str:
  """The README section: machine, versions, the table, how it was measured."""
  s = result['settings']
  fj, ours = result['fedjax']['versions'], result['ours']['versions']
  rows = []
  for a in result['aggregate']:
    acc = a['test_accuracy']
    acc_txt = (f'{statistics.median(acc):.3f}' if len(acc) == 1 or min(acc) == max(acc) else
               f'{statistics.median(acc):.3f} ({min(acc):.3f}-{max(acc):.3f})')
    side = a['side']
    if side == _side_name(DEFAULT):
      info = result['ours']['strategies'][side]
      resolved = ('' if info['client_parallelism'] == info['resolved'] else
                  f' = {info["resolved"]}')
      side = f'{side} ({info["client_parallelism"]}{resolved})'
    rows.append([a['clients_per_round'], side, f'{a["median_ms"]:.2f}',
                 '-' if a['cpu_median_ms'] is None else f'{a["cpu_median_ms"]:.2f}',
                 f'{a["first_round_ms"]:.0f}', acc_txt,
                 '1x' if a['side'] == FEDJAX else common.fmt_ratio(a['speedup_vs_fedjax']),
                 ', '.join(f'{x:.1f}' for x in a['load_before'])])
  table = common.markdown_table(
      ['C', 'side', 'ms/round', 'CPU ms/round', 'round 1 ms', f'test acc @{s["rounds"]}',
       'speed-up vs FedJAX', 'load (1 min) before each run'], rows, align='llrrrrrl')
  verdicts = []
  for c in sorted({a['clients_per_round'] for a in result['aggregate']}):
    ours_rows = [a for a in result['aggregate'] if a['clients_per_round'] == c
                 and a['side'] != FEDJAX and a['speedup_vs_fedjax'] is not None]
    if not ours_rows:
      continue
    default = [a for a in ours_rows if a['side'] == _side_name(DEFAULT)]
    best = max(ours_rows, key=lambda a: a['speedup_vs_fedjax'])
    parts = [f'C={c}:']
    if default:
      x = default[0]['speedup_vs_fedjax']
      parts.append(f'default {common.fmt_ratio(x)} ({"met" if x >= TARGET_SPEEDUP else "not met"})')
    parts.append(f'best {best["side"]} {common.fmt_ratio(best["speedup_vs_fedjax"])}')
    verdicts.append(' '.join(parts))
  loads = [x for a in result['aggregate'] for x in a['load_before']]
  load_txt = (f'1-minute load before the runs: median {statistics.median(loads):.1f}, max '
              f'{max(loads):.1f} (2 cores; others\' jobs share the machine).') if loads else ''
  return '\n'.join([
      '## FedJAX side by side (`python -m benchmarks.fedjax_peer`)',
      '',
      f'Digits, 100 shard clients, FedAvg (1 local epoch, batch 5, client lr 0.1, server lr 1.0), '
      f'MLP 64-128-10, {s["rounds"]} rounds, C clients a round: FedJAX\'s own '
      '`fed_avg.federated_averaging` (haiku MLP, jit `for_each_client`) against '
      f'`{result["ours"]["command"]}` run in-process; the same clients, the same cohort every '
      'round and the same θ0 on both sides (exported to an `.npz`; the haiku model reproduces our '
      'θ0 logits). ms/round: median over rounds 2..R of one run (round 1 compiles: `round 1 ms`), '
      f'then the median over {s["repeats"]} repeats run back to back; speed-up: median over '
      'repeats of FedJAX\'s ms / ours in the same repeat. CPU ms: process CPU time per round '
      '(all threads). Test accuracy at the last round (median, range over repeats).',
      '',
      f'Machine: {common.machine_line(result["machine"])}.',
      f'FedJAX side: fedjax {fj.get("fedjax")}, jax {fj.get("jax")}, jaxlib {fj.get("jaxlib")}, '
      f'dm-haiku {fj.get("dm-haiku")}, optax {fj.get("optax")}, numpy {fj.get("numpy")} '
      f'(own venv, one `pip install {result["fedjax"]["pip"]}`). Ours: jax {ours.get("jax")}, '
      f'flax {ours.get("flax")}, optax {ours.get("optax")}, numpy {ours.get("numpy")}, commit '
      f'{(ours.get("git_commit") or "?")[:10]}.',
      load_txt,
      '',
      table,
      '',
      f'Target (issue): our round >= {TARGET_SPEEDUP:g}x faster than FedJAX\'s. Measured: '
      + '; '.join(verdicts) + '.',
  ])


def output_path(settings: Settings, backend: str) -> str:
  return common.results_path('fedjax_peer', backend, settings.preset)


def define_flags() -> None:
  """Defines the command-line flags; only the script entry point calls this, so importing the
  module (from tests, or beside another benchmark with its own --preset) defines none."""
  global _PRESET, _ROUNDS, _COHORTS, _REPEATS, _STRATEGIES, _VENV, _MAX_LOAD, _MAX_WAIT, _OUT_JSON, _README, _RENDER_ONLY
  _PRESET = flags.DEFINE_enum('preset', 'full', list(PRESETS), 'Rounds, cohorts, repeats, strategies.')
  _ROUNDS = flags.DEFINE_integer('rounds', None, 'Override: rounds per run.')
  _COHORTS = flags.DEFINE_list('cohorts', None, 'Override: clients per round, e.g. 10,100.')
  _REPEATS = flags.DEFINE_integer('repeats', None, 'Override: repeats of every side.')
  _STRATEGIES = flags.DEFINE_list('strategies', None,
                                  f'Override: our client parallelisms ({DEFAULT} = the config\'s).')
  _VENV = flags.DEFINE_string('venv', DEFAULT_VENV, 'FedJAX\'s virtual environment (made on demand).')
  _MAX_LOAD = flags.DEFINE_float('max_load', 2.0, 'Wait for a 1-minute load average below this.')
  _MAX_WAIT = flags.DEFINE_float('max_wait_s', 600.0, 'Longest wait for a low load per repeat.')
  _OUT_JSON = flags.DEFINE_string('out_json', None, 'JSON path (default: results/fedjax_peer_...).')
  _README = flags.DEFINE_string('readme', common.README, 'Markdown file with the fedjax section.')
  _RENDER_ONLY = flags.DEFINE_bool('render_only', False, 'Only rebuild the README section from the '
                                   'saved JSON.')


def _settings() -> Settings:
  s = PRESETS[_PRESET.value]
  if _ROUNDS.value is not None:
    s = dataclasses.replace(s, rounds=_ROUNDS.value)
  if _COHORTS.value is not None:
    try:
      s = dataclasses.replace(s, cohorts=common.int_list('cohorts', _COHORTS.value))
    except ValueError as e:
      cli.refuse(e)
  if _REPEATS.value is not None:
    s = dataclasses.replace(s, repeats=_REPEATS.value)
  if _STRATEGIES.value is not None:
    s = dataclasses.replace(s, strategies=tuple(_STRATEGIES.value))
  if s.rounds < 2 or s.repeats < 1 or not s.cohorts or not s.strategies:
    cli.refuse(f'settings {s} are invalid; allowed: rounds >= 2, repeats >= 1, '
               'at least one cohort and one strategy')
  return s


def main(argv):
  cli.quiet_logs()
  import jax
  settings = _settings()
  path = _OUT_JSON.value or output_path(settings, jax.default_backend())
  if _RENDER_ONLY.value:
    with open(path) as f:
      result = json.load(f)
  else:
    with tempfile.TemporaryDirectory(prefix='fedjax_peer_tasks_') as task_dir:
      result = run_benchmark(settings, _VENV.value, task_dir, _MAX_LOAD.value, _MAX_WAIT.value)
    common.write_json(path, result)
    print(f'wrote {path}')
  text = render(result)
  print(text)
  if settings.preset == 'full' or _RENDER_ONLY.value:
    common.update_readme_section(README_SECTION, text, _README.value)
    print(f'updated section {README_SECTION!r} of {_README.value}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(None))
