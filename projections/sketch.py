"""Count sketch (Charikar, Chen & Farach-Colton 2002) with csvec-style hashing.

A count sketch of ``x: f[D]`` is a table ``S: f[rows, cols]`` with
``S[r, j] = sum_{i : h_r(i) = j} s_r(i) x[i]``: each row hashes every coordinate ``i`` to a
bucket ``h_r(i)`` with a random sign ``s_r(i)``. The sketch is linear in ``x``, so sketches
of client vectors can be summed (aggregated) on the server. ``estimate`` recovers
``x[i] ~ median_r s_r(i) S[r, h_r(i)]``; ``l2_estimate`` estimates ``||x||_2`` as
``sqrt(median_r sum_j S[r, j]^2)`` (as csvec does). What travels over the wire is the table,
``rows * cols`` values; the hash state is derived from a shared key and never sent.

Hash families (as csvec, with the Mersenne prime ``p = 2^31 - 1`` so that all arithmetic
fits in uint32 -- JAX runs with x64 off):

* bucket: ``h_r(i) = ((a_r i + b_r) mod p) mod cols`` with ``a_r, b_r`` uniform in
  ``[0, p)``: the Carter-Wegman family, pairwise independent on ``[0, p)`` (the final
  ``mod cols`` adds a bias of at most ``cols / p`` per bucket).
* sign: ``s_r(i) = 1 - 2 (g_r(i) mod 2)`` with ``g_r(i) = (c3 i^3 + c2 i^2 + c1 i + c0) mod p``,
  coefficients uniform in ``[0, p)``: a degree-3 polynomial over GF(p), 4-wise independent
  (sign bias ``1 / (2p)``).

Products ``a * b mod p`` of two 31-bit residues are computed exactly in uint32 by splitting
both factors in 16-bit halves and folding with ``2^31 = 1 (mod p)``. The hashes of
coordinate ``i`` are recomputed elementwise over ``arange(D)`` in ``sketch`` and ``estimate``
(a few dozen integer ops per coordinate and row, fused by XLA); the state holds only the
``6 * rows`` coefficients. ``count_sketch(..., cache_buckets=True)`` opts in to storing the
signed buckets, ``i32[rows, D]``, in the state instead.

Accumulation (``sketch``): a primitive (``projections.native.cpu_primitive``) computed on CPU
by a C++ kernel (``projections/csrc/kernels.cc``: the same hashes in exact 64-bit integer
arithmetic, scatter-added row by row, two threads with private tables summed at the end),
and elsewhere (or where the kernel cannot be built) by one XLA scatter-add per row. Results
agree up to float summation order. It is linear in ``x`` (JVP and transpose rules: the
transpose is ``Σ_r s_r(i) table[r, h_r(i)]``), and under ``vmap`` over vectors it is one
kernel call; ``vmap`` over states uses the XLA formulation. Measured figures:
``benchmarks/README.md``.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from projections import base
from projections import native
from projections import sparsify

PRIME = 2**31 - 1  # Mersenne prime: every hash value and coefficient lies in [0, PRIME).
_MEDIAN_NETWORK_MAX_ROWS = 15  # Above this, the median over rows uses jnp.sort.


class CountSketchState(NamedTuple):
  """The random state of a count sketch (a pytree; vmap over it for several sketches).

  Attributes:
    bucket_coeffs: u32[rows, 2], ``(a, b)`` of ``h_r(i) = ((a i + b) mod p) mod cols``.
    sign_coeffs: u32[rows, 4], ``(c3, c2, c1, c0)`` of the degree-3 sign polynomial.
    signed_buckets: None, or with ``cache_buckets=True`` the precomputed hashes
      ``i32[rows, D]``: ``h_r(i)`` where ``s_r(i) = +1`` and ``-1 - h_r(i)`` where
      ``s_r(i) = -1``.
  """
  bucket_coeffs: jax.Array
  sign_coeffs: jax.Array
  signed_buckets: jax.Array | None = None


class CountSketch(NamedTuple):
  """A count sketch of ``f[D]`` vectors into ``f[rows, cols]`` tables, as pure functions.

  Attributes:
    D: the vector length.
    rows: the number of independent hash rows (odd).
    cols: the number of buckets per row.
    init: ``init(key) -> CountSketchState``.
    sketch: ``sketch(state, x: f[D]) -> f[rows, cols]``, linear in ``x``.
    estimate: ``estimate(state, table: f[rows, cols]) -> f[D]``, the median estimate.
    unsketch_topk: ``unsketch_topk(state, table, k, method='exact') -> (f[k], i32[k])``,
      the ``k`` largest estimates by magnitude (signed values) and their coordinates.
    l2_estimate: ``l2_estimate(table) -> f[]``, an estimate of ``||x||_2``.
  """
  D: int
  rows: int
  cols: int
  init: Callable[[jax.Array], CountSketchState]
  sketch: Callable[[CountSketchState, jax.Array], jax.Array]
  estimate: Callable[[CountSketchState, jax.Array], jax.Array]
  unsketch_topk: Callable[..., tuple[jax.Array, jax.Array]]
  l2_estimate: Callable[[jax.Array], jax.Array]


def mulmod(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a * b mod p`` exactly, for uint32 ``a, b`` in ``[0, p)``; uint32 in ``[0, p)``."""
  lo16 = jnp.uint32(0xFFFF)
  ah, al = a >> 16, a & lo16  # ah < 2^15, al < 2^16
  bh, bl = b >> 16, b & lo16
  # a b = ah bh 2^32 + (ah bl + al bh) 2^16 + al bl, and 2^32 = 2, 2^31 = 1 (mod p).
  hh = ah * bh  # < 2^30
  mid = ah * bl + al * bh  # < 2^32: each term < 2^31
  ll = al * bl  # < 2^32
  # mid 2^16 = (mid >> 15) 2^31 + (mid & 0x7FFF) 2^16 = (mid >> 15) + (mid & 0x7FFF) 2^16.
  t1 = hh << 1  # < 2^31
  t2 = (mid & jnp.uint32(0x7FFF)) << 16  # < 2^31
  t3 = ll & jnp.uint32(PRIME)  # < 2^31
  t4 = (ll >> 31) + (mid >> 15)  # < 2^17 + 1
  r = _fold(t1 + t2)  # Each sum of two values < 2^31 is <= 2^32 - 2.
  r = _fold(r + t3)
  r = _fold(r + t4)
  return jnp.where(r >= jnp.uint32(PRIME), r - jnp.uint32(PRIME), r)


