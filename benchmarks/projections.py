r"""Speed and memory of the projection operators, count sketch, sparsifiers and WHT.

  python -m benchmarks.projections --preset=quick    # < 2 min on 2 CPU cores; prints tables
  python -m benchmarks.projections --preset=full     # the whole grid; JSON + README table
  python -m benchmarks.projections --preset=full --large        # adds D = 2^25..2^27 (GPU/TPU)
  python -m benchmarks.projections --render_only     # README section from the saved JSON

What is timed (``benchmarks.common.time_fn``: compiled once, a first untimed call, then the
median of repeated calls, each ending in ``block_until_ready``):
- operators (``projections.get(name, D=, d=)``): ``init(key)``, ``project(state, x: f32[D])``
  and ``lift(state, z: f32[d])``, for D = 2^16 ... 2^24 and d in {10^3, 10^4, 10^5}.
  ``dense_gaussian`` redraws its D x d matrix on every call (~50M normals per second on a
  2-core CPU), so by default it is timed only where ``D * d <= 2e8`` (``--dense_max_Dd``);
  its compiled memory (``memory_analysis()``) is reported for every (D, d) up to 2e9, next
  to the ``D * d * 4`` bytes a stored matrix would take.
- count sketch (``projections.count_sketch``): ``init``, ``sketch`` and
  ``unsketch_topk`` (exact and threshold top-k), hashes recomputed and cached.
- sparsifiers: ``top_k`` (exact, threshold), ``random_k`` and ``densify``, including
  D = 10^7, k = 10^5.
- Walsh-Hadamard (``projections.hadamard.fwht``): native (the CPU kernel; kron on other
  backends), butterfly and Kronecker methods for L = 2^16 ... 2^24.
Each figure is also given as a ratio to references timed in the same run at the same
length: one memory-bound pass (``x * 2.0``, jitted: reads D floats and writes D new ones,
``x_pass``) and a sort (``jnp.sort``, ``x_sort``). A third, ``x_inplace``, divides by the
same pass with its input donated (XLA writes over it, nothing is allocated): on CPU a fresh
output buffer of >= 32 MiB (D >= 2^23 floats) is a new mmap whose page faults can cost
10-100x the pass itself, so there ``x_pass`` flatters and ``x_inplace`` is the strict figure.
Inputs are i.i.d. N(0, 1) float32 vectors from fixed keys.

Output: ``benchmarks/results/projections_<backend>.json`` (``_<preset>`` appended for
presets other than full) and, for the full preset, the ``projections`` section of
``benchmarks/README.md`` (tables for every ``projections_<backend>.json`` present).
"""
import dataclasses
import os
import sys
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from benchmarks import common
from fedjax_intrinsic import cli, fields
import projections as P
from projections import hadamard
from projections import sparsify

SECTIONS = ('operators', 'dense_memory', 'sketch', 'sparsify', 'wht')
REFERENCES = ('pass', 'inplace', 'sort')
MAX_LOG2_D = {'cpu': 25}  # 2^25: the padded D of configs/tweets_minilm.py; others: 27.
ACCEL_MAX_LOG2_D = 27
LARGE_LOG2_D = (25, 26, 27)
README_SECTION = 'projections'


@dataclasses.dataclass(frozen=True)
class Config:
  """What to measure. Sizes are Python ints; every tuple is a grid axis.

  Attributes:
    preset: the preset this came from ('test', 'quick', 'full').
    log2_D: operator and count-sketch sizes D = 2^i.
    ds: subspace dimensions d (rows with d > D are skipped).
    operators: names for ``projections.get``.
    dense_max_Dd: time ``dense_gaussian`` only where D * d <= this.
    dense_memory_max_Dd: report dense compiled memory where D * d <= this (no run).
    sketch_rows: count-sketch rows (odd).
    sketch_cols: count-sketch columns (capped at D // 4).
    sketch_k: k of ``unsketch_topk`` (capped at D // 16).
    sketch_cached: also time ``count_sketch(..., cache_buckets=True)``.
    sparsify_Ds: vector lengths for top-k / random-k / densify.
    sparsify_ks: k values (rows with k > D // 4 are skipped).
    wht_log2_L: Walsh-Hadamard lengths L = 2^i.
    wht_kron_blocks: Kronecker factor sizes (128 is ``fwht(method='kron')``).
    sections: which of ``SECTIONS`` to run.
    min_repeats, max_repeats, budget_s, warmup: ``common.time_fn`` settings.
    ref_min_repeats: ``min_repeats`` of the references (the sort is slow at large n).
    ref_max_repeats: ``max_repeats`` of the cheap references (pass, inplace).
    seed: key of the inputs and operator states.
  """
  preset: str
  log2_D: tuple[int, ...]
  ds: tuple[int, ...]
  operators: tuple[str, ...]
  dense_max_Dd: float
  dense_memory_max_Dd: float
  sketch_rows: tuple[int, ...]
  sketch_cols: int
  sketch_k: int
  sketch_cached: bool
  sparsify_Ds: tuple[int, ...]
  sparsify_ks: tuple[int, ...]
  wht_log2_L: tuple[int, ...]
  wht_kron_blocks: tuple[int, ...]
  sections: tuple[str, ...] = SECTIONS
  min_repeats: int = 3
  max_repeats: int = 15
  budget_s: float = 1.0
  warmup: int = 0
  ref_min_repeats: int = 3
  ref_max_repeats: int = 41
  seed: int = 0


