r"""Simulation speed: every client-parallelism strategy and the cohort shortcut against the loop.

  python -m benchmarks.simulation                        # full: JSON + README section
  python -m benchmarks.simulation --preset=quick         # smaller grid; prints tables, JSON only
  python -m benchmarks.simulation --render_only          # README section from the saved JSON
  python -m benchmarks.simulation --sections=strategies  # or: sweep

Section ``strategies``: one round of ``fedjax_intrinsic.simulation.build_round`` for each model
and method, C clients x B examples, one local step, timed for every strategy (``loop``, ``vmap``,
``chunked_vmap`` with each chunk size, ``map``), the exact cohort ``shortcut`` (methods that allow
it) and the compute ``floor``: ``jax.grad`` of the training loss at θ over the cohort's C*B
examples as ONE batch (shared weights: the least arithmetic any strategy must do to get the
cohort's gradients; a method's own extra work, such as a projection, is not in it). Every round is
checked against the loop's (the oracle): the relative L2 error of the model update Δθ and the
absolute error of the round's loss; a round that differs is reported, and the script exits 1.
Inputs: mlp and cnn train on the real digits data (100 clients, 5 of each client's examples);
resnet9 on RANDOM inputs of CIFAR-10's shapes (32x32x3, 10 classes): speed only, no learning
result ever comes from them (no CIFAR-10 offline). Preset ``minilm``: pretrained MiniLM-L6
(22.7M) on the real tweets (data/tweets.py, 32 tokens), 10 clients x 8 tweets. ResNet-9 is timed at 10 clients only: it is
expensive on 2 CPU cores, and nothing is extrapolated.

Section ``sweep``: rounds per second and XLA's compiled memory of one round for 10 .. 10,000
clients on mlp and cnn, ``chunked_vmap`` (chunk ``sweep_chunk``), ``map``, ``vmap`` (up to
``sweep_vmap_max`` clients), the shortcut (``uncompressed``) and the floor. The digits data has
only 100 clients, so the sweep times RANDOM inputs of the digits shapes (8x8x1, 10 classes, 5
examples a client) and says so in its table.

Timing (``common.time_interleaved``): every function is compiled and run once (``first_s``: trace,
compile, run), then the functions are called in turn, one call each per repeat, so load drift on a
shared machine hits them alike; the figure is the median. The load average before and after each
case is recorded (the numbers are only comparable at low load).

Output: ``benchmarks/results/simulation_<backend>.json`` (``_<preset>`` appended for presets other
than full) and, for the full preset, the ``simulation`` section of ``benchmarks/README.md``.
"""
import dataclasses
import os
import sys
import time
from typing import Any, NamedTuple, Optional, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from fedjax_intrinsic import algorithms, cli, config as config_lib, fields, keys, models, simulation
from fedjax_intrinsic import data as data_lib
from fedjax_intrinsic.data import batching

SECTIONS = ('strategies', 'sweep')
INPUTS = ('digits', 'random', 'tweets')
README_SECTION = 'simulation'
CLIENT_LR = {'fedavg': 0.1}          # every other method: 1.0 (one gradient step, docs/paper.md §2)
RANDOM_SHAPES = {'resnet9': (32, 32, 3)}   # random inputs: CIFAR-10's shape; others: digits'
DIGITS_SHAPE = (8, 8, 1)
TWEETS_SEQ_LEN = 32                    # configs/tweets_minilm.py's
TOLERANCE = 1e-4                      # relative L2 error of Δθ against the loop's


@dataclasses.dataclass(frozen=True)
class Case:
  """One timed round: `clients` x `examples` (one local step) of `method` on `model`."""
  model: str
  method: str
  clients: int
  examples: int = 5
  inputs: str = 'digits'


