"""Where one round's time goes, for any experiment config: the pieces of a one-step round, timed.

  python -m benchmarks.round_breakdown --config=configs/tweets_minilm.py
  python -m benchmarks.round_breakdown --config=configs/tweets_smollm2.py:method=uncompressed

Builds the config (data, model, θ0: `build.build`), takes round 1's cohort and merges its
clients' first local batches into one batch (what the exact cohort shortcut computes, and the
work of every one-step round), and times, interleaved (`common.time_interleaved`: wall and
process CPU time, medians):
- `forward`: the training loss of the merged batch at θ0;
- `gradient`: its value and gradient;
- `server_update`: the config's server optimiser applied to a gradient-shaped update;
- `eval_batch`: the evaluation metrics of `eval_batch_size` test examples;
- `matmul`: a bare float32 matmul, [2048, 2048] x [2048, 2048], the machine's reference rate;
- `round`: the whole round 1 as a run executes it (`build.round_fn`: the config's method, client
  parallelism and cohort shortcut, server step included), from the initial server state;
- with `--baseline=<method>` (e.g. uncompressed), `round_<method>`: the same config with that
  method (the config file's argument with method= replaced and the first method's own fields,
  such as d, dropped, so its protocol is the config's for that method), built on the same data and timed interleaved with the others: the ratio
  round / round_<method> is measured side by side.
The FLOP counts are XLA's (`cost_analysis`) for the compiled programs, so `GFLOP/s` is what each
piece reaches against the matmul's, from the median call and from the fastest (on a shared
machine the least disturbed). Writes results/round_breakdown_<backend>_<name>.json (name:
the config file's stem and argument) and prints a markdown table.
"""
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from fedjax_intrinsic import simulation

MATMUL_SHAPE = (2048, 2048, 2048)    # M, K, N


def merged_batch(build) -> dict:
  """Round 1's cohort as the shortcut's one weighted batch (`simulation.merge_cohort`): each
  client's first local batch, concatenated, {'x', 'y', 'mask', 'weight'} of C*B examples."""
  cohorts = build.cohorts
  batches, weights = cohorts.inputs(1, cohorts.sample(1))
  merged = simulation.merge_cohort(batches, jnp.asarray(weights))
  return {k: np.asarray(v[0]) for k, v in merged.items()}


def _flops(fn, *args) -> float | None:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, list):
    cost = cost[0] if cost else None
  return None if not cost or 'flops' not in cost else float(cost['flops'])


def round_piece(exp) -> tuple:
  """(fn, args) of round 1 of the `experiment.Experiment` exp from its initial server state,
  with the inputs and client states its `run_round` would pass."""
  batches, weights, shard_ids = exp.cohorts.device_inputs(1, exp.cohort(1), exp.mesh)
  args = (exp.init_state(), exp.clients.gather(shard_ids), batches, weights, shard_ids,
          exp.cohorts.round_key(1))
  return (lambda *a: exp.round_fn(*a).server_state), args


def baseline_spec(spec: str, baseline: str, method_fields) -> str:
  """The --config spec of the same experiment with method `baseline`: the argument's method=
  replaced and the first method's own fields (`method_fields`, e.g. d) dropped."""
  path, _, arg = spec.partition(':')
  own = set(method_fields) | {'method'}
  kept = [kv for kv in arg.split(',') if kv and kv.split('=', 1)[0] not in own]
  return path + ':' + ','.join([f'method={baseline}'] + kept)


