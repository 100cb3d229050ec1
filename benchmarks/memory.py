r"""Peak memory of one compiled federated round: by clients per chunk, model size and method.

  python -m benchmarks.memory                      # full: JSON + the README's `memory` section
  python -m benchmarks.memory --preset=quick       # two small models; prints tables, JSON only
  python -m benchmarks.memory --render_only        # README section from the saved JSON

What is measured. One round of `fedjax_intrinsic.simulation.build_round` (the round the experiment
runs) on GPT-2-shaped language models (`models.get('gpt2', ...)`, random init), lowered and compiled
for ABSTRACT inputs (`jax.ShapeDtypeStruct`s from `jax.eval_shape`: server state, cohort batches,
weights, ids, key), so the round is never run and none of its buffers is allocated; only the model's
θ0 exists (zeros, D float32: the method factories ravel it). XLA's `memory_analysis()` of the
compiled round gives its buffers: arguments (server state + the cohort's batches), outputs (the new
server state, metrics), temporaries (everything in between, packed by liveness into one block) and
aliases. The figure `peak` = argument + output + temp − alias: what one call allocates (`peak_of`;
XLA's own `peak_memory_in_bytes` is recorded as `xla_peak` but not used: on CPU it omits the chunk
loop's temporaries). Nothing is donated, as in the experiment.

The round: `clients_per_round` clients (64) in `chunked_vmap` chunks of `clients_per_chunk` ∈
{1, 2, 4, 8, 16} (`lax.scan` over chunks, `vmap` inside one), and plain `vmap` (all clients at
once) for reference. Each client: one local step on `batch_size` sequences of `seq_len` tokens (the
PersonaChat protocol of configs/personachat_gpt2.py: 16 x 256, client lr 1), server Adam. Methods
and their budgets (`METHOD_BUDGETS`): uncompressed; intrinsic_static and intrinsic_time_varying with
Fastfood d = 2^20; fetchsgd with a 5 x 2^20 sketch and k = 2^17.

The per-client activation figure `act` is the temporaries of `jax.value_and_grad` of one client's
training loss on its batch, compiled alone. The fits: per (model, method), least squares (of
relative residuals) of peak = a + b·clients_per_chunk over the chunk sizes; per method, over every model,
a ≈ a0 + α·4D and b − act ≈ β·4D (α, β: how many D-sized float32 buffers the round holds once,
and per client of a chunk). `max_chunk` = the largest chunk whose predicted peak fits
`device_memory_gib` (a prediction from the formula, never a measurement on that device).

Preset `smollm2`: the same round for SmolLM2-135M's Llama shape (`models.get('llama', ...)`,
random init; D = 134,515,008, 4 x 64 tokens per client), and `formula_check`: the formula fitted
on a saved run (`formula_from`, the GPT-2 ladder's memory_cpu.json) predicting its peaks.

Output: `benchmarks/results/memory_<backend>.json` (`_<preset>` appended for presets other than
full) and, for the full preset, the `memory` section of `benchmarks/README.md`.
"""
import dataclasses
import json
import os
import time
from typing import Any, NamedTuple, Optional, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from fedjax_intrinsic import algorithms, cli, fields, keys, models, simulation
from fedjax_intrinsic.algorithms import base

README_SECTION = 'memory'
METHODS = ('uncompressed', 'intrinsic_static', 'intrinsic_time_varying', 'fetchsgd')
STRATEGIES = ('chunked_vmap', 'vmap')
GPT2_VOCAB = 50257
NUM_ROUNDS = 1000          # sizes time-varying's ring buffer: min(ceil(D / d), rounds) rows of d


class ModelSpec(NamedTuple):
  """A GPT-2-shaped model (`models.get('gpt2', ...)`, D from `gpt2.num_params`) or, with
  family='llama', a Llama-shaped one (`models.get('llama', ...)`: ffn = intermediate size,
  kv_heads = key/value heads, tied embeddings; D from `llama.num_params`)."""
  n_layer: int
  n_embd: int
  n_head: int
  vocab: int = GPT2_VOCAB
  n_positions: int = 1024
  family: str = 'gpt2'
  ffn: int = 0
  kv_heads: int = 0


MODELS = {
    'gpt2_7m': ModelSpec(2, 128, 2),        # D =   6,960,768
    'gpt2_16m': ModelSpec(4, 256, 4),       # D =  16,287,488
    'gpt2_45m': ModelSpec(6, 512, 8),       # D =  45,171,200
    'gpt2_124m': ModelSpec(12, 768, 12),    # D = 124,439,808: GPT-2 small
    'tiny': ModelSpec(1, 32, 2, vocab=64, n_positions=16),   # tests only
    # SmolLM2-135M's shape (the smollm2_135m GGUF preset): D = 134,515,008.
    'smollm2_135m': ModelSpec(30, 576, 9, vocab=49152, n_positions=8192, family='llama',
                              ffn=1536, kv_heads=3),
    'tiny_llama': ModelSpec(1, 32, 4, vocab=64, n_positions=16, family='llama', ffn=64,
                            kv_heads=2),                       # tests only
}