@dataclasses.dataclass(frozen=True)
class Config:
  """What to measure.

  Attributes:
    preset: the preset this came from.
    cases: the ``strategies`` section's rounds.
    chunks: ``clients_per_chunk`` values timed for ``chunked_vmap``.
    sweep_models, sweep_clients: the sweep's grid; sweep_chunk: its ``clients_per_chunk``;
      sweep_vmap_max: the most clients timed with plain ``vmap`` in the sweep.
    sections: which of ``SECTIONS`` to run.
    min_repeats, max_repeats, budget_s, warmup: ``common.time_interleaved`` settings.
    seed: the run seed (θ0, the cohort, the random inputs).
  """
  preset: str
  cases: tuple[Case, ...]
  chunks: tuple[int, ...] = (10,)
  sweep_models: tuple[str, ...] = ('mlp', 'cnn')
  sweep_clients: tuple[int, ...] = (10, 100, 1000, 10000)
  sweep_chunk: int = 100
  sweep_vmap_max: int = 1000
  sections: tuple[str, ...] = SECTIONS
  min_repeats: int = 3
  max_repeats: int = 15
  budget_s: float = 10.0
  warmup: int = 1
  seed: int = 0


def _grid(models_, methods, clients, inputs='digits'):
  return tuple(Case(m, meth, clients, 5, inputs) for m in models_ for meth in methods)


PRESETS = {
    # Tiny sizes for the test suite: every code path, seconds.
    'test': Config(preset='test', cases=(Case('mlp', 'uncompressed', 3, 2),
                                         Case('mlp', 'fedavg', 3, 2)),
                   chunks=(2,), sweep_models=('mlp',), sweep_clients=(3,), sweep_chunk=2,
                   sweep_vmap_max=3, min_repeats=1, max_repeats=1, budget_s=0.0, warmup=0),
    # A few minutes: the two digits models at 100 clients, a short sweep.
    'quick': Config(preset='quick',
                    cases=_grid(('mlp', 'cnn'), ('uncompressed', 'fedavg'), 100),
                    chunks=(10,), sweep_clients=(10, 100, 1000), min_repeats=3, budget_s=5.0),
    # The whole grid (about 15 minutes on 2 idle CPU cores).
    'full': Config(preset='full',
                   cases=(_grid(('mlp', 'cnn'), ('uncompressed', 'fedavg', 'intrinsic_static'), 100)
                          + _grid(('resnet9',), ('uncompressed', 'fedavg'), 10, 'random')),
                   chunks=(5, 10, 25), min_repeats=5, budget_s=10.0),
    # Pretrained MiniLM-L6 (D = 22.7M) on real tweets (configs/tweets_minilm.py's round: 10 clients
    # x 8 tweets of 32 tokens): the intrinsic methods' cost at this size, with and without the
    # shortcut. Strategies section only (the sweep is for the digits models).
    'minilm': Config(preset='minilm',
                     cases=tuple(Case('minilm_l6', m, 10, 8, 'tweets') for m in
                                 ('uncompressed', 'fedavg', 'intrinsic_static')),
                     chunks=(5,), sections=('strategies',), min_repeats=3, max_repeats=5,
                     budget_s=30.0),
    # The subspace rounds alone (a minute or two): mlp and cnn intrinsic_static, 100 clients x 5,
    # chunks of 10 (what `auto` picks for them on CPU), for before / after comparisons of the
    # intrinsic client.
    'intrinsic': Config(preset='intrinsic',
                        cases=_grid(('mlp', 'cnn'), ('intrinsic_static',), 100), chunks=(10,),
                        sections=('strategies',), min_repeats=5, budget_s=5.0),
    # For a GPU (a few minutes, mostly compiling): ResNet-9 at FetchSGD's full 100 x 5 shape and
    # plain vmap up to 10,000 clients in the sweep; rounds take milliseconds, so short budgets.
    'gpu': Config(preset='gpu',
                  cases=(_grid(('mlp', 'cnn'), ('uncompressed', 'fedavg', 'intrinsic_static'), 100)
                         + _grid(('resnet9',), ('uncompressed', 'fedavg'), 100, 'random')),
                  chunks=(10, 25), sweep_vmap_max=10000, min_repeats=5, max_repeats=30,
                  budget_s=2.0),
}


# --------------------------------------------------------------------------------------- inputs


class RoundInputs(NamedTuple):
  """Everything one round needs; args = (server_state, client_states, batches, weights, ids, key)."""
  case: Case
  model: models.Model
  alg: algorithms.FederatedAlgorithm
  args: tuple
  num_params: int