def run(config, baseline_config=None, baseline: str = '') -> dict:
  """Times the pieces of `config`'s round (module docstring); with `baseline_config`, also the
  round of that config as piece `round_<baseline>`."""
  from fedjax_intrinsic import config as config_lib, experiment
  from fedjax_intrinsic.models import base
  exp = experiment.Experiment(config)
  b = exp.build
  model, params = b.model, b.params0
  batch = merged_batch(b)
  test = b.data.test
  n = min(config.eval_batch_size, len(test['y']))
  eval_batch = {'x': np.asarray(test['x'][:n]), 'y': np.asarray(test['y'][:n]),
                'mask': np.ones((n,), np.float32)}

  loss = lambda p, bt: base.weighted_loss(model, p, bt)
  grad = jax.value_and_grad(loss)
  optimizer = config_lib.server_optimizer(config.server, config.rounds)
  opt_state = jax.jit(optimizer.init)(params)
  update = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

  def server_update(u, s, p):
    step, s = optimizer.update(u, s, p)
    return jax.tree.map(lambda a, d: a + d, p, step), s

  def eval_step(p, bt):
    m = model.example_metrics(p, bt)
    return jnp.sum(m['loss'] * bt['mask']), jnp.sum(m['correct'] * bt['mask'])

  m, k, n_ = MATMUL_SHAPE
  a = jnp.ones((m, k), jnp.float32)
  w = jnp.ones((k, n_), jnp.float32)
  matmul = lambda a, w: a @ w
  pieces = {
      'forward': (loss, (params, batch)),
      'gradient': (grad, (params, batch)),
      'server_update': (server_update, (update, opt_state, params)),
      'eval_batch': (eval_step, (params, eval_batch)),
      'matmul': (matmul, (a, w)),
  }
  jitted = {name: jax.jit(fn) for name, (fn, _) in pieces.items()}
  flops = {name: _flops(fn, *args) for name, (fn, args) in pieces.items()}
  rounds = {'round': round_piece(exp)}     # already jitted (build.round_fn); FLOPs not counted
  if baseline_config is not None:
    rounds[f'round_{baseline}'] = round_piece(experiment.Experiment(baseline_config))
  for name, (fn, args) in rounds.items():
    pieces[name], jitted[name], flops[name] = (fn, args), fn, None
  fns = {name: (lambda *_, f=jitted[name], args=args: f(*args))
         for name, (_, args) in pieces.items()}
  timed = common.time_interleaved(fns, warmup=1, min_repeats=3, max_repeats=7, budget_s=60.0)
  rows = {}
  for name, t in timed.items():
    wall = t.wall.median_s
    rows[name] = {'wall_s': wall, 'cpu_s': t.cpu.median_s, 'first_s': t.wall.first_s,
                  'n': t.wall.n, 'flops': flops[name],
                  'min_s': t.wall.min_s,
                  'gflops_per_s': None if not flops[name] else flops[name] / wall / 1e9,
                  'gflops_per_s_best': None if not flops[name] else flops[name] / t.wall.min_s / 1e9}
  return {'machine': common.machine_info(), 'load_average_end': common.load_average(),
          'num_params': b.num_params, 'merged_batch': {k: list(v.shape) for k, v in batch.items()},
          'eval_examples': n, 'matmul_shape': list(MATMUL_SHAPE), 'pieces': rows}


def render(name: str, res: dict) -> str:
  rows = []
  for piece, r in res['pieces'].items():
    rows.append([f'`{piece}`', common.fmt_seconds(r['wall_s']), common.fmt_seconds(r['cpu_s']),
                 '-' if r['flops'] is None else f'{r["flops"] / 1e9:.3g}',
                 '-' if r['gflops_per_s'] is None else f'{r["gflops_per_s"]:.1f}',
                 '-' if r['gflops_per_s_best'] is None else f'{r["gflops_per_s_best"]:.1f}'])
  head = (f'{name}: D = {res["num_params"]:,}, merged batch x {res["merged_batch"]["x"]}, '
          f'{res["eval_examples"]} eval examples; {common.machine_line(res["machine"])}; load '
          f'average at the end {res["load_average_end"]}')
  return head + '\n\n' + common.markdown_table(
      ['piece', 'wall (median)', 'process CPU', 'GFLOP (XLA)', 'GFLOP/s', 'GFLOP/s (fastest)'],
      rows, align='lrrrrr')


def main(argv):
  from absl import flags
  from fedjax_intrinsic import cli, preflight
  cli.quiet_logs()
  f = flags.FLAGS
  config = cli.config()          # a bad file, argument or field: one line, exit 2
  try:
    preflight.check(config)      # before anything is loaded or compiled
  except ValueError as e:
    cli.refuse(e)
  spec = cli.spec()
  path, _, arg = spec.partition(':')
  stem = os.path.splitext(os.path.basename(path))[0]
  name = stem + (('_' + re.sub(r'[^A-Za-z0-9=.]+', '_', arg)) if arg else '')
  baseline_config = None
  if f.baseline:
    from fedjax_intrinsic import algorithms
    base_spec = baseline_spec(spec, f.baseline, algorithms.fields_of(config.method.name))
    try:
      baseline_config = preflight.load_config(base_spec, [], field='--baseline')
      preflight.check(baseline_config)
    except ValueError as e:
      cli.refuse(e)
    name += f'_vs_{f.baseline}'
  res = run(config, baseline_config, f.baseline)
  res['config'] = spec
  if f.baseline:
    res['baseline_config'] = base_spec
  out = f.out_json or os.path.join(common.RESULTS_DIR,
                                   f'round_breakdown_{jax.default_backend()}_{name}.json')
  common.write_json(out, res)
  print(render(name, res))
  print(f'wrote {out}')


if __name__ == '__main__':
  from absl import app, flags
  from fedjax_intrinsic import cli
  flags.DEFINE_string('out_json', None, 'JSON path (default: benchmarks/results/'
                      'round_breakdown_<backend>_<name>.json).')
  flags.DEFINE_string('baseline', '', 'A method whose whole round is timed beside the config\'s '
                      '(piece round_<method>), e.g. uncompressed; empty: none.')
  app.run(main, flags_parser=cli.flags_parser('config'))