# Method fields for 10^7..10^8-parameter models (the d = 2^20; FetchSGD as in
# configs/personachat_gpt2.py). Each value is capped at D (the small test model).
METHOD_BUDGETS = {
    'uncompressed': {},
    'intrinsic_static': {'d': 2**20, 'projection': 'fastfood'},
    'intrinsic_time_varying': {'d': 2**20, 'projection': 'fastfood'},
    'fetchsgd': {'rows': 5, 'cols': 2**20, 'k': 2**17},
}


@dataclasses.dataclass(frozen=True)
class Config:
  """What to measure.

  Attributes:
    preset: the preset this came from.
    models: `MODELS` keys, the size ladder.
    methods: `METHODS` entries.
    chunks: clients_per_chunk values for `chunked_vmap`.
    clients_per_round: the cohort of every round.
    vmap_models: models also compiled with plain `vmap` (all clients at once).
    cohort_model, cohort_chunk, cohort_sizes: the check that peak depends on the chunk and not on
      clients per round: `cohort_model` at chunk `cohort_chunk` for these clients per round.
    batch_size, seq_len: one local step on batch_size x seq_len tokens per client.
    device_memory_gib: the memory `max_chunk` is predicted for; 75 GiB: what JAX may use of an
      80 GB card (about 79.6 GiB) with XLA_PYTHON_CLIENT_MEM_FRACTION=.95 (the default, .75,
      leaves about 60 GiB).
    execute: also RUN every compiled round of the chunk plan once on random tokens from a
      random θ0 (`execute_round`): wall time and the device allocator's peak. For a GPU; the
      rounds run in order of compiled peak, so each reading of the allocator's running peak is
      that round's own.
    formula_from: a saved result (file name under benchmarks/results/) whose fitted formula
      predicts this run's chunked rounds (`formula_check`); '' = none.
  """
  preset: str
  models: tuple[str, ...]
  methods: tuple[str, ...] = METHODS
  chunks: tuple[int, ...] = (1, 2, 4, 8, 16)
  clients_per_round: int = 64
  vmap_models: tuple[str, ...] = ()
  cohort_model: str | None = None
  cohort_chunk: int = 4
  cohort_sizes: tuple[int, ...] = ()
  batch_size: int = 16
  seq_len: int = 256
  device_memory_gib: float = 75.0
  execute: bool = False
  formula_from: str = ''


PRESETS = {
    # Tests: a 1-layer model with a 64-token vocabulary, 8 clients; seconds.
    'test': Config(preset='test', models=('tiny',), methods=('intrinsic_static',),
                   chunks=(1, 2, 4), clients_per_round=8, vmap_models=('tiny',),
                   cohort_model='tiny', cohort_chunk=2, cohort_sizes=(16,),
                   batch_size=2, seq_len=16, device_memory_gib=0.01),
    # Two small models, three chunk sizes: a few minutes on 2 CPU cores.
    'quick': Config(preset='quick', models=('gpt2_7m', 'gpt2_16m'), chunks=(1, 4, 16)),
    # The ladder up to GPT-2 small, measured (compiled), not extrapolated.
    'full': Config(preset='full', models=('gpt2_7m', 'gpt2_16m', 'gpt2_45m', 'gpt2_124m'),
                   vmap_models=('gpt2_124m',), cohort_model='gpt2_124m', cohort_chunk=4,
                   cohort_sizes=(16, 256)),
    # SmolLM2-135M (configs/pysource_smollm2.py's shape: 4 x 64 tokens per client), 64 clients,
    # compiled only; `formula_check` compares it with the formula fitted on the GPT-2 ladder
    # (benchmarks/results/memory_cpu.json), and max_chunk is for an 80 GB card.
    'smollm2': Config(preset='smollm2', models=('smollm2_135m',),
                      methods=('uncompressed', 'intrinsic_static'), chunks=(1, 4),
                      batch_size=4, seq_len=64, device_memory_gib=75.0,
                      formula_from='memory_cpu.json'),
    # For a GPU (compiled AND run): GPT-2 small, 64 clients per round, chunks of 4 and 8.
    'gpu': Config(preset='gpu', models=('gpt2_124m',), methods=('uncompressed', 'intrinsic_static'),
                  chunks=(4, 8), execute=True),
}


# ------------------------------------------------------------------------------------ building


class Built(NamedTuple):
  """A model and method with θ0, ready to lower rounds for."""
  model: models.Model
  alg: base.FederatedAlgorithm
  params0: Any
  num_params: int
  method_fields: dict


def build_model(name: str, seq_len: int, random_init: bool = False) -> tuple[models.Model, Any]:
  """(model, θ0): the GPT-2 shape `MODELS[name]` for windows of seq_len tokens; θ0 zeros, or the
  model's random initialisation (random_init, for rounds that are run)."""
  if name not in MODELS:
    raise ValueError(f'model={name!r} is invalid; allowed: {", ".join(MODELS)}')
  s = MODELS[name]
  if not 1 <= seq_len <= s.n_positions:
    raise ValueError(f'seq_len={seq_len} is invalid for model {name!r}; allowed: 1..'
                     f'{s.n_positions}')
  if s.family == 'llama':
    model = models.get('llama', input_shape=(seq_len,), num_classes=s.vocab,
                       num_layers=s.n_layer, hidden=s.n_embd, intermediate=s.ffn,
                       num_heads=s.n_head, num_kv_heads=s.kv_heads, max_position=s.n_positions)
  else:
    model = models.get('gpt2', input_shape=(seq_len,), num_classes=s.vocab, n_layer=s.n_layer,
                       n_head=s.n_head, n_embd=s.n_embd, n_positions=s.n_positions)
  if random_init:
    return model, jax.jit(model.init)(keys.init_key(keys.run_key(0)))
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  return model, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)