def make_inputs(case: Case, seed: int = 0) -> RoundInputs:
  """Builds the model, method and one round's inputs (on device) for `case`."""
  if case.inputs not in INPUTS:
    raise ValueError(f'inputs={case.inputs!r} is invalid; allowed: {", ".join(INPUTS)}')
  for name, v in (('clients', case.clients), ('examples', case.examples)):
    if not fields.is_int(v, 1):
      raise ValueError(f'{name}={v!r} is invalid; allowed: a positive integer')
  run_key = keys.run_key(seed)
  rng = keys.numpy_rng(keys.sample_key(run_key, 1))
  num_classes = 10
  if case.inputs in ('digits', 'tweets'):
    if case.inputs == 'digits':
      data = data_lib.get('digits', key=keys.data_key(run_key), num_clients=100)
    else:
      data = data_lib.get('tweets', key=keys.data_key(run_key), num_clients=100,
                          seq_len=TWEETS_SEQ_LEN)
      num_classes = data.num_classes
    if case.clients > data.num_clients:
      raise ValueError(f'clients={case.clients} is invalid for digits inputs; allowed: at most '
                       f'{data.num_clients} (use inputs=random for more)')
    ids = rng.choice(data.num_clients, case.clients, replace=False).astype(np.int32)
    batches = batching.client_batches(data, ids, batch_size=case.examples, num_steps=1,
                                      rng=rng, epochs=None)
    num_examples = batches.pop('num_examples')
    shape, num_clients = tuple(data.example_spec['x'][0]), data.num_clients
  else:
    shape = RANDOM_SHAPES.get(case.model, DIGITS_SHAPE)
    lead = (case.clients, 1, case.examples)
    batches = {'x': rng.random(lead + shape, np.float32),
               'y': rng.integers(0, 10, lead).astype(np.int32),
               'mask': np.ones(lead, np.float32)}
    ids = np.arange(case.clients, dtype=np.int32)
    num_examples = np.full(case.clients, case.examples, np.float32)
    num_clients = case.clients
  model = models.get(case.model, input_shape=shape, num_classes=num_classes)
  params0 = jax.jit(model.init)(keys.init_key(run_key))
  base = config_lib.base_config()
  ctx = algorithms.BuildContext(
      model=model, params0=params0, run_key=run_key,
      server_optimizer=config_lib.server_optimizer(base.server, 1),
      client_lr=CLIENT_LR.get(case.method, 1.0), num_clients=num_clients, num_rounds=1)
  alg = algorithms.get(case.method, algorithms.default_config(case.method), ctx)
  weights = simulation.aggregation_weights(num_examples, ids, 'examples')
  state = jax.jit(alg.init)(params0)
  cstates = simulation.ClientStateStore(alg.init_client(params0), num_clients).gather(ids)
  args = (state, jax.device_put(cstates), jax.device_put(batches), jnp.asarray(weights),
          jnp.asarray(ids), keys.round_key(run_key, 1))
  return RoundInputs(case, model, alg, args, models.num_params(params0))


CONV_MODELS = ('cnn', 'resnet9')


def floor_fn(inputs: RoundInputs, conv_impl: str | None = None):
  """The compute floor: grad of the masked-mean loss over ALL the cohort's examples as one batch.

  conv_impl: for cnn/resnet9, the same model (same params) with this conv implementation (None:
  the model as the round uses it). Returns (fn, fn_args): fn(params, batch), batch['x']:
  [C*S*B, ...], params at the broadcast θ.
  """
  model = inputs.model
  if conv_impl is not None:
    model = models.get(model.name, input_shape=model.input_shape, num_classes=model.num_classes,
                       conv_impl=conv_impl)
  state, _, batches = inputs.args[:3]
  params = inputs.alg.model_params(state)
  merged = {k: v.reshape((-1,) + v.shape[3:]) for k, v in batches.items()}
  fn = jax.jit(jax.grad(lambda p, b: models.weighted_loss(model, p, b)))
  return fn, (params, merged)