def addmod(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a + b mod p`` for uint32 ``a, b`` in ``[0, p)``."""
  r = a + b  # < 2^32
  return jnp.where(r >= jnp.uint32(PRIME), r - jnp.uint32(PRIME), r)


def _fold(v: jax.Array) -> jax.Array:
  """For uint32 ``v <= 2^32 - 2``, a value ``< 2^31`` congruent to ``v`` mod ``p``."""
  return (v & jnp.uint32(PRIME)) + (v >> 31)


def bucket_hash(coeffs: jax.Array, i: jax.Array, cols: int) -> jax.Array:
  """``((a i + b) mod p) mod cols``: coeffs u32[..., 2] broadcast against i u32[...]."""
  h = addmod(mulmod(coeffs[..., 0], i), coeffs[..., 1])
  return (h % jnp.uint32(cols)).astype(jnp.int32)


def sign_bit(coeffs: jax.Array, i: jax.Array) -> jax.Array:
  """``(c3 i^3 + c2 i^2 + c1 i + c0 mod p) mod 2`` by Horner: coeffs u32[..., 4]; bool."""
  h = coeffs[..., 0]
  for j in range(1, 4):
    h = addmod(mulmod(h, i), coeffs[..., j])
  return (h & jnp.uint32(1)).astype(jnp.bool_)


def median_rows(v: jax.Array) -> jax.Array:
  """Median over axis 0 of ``v: f[rows, ...]`` for odd ``rows``: ``f[...]``.

  For up to 15 rows an odd-even transposition sorting network of elementwise min/max
  (fused, no sort), above that ``jnp.sort``; both return the middle order statistic.
  """
  rows = v.shape[0]
  if rows > _MEDIAN_NETWORK_MAX_ROWS:
    return jnp.sort(v, axis=0)[rows // 2]
  xs = [v[r] for r in range(rows)]
  for p in range(rows):
    for j in range(p % 2, rows - 1, 2):
      xs[j], xs[j + 1] = jnp.minimum(xs[j], xs[j + 1]), jnp.maximum(xs[j], xs[j + 1])
  return xs[rows // 2]


def _hashes(bucket_coeffs: jax.Array, sign_coeffs: jax.Array, r: int, D: int,
            cols: int) -> tuple[jax.Array, jax.Array]:
  """Row ``r``'s buckets i32[D] and sign bits bool[D] (True means -1), from coefficients."""
  i = jnp.arange(D, dtype=jnp.uint32)
  return bucket_hash(bucket_coeffs[r], i, cols), sign_bit(sign_coeffs[r], i)


def _unsign(signed_buckets: jax.Array, r: int) -> tuple[jax.Array, jax.Array]:
  """Row ``r``'s buckets and sign bits from the cached signed buckets i32[rows, D]."""
  sb = signed_buckets[r]
  neg = sb < 0
  return jnp.where(neg, -1 - sb, sb), neg


def _scatter_rows(x: jax.Array, row_hashes: list, cols: int) -> jax.Array:
  """``table[..., r, j] = Σ_{i: h_r(i) = j} s_r(i) x[..., i]``: x f[..., D]."""
  lead = x.shape[:-1]
  xf = x.reshape((-1, x.shape[-1]))
  table = []
  for buckets, neg in row_hashes:
    table.append(jnp.zeros((xf.shape[0], cols), x.dtype).at[:, buckets].add(
        jnp.where(neg, -xf, xf), mode='promise_in_bounds'))
  return jnp.stack(table, axis=1).reshape(lead + (len(row_hashes), cols))


def _gather_rows(table: jax.Array, row_hashes: list) -> jax.Array:
  """The transpose of ``_scatter_rows``: ``Σ_r s_r(i) table[..., r, h_r(i)]``: f[..., D]."""
  out = 0
  for r, (buckets, neg) in enumerate(row_hashes):
    g = table[..., r, :][..., buckets]
    out = out + jnp.where(neg, -g, g)
  return out


def _sketch_hashed_xla(x, bucket_coeffs, sign_coeffs, cols):
  rows, D = bucket_coeffs.shape[0], x.shape[-1]
  return _scatter_rows(x, [_hashes(bucket_coeffs, sign_coeffs, r, D, cols)
                           for r in range(rows)], cols)


def _sketch_hashed_t(ct, bucket_coeffs, sign_coeffs, cols, D):
  return _gather_rows(ct, [_hashes(bucket_coeffs, sign_coeffs, r, D, cols)
                           for r in range(bucket_coeffs.shape[0])])


def _sketch_cached_xla(x, signed_buckets, cols):
  return _scatter_rows(x, [_unsign(signed_buckets, r)
                           for r in range(signed_buckets.shape[0])], cols)


def _sketch_cached_t(ct, signed_buckets, cols):
  return _gather_rows(ct, [_unsign(signed_buckets, r)
                           for r in range(signed_buckets.shape[0])])


# table f[..., rows, cols] of x f[..., D]; params: cols (and D, for the transpose).
_sketch_hashed_p = native.cpu_primitive(
    'fedjax_count_sketch_hashed', lambda x, bc, sc, cols, D: _sketch_hashed_xla(x, bc, sc, cols),
    native.TARGET_SKETCH_HASHED, transpose_fn=_sketch_hashed_t,
    attrs=lambda params: {'cols': params['cols']})
_sketch_cached_p = native.cpu_primitive(
    'fedjax_count_sketch_cached', _sketch_cached_xla, native.TARGET_SKETCH_CACHED,
    transpose_fn=_sketch_cached_t, attrs=lambda params: {'cols': params['cols']})


def count_sketch(D: int, rows: int, cols: int, *,
                 cache_buckets: bool = False) -> CountSketch:
  """A count sketch of ``f[D]`` vectors into ``f[rows, cols]`` tables.

  Args:
    D: vector length, ``1 <= D <= 2^31 - 2``.
    rows: number of hash rows, odd and ``>= 1`` (the median is then one row's value).
    cols: buckets per row, ``1 <= cols <= 2^31 - 1``.
    cache_buckets: opt-in: ``init`` precomputes the signed buckets ``i32[rows, D]`` (4 rows D
      bytes of state) instead of recomputing the hashes in every call.

  Returns:
    A ``CountSketch`` of pure functions; they work under ``jit`` and ``vmap`` (over states,
    vectors or tables), for float32, bfloat16 and float16 vectors. Sums accumulate in
    float32 (16-bit inputs); tables and estimates have the input's dtype.
  """
  D = base.check_int(D, 'D', 1, PRIME - 1, where=' for count_sketch')
  rows = base.check_int(rows, 'rows', 1, where=' for count_sketch')
  if rows % 2 == 0:
    raise ValueError(f'rows: must be odd (the median is one bucket) for count_sketch, '
                     f'got {rows}')
  cols = base.check_int(cols, 'cols', 1, PRIME, where=' for count_sketch')
  where = f'count_sketch(D={D}, rows={rows}, cols={cols})'

  def row_hashes(state: CountSketchState, r: int) -> tuple[jax.Array, jax.Array]:
    """Row ``r``'s buckets i32[D] and sign bits bool[D] (True means -1)."""
    if state.signed_buckets is not None:
      return _unsign(state.signed_buckets, r)
    return _hashes(state.bucket_coeffs, state.sign_coeffs, r, D, cols)

  def init(key: jax.Array) -> CountSketchState:
    k1, k2 = jax.random.split(key)
    draw = lambda k, n: jax.random.randint(k, (rows, n), 0, PRIME, jnp.int32).astype(
        jnp.uint32)
    state = CountSketchState(draw(k1, 2), draw(k2, 4))
    if cache_buckets:
      signed = []
      for r in range(rows):
        buckets, neg = row_hashes(state, r)
        signed.append(jnp.where(neg, -1 - buckets, buckets))
      state = state._replace(signed_buckets=jnp.stack(signed))
    return state

  def check_table(table):
    table = jnp.asarray(table)
    if not jnp.issubdtype(table.dtype, jnp.floating):
      raise ValueError(f'table: {where} needs a floating dtype, got {table.dtype.name}')
    if table.shape != (rows, cols):
      raise ValueError(f'table: {where} needs shape ({rows}, {cols}), got {table.shape} '
                       f'(vmap for a batch)')
    return table

  def sketch(state: CountSketchState, x: jax.Array) -> jax.Array:
    """``x: f[D] -> table f[rows, cols]``; linear in ``x``."""
    x = base.check_vector(x, D, 'x', f'{where}.sketch')
    xc = x.astype(base.compute_dtype(x.dtype))
    if state.signed_buckets is not None:
      table = _sketch_cached_p.bind(xc, state.signed_buckets, cols=cols)
    else:
      table = _sketch_hashed_p.bind(xc, state.bucket_coeffs, state.sign_coeffs, cols=cols,
                                    D=D)
    return table.astype(x.dtype)

  def estimate(state: CountSketchState, table: jax.Array) -> jax.Array:
    """``table: f[rows, cols] -> f[D]``: ``median_r s_r(i) table[r, h_r(i)]``."""
    table = check_table(table)
    got = []
    for r in range(rows):
      buckets, neg = row_hashes(state, r)
      g = table[r][buckets]
      got.append(jnp.where(neg, -g, g))
    return median_rows(jnp.stack(got))

  def unsketch_topk(state: CountSketchState, table: jax.Array, k: int,
                    method: str = 'exact') -> tuple[jax.Array, jax.Array]:
    """The ``k`` largest estimates by magnitude: values ``f[k]``, coordinates ``i32[k]``."""
    base.check_int(k, 'k', 1, D, where=f' for {where}.unsketch_topk')
    return sparsify.top_k(estimate(state, table), k, method=method)

  def l2_estimate(table: jax.Array) -> jax.Array:
    """``sqrt(median_r sum_j table[r, j]^2)``, an estimate of ``||x||_2``: ``f[]``."""
    table = check_table(table)
    t = table.astype(base.compute_dtype(table.dtype))
    return jnp.sqrt(median_rows(jnp.sum(t * t, axis=1))).astype(table.dtype)

  return CountSketch(D, rows, cols, init, sketch, estimate, unsketch_topk, l2_estimate)
