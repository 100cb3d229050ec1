"""The identity operator: ``A = I_D`` (d = D).

Used to check that every intrinsic method reduces to uncompressed training (docs/paper.md §3).
Its state is empty (``IdentityState()``), so when vmapping ``project``/``lift`` at least one
other argument (the vector) must be mapped.
"""
from typing import NamedTuple

import jax

from projections import base


class IdentityState(NamedTuple):
  """No randomness: the identity needs no state."""


def identity(D: int, d: int | None = None) -> base.Projection:
  """``A = I_D``; ``d``, if given (as configs do for every operator), must equal ``D``.

  Args:
    D: the dimension, >= 1.
    d: None or D.
  Returns:
    A ``Projection`` with ``project(state, x: f[D]) = x`` and ``lift(state, z: f[D]) = z``.
  """
  D = base.check_int(D, 'D', 1, where=' for identity')
  if d is not None:
    d = base.check_int(d, 'd', D, D, where=' (identity has d = D)')
  where_p = f'identity(D={D}).project'
  where_l = f'identity(D={D}).lift'

  def init(key: jax.Array) -> IdentityState:
    del key  # The identity is the same for every key.
    return IdentityState()

  def project(state: IdentityState, x: jax.Array) -> jax.Array:
    del state
    return base.check_vector(x, D, 'x', where_p)

  def lift(state: IdentityState, z: jax.Array) -> jax.Array:
    del state
    return base.check_vector(z, D, 'z', where_l)

  return base.Projection(D=D, d=D, init=init, project=project, lift=lift, name='identity')