def strategy_fns(inputs: RoundInputs, chunks: Sequence[int]) -> dict[str, Any]:
  """label -> round_fn: loop, vmap, chunked_vmap:<k> for k in chunks, map, shortcut (if allowed)."""
  alg = inputs.alg
  fns = {'loop': simulation.build_round(alg, 'loop'),
         'vmap': simulation.build_round(alg, 'vmap')}
  for k in chunks:
    fns[f'chunked_vmap:{k}'] = simulation.build_round(alg, 'chunked_vmap', k)
  fns['map'] = simulation.build_round(alg, 'map')
  if alg.cohort_shortcut:
    fns['shortcut'] = simulation.build_round(alg, 'vmap', cohort_shortcut=True)
  return fns


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def round_errors(inputs: RoundInputs, outputs: dict[str, simulation.RoundOutput],
                 reference: str = 'loop') -> dict[str, dict[str, float]]:
  """label -> {'rel_err': ||Δθ - Δθ_ref|| / ||Δθ_ref||, 'loss_err': |loss - loss_ref|}."""
  alg = inputs.alg
  theta0 = _flat(alg.model_params(inputs.args[0]))
  ref = outputs[reference]
  ref_delta = _flat(alg.model_params(ref.server_state)) - theta0
  ref_loss = float(ref.metrics['loss'])
  scale = max(np.linalg.norm(ref_delta), 1e-30)
  out = {}
  for label, o in outputs.items():
    delta = _flat(alg.model_params(o.server_state)) - theta0
    out[label] = {'rel_err': float(np.linalg.norm(delta - ref_delta) / scale),
                  'loss_err': float(abs(float(o.metrics['loss']) - ref_loss))}
  return out


def auto_label(case: Case, backend: Optional[str] = None) -> str:
  """The label of what `client_parallelism='auto'` (with the default chunk) picks for `case`."""
  s = simulation.resolve_strategy('auto', models.family(case.model), backend=backend)
  chunk = config_lib.base_config().simulation.clients_per_chunk
  return f'chunked_vmap:{chunk}' if s == 'chunked_vmap' else s


# --------------------------------------------------------------------------------------- runs


def run_case(case: Case, cfg: Config) -> dict[str, Any]:
  """Checks and times every strategy of one case; returns its JSON record."""
  load_before = common.load_average()
  inputs = make_inputs(case, cfg.seed)
  chunks = cfg.chunks
  auto = auto_label(case)
  if auto.startswith('chunked_vmap:') and int(auto.split(':')[1]) not in chunks:
    chunks = chunks + (int(auto.split(':')[1]),)    # always time what `auto` picks
  fns = strategy_fns(inputs, chunks)
  outputs, compile_s = {}, {}
  for label, fn in fns.items():
    start = time.perf_counter()
    outputs[label] = jax.block_until_ready(fn(*inputs.args))
    compile_s[label] = time.perf_counter() - start
  errors = round_errors(inputs, outputs)
  del outputs
  timed = dict(fns)
  floors = [('floor', None)] + ([('floor_lax', 'lax')] if case.model in CONV_MODELS else [])
  for label, impl in floors:
    floor, floor_args = floor_fn(inputs, impl)
    start = time.perf_counter()
    jax.block_until_ready(floor(*floor_args))
    compile_s[label] = time.perf_counter() - start
    timed[label] = lambda *_, floor=floor, floor_args=floor_args: floor(*floor_args)
  timings = common.time_interleaved(timed, *inputs.args, warmup=cfg.warmup,
                                    min_repeats=cfg.min_repeats, max_repeats=cfg.max_repeats,
                                    budget_s=cfg.budget_s)
  results = {}
  for label, t in timings.items():
    results[label] = {**t.wall.as_dict(), 'first_s': compile_s[label],
                      'cpu_median_s': t.cpu.median_s, 'cpu_min_s': t.cpu.min_s,
                      **errors.get(label, {})}
  return {**dataclasses.asdict(case), 'num_params': inputs.num_params,
          'auto': auto_label(case),
          'results': results, 'load_before': load_before, 'load_after': common.load_average()}


def _memory(fn, args) -> dict[str, int] | None:
  try:
    return common.memory_stats(fn.lower(*args).compile())
  except (ValueError, AttributeError):
    return None


