"""Sparsifiers: top-k by magnitude, uniform random-k, and back to dense.

A sparsified vector travels as ``values f[k]`` plus ``indices i32[k]``; ``densify`` scatters
them back into ``f[D]``. All functions are pure, jittable and vmappable (``k`` and ``D`` are
static Python ints).

``top_k(x, k, method='exact')`` is ``jax.lax.top_k`` on ``|x|`` (descending magnitude).
``method='threshold'`` finds the k-th largest magnitude ``t`` with counting passes instead
of a sort and returns the entries in ascending index order:

1. keys ``u = bits(|x|)`` as uint32 (for non-negative floats the bit patterns order like the
   values; NaN above inf); a strided sample of ~2^14 keys is sorted and two of its order
   statistics around the expected rank guess a bracket ``[lo, hi)`` for ``t``, checked by
   one counting pass (``count(u >= lo) >= k > count(u >= hi)``; a side that fails falls
   back to the whole key range);
2. while more than ``cap`` (about ``max(k, 2 E[count in bracket])``) keys lie in
   ``[lo, hi)``, the bracket shrinks 4x per counting pass (three thresholds counted in one
   fused pass: at most 16 passes, none when the sample's bracket holds);
3. the candidates -- every key ``>= hi`` and the first ``cap`` keys in ``[lo, hi)`` by index
   (all of them, unless the bracket collapsed onto one tied value) -- are compacted in
   index order (bit-packed masks, popcount prefix sums, binary search: no O(D) cumsum or
   scatter); on those ``k + cap`` candidates the same narrowing finds ``t`` exactly, and
   ``{u > t}`` plus the lowest-index ties ``u == t`` make exactly ``k`` entries.

Ties are broken by the lower index in both methods, so they select the same entries.
Plain integer ``sum`` reductions are avoided (see ``count_ge``). Measured costs of both
methods: ``benchmarks/README.md`` ("Projections", "Measured choices in the code").
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from projections import base

METHODS = ('exact', 'threshold')
THRESHOLD_ABOVE = 2**18  # D above which method='auto' (top_k, random_k) selects by counting passes
_SAMPLE = 2**14  # Target size of the strided sample that brackets the threshold.
_TOP = 0x80000000  # Above every key: keys are magnitudes' bits, < 2^31.
_FLOATS = ('float32', 'bfloat16', 'float16')


def _check_x(x, arg: str, where: str) -> jax.Array:
  x = jnp.asarray(x)
  if x.dtype.name not in _FLOATS:
    raise ValueError(f'{arg}: {where} needs dtype in {_FLOATS}, got {x.dtype.name}')
  if x.ndim != 1:
    raise ValueError(f'{arg}: {where} needs a vector f[D], got shape {x.shape} '
                     f'(vmap for a batch)')
  return x


def magnitude_keys(x: jax.Array) -> jax.Array:
  """``x: f[D] -> u32[D]``, the bit patterns of ``|x|`` (monotone in ``|x|``, NaN on top)."""
  a = jnp.abs(x)
  if x.dtype.itemsize == 4:
    return lax.bitcast_convert_type(a, jnp.uint32)
  return lax.bitcast_convert_type(a, jnp.uint16).astype(jnp.uint32)


def count_ge(u: jax.Array, ts) -> tuple[jax.Array, ...]:
  """``count(u >= t)`` for each threshold in ``ts`` (two or more), all in one fused pass.

  A variadic reduce rather than a plain integer ``sum`` (which XLA:CPU runs much slower:
  ``benchmarks/README.md``, "Measured choices in the code").
  """
  ops = tuple((u >= t).astype(jnp.int32) for t in ts)
  zeros = tuple(jnp.int32(0) for _ in ts)
  return lax.reduce(ops, zeros, lambda a, b: tuple(x + y for x, y in zip(a, b)),
                    tuple(range(u.ndim)))


def _narrow(counts, lo, hi, c_lo, c_hi, k: int, go_on):
  """Shrinks ``[lo, hi)`` keeping ``counts(lo) >= k > counts(hi)``, ~4x per counting pass.

  Runs while ``hi > lo + 1`` and ``go_on(c_lo, c_hi)``; ``counts(t1, t2, t3)`` counts keys
  at or above three thresholds in one pass. Returns the final ``(lo, hi, c_lo, c_hi)``.
  """
  def cond(s):
    lo, hi, c_lo, c_hi = s
    return go_on(c_lo, c_hi) & (hi - lo > 1)

  def body(s):
    lo, hi, c_lo, c_hi = s
    q, w = (hi - lo) // 4, (hi - lo) // 2
    ts = (lo + q, lo + w, hi - q)  # Ascending, inside [lo, hi]; the middle one strictly.
    cs = counts(*ts)
    for t, c in zip(ts, cs):  # Ascending t: the last one still >= k is the new lo.
      lo, c_lo = jnp.where(c >= k, t, lo), jnp.where(c >= k, c, c_lo)
    for t, c in zip(ts[::-1], cs[::-1]):  # Descending t: the last one < k is the new hi.
      hi, c_hi = jnp.where(c < k, t, hi), jnp.where(c < k, c, c_hi)
    return lo, hi, c_lo, c_hi

  return lax.while_loop(cond, body, (lo, hi, c_lo, c_hi))


class Packed(NamedTuple):
  """A bool[n] mask packed 32 to a word: ``words: u32[ceil(n/32)]``, their popcounts
  ``pc: i32[...]`` and inclusive prefix sums ``incl: i32[...]``."""
  words: jax.Array
  pc: jax.Array
  incl: jax.Array


def pack(mask: jax.Array) -> Packed:
  """Packs ``mask: bool[n]`` into words (one fused pass) and prefix-sums their popcounts."""
  n = mask.shape[0]
  nw = -(-n // 32)
  bits = jnp.pad(mask, (0, nw * 32 - n)).reshape(nw, 32).astype(jnp.uint32)
  words = jnp.sum(bits << jnp.arange(32, dtype=jnp.uint32), axis=1, dtype=jnp.uint32)
  pc = lax.population_count(words).astype(jnp.int32)
  return Packed(words, pc, jnp.cumsum(pc, dtype=jnp.int32))


def select(p: Packed, j: jax.Array, fill: int) -> jax.Array:
  """Index of the ``j``-th (0-based) True entry of a packed mask, ``fill`` past the count.

  ``j: i32[...]``; a binary search over the words' prefix sums, then a 5-step
  select-in-word by popcounts of halves.
  """
  nw = p.words.shape[0]
  w = jnp.minimum(jnp.searchsorted(p.incl, j, side='right').astype(jnp.int32), nw - 1)
  r = j - (p.incl[w] - p.pc[w])  # 0-based rank of the wanted bit inside word w
  v = p.words[w]
  pos = jnp.zeros(j.shape, jnp.uint32)
  for width in (16, 8, 4, 2, 1):
    c = lax.population_count((v >> pos) & jnp.uint32((1 << width) - 1)).astype(jnp.int32)
    up = r >= c
    r, pos = jnp.where(up, r - c, r), jnp.where(up, pos + width, pos)
  return jnp.where(j < p.incl[-1], w * 32 + pos.astype(jnp.int32), fill)


def compact(mask: jax.Array, size: int, fill: int) -> jax.Array:
  """Indices ``i32[size]`` of the first ``size`` True entries of ``mask: bool[n]``.

  Ascending, padded with ``fill`` past the number of True entries. Costs one pass over the
  mask plus ``O(size log n)``: no ``O(n)`` cumsum or scatter (``pack`` + ``select``).
  """
  return select(pack(mask), jnp.arange(size, dtype=jnp.int32), fill)


def top_keys(u: jax.Array, k: int) -> jax.Array:
  """Indices ``i32[k]`` of the ``k`` largest keys of ``u: u32[D]`` (keys ``< 2^31``).

  Ties go to the lower index; indices come in ascending order. See the module docstring.
  """
  D = u.shape[0]
  if k == D:
    return jnp.arange(D, dtype=jnp.int32)
  stride = max(1, D // _SAMPLE)
  sample = jnp.sort(u[::stride])
  m = sample.shape[0]
  r = k * m / D  # Expected rank of the threshold in the sample.
  margin = 4.0 * math.sqrt(r) + 4.0
  r_hi, r_lo = math.ceil(r + margin), math.floor(r - margin)
  # Room for the keys in [lo, hi): twice the expected count, and >= k for a tied threshold.
  cap = min(D, max(k, 2 * math.ceil((min(r_hi, m) - max(r_lo, 0)) * D / m)))
  top = jnp.uint32(_TOP)
  lo_g = sample[m - r_hi] if r_hi <= m else jnp.uint32(0)
  hi_g = sample[m - r_lo] if r_lo >= 1 else top

  c_lo_g, c_hi_g = count_ge(u, (lo_g, hi_g))
  lo = jnp.where(c_hi_g >= k, hi_g, jnp.where(c_lo_g >= k, lo_g, jnp.uint32(0)))
  c_lo = jnp.where(c_hi_g >= k, c_hi_g, jnp.where(c_lo_g >= k, c_lo_g, D))
  hi = jnp.where(c_lo_g < k, lo_g, jnp.where(c_hi_g < k, hi_g, top))
  c_hi = jnp.where(c_lo_g < k, c_lo_g, jnp.where(c_hi_g < k, c_hi_g, 0))
  lo, hi, c_lo, c_hi = _narrow(lambda *ts: count_ge(u, ts), lo, hi, c_lo, c_hi, k,
                               lambda c_lo, c_hi: c_lo - c_hi > cap)
  # Candidates: the c_hi < k keys >= hi and the first cap keys in [lo, hi) by index (all
  # of them unless the bracket collapsed onto one tied value, hi = lo + 1), in index order.
  cut = select(pack((u >= lo) & (u < hi)), jnp.int32(cap - 1), D)
  cand_mask = (u >= hi) | ((u >= lo) & (jnp.arange(D, dtype=jnp.int32) <= cut))
  cand = compact(cand_mask, k + cap, D)
  v = jnp.where(cand < D, u[jnp.minimum(cand, D - 1)] + 1, 0)  # keys + 1; 0 marks empty.
  # The exact k-th largest key t in [lo, hi), by the same narrowing on the candidates
  # (c_lo = k stands in for the unknown count(lo) >= k).
  t, _, _, _ = _narrow(lambda *ts: count_ge(v, tuple(t + 1 for t in ts)), lo, hi,
                       jnp.int32(k), c_hi, k, lambda c_lo, c_hi: True)
  above = v > t + 1
  tie = v == t + 1
  need = k - jnp.sum(above, dtype=jnp.int32)
  take = above | (tie & (jnp.cumsum(tie, dtype=jnp.int32) <= need))
  return cand[compact(take, k, k + cap)]


def _resolve(method: str, D: int) -> str:
  """'auto' -> 'exact' up to D = THRESHOLD_ABOVE, 'threshold' above; any other name unchanged."""
  if method == 'auto':
    return 'threshold' if D > THRESHOLD_ABOVE else 'exact'
  return method


def top_k(x: jax.Array, k: int, method: str = 'exact') -> tuple[jax.Array, jax.Array]:
  """The ``k`` entries of ``x: f[D]`` largest in magnitude: signed ``values f[k]``, ``i32[k]``.

  ``method='exact'`` (``lax.top_k`` on ``|x|``) returns them by descending magnitude;
  ``'threshold'`` (counting passes, no sort; see the module docstring) in ascending index
  order; ``'auto'``: exact up to ``D = THRESHOLD_ABOVE``, threshold above. Both break ties by
  lower index and give the same multiset of magnitudes.
  """
  x = _check_x(x, 'x', 'top_k')
  D = x.shape[0]
  k = base.check_int(k, 'k', 1, D, where=f' (D = {D}) for top_k')
  method = _resolve(method, D)
  if method == 'exact':
    _, idx = lax.top_k(jnp.abs(x), k)
  elif method == 'threshold':
    idx = top_keys(magnitude_keys(x), k)
  else:
    raise ValueError(f"method: top_k knows {('auto',) + METHODS}, got {method!r}")
  return x[idx], idx


def random_k(key: jax.Array, x: jax.Array, k: int, *, unbiased: bool = False,
             method: str = 'auto') -> tuple[jax.Array, jax.Array]:
  """``k`` coordinates of ``x: f[D]`` uniformly without replacement: ``(f[k], i32[k])``.

  Every ``k``-subset is equally likely (the ``k`` largest of ``D`` random 31-bit keys, ties
  to the lower index -- a bias below ``k / 2^31``); indices come in ascending order and are
  a pure function of ``key``. Values are ``x`` at those indices, unscaled by default, so
  ``densify`` gives a biased (shrunk) estimate of ``x``; with ``unbiased=True`` they are
  scaled by ``D / k`` so that ``E[densify(random_k(key, x, k))] = x``.
  ``method`` selects the k largest keys: ``'exact'`` (``lax.top_k``, then the indices sorted),
  ``'threshold'`` (``top_keys``: counting passes, no sort), or ``'auto'``: exact up to
  ``D = THRESHOLD_ABOVE`` (there it compiles in a fraction of the time), threshold above. Both
  break ties by the lower index, so every method returns the same indices.
  """
  x = _check_x(x, 'x', 'random_k')
  D = x.shape[0]
  k = base.check_int(k, 'k', 1, D, where=f' (D = {D}) for random_k')
  method = _resolve(method, D)
  keys = jax.random.bits(key, (D,), jnp.uint32) >> 1
  if method == 'exact':
    idx = jnp.sort(lax.top_k(keys, k)[1])
  elif method == 'threshold':
    idx = top_keys(keys, k)
  else:
    raise ValueError(f"method: random_k knows {('auto',) + METHODS}, got {method!r}")
  values = x[idx]
  if unbiased:
    values = (values.astype(base.compute_dtype(x.dtype)) * (D / k)).astype(x.dtype)
  return values, idx


def densify(values: jax.Array, indices: jax.Array, D: int) -> jax.Array:
  """Scatters ``values: f[k]`` at ``indices: int[k]`` into zeros ``f[D]``.

  Duplicate indices add; indices outside ``[0, D)`` (negative included) are dropped.
  """
  D = base.check_int(D, 'D', 1, where=' for densify')
  values = _check_x(values, 'values', 'densify')
  indices = jnp.asarray(indices)
  if not jnp.issubdtype(indices.dtype, jnp.integer):
    raise ValueError(f'indices: densify needs an integer dtype, got {indices.dtype.name}')
  if indices.shape != values.shape:
    raise ValueError(f'indices: densify needs the shape of values {values.shape}, '
                     f'got {indices.shape}')
  return jax.ops.segment_sum(values, indices, num_segments=D)
