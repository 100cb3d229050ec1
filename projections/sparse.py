"""Very sparse random projection: each of the D coordinates touches ``s`` of the d columns.

``A: f[D, d]`` has, in row i, the entries ``c · σ_it`` at columns ``h_it`` for t < s, with
column indices ``h_it`` uniform on {0 … d−1} and signs ``σ_it`` uniform ±1, all independent
(a row that draws a column twice gets the sum), and ``c = sqrt(d / (D · s))``. Then
``E[A_ij A_ik] = c² · s / d · δ_jk`` per row, so ``E[AᵀA] = I_d`` exactly. This is the
very sparse projection of Li, Hastie & Church (2006) arranged as a sparse JL transform with
a fixed number of non-zeros per row (Kane & Nelson 2014), so that every parameter moves:
``lift`` is a gather (``x_i = c Σ_t σ_it z[h_it]``), ``project`` a ``segment_sum``.

Choice of ``s`` (default 1): with s = 1 the columns have disjoint supports (AᵀA is exactly
diagonal), both directions cost one pass over D, and the subspace ties parameters into d
random groups with random signs (the hashing trick of HashedNets, Chen et al. 2015).
Larger s spreads each parameter over s directions (better-concentrated norms for
``project``, the sparse-JL regime s ≈ ε⁻¹ log(1/δ)) at s times the cost and state.

State (``SparseState``): ``cols: int32[D, s]`` and ``signs: int8[D, s]``, drawn once in
``init`` (5 · D · s bytes). On GPUs ``segment_sum`` accumulates in an unspecified order, so
``project`` is reproducible there only up to float rounding; on CPU it is bit-exact.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from projections import base


class SparseState(NamedTuple):
  """The draws of one sparse subspace."""
  cols: jax.Array   # int32[D, s]: column touched by row i's t-th non-zero
  signs: jax.Array  # int8[D, s]: its sign, ±1


def sparse(D: int, d: int, s: int = 1) -> base.Projection:
  """A very sparse operator ``A: f[D, d]`` with s non-zeros per row, ``E[AᵀA] = I_d``.

  Args:
    D: ambient dimension, >= 1.
    d: subspace dimension, 1 <= d <= D.
    s: non-zeros per row, 1 <= s <= d.
  Returns:
    A ``Projection`` whose state is a ``SparseState`` (O(D · s) memory).
  """
  D, d = base.check_sizes('sparse', D, d)
  s = base.check_int(s, 's', 1, d, where=f' (d = {d}) for sparse')
  c = (d / (D * s)) ** 0.5
  where = f'sparse(D={D}, d={d}, s={s})'

  def init(key: jax.Array) -> SparseState:
    k_cols, k_signs = jax.random.split(key)
    cols = jax.random.randint(k_cols, (D, s), 0, d, jnp.int32)
    signs = jax.random.rademacher(k_signs, (D, s), jnp.int8)
    return SparseState(cols, signs)

  def lift(state: SparseState, z: jax.Array) -> jax.Array:
    """``x = A z``. z: f[d] -> f[D]."""
    z = base.check_vector(z, d, 'z', where + '.lift')
    dt = base.compute_dtype(z.dtype)
    vals = z.astype(dt)[state.cols] * state.signs.astype(dt)     # [D, s]
    return (jnp.sum(vals, axis=1) * jnp.asarray(c, dt)).astype(z.dtype)

  def project(state: SparseState, x: jax.Array) -> jax.Array:
    """``y = Aᵀ x``. x: f[D] -> f[d]."""
    x = base.check_vector(x, D, 'x', where + '.project')
    dt = base.compute_dtype(x.dtype)
    vals = (x.astype(dt) * jnp.asarray(c, dt))[:, None] * state.signs.astype(dt)  # [D, s]
    y = jax.ops.segment_sum(vals.reshape(-1), state.cols.reshape(-1), num_segments=d)
    return y.astype(x.dtype)

  return base.Projection(D=D, d=d, init=init, project=project, lift=lift, name='sparse')
