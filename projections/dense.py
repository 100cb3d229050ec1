"""Dense Gaussian projection, regenerated from its key block by block, never stored.

``A: f[D, d]`` with ``A_ij ~ N(0, 1/D)`` i.i.d., so ``E[AᵀA] = I_d``. The rows are cut into
``nb = ceil(D / block_rows)`` blocks; block b is ``normal(fold_in(key, b), (block_rows, d)) /
sqrt(D)`` (the last block's rows beyond D are drawn and discarded), so A is a function of
``(key, D, d, block_rows)``: changing ``block_rows`` changes the subspace.

``lift`` maps the blocks (``lax.map``) to ``x_b = A_b z``; ``project`` scans them with
``y += A_bᵀ x_b``. Both regenerate A on every call: the state is only the key, and the
working memory is O(block_rows · d + D), never D · d (``compiled_memory`` reports XLA's
compiled figures without running anything). The price is time: every call draws D · d
normals (about 45-70M per second on this project's CPU host, docs/peers.md), so this operator
is the dense reference for small D; use ``fastfood`` or ``sparse`` for large D.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from projections import base

DEFAULT_BLOCK_ELEMENTS = 1 << 18  # f32 elements per regenerated block: 1 MiB


class DenseGaussianState(NamedTuple):
  """The dense operator's only state: the key its blocks are regenerated from."""
  key: jax.Array  # a jax.random key (raw uint32[2] or typed)


def dense_gaussian(D: int, d: int, block_rows: int | None = None) -> base.Projection:
  """A dense Gaussian operator ``A: f[D, d]``, ``A_ij ~ N(0, 1/D)``.

  Args:
    D: ambient dimension, >= 1.
    d: subspace dimension, 1 <= d <= D.
    block_rows: rows of A regenerated at a time, 1 <= block_rows; None for
      ``clip(2^18 // d, 1, D)`` (about 1 MiB of float32 per block). Part of A's definition.
  Returns:
    A ``Projection`` whose state is a ``DenseGaussianState`` (just the key).
  """
  D, d = base.check_sizes('dense_gaussian', D, d)
  if block_rows is None:
    block_rows = min(D, max(1, DEFAULT_BLOCK_ELEMENTS // d))
  block_rows = base.check_int(block_rows, 'block_rows', 1, where=' for dense_gaussian')
  nb = -(-D // block_rows)
  padded = nb * block_rows
  where = f'dense_gaussian(D={D}, d={d})'
  inv_sqrt_d = 1.0 / float(D) ** 0.5

  def block(key, b) -> jax.Array:
    """Rows [b * block_rows, (b + 1) * block_rows) of A: f32[block_rows, d]."""
    a = jax.random.normal(jax.random.fold_in(key, b), (block_rows, d), jnp.float32)
    return a * jnp.float32(inv_sqrt_d)

  def init(key: jax.Array) -> DenseGaussianState:
    return DenseGaussianState(key)

  def lift(state: DenseGaussianState, z: jax.Array) -> jax.Array:
    """``x = A z``. z: f[d] -> f[D]."""
    z = base.check_vector(z, d, 'z', where + '.lift')
    dt = base.compute_dtype(z.dtype)
    zc = z.astype(dt)
    xs = jax.lax.map(
        lambda b: jnp.dot(block(state.key, b).astype(dt), zc, precision=base.HIGHEST),
        jnp.arange(nb))                                   # [nb, block_rows]
    return xs.reshape(padded)[:D].astype(z.dtype)

  def project(state: DenseGaussianState, x: jax.Array) -> jax.Array:
    """``y = Aᵀ x``. x: f[D] -> f[d]."""
    x = base.check_vector(x, D, 'x', where + '.project')
    dt = base.compute_dtype(x.dtype)
    xb = jnp.pad(x.astype(dt), (0, padded - D)).reshape(nb, block_rows)

    def step(y, inputs):
      b, x_b = inputs
      return y + jnp.dot(x_b, block(state.key, b).astype(dt), precision=base.HIGHEST), None

    y, _ = jax.lax.scan(step, jnp.zeros((d,), dt), (jnp.arange(nb), xb))
    return y.astype(x.dtype)

  return base.Projection(D=D, d=d, init=init, project=project, lift=lift,
                         name='dense_gaussian')


def compiled_memory(D: int, d: int, block_rows: int | None = None) -> dict[str, int]:
  """XLA's compiled memory figures (bytes) for ``lift`` and ``project``, without running.

  Compiles ``jax.jit(op.lift)`` and ``jax.jit(op.project)`` for abstract inputs and reads
  ``memory_analysis()``. Returns ``{'lift_temp': ..., 'project_temp': ..., 'dense_bytes':
  D * d * 4, 'block_bytes': block_rows * d * 4, 'vector_bytes': D * 4}``; the temps stay
  O(block_bytes + vector_bytes), far below dense_bytes.
  """
  op = dense_gaussian(D, d, block_rows)
  rows = min(D, max(1, DEFAULT_BLOCK_ELEMENTS // d)) if block_rows is None else block_rows
  state = DenseGaussianState(jax.ShapeDtypeStruct((2,), jnp.uint32))
  out = {}
  for name, fn, n in (('lift', op.lift, d), ('project', op.project, D)):
    vec = jax.ShapeDtypeStruct((n,), jnp.float32)
    mem = jax.jit(fn).lower(state, vec).compile().memory_analysis()
    out[f'{name}_temp'] = int(mem.temp_size_in_bytes)
  out.update(dense_bytes=D * d * 4, block_bytes=rows * d * 4, vector_bytes=D * 4)
  return out