def method_fields(method: str, num_params: int) -> dict:
  """`METHOD_BUDGETS[method]`, every size capped at D (and k at cols)."""
  if method not in METHOD_BUDGETS:
    raise ValueError(f'method={method!r} is invalid; allowed: {", ".join(METHOD_BUDGETS)}')
  fields = {k: (min(v, num_params) if isinstance(v, int) else v)
            for k, v in METHOD_BUDGETS[method].items()}
  if 'k' in fields:
    fields['k'] = min(fields['k'], fields['cols'])
  return fields


def build(model: models.Model, params0: Any, method: str) -> Built:
  """The method on `model` with server Adam (1e-4), client lr 1, `NUM_ROUNDS` rounds."""
  D = models.num_params(params0)
  fields = method_fields(method, D)
  mc = algorithms.default_config(method)
  mc.update(fields)
  ctx = base.BuildContext(model=model, params0=params0, run_key=keys.run_key(0),
                          server_optimizer=optax.adam(1e-4), client_lr=1.0, num_clients=10_000,
                          num_rounds=NUM_ROUNDS)
  return Built(model, algorithms.get(method, mc, ctx), params0, D, fields)


def abstract_round_args(b: Built, clients: int, batch_size: int, seq_len: int) -> tuple:
  """ShapeDtypeStructs of round_fn's arguments for a cohort of `clients` (nothing allocated).

  (server_state, client_states [C, ...], batches {'x', 'y': i32[C, 1, B, T], 'mask': f32[C, 1, B]},
  weights f32[C], client_ids i32[C], round_key).
  """
  S = jax.ShapeDtypeStruct
  state = jax.eval_shape(b.alg.init, b.params0)
  cstates = jax.eval_shape(lambda: jax.tree.map(
      lambda x: jnp.broadcast_to(x, (clients,) + x.shape), b.alg.init_client(b.params0)))
  tokens = S((clients, 1, batch_size, seq_len), jnp.int32)
  batches = {'x': tokens, 'y': tokens, 'mask': S((clients, 1, batch_size), jnp.float32)}
  key = jax.eval_shape(keys.round_key, keys.run_key(0), 1)
  return (state, cstates, batches, S((clients,), jnp.float32), S((clients,), jnp.int32), key)


def concrete_round_args(b: Built, clients: int, batch_size: int, seq_len: int,
                        seed: int = 0) -> tuple:
  """Arrays for the arguments `abstract_round_args` describes: the server state at θ0, fresh
  client states, uniformly random tokens (x and y drawn apart), equal weights."""
  vocab = b.model.num_classes
  rng = np.random.default_rng(seed)
  tokens = lambda: jnp.asarray(rng.integers(0, vocab, (clients, 1, batch_size, seq_len),
                                            dtype=np.int32))
  batches = {'x': tokens(), 'y': tokens(), 'mask': jnp.ones((clients, 1, batch_size), jnp.float32)}
  state = jax.jit(b.alg.init)(b.params0)
  cstates = jax.jit(lambda: jax.tree.map(lambda x: jnp.broadcast_to(x, (clients,) + x.shape),
                                         b.alg.init_client(b.params0)))()
  return (state, cstates, batches, jnp.full((clients,), 1.0 / clients, jnp.float32),
          jnp.arange(clients, dtype=jnp.int32), keys.round_key(keys.run_key(0), 1))


def _is_oom(e: Exception) -> bool:
  msg = str(e)
  return 'RESOURCE_EXHAUSTED' in msg or 'Out of memory' in msg or 'out of memory' in msg


def execute_round(compiled: Any, args: tuple, repeats: int = 2) -> dict[str, Any]:
  """Runs a compiled round on concrete `args`: first-call and median wall seconds, the round's
  loss, and the device allocator's `peak_bytes_in_use` / `bytes_limit` after it (None where the
  backend keeps no such statistics). An out-of-memory failure is returned as {'oom': message}."""
  try:
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      out = jax.block_until_ready(compiled(*args))
      times.append(time.perf_counter() - start)
  except Exception as e:   # pylint: disable=broad-except
    if _is_oom(e):
      return {'oom': str(e).splitlines()[0][:300]}
    raise
  stats = jax.local_devices()[0].memory_stats() or {}
  return {'first_s': round(first, 3), 'median_s': round(float(np.median(times)), 4),
          'loss': float(out.metrics['loss']), 'device_peak': stats.get('peak_bytes_in_use'),
          'device_limit': stats.get('bytes_limit')}


def peak_of(stats: dict[str, int]) -> int:
  """What one call of the compiled round allocates: argument + output + temp − alias.

  XLA allocates a call's temporaries as ONE block of `temp` bytes (buffers packed by liveness),
  next to the live arguments and the outputs. XLA's own `peak_memory_in_bytes` is kept apart
  (`xla_peak`): on the CPU backend it leaves the temporaries of the chunk loop out (it stays at
  argument + output while `temp` grows with the chunk), so it is not used.
  """
  return stats['argument'] + stats['output'] + stats['temp'] - stats['alias']