PRESETS = {
    # Tiny sizes for the test suite: seconds, exercises every code path.
    'test': Config(
        preset='test', log2_D=(10,), ds=(16,), operators=P.OPERATORS,
        dense_max_Dd=2e4, dense_memory_max_Dd=2e9, sketch_rows=(3,), sketch_cols=64,
        sketch_k=8, sketch_cached=False, sparsify_Ds=(2**10,), sparsify_ks=(10,),
        wht_log2_L=(10,), wht_kron_blocks=(128,), min_repeats=2, max_repeats=2,
        budget_s=0.0, ref_min_repeats=2, ref_max_repeats=2),
    # The project's main job: the headline sizes (the targets' D = 2^22 and 10^7), at
    # least 2 timed calls each, under 2 minutes on 2 idle cores. dense_gaussian is not
    # timed here (D*d >= 1e9), only its compiled memory is reported.
    'quick': Config(
        preset='quick', log2_D=(20, 22), ds=(10**3, 10**5), operators=P.OPERATORS,
        dense_max_Dd=7e7, dense_memory_max_Dd=2e9, sketch_rows=(5,), sketch_cols=500_000,
        sketch_k=50_000, sketch_cached=False, sparsify_Ds=(10**7,),
        sparsify_ks=(10**3, 10**5), wht_log2_L=(16, 20, 22), wht_kron_blocks=(128,),
        min_repeats=2, max_repeats=9, budget_s=0.3, ref_min_repeats=1),
    # The whole grid: 6.5 minutes on 2 idle CPU cores, 24 minutes at load average 12.
    'full': Config(
        preset='full', log2_D=(16, 18, 20, 22, 24), ds=(10**3, 10**4, 10**5),
        operators=P.OPERATORS, dense_max_Dd=2e8, dense_memory_max_Dd=2e9,
        sketch_rows=(5,), sketch_cols=500_000, sketch_k=50_000, sketch_cached=True,
        sparsify_Ds=(2**20, 2**22, 10**7, 2**24), sparsify_ks=(10**3, 10**4, 10**5),
        wht_log2_L=tuple(range(16, 25)), wht_kron_blocks=(128, 32), min_repeats=3,
        max_repeats=15, budget_s=1.0),
}


def _ints(values, arg: str, lo: int, hi: int | None = None) -> tuple[int, ...]:
  out = []
  for v in values:
    try:
      iv = int(float(v)) if isinstance(v, str) else v
    except ValueError:
      iv = None
    if not fields.is_int(iv, lo, hi):
      rng = f'[{lo}, {hi}]' if hi is not None else f'>= {lo}'
      raise ValueError(f'{arg}: every value must be an integer in {rng}, got {v!r}')
    out.append(iv)
  if not out:
    raise ValueError(f'{arg}: needs at least one value, got none')
  return tuple(sorted(set(out)))


def make_config(preset: str, backend: str | None = None, *, large: bool = False,
                **overrides) -> Config:
  """A preset with overrides, validated for ``backend`` (default: JAX's default backend).

  Args:
    preset: one of ``PRESETS``.
    backend: 'cpu', 'gpu', 'tpu', ...; decides the largest D allowed (2^25 on CPU, else
      2^27).
    large: add D = 2^25 ... 2^27 to the operator grid (accelerators only).
    **overrides: ``Config`` fields to replace (``None`` values are ignored).
  Returns:
    A validated ``Config``.
  """
  if preset not in PRESETS:
    raise ValueError(f'preset: must be one of {tuple(PRESETS)}, got {preset!r}')
  backend = backend or jax.default_backend()
  max_log2 = MAX_LOG2_D.get(backend, ACCEL_MAX_LOG2_D)
  fields = {f.name for f in dataclasses.fields(Config)} - {'preset'}
  overrides = {k: v for k, v in overrides.items() if v is not None}
  for k in overrides:
    if k not in fields:
      raise ValueError(f'{k}: not a benchmark setting; known: {", ".join(sorted(fields))}')
  cfg = dataclasses.replace(PRESETS[preset], **overrides)
  if large:
    if max_log2 < max(LARGE_LOG2_D):
      raise ValueError(f'large: D up to 2^{max(LARGE_LOG2_D)} needs a GPU/TPU backend, '
                       f'got {backend!r} (at most 2^{max_log2})')
    cfg = dataclasses.replace(cfg, log2_D=cfg.log2_D + LARGE_LOG2_D)
  upd = dict(
      log2_D=_ints(cfg.log2_D, 'log2_D', 4, max_log2),
      ds=_ints(cfg.ds, 'ds', 1),
      sketch_rows=_ints(cfg.sketch_rows, 'sketch_rows', 1),
      sparsify_Ds=_ints(cfg.sparsify_Ds, 'sparsify_Ds', 16, 2**max_log2),
      sparsify_ks=_ints(cfg.sparsify_ks, 'sparsify_ks', 1),
      wht_log2_L=_ints(cfg.wht_log2_L, 'wht_log2_L', 1, max_log2),
      wht_kron_blocks=_ints(cfg.wht_kron_blocks, 'wht_kron_blocks', 2),
      operators=tuple(cfg.operators), sections=tuple(cfg.sections))
  for r in upd['sketch_rows']:
    if r % 2 == 0:
      raise ValueError(f'sketch_rows: count-sketch rows must be odd, got {r}')
  for b in upd['wht_kron_blocks']:
    if b & (b - 1):
      raise ValueError(f'wht_kron_blocks: must be powers of two, got {b}')
  for name in upd['operators']:
    if name not in P.OPERATORS:
      raise ValueError(f'operators: unknown operator {name!r}; known: {", ".join(P.OPERATORS)}')
  for s in upd['sections']:
    if s not in SECTIONS:
      raise ValueError(f'sections: unknown section {s!r}; known: {", ".join(SECTIONS)}')
  if not upd['sections']:
    raise ValueError(f'sections: needs at least one of {", ".join(SECTIONS)}, got none')
  for k in ('sketch_cols', 'sketch_k'):
    _ints([getattr(cfg, k)], k, 1)
  if not (cfg.dense_max_Dd >= 0 and cfg.dense_memory_max_Dd >= 0):
    raise ValueError(f'dense_max_Dd, dense_memory_max_Dd: must be >= 0, got '
                     f'{cfg.dense_max_Dd}, {cfg.dense_memory_max_Dd}')
  if not (1 <= cfg.min_repeats <= cfg.max_repeats and cfg.ref_max_repeats >= 1):
    raise ValueError(f'min_repeats, max_repeats: need 1 <= min_repeats <= max_repeats, got '
                     f'{cfg.min_repeats}, {cfg.max_repeats}')
  return dataclasses.replace(cfg, **upd)