def run_sweep_point(model: str, clients: int, cfg: Config) -> list[dict[str, Any]]:
  """Rounds per second and compiled memory at `clients` random-input clients."""
  rows = []
  fed = make_inputs(Case(model, 'fedavg', clients, 5, 'random'), cfg.seed)
  unc = make_inputs(Case(model, 'uncompressed', clients, 5, 'random'), cfg.seed)
  chunk = min(cfg.sweep_chunk, clients)
  plans = [('fedavg', f'chunked_vmap:{chunk}',
            simulation.build_round(fed.alg, 'chunked_vmap', chunk), fed),
           ('fedavg', 'map', simulation.build_round(fed.alg, 'map'), fed)]
  if clients <= cfg.sweep_vmap_max:
    plans.append(('fedavg', 'vmap', simulation.build_round(fed.alg, 'vmap'), fed))
  plans.append(('uncompressed', 'shortcut',
                simulation.build_round(unc.alg, 'vmap', cohort_shortcut=True), unc))
  floor, floor_args = floor_fn(fed)
  plans.append(('-', 'floor', floor, None))
  load = common.load_average()
  calls, memory = {}, {}
  for method, label, fn, inp in plans:
    args = floor_args if inp is None else inp.args
    memory[label] = _memory(fn, args)
    calls[label] = lambda fn=fn, args=args: fn(*args)
  timings = common.time_interleaved(calls, warmup=cfg.warmup, min_repeats=cfg.min_repeats,
                                    max_repeats=cfg.max_repeats, budget_s=cfg.budget_s)
  for method, label, _, _ in plans:
    t = timings[label]
    rows.append({'model': model, 'clients': clients, 'method': method, 'strategy': label,
                 **t.wall.as_dict(), 'cpu_median_s': t.cpu.median_s,
                 'rounds_per_s': 1.0 / t.wall.median_s, 'memory': memory[label],
                 'load_before': load, 'load_after': common.load_average()})
  return rows


def run(cfg: Config, log=print, on_progress=None) -> dict[str, Any]:
  """Runs the configured sections; returns the JSON-ready result.

  on_progress: called with the partial result after every case and sweep point (the script
  writes it to its JSON file, so an interrupted run keeps what it finished).
  """
  on_progress = on_progress or (lambda res: None)
  res = {'preset': cfg.preset, 'machine': common.machine_info(),
         'xla_flags': os.environ.get('XLA_FLAGS', ''),
         'config': dataclasses.asdict(cfg), 'strategies': [], 'sweep': [],
         'default_strategy': {m: simulation.default_strategy(jax.default_backend(),
                                                             models.family(m))
                              for m in models.MODELS}}
  if 'strategies' in cfg.sections:
    for case in cfg.cases:
      rec = run_case(case, cfg)
      res['strategies'].append(rec)
      log(render_case_line(rec))
      on_progress(res)
  if 'sweep' in cfg.sections:
    for model in cfg.sweep_models:
      for clients in cfg.sweep_clients:
        rows = run_sweep_point(model, clients, cfg)
        res['sweep'].extend(rows)
        on_progress(res)
        for r in rows:
          log(f'sweep {model} C={clients} {r["method"]} {r["strategy"]}: '
              f'{common.fmt_seconds(r["median_s"])}')
  return res


# --------------------------------------------------------------------------------------- output


def bad_rounds(res: dict[str, Any]) -> list[str]:
  """'model/method/label' of every round that differs from the loop's by more than TOLERANCE."""
  bad = []
  for rec in res['strategies']:
    for label, r in rec['results'].items():
      if 'rel_err' in r and not r['rel_err'] <= TOLERANCE:
        bad.append(f'{rec["model"]}/{rec["method"]}/{label} (rel_err {r["rel_err"]:.2e})')
  return bad


def render_case_line(rec: dict[str, Any]) -> str:
  r = rec['results']
  loop = r['loop']['median_s']
  parts = [f'{k} {common.fmt_seconds(v["median_s"])} ({common.fmt_ratio(loop / v["median_s"])})'
           for k, v in r.items()]
  return f'{rec["model"]}/{rec["method"]} C={rec["clients"]}: ' + ', '.join(parts)


def floor_time(results: dict[str, Any]) -> float:
  """The case's compute floor: the faster of `floor` and (conv models) `floor_lax`, median s."""
  return min(results[k]['median_s'] for k in ('floor', 'floor_lax') if k in results)


def _floor_cell(results: dict[str, Any]) -> str:
  t = floor_time(results)
  lax = 'floor_lax' in results and results['floor_lax']['median_s'] == t
  return common.fmt_seconds(t) + (' (lax)' if lax else '')


def _labels(recs) -> list[str]:
  order = ['loop', 'vmap']
  for rec in recs:
    order += [k for k in rec['results'] if k.startswith('chunked_vmap') and k not in order]
  return order + ['map', 'shortcut']


