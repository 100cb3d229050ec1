"""The shared operator type and input validation for every projection.

A ``Projection`` stands for a random matrix ``A: f[D, d]`` that is never stored. Its random
state is made from a key by ``init``; ``project`` applies ``Aᵀ`` (what a client uploads,
``f[D] -> f[d]``) and ``lift`` applies ``A`` (``theta = theta0 + A z``, ``f[d] -> f[D]``).
Every operator is normalised so that ``E[AᵀA] = I_d`` (columns of unit expected norm), and
``project`` is the exact adjoint of ``lift``. All three functions are pure and work under
``jit`` and ``vmap`` (over states, over vectors, or both); ``project`` and ``lift`` return the
input's dtype (16-bit floats are computed in float32).

Validation happens at trace time from static shapes, so it also fires under ``jit``.
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST


class Projection(NamedTuple):
  """A random linear map ``A: f[D, d]``, as pure functions of its random state.

  Attributes:
    D: the ambient (parameter) dimension.
    d: the subspace dimension (what travels over the wire).
    init: ``init(key) -> state``: the random state, O(D) memory at most.
    project: ``project(state, x: f[D]) -> f[d]``, ``y = Aᵀ x``.
    lift: ``lift(state, z: f[d]) -> f[D]``, ``x = A z``.
    name: the registry name ('fastfood', 'dense_gaussian', 'sparse', 'identity').
  """
  D: int
  d: int
  init: Callable[[jax.Array], Any]
  project: Callable[[Any, jax.Array], jax.Array]
  lift: Callable[[Any, jax.Array], jax.Array]
  name: str


def check_int(value, arg: str, lo: int, hi: int | None = None, where: str = '') -> int:
  """``value`` as an int in ``[lo, hi]``; ValueError naming ``arg`` otherwise."""
  rng = f'{lo} <= {arg}' + (f' <= {hi}' if hi is not None else '')
  ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
  if not ok or value < lo or (hi is not None and value > hi):
    raise ValueError(f'{arg}: must be an integer with {rng}{where}, got {value!r}')
  return int(value)


def check_sizes(name: str, D, d) -> tuple[int, int]:
  """Validates a compressing operator's sizes: ``D >= 1`` and ``1 <= d <= D``."""
  D = check_int(D, 'D', 1, where=f' for {name}')
  d = check_int(d, 'd', 1, D, where=f' (D = {D}) for {name}')
  return D, d


def check_vector(x, n: int, arg: str, where: str) -> jax.Array:
  """``x`` as an array ``f[n]``; ValueError naming ``arg`` on a wrong shape or dtype.

  Uses only the static shape and dtype, so it works on tracers under ``jit``/``vmap``.
  """
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'{arg}: {where} needs a floating dtype (float16, bfloat16, float32, '
                     f'float64), got {x.dtype.name}')
  if x.shape != (n,):
    raise ValueError(f'{arg}: {where} needs shape ({n},), got {x.shape} (vmap for a batch)')
  return x


def compute_dtype(dtype) -> jnp.dtype:
  """The dtype arithmetic runs in: float32 for 16-bit floats, else the dtype itself."""
  return jnp.promote_types(dtype, jnp.float32)
