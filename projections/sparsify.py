"""Sparsifiers: top-k by magnitude, uniform random-k, and back to dense.

A sparsified vector travels as ``values f[k]`` plus ``indices i32[k]``; ``densify`` scatters
them back into ``f[D]``. All functions are pure, jittable and vmappable (``k`` and ``D`` are
static Python ints).

``top_k(x, k, method='exact')`` is ``jax.lax.top_k`` on ``|x|`` (descending magnitude).
``method='threshold'`` finds the k-th largest magnitude ``t`` without sorting and returns the
entries in ascending index order:

1. keys ``u = bits(|x|)`` as uint32 (for non-negative floats the bit patterns order like the
   values); a strided sample of ~2^16 keys is sorted and two sample order statistics around
   the expected rank give a guess ``[lo, hi)`` for ``t``, checked by one counting pass
   (``count(u >= lo) >= k > count(u >= hi)``; a failed side falls back to the full range);
2. while more than ``cap ~ 2k`` keys lie at or above ``lo``, bisection on the key's bits
   (one counting pass each; at most 31, none when the sample bracket holds);
3. one compaction pass (cumsum + scatter) moves the ``<= cap`` candidates ``u >= lo`` (if
   the bracket collapsed onto a tied value: all ``u >= hi`` and the first ties by index)
   into a buffer, where bisection finds ``t`` exactly and a second cumsum + scatter picks
   ``{u > t}`` plus the lowest-index entries with ``u == t`` -- exactly ``k``, ties broken
   by index, the same multiset of magnitudes as ``lax.top_k``.
"""
import math

import jax
import jax.numpy as jnp
from jax import lax

from projections import base

METHODS = ('exact', 'threshold')
_SAMPLE = 2**16  # Target size of the strided sample that brackets the threshold.
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


def _count_ge(u: jax.Array, t: jax.Array) -> jax.Array:
  return jnp.sum(u >= t, dtype=jnp.int32)


def _bisect(count, lo, hi, c_lo, c_hi, k: int, stop_count: int):
  """Narrows ``count(lo) >= k > count(hi)`` until ``hi = lo + 1`` or ``count(lo) <= stop``."""
  def cond(s):
    lo, hi, c_lo, _ = s
    return (c_lo > stop_count) & (hi - lo > 1)

  def body(s):
    lo, hi, c_lo, c_hi = s
    mid = lo + (hi - lo) // 2
    c = count(mid)
    up = c >= k
    return (jnp.where(up, mid, lo), jnp.where(up, hi, mid),
            jnp.where(up, c, c_lo), jnp.where(up, c_hi, c))

  return lax.while_loop(cond, body, (lo, hi, c_lo, c_hi))


def _compact(mask: jax.Array, size: int, fill: int) -> jax.Array:
  """Indices of the True entries of ``mask: bool[n]`` (at most ``size``), ascending, padded."""
  pos = jnp.cumsum(mask, dtype=jnp.int32) - 1
  pos = jnp.where(mask, pos, size)
  return jnp.full((size,), fill, jnp.int32).at[pos].set(
      jnp.arange(mask.shape[0], dtype=jnp.int32), mode='drop')


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
  cap = min(D, 2 * max(k, math.ceil(min(r_hi, m) * D / m)))
  top = jnp.uint32(_TOP)
  lo_g = sample[m - r_hi] if r_hi <= m else jnp.uint32(0)
  hi_g = sample[m - r_lo] if r_lo >= 1 else top

  c_lo_g, c_hi_g = _count_ge(u, lo_g), _count_ge(u, hi_g)
  lo = jnp.where(c_hi_g >= k, hi_g, jnp.where(c_lo_g >= k, lo_g, jnp.uint32(0)))
  c_lo = jnp.where(c_hi_g >= k, c_hi_g, jnp.where(c_lo_g >= k, c_lo_g, D))
  hi = jnp.where(c_lo_g < k, lo_g, jnp.where(c_hi_g < k, hi_g, top))
  c_hi = jnp.where(c_lo_g < k, c_lo_g, jnp.where(c_hi_g < k, c_hi_g, 0))
  lo, hi, c_lo, c_hi = _bisect(lambda t: _count_ge(u, t), lo, hi, c_lo, c_hi, k, cap)

  def all_above_lo():
    return u >= lo

  def above_hi_and_first_ties():  # hi == lo + 1 here: the range [lo, hi) is one value.
    above = u >= hi
    tie = (u >= lo) & ~above
    return above | (tie & (jnp.cumsum(tie, dtype=jnp.int32) <= cap - c_hi))

  keep = lax.cond(c_lo <= cap, all_above_lo, above_hi_and_first_ties)
  buf_idx = _compact(keep, cap, D)  # i32[cap]; holds >= k entries, all >= lo.
  buf_v = jnp.where(buf_idx < D, u[jnp.minimum(buf_idx, D - 1)] + 1, 0)  # 0 marks empty.
  # Bisection for the exact k-th largest key t in [lo, hi), on the buffer (keys + 1).
  count_b = lambda t: _count_ge(buf_v, t + 1)
  t, _, _, _ = _bisect(count_b, lo, hi, jnp.int32(k), c_hi, k, 0)
  above = buf_v > t + 1
  tie = buf_v == t + 1
  need = k - jnp.sum(above, dtype=jnp.int32)
  take = above | (tie & (jnp.cumsum(tie, dtype=jnp.int32) <= need))
  sel = _compact(take, k, D)
  return buf_idx[sel]


def top_k(x: jax.Array, k: int, method: str = 'exact') -> tuple[jax.Array, jax.Array]:
  """The ``k`` entries of ``x: f[D]`` largest in magnitude: signed ``values f[k]``, ``i32[k]``.

  ``method='exact'`` (``lax.top_k`` on ``|x|``) returns them by descending magnitude;
  ``'threshold'`` (counting passes, no sort; see the module docstring) in ascending index
  order. Both break ties by lower index and give the same multiset of magnitudes.
  """
  x = _check_x(x, 'x', 'top_k')
  D = x.shape[0]
  k = base.check_int(k, 'k', 1, D, where=f' (D = {D}) for top_k')
  if method == 'exact':
    _, idx = lax.top_k(jnp.abs(x), k)
  elif method == 'threshold':
    idx = top_keys(magnitude_keys(x), k)
  else:
    raise ValueError(f'method: top_k knows {METHODS}, got {method!r}')
  return x[idx], idx


def random_k(key: jax.Array, x: jax.Array, k: int, *,
             unbiased: bool = False) -> tuple[jax.Array, jax.Array]:
  """``k`` coordinates of ``x: f[D]`` uniformly without replacement: ``(f[k], i32[k])``.

  Every ``k``-subset is equally likely (the ``k`` largest of ``D`` random 31-bit keys, ties
  to the lower index -- a bias below ``k / 2^31``); indices come in ascending order and are
  a pure function of ``key``. Values are ``x`` at those indices, unscaled by default, so
  ``densify`` gives a biased (shrunk) estimate of ``x``; with ``unbiased=True`` they are
  scaled by ``D / k`` so that ``E[densify(random_k(key, x, k))] = x``.
  """
  x = _check_x(x, 'x', 'random_k')
  D = x.shape[0]
  k = base.check_int(k, 'k', 1, D, where=f' (D = {D}) for random_k')
  keys = jax.random.bits(key, (D,), jnp.uint32) >> 1
  idx = top_keys(keys, k)
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