def render(res: dict[str, Any]) -> str:
  """Markdown for one backend's result: strategy tables, the sweep table."""
  m = res['machine']
  # Mark what `auto` picks NOW for that backend (the choice is made from these very measurements).
  res = {**res, 'strategies': [
      {**rec, 'auto': auto_label(Case(**{f.name: rec[f.name] for f in dataclasses.fields(Case)}),
                                 m['backend'])} for rec in res['strategies']]}
  out = [f'**Backend `{m["backend"]}`** — {common.machine_line(m)}. '
         f'XLA_FLAGS: `{res.get("xla_flags") or "(none)"}`. Preset `{res["preset"]}`.', '']
  if res.get('runs'):   # a result merged from several runs (each case's strategies side by side)
    out += ['Merged from ' + str(len(res['runs'])) + ' runs: ' + '; '.join(
        f'{r["what"]} ({r["machine"]["date_utc"]})' for r in res['runs']) + '.', '']
  recs = res['strategies']
  if recs:
    labels = _labels(recs)
    loads = [x for rec in recs for x in (rec['load_before'], rec['load_after']) if x]
    load = (f'1-minute load average during the cases: {min(l[0] for l in loads):.1f} to '
            f'{max(l[0] for l in loads):.1f}' if loads else 'load average: unknown')
    out += [f'One round, one local step, C clients x B examples; median wall time, and in '
            f'brackets the speed-up over `loop` (higher is better). **auto** marks what '
            f'`client_parallelism=\'auto\'` picks. {load}.', '']
    rows = []
    for rec in recs:
      r = rec['results']
      loop = r['loop']['median_s']
      row = [f'{rec["model"]} / {rec["method"]}', f'{rec["clients"]}x{rec["examples"]}',
             rec['inputs'], _floor_cell(r)]
      for label in labels:
        if label not in r:
          row.append('-')
          continue
        cell = f'{common.fmt_seconds(r[label]["median_s"])} ({common.fmt_ratio(loop / r[label]["median_s"])})'
        if label == rec['auto']:
          cell = f'**{cell}** auto'
        row.append(cell)
      rows.append(row)
    out.append(common.markdown_table(['model / method', 'C x B', 'inputs', 'floor'] + labels, rows))
    out += ['', 'The same rounds as a ratio to the compute floor (time / floor; lower is better; '
            'the target is <= 2x), the largest relative error of Δθ against the loop, and the '
            'compile time (first call) of the slowest strategy:', '']
    rows = []
    for rec in recs:
      r = rec['results']
      fl = floor_time(r)
      row = [f'{rec["model"]} / {rec["method"]}', f'{rec["clients"]}x{rec["examples"]}']
      row += [common.fmt_ratio(r[label]['median_s'] / fl) if label in r else '-' for label in labels]
      row.append(f'{max(v.get("rel_err", 0.0) for v in r.values()):.1e}')
      row.append(common.fmt_seconds(max(v['first_s'] for v in r.values())))
      rows.append(row)
    out.append(common.markdown_table(['model / method', 'C x B'] + labels +
                                     ['max rel err', 'max compile'], rows))
    out += ['', 'Process CPU time of the same calls (median; all threads added up, so it measures '
            'work and is steadier than wall time on a loaded machine):', '']
    rows = []
    for rec in recs:
      r = rec['results']
      row = [f'{rec["model"]} / {rec["method"]}', f'{rec["clients"]}x{rec["examples"]}']
      row += [common.fmt_seconds(r[k]['cpu_median_s']) if k in r else '-'
              for k in labels + ['floor', 'floor_lax']]
      rows.append(row)
    out.append(common.markdown_table(['model / method', 'C x B'] + labels +
                                     ['floor', 'floor_lax'], rows))
    out += ['', 'Targets (measured, not asserted): ' + '; '.join(targets(recs, m['backend'])) + '.']
  sweep = res['sweep']
  if sweep:
    out += ['', 'Scaling with clients per round, on RANDOM inputs of the digits shapes (8x8x1, '
            '10 classes, 5 examples a client; the digits data has only 100 clients — speed only, '
            'no learning result comes from these inputs). `fedavg` (one local step) with each '
            'strategy, `uncompressed` with the cohort shortcut, and the floor. Rounds per second '
            '(median) and XLA\'s compiled memory of one round (arguments + outputs + temporaries).',
            '']
    rows = []
    for r in sweep:
      mem = r['memory']
      mem_s = common.fmt_bytes(mem['argument'] + mem['output'] + mem['temp']) if mem else '-'
      rows.append([r['model'], r['clients'], r['method'], r['strategy'],
                   f'{r["rounds_per_s"]:.3g}', common.fmt_seconds(r['median_s']), mem_s])
    out.append(common.markdown_table(['model', 'clients', 'method', 'strategy', 'rounds/s',
                                      'round', 'memory'], rows, align='lrllrrr'))
  return '\n'.join(out)