def round_memory(b: Built, strategy: str, clients_per_round: int, clients_per_chunk: int,
                 batch_size: int, seq_len: int, keep: Optional[list] = None) -> dict[str, Any]:
  """The compiled memory of one round: XLA's buffer sizes, `peak` (`peak_of`), `compile_s`.

  keep: if given, (compiled, cohort size) is appended to it, to run the round later.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f'strategy={strategy!r} is invalid; allowed: {", ".join(STRATEGIES)}')
  for name, v in (('clients_per_round', clients_per_round),
                  ('clients_per_chunk', clients_per_chunk)):
    if not fields.is_int(v, 1):
      raise ValueError(f'{name}={v!r} is invalid; allowed: a positive integer')
  chunk = clients_per_chunk if strategy == 'chunked_vmap' else clients_per_round
  cohort = simulation.padded_cohort_size(clients_per_round, strategy, chunk)
  round_fn = simulation.build_round(b.alg, strategy, chunk)
  args = abstract_round_args(b, cohort, batch_size, seq_len)
  compiled, secs = common.compile_fn(round_fn, *args)
  stats = common.memory_stats(compiled)
  stats['xla_peak'] = stats.pop('peak')
  if keep is not None:
    keep.append((compiled, cohort))
  return {**stats, 'peak': peak_of(stats), 'compile_s': round(secs, 2),
          'strategy': strategy, 'clients_per_round': clients_per_round,
          'clients_per_chunk': chunk}


def client_memory(model: models.Model, params0: Any, batch_size: int,
                  seq_len: int) -> dict[str, Any]:
  """One client's value_and_grad of its training loss, compiled alone: `act` = its temporaries."""
  S = jax.ShapeDtypeStruct
  tokens = S((batch_size, seq_len), jnp.int32)
  batch = {'x': tokens, 'y': tokens, 'mask': S((batch_size,), jnp.float32)}
  params = jax.tree.map(lambda x: S(x.shape, x.dtype), params0)
  fn = jax.value_and_grad(base.model_loss(model))
  compiled, secs = common.compile_fn(fn, params, batch)
  stats = common.memory_stats(compiled)
  stats['xla_peak'] = stats.pop('peak')
  return {**stats, 'act': stats['temp'], 'compile_s': round(secs, 2)}


# ------------------------------------------------------------------------------------ fitting


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
  """ys ≈ a + b·xs, least squares of the RELATIVE residuals: {'a', 'b', 'max_rel_err'}.

  Relative weighting (each residual divided by its y) keeps a, which the small chunks determine,
  from being swamped by the absolute residuals of the largest chunk. max_rel_err: max |res| / y.
  """
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  if xs.shape != ys.shape or xs.size < 2 or np.unique(xs).size < 2:
    raise ValueError(f'xs: need >= 2 distinct points matching ys, got xs={xs.tolist()}, '
                     f'ys={ys.tolist()}')
  b, a = np.polyfit(xs, ys, 1, w=1.0 / np.maximum(np.abs(ys), 1.0))
  err = np.max(np.abs(a + b * xs - ys) / np.maximum(np.abs(ys), 1.0))
  return {'a': float(a), 'b': float(b), 'max_rel_err': float(err)}


def max_chunk(a: float, b: float, budget_bytes: float) -> int:
  """The largest clients_per_chunk c with a + b·c <= budget_bytes (0 when not even one fits)."""
  if b <= 0:
    raise ValueError(f'b={b!r} is invalid; allowed: a positive per-client cost')
  return max(0, int(np.floor((budget_bytes - a) / b)))


def fits(res: dict[str, Any]) -> list[dict[str, Any]]:
  """Per (model, method): a, b of peak = a + b·chunk at the main cohort size, and max_chunk
  (`max_chunk` capped at clients_per_round; beyond the largest measured chunk it extrapolates)."""
  cfg = res['config']
  budget = cfg['device_memory_gib'] * 2**30
  out = []
  for m in res['models']:
    for meth in cfg['methods']:
      pts = [r for r in res['rounds'] if r['model'] == m['name'] and r['method'] == meth
             and r['strategy'] == 'chunked_vmap'
             and r['clients_per_round'] == cfg['clients_per_round']]
      pts.sort(key=lambda r: r['clients_per_chunk'])
      f = fit_line([r['clients_per_chunk'] for r in pts], [r['peak'] for r in pts])
      out.append({'model': m['name'], 'D': m['D'], 'act': m['act'], 'method': meth, **f,
                  'max_chunk': min(max_chunk(f['a'], f['b'], budget),
                                   cfg['clients_per_round'])})
  return out