class _Bench:
  """Runs the measurements of one ``Config`` and collects JSON-ready rows."""

  def __init__(self, cfg: Config, log: Callable[[str], None]):
    self.cfg = cfg
    self.log = log
    self.start = time.perf_counter()
    self.key = jax.random.PRNGKey(cfg.seed)
    self.refs: dict[int, dict[str, common.Timing]] = {}
    self.out: dict[str, list] = {s: [] for s in SECTIONS}
    self.skipped: list[dict[str, Any]] = []

  # Timing helpers -------------------------------------------------------------------

  def time_group(self, calls: dict[str, tuple[Callable, tuple]]) -> tuple[dict, dict]:
    """Compiles and times functions, interleaved (``common.time_interleaved``).

    Args:
      calls: name -> ``(fn, args)``; functions compared with each other go in one group,
        so that load drift on a shared machine hits them alike.
    Returns:
      ``(entries, compiled)``: name -> ``{median_s, min_s, n, first_s, cpu_median_s,
      cpu_min_s, compile_s, memory}`` (wall-clock seconds unless prefixed ``cpu_``: process
      CPU time, all threads), and name -> the compiled function.
    """
    cfg = self.cfg
    compiled, entries = {}, {}
    for name, (fn, args) in calls.items():
      compiled[name], compile_s = common.compile_fn(fn, *args)
      entries[name] = dict(compile_s=compile_s, memory=common.memory_stats(compiled[name]))
    fns = {name: (lambda c=compiled[name], a=args: c(*a)) for name, (_, args) in calls.items()}
    got = common.time_interleaved(fns, warmup=cfg.warmup, min_repeats=cfg.min_repeats,
                                  max_repeats=cfg.max_repeats,
                                  budget_s=cfg.budget_s * len(calls))
    for name, t in got.items():
      entries[name] = dict(t.wall.as_dict(), cpu_median_s=t.cpu.median_s,
                           cpu_min_s=t.cpu.min_s, **entries[name])
    return entries, compiled

  def time(self, fn, *args) -> tuple[dict, Any]:
    """One function: ``(entry, compiled)`` as in ``time_group``."""
    entries, compiled = self.time_group({'f': (fn, args)})
    return entries['f'], compiled['f']

  def vector(self, n: int, salt: int) -> jax.Array:
    """``f32[n]`` of i.i.d. N(0, 1), a fixed function of (seed, salt)."""
    return jax.block_until_ready(
        jax.random.normal(jax.random.fold_in(self.key, salt), (n,), jnp.float32))

  def references(self, n: int, x: jax.Array) -> None:
    """Times the references at length n; a second call pools its calls with the first.

    ``pass``: ``x * 2.0`` into a fresh output buffer (reads n floats, writes n new ones);
    ``inplace``: the same with the input donated, so XLA writes over it (no allocation);
    ``sort``: ``jnp.sort(x)``, timed once per length (the slow one).
    """
    cfg = self.cfg
    got = {}
    compiled, _ = common.compile_fn(lambda v: v * 2.0, x)
    got['pass'] = common.time_fn(compiled, x, warmup=cfg.warmup,
                                 min_repeats=cfg.ref_min_repeats,
                                 max_repeats=cfg.ref_max_repeats, budget_s=cfg.budget_s)
    compiled, _ = common.compile_fn(lambda v: v * 2.0, x, donate_argnums=0)
    got['inplace'] = common.time_fn(compiled, jnp.array(x, copy=True), warmup=cfg.warmup,
                                    min_repeats=cfg.ref_min_repeats,
                                    max_repeats=cfg.ref_max_repeats, budget_s=cfg.budget_s,
                                    carry=True)
    if n not in self.refs:
      compiled, _ = common.compile_fn(jnp.sort, x)
      got['sort'] = common.time_fn(compiled, x, warmup=cfg.warmup,
                                   min_repeats=cfg.ref_min_repeats,
                                   max_repeats=cfg.max_repeats, budget_s=cfg.budget_s)
    old = self.refs.get(n, {})
    self.refs[n] = {k: common.pooled(old[k], got[k]) if k in old and k in got
                    else got.get(k, old.get(k)) for k in REFERENCES}

  def progress(self, what: str, entry: dict) -> None:
    self.log(f'[{time.perf_counter() - self.start:6.1f} s] {what}: '
             f'{common.fmt_seconds(entry["median_s"])}')

  # Sections -------------------------------------------------------------------------

  def operators(self, D: int, x: jax.Array) -> None:
    """Times init, project and lift; init once per (operator, D), at its first d.

    The random state of every operator here has a size set by D alone (fastfood: the
    padded length L; sparse: D draws; dense_gaussian and identity: a key or nothing), so
    ``init`` is timed at the first d and only run once (untimed) for the others.
    """
    cfg = self.cfg
    for name in cfg.operators:
      ds = (D,) if name == 'identity' else cfg.ds
      init_d = None
      for d in ds:
        if d > D:
          self.skip('d > D', f'{name} D={D} d={d}')
          continue
        if name == 'dense_gaussian' and D * d > cfg.dense_max_Dd:
          self.skip(f'D*d > dense_max_Dd = {cfg.dense_max_Dd:.3g}', f'{name} D={D} d={d}')
          continue
        op = P.get(name, D=D, d=d)
        key = jax.random.fold_in(self.key, 1000 + d)
        if init_d is None:
          init, init_c = self.time(op.init, key)
          state = jax.block_until_ready(init_c(key))
          init_d = d
        else:
          init = None
          state = jax.block_until_ready(jax.jit(op.init)(key))
        z = self.vector(d, 2) if name != 'identity' else x
        pl, _ = self.time_group({'project': (op.project, (state, x)),
                                 'lift': (op.lift, (state, z))})
        proj, lift = pl['project'], pl['lift']
        row = dict(op=name, D=D, d=d, state_bytes=_nbytes(state), init=init,
                   init_timed_at_d=init_d, project=proj,
                   lift=lift, project_lift={
                       k: proj[k] + lift[k] for k in ('median_s', 'min_s', 'cpu_median_s')})
        self.out['operators'].append(row)
        self.log(f'[{time.perf_counter() - self.start:6.1f} s] {name} D={common.fmt_pow2(D)}'
                 f' d={d}: init {_t(init)}, project '
                 f'{common.fmt_seconds(proj["median_s"])}, lift '
                 f'{common.fmt_seconds(lift["median_s"])}')

  def dense_memory(self, D: int) -> None:
    for d in self.cfg.ds:
      if d > D or D * d > self.cfg.dense_memory_max_Dd:
        continue
      op = P.dense_gaussian(D, d)
      state = jax.eval_shape(op.init, jax.ShapeDtypeStruct((2,), jnp.uint32))
      mem = {}
      for fname, fn, n in (('project', op.project, D), ('lift', op.lift, d)):
        compiled, _ = common.compile_fn(fn, state, jax.ShapeDtypeStruct((n,), jnp.float32))
        mem[fname] = common.memory_stats(compiled)
      self.out['dense_memory'].append(dict(D=D, d=d, dense_bytes=D * d * 4, **mem))

  def sketch(self, D: int, x: jax.Array) -> None:
    cfg = self.cfg
    cols = min(cfg.sketch_cols, max(1, D // 4))
    k = min(cfg.sketch_k, max(1, D // 16))
    for rows in cfg.sketch_rows:
      for cached in ((False, True) if cfg.sketch_cached else (False,)):
        cs = P.count_sketch(D, rows, cols, cache_buckets=cached)
        key = jax.random.fold_in(self.key, 3000 + rows)
        init, init_c = self.time(cs.init, key)
        state = jax.block_until_ready(init_c(key))
        sk, sk_c = self.time(cs.sketch, state, x)
        table = jax.block_until_ready(sk_c(state, x))
        row = dict(D=D, rows=rows, cols=cols, k=k, cache_buckets=cached,
                   state_bytes=_nbytes(state), table_bytes=rows * cols * 4, init=init,
                   sketch=sk)
        unsketch, _ = self.time_group({
            f'unsketch_topk_{m}': (lambda s, t, m=m: cs.unsketch_topk(s, t, k, method=m),
                                   (state, table)) for m in sparsify.METHODS})
        row.update(unsketch)
        self.out['sketch'].append(row)
        self.log(f'[{time.perf_counter() - self.start:6.1f} s] count_sketch '
                 f'D={common.fmt_pow2(D)} {rows}x{cols} cached={cached}: sketch '
                 f'{common.fmt_seconds(sk["median_s"])}, unsketch_topk(k={k}) '
                 f'{common.fmt_seconds(row["unsketch_topk_exact"]["median_s"])} / '
                 f'{common.fmt_seconds(row["unsketch_topk_threshold"]["median_s"])}')

  def sparsify(self, D: int, x: jax.Array) -> None:
    key = jax.random.fold_in(self.key, 4000)
    for k in self.cfg.sparsify_ks:
      if k > D // 4:
        self.skip('k > D // 4', f'sparsify D={D} k={k}')
        continue
      fns = {f'top_k_{m}': (lambda v, m=m: P.top_k(v, k, method=m), (x,))
             for m in sparsify.METHODS}
      fns['random_k'] = (lambda kk, v: P.random_k(kk, v, k), (key, x))
      vals, idx = P.top_k(x, k)
      fns['densify'] = (lambda v, i: P.densify(v, i, D), (vals, idx))
      entries, _ = self.time_group(fns)
      for what, entry in entries.items():
        self.out['sparsify'].append(dict(D=D, k=k, fn=what, timing=entry))
        self.progress(f'{what} D={common.fmt_pow2(D)} k={k}', entry)

  def wht(self, L: int, x: jax.Array) -> None:
    variants = {('native', None): lambda v: hadamard.fwht(v, method='native'),
                ('butterfly', None): lambda v: hadamard.fwht(v, method='butterfly')}
    for b in self.cfg.wht_kron_blocks:
      variants[('kron', b)] = ((lambda v: hadamard.fwht(v, method='kron')) if b == 128 else
                               (lambda v, b=b: hadamard.fwht_kron(v, block=b)))
    entries, _ = self.time_group({vb: (fn, (x,)) for vb, fn in variants.items()})
    for (method, block), entry in entries.items():
      self.out['wht'].append(dict(L=L, method=method, block=block, timing=entry))
      label = method if block is None else f'{method}(block={block})'
      self.progress(f'fwht {label} L={common.fmt_pow2(L)}', entry)

  def skip(self, why: str, what: str) -> None:
    self.skipped.append({'what': what, 'why': why})

  # Driver ---------------------------------------------------------------------------

  def run(self) -> dict[str, Any]:
    cfg = self.cfg
    on = set(cfg.sections)
    op_Ds = {2**i for i in cfg.log2_D} if on & {'operators', 'dense_memory', 'sketch'} else set()
    sp_Ds = set(cfg.sparsify_Ds) if 'sparsify' in on else set()
    wht_Ls = {2**i for i in cfg.wht_log2_L} if 'wht' in on else set()
    for n in sorted(op_Ds | sp_Ds | wht_Ls):
      x = self.vector(n, 1)
      self.references(n, x)
      r = self.refs[n]
      self.log(f'[{time.perf_counter() - self.start:6.1f} s] references n={common.fmt_pow2(n)}'
               f': pass {common.fmt_seconds(r["pass"].median_s)}, inplace '
               f'{common.fmt_seconds(r["inplace"].median_s)}, sort '
               f'{common.fmt_seconds(r["sort"].median_s)}')
      if n in op_Ds:
        if 'dense_memory' in on:
          self.dense_memory(n)
        if 'operators' in on:
          self.operators(n, x)
        if 'sketch' in on:
          self.sketch(n, x)
      if n in sp_Ds:
        self.sparsify(n, x)
      if n in wht_Ls:
        self.wht(n, x)
      self.references(n, x)  # Again after the work at this length: pooled with the first.
      del x
    return self.result()

  def result(self) -> dict[str, Any]:
    refs = {n: {k: t.as_dict() for k, t in r.items()} for n, r in self.refs.items()}

    def ratios(entry: dict | None, n: int) -> None:
      if entry is None:
        return
      for k in REFERENCES:
        entry[f'x_{k}'] = entry['median_s'] / refs[n][k]['median_s']

    for row in self.out['operators']:
      for f in ('init', 'project', 'lift', 'project_lift'):
        ratios(row[f], row['D'])
    for row in self.out['sketch']:
      for f in ('init', 'sketch') + tuple(f'unsketch_topk_{m}' for m in sparsify.METHODS):
        ratios(row[f], row['D'])
    for row in self.out['sparsify']:
      ratios(row['timing'], row['D'])
    for row in self.out['wht']:
      ratios(row['timing'], row['L'])
    res = {
        'benchmark': 'projections',
        'schema': 1,
        'preset': self.cfg.preset,
        'config': dataclasses.asdict(self.cfg),
        'machine': common.machine_info(),
        'wall_s': time.perf_counter() - self.start,
        'references': [dict(n=n, **refs[n]) for n in sorted(refs)],
        **{s: self.out[s] for s in SECTIONS},
        'skipped': self.skipped,
    }
    res['wht_summary'] = wht_summary(res['wht'])
    res['targets'] = targets(res)
    return res


def _nbytes(tree) -> int:
  return int(sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(tree)))


def wht_summary(rows: Sequence[dict]) -> dict[str, Any]:
  """Per L, the fastest WHT variant; and which of ``fwht``'s methods wins most lengths."""
  per_L = {}
  for r in rows:
    label = r['method'] if r['block'] in (None, 128) else f'kron_block{r["block"]}'
    per_L.setdefault(r['L'], {})[label] = r['timing']['median_s']
  fastest = [dict(L=L, fastest=min(v, key=v.get), **{f'{k}_s': s for k, s in v.items()})
             for L, v in sorted(per_L.items())]
  methods = [m for m in hadamard.METHODS if any(m in f for f in per_L.values())]
  wins = {m: sum(1 for f in per_L.values() if all(k in f for k in methods) and
                 f[m] <= min(f[k] for k in methods)) for m in methods}
  faster = None if not any(wins.values()) else max(wins, key=wins.get)
  backend_default = hadamard.default_wht_method(jax.default_backend())
  return {'per_L': fastest, 'wins': wins, 'faster_method': faster,
          'default_method': backend_default,
          'default_agrees': None if faster is None else faster == backend_default}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
  """The reported targets (ratios to the ``x * 2.0`` pass; nothing is asserted)."""
  out = []

  def add(name, target, rows, field, note=''):
    vals = [r[field] for r in rows]
    best = min(vals, key=lambda e: e['x_pass']) if vals else None
    out.append(dict(name=name, target_x_pass=target,
                    x_pass=None if best is None else best['x_pass'],
                    x_inplace=None if best is None else best['x_inplace'],
                    median_s=None if best is None else best['median_s'],
                    met=None if best is None else best['x_pass'] <= target,
                    note=note if vals else 'not measured in this run'))

  ff = [r for r in res['operators'] if r['op'] == 'fastfood' and r['D'] == 2**22]
  add('fastfood project+lift, D=2^22', 24, ff, 'project_lift',
      'fastest over the d measured (cost is independent of d)')
  cs = [r for r in res['sketch'] if r['D'] == 2**22 and r['rows'] == 5]
  add('count-sketch sketch, 5 rows, D=2^22', 10, cs, 'sketch',
      'fastest of hashes recomputed / cached')
  for m in sparsify.METHODS:
    tk = [r for r in res['sparsify'] if r['D'] == 10**7 and r['k'] == 10**5 and
          r['fn'] == f'top_k_{m}']
    add(f'top_k {m}, D=10^7, k=10^5', 10, tk, 'timing')
  return out


# Rendering --------------------------------------------------------------------------

def _t(entry: dict | None) -> str:
  return '-' if entry is None else common.fmt_seconds(entry['median_s'])


def _r(entry: dict | None, ref: str = 'pass') -> str:
  return '-' if entry is None else common.fmt_ratio(entry.get(f'x_{ref}'))


def render(res: dict[str, Any]) -> str:
  """Markdown tables of one result (readable as plain text)."""
  P2 = common.fmt_pow2
  parts = []
  m = res['machine']
  load = m.get('load_average')
  parts.append(f'**{m["backend"]}**, preset `{res["preset"]}`: {common.machine_line(m)}; '
               f'load average at the end {load}; run took {res["wall_s"]:.0f} s.')
  parts.append('References (median; `pass` = `x * 2.0` jitted, `inplace` = the same with '
               'its input donated, `sort` = `jnp.sort(x)`):\n\n' + common.markdown_table(
                   ['n', 'pass', 'inplace', 'sort', 'pass / inplace', 'sort / pass'],
                   [[P2(r['n']), _t(r['pass']), _t(r['inplace']), _t(r['sort']),
                     common.fmt_ratio(r['pass']['median_s'] / r['inplace']['median_s']),
                     common.fmt_ratio(r['sort']['median_s'] / r['pass']['median_s'])]
                    for r in res['references']]))
  if res['targets']:
    parts.append('Targets (ratio to the `x * 2.0` pass; reported, not asserted):\n\n' +
                 common.markdown_table(
                     ['target', 'time', 'x pass', 'x inplace', 'goal', 'met', 'note'],
                     [[t['name'], common.fmt_seconds(t['median_s']),
                       common.fmt_ratio(t['x_pass']), common.fmt_ratio(t['x_inplace']),
                       f'<= {t["target_x_pass"]}x',
                       {None: '-', True: 'yes', False: 'no'}[t['met']], t['note']]
                      for t in res['targets']], align='lrrrrll'))
  if res['operators']:
    rows = []
    for r in res['operators']:
      same = f'(d={r["init_timed_at_d"]})'
      rows.append([r['op'], P2(r['D']), r['d'], _t(r['init']) if r['init'] else same,
                   _r(r['init']) if r['init'] else '',
                   _t(r['project']), _r(r['project']), _r(r['project'], 'sort'),
                   _t(r['lift']), _r(r['lift']), _r(r['lift'], 'sort'),
                   _r(r['project_lift']), _r(r['project_lift'], 'inplace'),
                   common.fmt_bytes(r['state_bytes']),
                   common.fmt_bytes(max(r['project']['memory']['temp'],
                                        r['lift']['memory']['temp']))])
    parts.append('Operators (`x pass` / `x sort`: ratio to the references at length D; '
                 '`temp`: XLA scratch per call, the larger of project and lift):\n\n' +
                 common.markdown_table(
                     ['op', 'D', 'd', 'init', 'x pass', 'project', 'x pass', 'x sort',
                      'lift', 'x pass', 'x sort', 'p+l x pass', 'p+l x inplace', 'state',
                      'temp'], rows, align='lrr' + 'r' * 12))
  if res['dense_memory']:
    def foot(mem):  # What one call holds: arguments + outputs + scratch (aliases once).
      return mem['argument'] + mem['output'] + mem['temp'] - mem['alias']
    rows = [[P2(r['D']), r['d'], common.fmt_bytes(r['dense_bytes']),
             common.fmt_bytes(r['project']['temp']), common.fmt_bytes(foot(r['project'])),
             common.fmt_bytes(r['lift']['temp']), common.fmt_bytes(foot(r['lift'])),
             common.fmt_ratio(max(foot(r['project']), foot(r['lift'])) / r['dense_bytes'])]
            for r in res['dense_memory']]
    parts.append('dense_gaussian compiled memory (`memory_analysis()` of the compiled '
                 '`project` / `lift`, nothing run; `total` = arguments + output + temp) next '
                 'to a stored D x d float32 matrix:\n\n' + common.markdown_table(
                     ['D', 'd', 'D*d*4', 'project temp', 'project total', 'lift temp',
                      'lift total', 'max total / D*d*4'], rows))
  if res['sketch']:
    rows = [[P2(r['D']), f'{r["rows"]}x{r["cols"]}', r['k'],
             'cached' if r['cache_buckets'] else 'hashed', _t(r['init']),
             _t(r['sketch']), _r(r['sketch']), _t(r['unsketch_topk_exact']),
             _r(r['unsketch_topk_exact']), _t(r['unsketch_topk_threshold']),
             _r(r['unsketch_topk_threshold']), common.fmt_bytes(r['state_bytes'])]
            for r in res['sketch']]
    parts.append('Count sketch (`unsketch_topk` = estimate all D coordinates + top-k, exact '
                 '/ threshold):\n\n' + common.markdown_table(
                     ['D', 'rows x cols', 'k', 'hashes', 'init', 'sketch', 'x pass',
                      'unsketch exact', 'x pass', 'unsketch thresh.', 'x pass', 'state'],
                     rows, align='lrrl' + 'r' * 8))
  if res['sparsify']:
    fns = list(dict.fromkeys(r['fn'] for r in res['sparsify']))
    grid = {}
    for r in res['sparsify']:
      grid.setdefault((r['D'], r['k']), {})[r['fn']] = r['timing']
    rows = []
    for (D, k), v in grid.items():
      row = [P2(D), k]
      for f in fns:
        row += [_t(v.get(f)), _r(v.get(f))]
      rows.append(row)
    head = ['D', 'k']
    for f in fns:
      head += [f, 'x pass']
    parts.append('Sparsifiers:\n\n' + common.markdown_table(head, rows))
  if res['wht']:
    grid = {}
    for r in res['wht']:
      label = r['method'] if r['block'] is None else f'kron b={r["block"]}'
      grid.setdefault(r['L'], {})[label] = r['timing']
    labels = list(dict.fromkeys(lb for v in grid.values() for lb in v))
    fastest = {s['L']: s['fastest'] for s in res['wht_summary']['per_L']}
    rows = []
    for L, v in grid.items():
      row = [P2(L)]
      for lb in labels:
        row += [_t(v.get(lb)), _r(v.get(lb))]
      rows.append(row + [fastest[L]])
    head = ['L']
    for lb in labels:
      head += [lb, 'x pass']
    s = res['wht_summary']
    parts.append(
        f'Walsh-Hadamard (`fwht`; kron b=128 is `method="kron"`). Fastest `fwht` method '
        f'here: **{s["faster_method"]}** (fastest at '
        + ', '.join(f'{k}: {v}' for k, v in s['wins'].items()) +
        f' of {len(grid)} lengths); current default for '
        f'`{m["backend"]}`: `{s["default_method"]}`.\n\n' +
        common.markdown_table(head + ['fastest'], rows, align='l' + 'r' * (len(head) - 1) + 'l'))
  if res['skipped']:
    why = {}
    for s in res['skipped']:
      why.setdefault(s['why'], []).append(s['what'])
    parts.append('Not timed: ' + '; '.join(f'{len(v)} rows where {w} (e.g. {v[0]})'
                                           for w, v in why.items()) + '.')
  return '\n\n'.join(parts)


HOW_TO_READ = """\
How to read this: every time is the median of repeated calls of a compiled function, after
a first untimed call, each ending in `block_until_ready` (compilation is timed apart, in the
JSON). `x pass` divides a time by one memory-bound pass over the same number of floats
(`x * 2.0`, jitted, into a new output buffer) and `x sort` by a `jnp.sort` of them, both
timed in the same run at the same length; a ratio near 1 is one trip through memory.
`x inplace` (JSON and targets) divides by the same pass with its input donated: on CPU a
new buffer of >= 32 MiB (D >= 2^23 floats) is fresh memory from the OS whose page faults
can cost far more than the arithmetic, so where `pass / inplace` is large, `x pass`
flatters and `x inplace` is the strict figure (any operation returning f32[D] pays that
allocation too). `init` draws an operator's random state: once per subspace, so once per
round for the time-varying method; it is timed once per operator and D (its cost does not
depend on d). dense_gaussian redraws its D*d normals on every call, so it is timed only
where D*d <= 2e8 (`--dense_max_Dd` to change); its compiled memory (`memory_analysis()`,
nothing run) shows it never holds the D x d matrix. Targets are reported, never asserted.
Inputs are N(0, 1) float32 vectors.

Commands (from the repository root):

    python -m benchmarks.projections --preset=quick   # ~1 min on 2 idle cores, prints tables
    python -m benchmarks.projections --preset=full    # this table: ~7 min idle, 25 loaded
    python -m benchmarks.projections --preset=full --large   # D up to 2^27 on GPU/TPU
    python -m benchmarks.projections --render_only    # rebuild this section from the JSON
"""


def render_section(results: Sequence[dict[str, Any]]) -> str:
  """The README section: how to read it, then one block per result."""
  out = ['## Projections (`python -m benchmarks.projections`)', HOW_TO_READ]
  for res in results:
    out.append(f'### {res["machine"]["backend"]}\n')
    shared = res.get('shared_machine_note')
    if shared:
      out.append(shared + '\n')
    out.append(render(res))
  return '\n'.join(out)


def default_json_path(preset: str, backend: str) -> str:
  return common.results_path('projections', backend, preset)


def saved_full_results() -> list[dict[str, Any]]:
  """Every ``results/projections_<backend>.json`` of the full preset, by backend name."""
  return common.load_full_results('projections')


def run(cfg: Config, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
  """Runs the benchmark described by ``cfg``; returns the JSON-ready result."""
  load = common.load_average()
  res = _Bench(cfg, log).run()
  res['load_average_start'] = load
  cores = res['machine']['cpu_cores_usable'] or 1
  busy = max((load or [0])[0], (res['machine']['load_average'] or [0])[0])
  if res['machine']['backend'] == 'cpu' and busy > 0.5 * cores:
    res['shared_machine_note'] = (
        f'Timings taken on a shared {cores}-core machine while other jobs ran (1-minute load '
        f'average {load[0] if load else "?"} at the start, '
        f'{res["machine"]["load_average"][0]} at the end): expect noise of tens of percent, '
        f'more at D >= 2^22.')
  return res


def define_flags() -> None:
  """Defines the command-line flags.

  Only the script entry point calls this, so importing the module (from tests, or next to
  another benchmark that has its own ``--preset``) defines no absl flags.
  """
  flags.DEFINE_string('preset', 'quick', f'One of {tuple(PRESETS)}.')
  flags.DEFINE_list('log2_D', None, 'Override: operator sizes D = 2^i.')
  flags.DEFINE_list('ds', None, 'Override: subspace dimensions d.')
  flags.DEFINE_list('operators', None, f'Override: subset of {P.OPERATORS}.')
  flags.DEFINE_list('sections', None, f'Override: subset of {SECTIONS}.')
  flags.DEFINE_list('wht_log2_L', None, 'Override: Walsh-Hadamard lengths L = 2^i (wht section).')
  flags.DEFINE_float('dense_max_Dd', None, 'Override: time dense_gaussian only where D*d <= '
                     'this.')
  flags.DEFINE_bool('large', False, 'Add D = 2^25..2^27 (GPU/TPU backends only).')
  flags.DEFINE_string('out_json', None, 'JSON path (default: '
                      'benchmarks/results/projections_<backend>[_<preset>].json).')
  flags.DEFINE_string('readme', None, 'Markdown file whose "projections" section is '
                      'rewritten (default: benchmarks/README.md for --preset=full, none '
                      'otherwise; "-" for none).')
  flags.DEFINE_bool('render_only', False, 'Only rebuild the README section from the saved '
                    'full-preset JSON files.')


def main(argv: Sequence[str]) -> None:
  cli.quiet_logs()
  F = flags.FLAGS
  readme = F.readme
  if F.render_only:
    results = saved_full_results()
    if not results:
      raise ValueError(f'render_only: no full-preset projections_*.json in {common.RESULTS_DIR}')
    common.update_readme_section(README_SECTION, render_section(results),
                                 common.README if readme in (None, '') else readme)
    return
  backend = jax.default_backend()
  try:
    cfg = make_config(F.preset, backend, large=F.large, log2_D=F.log2_D, ds=F.ds,
                      operators=F.operators, sections=F.sections, dense_max_Dd=F.dense_max_Dd,
                      wht_log2_L=F.wht_log2_L)
  except ValueError as e:
    cli.refuse(e)
  log = lambda s: print(s, file=sys.stderr, flush=True)
  res = run(cfg, log)
  out_json = F.out_json or default_json_path(cfg.preset, backend)
  common.write_json(out_json, res)
  print(render(res))
  print(f'\nwrote {out_json}')
  if readme is None and cfg.preset == 'full':
    readme = common.README
  if readme and readme != '-':
    results = [res]
    if os.path.abspath(out_json) == os.path.abspath(default_json_path('full', backend)):
      results = saved_full_results()  # Includes this run's file and other backends'.
    common.update_readme_section(README_SECTION, render_section(results), readme)
    print(f'updated the "{README_SECTION}" section of {readme}')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(None))