def targets(recs: Sequence[dict[str, Any]], backend: str = 'cpu') -> list[str]:
  """The issue's targets, checked on the measured medians (text, one item per target).

  On an accelerator backend, also: `vmap` >= 20x `loop`.
  """
  def fails(pred):
    bad = [f'{r["model"]}/{r["method"]}' for r in recs if not pred(r)]
    return 'met' if not bad else 'missed by ' + ', '.join(bad)
  res = lambda r, k: r['results'][k]['median_s']
  linear = [r for r in recs if 'shortcut' in r['results']]
  out = ['`auto` never slower than `loop`: ' + fails(lambda r: res(r, r['auto']) <= res(r, 'loop')),
         'shortcut >= 3x `loop`: ' + ('no eligible case' if not linear else 'met' if all(
             res(r, 'loop') >= 3 * res(r, 'shortcut') for r in linear) else 'missed by ' + ', '.join(
                 f'{r["model"]}/{r["method"]}' for r in linear
                 if res(r, 'loop') < 3 * res(r, 'shortcut'))),
         '`auto` within 2x of the floor: ' + fails(
             lambda r: res(r, r['auto']) <= 2 * floor_time(r['results']))]
  if backend != 'cpu':
    out.append('`vmap` >= 20x `loop`: ' + fails(lambda r: 20 * res(r, 'vmap') <= res(r, 'loop')))
  return out


FINDINGS = """The choice of `auto` (`simulation.default_strategy`, by backend and the family a model declares
in `models.ModelSpec`), from the tables above:
- CPU (2 cores, jax 0.10.2, load average about 1.5; `results/simulation_cpu.json`, preset `full`):
  `chunked_vmap` (chunks of `simulation.clients_per_chunk`, default 10) for the dense models (mlp,
  logreg) and the small CNN; `map` for resnet9 (`large_conv`) and the transformers. transformer_lm
  fedavg, a one-off run (CPU time), loop / vmap / chunked_vmap:10 / map: 359 / 745 / 373 / 360 ms.
  Why not plain vmap on CPU: per-client weights turn every matmul and conv into batched ones that
  XLA:CPU runs poorly at large batch, and the vmapped intrinsic client holds C lifted copies of θ;
  chunks keep each batch small and in cache.
- GPU (one NVIDIA H200, jax 0.11.2; `results/simulation_gpu.json`, preset `gpu`): `vmap` for every
  family; in the 10..10,000-client sweep vmap beats chunks of 100 from 1,000 clients up (mlp fedavg
  at 10,000: 1.01 ms against 4.12 ms).
- TPU: `vmap` too, by the same reasoning (one large batched program is what accelerators run
  well); not measured.

Findings behind `auto` (2 CPU cores, jax 0.10.2; investigation scripts, not part of the
benchmark; CPU times):
- XLA:CPU hands reductions to YNNPACK reduce fusions, which are slow for reductions over a major or
  strided axis: the weighted sum of 100 per-client payloads (`base.weighted_sum`, `sum(x * w,
  axis=0)`) took ~100 ms of a 200 ms vmapped cnn round; written as a dot (`tensordot(w, x, 1)`)
  the vmapped cnn rounds drop from 58/96 ms to 36/53 ms and chunked_vmap from 47/58 to 22/27 ms
  (uncompressed/fedavg). `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce` has a similar
  effect on vmap/chunked_vmap but slowed `map`.
- flax's `nn.GroupNorm` hits the same slow path at large batch: the models now use
  `models.cnn.GroupNorm` (same params, same function), the 500-image cnn gradient 43 -> 21 ms.
- `lax.conv` inside a `lax.scan` body (what `map` runs) is ~20x slower than the same conv jitted
  alone (resnet9, 4 clients: 11 s against 0.5 s); the im2col `patches` conv (`conv_impl='auto'` on
  CPU) does not have this problem. For ONE large batch (the floor, the shortcut) `lax` is ~2x
  faster than `patches`, hence the `floor_lax` column.
- fedavg under `vmap` broadcasts θ to every client before the first step (the local-SGD scan
  carry is batched from the start), so even step 1 runs batched per-client matmuls/convs.
- The loop oracle now costs one dispatch per client (was ~10): mlp 100 clients 101 -> 9 ms, cnn
  166 -> 42 ms."""