def formula(fit_rows: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
  """Per method, over every model: a ≈ a0 + α·4D and b ≈ act + β·4D (β by least squares).

  Returns {'method', 'alpha', 'a0', 'beta', 'max_rel_err'}, the error over every fitted (model,
  chunk) of the line a + b·c against the formula's prediction of it.
  """
  out = []
  for meth in methods:
    rows = [r for r in fit_rows if r['method'] == meth]
    fourD = np.array([4.0 * r['D'] for r in rows])
    a = np.array([r['a'] for r in rows])
    extra = np.array([r['b'] - r['act'] for r in rows])
    if len(rows) >= 2:
      line = fit_line(fourD, a)
      alpha, a0 = line['b'], line['a']
    else:
      alpha, a0 = float(a[0] / fourD[0]), 0.0
    beta = float(np.dot(fourD, extra) / np.dot(fourD, fourD))
    errs = []
    for r, fd in zip(rows, fourD):
      for c in (1, 16):
        want = r['a'] + r['b'] * c
        errs.append(abs(a0 + alpha * fd + c * (r['act'] + beta * fd) - want) / want)
    out.append({'method': meth, 'alpha': alpha, 'a0': a0, 'beta': beta,
                'max_rel_err': float(max(errs))})
  return out


def formula_check(res: dict[str, Any], ref: dict[str, Any]) -> list[dict[str, Any]]:
  """The formula of a saved result `ref` (fitted on other models) against this run's compiled
  chunked rounds at clients_per_round: predicted = a0 + α·4D + chunk·(act + β·4D), with this
  run's D and act. -> [{'model', 'method', 'clients_per_chunk', 'peak', 'predicted', 'rel_err'}]
  for each method the reference fitted; `rel_err` = (predicted − peak) / peak."""
  form = {f['method']: f for f in ref.get('formula', [])}
  acts = {m['name']: m['act'] for m in res['models']}
  out = []
  for r in res['rounds']:
    f = form.get(r['method'])
    if (f is None or r['strategy'] != 'chunked_vmap'
        or r['clients_per_round'] != res['config']['clients_per_round']):
      continue
    fourD = 4.0 * r['D']
    pred = f['a0'] + f['alpha'] * fourD + r['clients_per_chunk'] * (acts[r['model']]
                                                                    + f['beta'] * fourD)
    out.append({'model': r['model'], 'method': r['method'],
                'clients_per_chunk': r['clients_per_chunk'], 'peak': r['peak'],
                'predicted': float(pred), 'rel_err': float((pred - r['peak']) / r['peak'])})
  return out


def is_monotone(res: dict[str, Any]) -> bool:
  """Whether every (model, method)'s peak is non-decreasing in clients_per_chunk."""
  cfg = res['config']
  for m in res['models']:
    for meth in cfg['methods']:
      pts = sorted((r['clients_per_chunk'], r['peak']) for r in res['rounds']
                   if r['model'] == m['name'] and r['method'] == meth
                   and r['strategy'] == 'chunked_vmap'
                   and r['clients_per_round'] == cfg['clients_per_round'])
      if any(p1 > p2 for (_, p1), (_, p2) in zip(pts, pts[1:])):
        return False
  return True


# ------------------------------------------------------------------------------------ running


def run(cfg: Config, log=print, on_progress=None) -> dict[str, Any]:
  """Compiles every round of `cfg` and returns the JSON-ready result (rounds, fits, formula).

  With `cfg.execute`, each model's chunked rounds at `clients_per_round` are then run
  (`execute_round`) in order of compiled peak, and each round's record gets an 'exec' entry.
  on_progress: called with the partial result after every round (the script writes it out).
  """
  on_progress = on_progress or (lambda res: None)
  start = time.perf_counter()
  res = {'benchmark': 'memory', 'schema': 1, 'preset': cfg.preset,
         'config': dataclasses.asdict(cfg), 'machine': common.machine_info(),
         'method_budgets': {m: METHOD_BUDGETS[m] for m in cfg.methods},
         'server_optimizer': 'adam(1e-4)', 'num_rounds': NUM_ROUNDS,
         'models': [], 'rounds': []}
  for name in cfg.models:
    model, params0 = build_model(name, cfg.seq_len, random_init=cfg.execute)
    to_run = []     # (compiled peak, order, record, built, compiled, cohort size)
    D = models.num_params(params0)
    cm = client_memory(model, params0, cfg.batch_size, cfg.seq_len)
    res['models'].append({'name': name, **MODELS[name]._asdict(), 'D': D, 'act': cm['act'],
                          'client_grad': cm})
    log(f'{name}: D={D:,} act/client={common.fmt_bytes(cm["act"])}')
    for method in cfg.methods:
      b = build(model, params0, method)
      plan = [('chunked_vmap', cfg.clients_per_round, c) for c in cfg.chunks]
      if name in cfg.vmap_models:
        plan.append(('vmap', cfg.clients_per_round, cfg.clients_per_round))
      if name == cfg.cohort_model:
        plan += [('chunked_vmap', n, cfg.cohort_chunk) for n in cfg.cohort_sizes]
      for strategy, clients, chunk in plan:
        runnable = (cfg.execute and strategy == 'chunked_vmap'
                    and clients == cfg.clients_per_round)
        keep = [] if runnable else None
        r = round_memory(b, strategy, clients, chunk, cfg.batch_size, cfg.seq_len, keep)
        rec = {'model': name, 'D': D, 'method': method, 'method_fields': b.method_fields, **r}
        res['rounds'].append(rec)
        if runnable:
          to_run.append((rec['peak'], len(to_run), rec, b) + keep[0])
        log(f'  {method:<24} {strategy:<12} C={clients:<4} chunk={r["clients_per_chunk"]:<3} '
            f'peak={common.fmt_bytes(r["peak"])} temp={common.fmt_bytes(r["temp"])} '
            f'compile={r["compile_s"]:.1f}s')
        on_progress(res)
    for _, _, rec, b, compiled, cohort in sorted(to_run, key=lambda t: t[:2]):
      args = concrete_round_args(b, cohort, cfg.batch_size, cfg.seq_len)
      rec['exec'] = execute_round(compiled, args)
      del args
      log(f'  ran {rec["method"]} chunk={rec["clients_per_chunk"]}: {rec["exec"]}')
      on_progress(res)
    del model, params0, to_run
  res['fits'] = fits(res)
  res['formula'] = formula(res['fits'], cfg.methods)
  res['monotone'] = is_monotone(res)
  if cfg.formula_from:
    with open(os.path.join(common.RESULTS_DIR, cfg.formula_from)) as f:
      ref = json.load(f)
    res['formula_check'] = {'reference': cfg.formula_from, 'reference_preset': ref.get('preset'),
                            'reference_models': [m['name'] for m in ref.get('models', [])],
                            'rows': formula_check(res, ref)}
  res['wall_s'] = round(time.perf_counter() - start, 1)
  return res


# ------------------------------------------------------------------------------------ rendering


def _gib(b: float) -> str:
  return f'{b / 2**30:.2f}'


def render(res: dict[str, Any]) -> str:
  """Markdown for one backend's result."""
  cfg, m = res['config'], res['machine']
  C = cfg['clients_per_round']
  gpu = m['backend'] != 'cpu'
  out = [f'**Backend `{m["backend"]}`** — {common.machine_line(m)}. Preset `{res["preset"]}`; '
         f'every figure is XLA\'s compiled buffer assignment of one round (peak = '
         f'argument + output + temp − alias), in GiB.', '']
  if not gpu:
    out += ['These are the CPU backend\'s figures. GPU buffer assignment differs (fusions, '
            'cuDNN/cuBLAS workspaces; and XLA preallocates 75% of the card by default: set '
            '`XLA_PYTHON_CLIENT_MEM_FRACTION=.95`): `python -m benchmarks.memory --preset=gpu` '
            'on a GPU gives its own figures (below, where it has been run).', '']
  out += [f'Round: {C} clients, each one local step on {cfg["batch_size"]} x {cfg["seq_len"]} '
          f'tokens; server {res["server_optimizer"]}; method fields '
          + '; '.join(f'`{k}` {v or "-"}' for k, v in res['method_budgets'].items())
          + '. `act` = one client\'s forward + backward temporaries (value_and_grad alone).', '']
  big = res['models'][-1]
  chunks = list(cfg['chunks'])
  rows = []
  for meth in cfg['methods']:
    sel = [r for r in res['rounds'] if r['model'] == big['name'] and r['method'] == meth
           and r['clients_per_round'] == C]
    by_chunk = {r['clients_per_chunk']: r for r in sel if r['strategy'] == 'chunked_vmap'}
    vm = [r for r in sel if r['strategy'] == 'vmap']
    f = next(x for x in res['fits'] if x['model'] == big['name'] and x['method'] == meth)
    row = [meth] + [_gib(by_chunk[c]['peak']) if c in by_chunk else '-' for c in chunks]
    if big['name'] in cfg['vmap_models']:
      row.append(_gib(vm[0]['peak']) if vm else '-')
    row += [_gib(f['a']), _gib(f['b']), f['max_chunk']]
    rows.append(row)
  heads = ['method'] + [f'chunk {c}' for c in chunks]
  if big['name'] in cfg['vmap_models']:
    heads.append(f'vmap ({C})')
  heads += ['a', 'b', f'max chunk ({cfg["device_memory_gib"]:g} GiB)']
  out += [f'Peak of one round of `{big["name"]}` (D = {big["D"]:,}; act = '
          f'{_gib(big["act"])} GiB per client) by clients per chunk, the fit '
          f'peak ≈ a + b·chunk, and the largest chunk the fit puts under '
          f'{cfg["device_memory_gib"]:g} GiB (a prediction, not a measurement on that device):', '',
          common.markdown_table(heads, rows), '']
  ran = [r for r in res['rounds'] if r['model'] == big['name'] and 'exec' in r]
  if ran:
    rows = []
    for r in sorted(ran, key=lambda r: (r['method'], r['clients_per_chunk'])):
      e = r['exec']
      if 'oom' in e:
        rows.append([r['method'], r['clients_per_chunk'], _gib(r['peak']), 'out of memory',
                     '-', '-', '-'])
        continue
      rows.append([r['method'], r['clients_per_chunk'], _gib(r['peak']),
                   _gib(e['device_peak']) if e['device_peak'] is not None else '-',
                   _gib(e['device_limit']) if e['device_limit'] is not None else '-',
                   common.fmt_seconds(e['median_s']), f'{e["loss"]:.3f}'])
    out += [f'The same rounds RUN on this device ({C} clients, random tokens, random θ0; the '
            f'allocator\'s peak is read after each round, rounds in order of compiled peak, so '
            f'each reading is that round\'s own; "limit" is what JAX may allocate):', '',
            common.markdown_table(['method', 'chunk', 'compiled peak', 'allocator peak', 'limit',
                                   'round (median)', 'loss'], rows), '']
  goal = [f'`{f["method"]}` chunks of {f["max_chunk"]} ({-(-C // f["max_chunk"])} chunks, '
          f'{_gib(f["a"] + f["b"] * f["max_chunk"])} GiB)' if f['max_chunk'] else
          f'`{f["method"]}` does not fit even one client'
          for f in res['fits'] if f['model'] == big['name']]
  out += [f'{C} clients per round of `{big["name"]}` under {cfg["device_memory_gib"]:g} GiB, by '
          f'the fit: ' + '; '.join(goal) + '.', '']
  coh = [r for r in res['rounds'] if r['model'] == cfg['cohort_model']
         and r['strategy'] == 'chunked_vmap' and r['clients_per_chunk'] == cfg['cohort_chunk']]
  if cfg['cohort_sizes'] and coh:
    sizes = sorted({r['clients_per_round'] for r in coh})
    rows = []
    for meth in cfg['methods']:
      by = {r['clients_per_round']: r['peak'] for r in coh if r['method'] == meth}
      rows.append([meth] + [_gib(by[n]) if n in by else '-' for n in sizes])
    out += [f'Peak does not grow with clients per round: `{cfg["cohort_model"]}`, chunks of '
            f'{cfg["cohort_chunk"]}, C clients per round (only the cohort\'s token batches grow):',
            '', common.markdown_table(['method'] + [f'C = {n}' for n in sizes], rows), '']
  state = {}   # (model, method) -> (argument + output) / 4D of the chunk-1 round
  for r in res['rounds']:
    if r['strategy'] == 'chunked_vmap' and r['clients_per_chunk'] == min(chunks):
      state.setdefault((r['model'], r['method']), (r['argument'] + r['output']) / (4 * r['D']))
  rows = []
  for f in res['fits']:
    io = state.get((f['model'], f['method']))
    rows.append([f['model'], f'{f["D"]:,}', _gib(f['act']), f['method'], _gib(f['a']),
                 f'{f["a"] / (4 * f["D"]):.2f}', f'{io:.2f}' if io is not None else '-',
                 _gib(f['b']), f'{(f["b"] - f["act"]) / (4 * f["D"]):.2f}',
                 f'{f["max_rel_err"]:.1e}'])
  out += ['Every model: the fit peak ≈ a + b·chunk (max relative residual over the chunks); '
          'a, the arguments + outputs of the round ("in + out": the server state, passed in and '
          'returned without donation, and the cohort\'s tokens) and b − act in units of 4D bytes '
          '(one float32 copy of θ):', '',
          common.markdown_table(['model', 'D', 'act', 'method', 'a', 'a / 4D', 'in + out / 4D',
                                 'b', '(b − act) / 4D', 'fit err'], rows), '']
  rows = [[f['method'], f'{f["alpha"]:.2f}', _gib(f['a0']), f'{f["beta"]:.2f}',
           f'{f["max_rel_err"]:.1e}'] for f in res['formula']]
  out += ['The formula, fitted over every model: **peak ≈ a0 + α·4D + chunk · (act + β·4D)**. '
          '`act` is the per-client activation memory of one forward + backward (measured per '
          'model above: it grows with batch x seq_len x (depth x width + the attention scores '
          'and the B·T·vocab logits), not with the method). α counts the D-sized float32 buffers '
          'the round holds once: its server state twice (argument and output, no donation) plus '
          'server-side temporaries; β the ones each client of a chunk adds beyond its '
          'activations. "err": the largest relative gap between the formula and the per-model '
          'fit at chunk 1 and 16.', '',
          common.markdown_table(['method', 'α', 'a0 (GiB)', 'β', 'err'], rows), '',
          'What α and β are made of (server state from each method\'s module docstring; '
          'L = the power of two >= D, 16·L bytes of Fastfood state ≈ 4.3 copies of θ at '
          'D = 124M):', '',
          '- `uncompressed`: state θ, Adam μ, ν (3 copies) in and out: α ≈ 6; per client only its '
          'gradient, which XLA largely overlaps with the activations: β < 1.',
          '- `intrinsic_static`: state θ0 and the Fastfood state (≈ 1 + 4L/D copies; z and Adam in '
          'z-space are d-sized) in and out, plus the broadcast θ = θ0 + A z: α ≈ 12; per client '
          'the lifted θ_base + A u and the Fastfood transforms of lift and of its transpose in the '
          'backward pass (L-sized): β ≈ 3.',
          '- `intrinsic_time_varying`: state θ, μ, ν, θ0, the ring buffer of ⌈D/d⌉ mean Δz̄ '
          '(≈ D floats) and the Fastfood state, in and out: α ≈ 18; per client as static: β ≈ 3.',
          '- `fetchsgd`: state θ, μ, ν, last_changed (i32[D]) in and out, plus the unsketch\'s '
          'estimate f32[rows, D] and the top-k over D in the server update: α ≈ 16; per client '
          'its raveled Δ before sketching: β ≈ 1.', '',
          'Levers not used here: donating the server state (`jax.jit(..., donate_argnums=0)`) '
          'would remove its output copy (half of the "in + out" column); rematerialising each '
          'block '
          '(`jax.checkpoint`) would cut `act`, which dominates b for every method.', '']
  chk = res.get('formula_check')
  if chk and chk['rows']:
    rows = [[r['model'], r['method'], r['clients_per_chunk'], _gib(r['peak']),
             _gib(r['predicted']), f'{100 * r["rel_err"]:+.1f}%'] for r in chk['rows']]
    out += [f'The formula fitted on `{chk["reference"]}` (models '
            f'{", ".join(chk["reference_models"])}) against these compiled rounds, with their '
            'own D and act:', '',
            common.markdown_table(['model', 'method', 'chunk', 'compiled peak', 'formula',
                                   'formula − peak'], rows), '']
  out += [f'Peak non-decreasing in clients per chunk for every model and method: '
          f'{"yes" if res["monotone"] else "NO"}. Compile time of the largest round: '
          f'{max(r["compile_s"] for r in res["rounds"]):.0f} s; whole run {res["wall_s"]:.0f} s.']
  return '\n'.join(out)


def render_section(results: Sequence[dict[str, Any]]) -> str:
  head = ['## Memory of one round (`python -m benchmarks.memory`)', '',
          'How it is measured (compiled for abstract inputs, nothing run): see the module '
          'docstring of `benchmarks/memory.py`.', '']
  return '\n'.join(head + ['\n\n'.join(render(r) for r in results)])


def make_config(preset: str, **overrides) -> Config:
  """A preset with overrides (None values ignored), checked."""
  if preset not in PRESETS:
    raise ValueError(f'preset={preset!r} is invalid; allowed: {", ".join(PRESETS)}')
  cfg = dataclasses.replace(PRESETS[preset],
                            **{k: v for k, v in overrides.items() if v is not None})
  for name in cfg.models + cfg.vmap_models + ((cfg.cohort_model,) if cfg.cohort_model else ()):
    if name not in MODELS:
      raise ValueError(f'models={name!r} is invalid; allowed: {", ".join(MODELS)}')
  for meth in cfg.methods:
    if meth not in METHODS:
      raise ValueError(f'methods={meth!r} is invalid; allowed: {", ".join(METHODS)}')
  if len(set(cfg.chunks)) < 2:
    raise ValueError(f'chunks={cfg.chunks!r} is invalid; allowed: at least two distinct sizes '
                     '(the fit needs two points)')
  for k in cfg.chunks + cfg.cohort_sizes + (cfg.clients_per_round, cfg.cohort_chunk,
                                            cfg.batch_size, cfg.seq_len):
    if not fields.is_int(k, 1):
      raise ValueError(f'chunks/sizes value {k!r} is invalid; allowed: positive integers')
  if not cfg.device_memory_gib > 0:
    raise ValueError(f'device_memory_gib={cfg.device_memory_gib!r} is invalid; allowed: > 0')
  return cfg


def define_flags() -> None:
  """Defines the command-line flags; only the script entry point calls this, so importing the
  module (from tests, or beside another benchmark with its own --preset) defines none."""
  global _PRESET, _MODELS, _METHODS, _CHUNKS, _BATCH, _SEQ, _DEVICE_GIB, _OUT_JSON, _README, _RENDER_ONLY
  _PRESET = flags.DEFINE_string('preset', 'full', f'One of {tuple(PRESETS)}.')
  _MODELS = flags.DEFINE_list('models', None, f'Override: subset of {tuple(MODELS)}.')
  _METHODS = flags.DEFINE_list('methods', None, f'Override: subset of {METHODS}.')
  _CHUNKS = flags.DEFINE_list('chunks', None, 'Override: clients_per_chunk values.')
  _BATCH = flags.DEFINE_integer('batch_size', None, 'Override: sequences per client.')
  _SEQ = flags.DEFINE_integer('seq_len', None, 'Override: tokens per sequence.')
  _DEVICE_GIB = flags.DEFINE_float('device_memory_gib', None,
                                   'Override: the memory max_chunk is predicted for (GiB).')
  _OUT_JSON, _README, _RENDER_ONLY = common.define_output_flags('memory', README_SECTION)


def main(argv: Sequence[str]) -> None:
  cli.quiet_logs()
  readme = _README.value or common.README
  if _RENDER_ONLY.value:
    common.render_saved('memory', README_SECTION, render_section, readme)
    return
  try:
    cfg = make_config(_PRESET.value,
                      models=tuple(_MODELS.value) if _MODELS.value else None,
                      methods=tuple(_METHODS.value) if _METHODS.value else None,
                      chunks=common.int_list('chunks', _CHUNKS.value),
                      batch_size=_BATCH.value, seq_len=_SEQ.value,
                      device_memory_gib=_DEVICE_GIB.value)
  except ValueError as e:
    cli.refuse(e)
  res = common.record_run('memory', README_SECTION, cfg.preset,
                          lambda on_progress: run(cfg, on_progress=on_progress), render,
                          render_section, _OUT_JSON.value, readme)
  if (cfg.preset != 'full' or _OUT_JSON.value) and _README.value:
    common.update_readme_section(README_SECTION, render_section([res]), readme)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(None))