def render_section(results: Sequence[dict[str, Any]]) -> str:
  head = ['## Simulation speed (`python -m benchmarks.simulation`)', '',
          'What is timed and how: see the module docstring of `benchmarks/simulation.py`. '
          'The choice of `auto` and the findings behind it: after the tables.', '']
  return '\n'.join(head + ['\n\n'.join(render(r) for r in results), '', FINDINGS])


def make_config(preset: str, models: Optional[Sequence[str]] = None, **overrides) -> Config:
  """A preset with overrides (None values ignored), checked; `models` keeps only those models'
  cases and sweep models."""
  if preset not in PRESETS:
    raise ValueError(f'preset={preset!r} is invalid; allowed: {", ".join(PRESETS)}')
  overrides = {k: v for k, v in overrides.items() if v is not None}
  cfg = dataclasses.replace(PRESETS[preset], **overrides)
  if models is not None:
    known = sorted({c.model for c in cfg.cases} | set(cfg.sweep_models))
    bad = [m for m in models if m not in known]
    if bad:
      raise ValueError(f'models={bad[0]!r} is invalid for preset {preset!r}; allowed: '
                       f'{", ".join(known)}')
    cfg = dataclasses.replace(cfg, cases=tuple(c for c in cfg.cases if c.model in models),
                              sweep_models=tuple(m for m in cfg.sweep_models if m in models))
  for s in cfg.sections:
    if s not in SECTIONS:
      raise ValueError(f'sections={s!r} is invalid; allowed: {", ".join(SECTIONS)}')
  for k in cfg.chunks + cfg.sweep_clients + (cfg.sweep_chunk,):
    if not fields.is_int(k, 1):
      raise ValueError(f'chunks/sweep_clients/sweep_chunk value {k!r} is invalid; allowed: '
                       'positive integers')
  return cfg


def define_flags() -> None:
  """Defines the command-line flags; only the script entry point calls this, so importing the
  module (from tests, or beside another benchmark with its own --preset) defines none."""
  global _PRESET, _SECTIONS, _CHUNKS, _MODELS, _OUT_JSON, _README, _RENDER_ONLY
  _PRESET = flags.DEFINE_string('preset', 'full', f'One of {tuple(PRESETS)}.')
  _MODELS = flags.DEFINE_list('models', None, 'Override: keep only the cases and sweep models of '
                              'these models.')
  _SECTIONS = flags.DEFINE_list('sections', None, f'Override: subset of {SECTIONS}.')
  _CHUNKS = flags.DEFINE_list('chunks', None, 'Override: clients_per_chunk values to time.')
  _OUT_JSON, _README, _RENDER_ONLY = common.define_output_flags('simulation', README_SECTION)


def main(argv: Sequence[str]) -> None:
  cli.quiet_logs()
  readme = _README.value or common.README
  if _RENDER_ONLY.value:
    common.render_saved('simulation', README_SECTION, render_section, readme)
    return
  try:
    cfg = make_config(_PRESET.value, sections=tuple(_SECTIONS.value) if _SECTIONS.value else None,
                      chunks=common.int_list('chunks', _CHUNKS.value),
                      models=tuple(_MODELS.value) if _MODELS.value else None)
  except ValueError as e:
    cli.refuse(e)
  res = common.record_run('simulation', README_SECTION, cfg.preset,
                          lambda on_progress: run(cfg, on_progress=on_progress), render,
                          render_section, _OUT_JSON.value, readme)
  bad = bad_rounds(res)
  if bad:
    print('Rounds that differ from the loop:', ', '.join(bad), file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(None))
