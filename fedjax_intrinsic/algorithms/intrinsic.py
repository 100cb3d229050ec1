"""Pieces shared by the three intrinsic methods (PAPER.md §3): subspaces, client training, payloads.

θ is raveled to one vector θ_flat: f32[D] (global projection: one operator over all parameters,
the standard choice of Li et al. 2018). A subspace is a `projections` operator A: f[D, d] whose random
state is made from `keys.subspace_key(run_key, t)`; every client derives it from the run's seed, so
no seed or matrix ever travels. A client trains u ∈ R^d from 0 with the loss L(θ_base + A u) for
`client.local_steps` SGD steps at `client.lr` and uploads Δz = −u_end (= Aᵀ∇L with one step at lr 1).

Payload encodings of Δz (`method.payload_dtype`): 'float32' (4·d bytes), 'bfloat16' (2·d bytes),
'int8' (d bytes + one float32 scale: stochastic rounding of Δz / scale with scale = max|Δz| / 127,
unbiased, drawn from the client's key). Only float32 is linear, so only it allows the cohort shortcut.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import projections as P
from fedjax_intrinsic import keys
from fedjax_intrinsic.algorithms import base

PAYLOAD_DTYPES = ('float32', 'bfloat16', 'int8')
OPERATORS = ('dense_gaussian', 'fastfood', 'sparse', 'identity')


def default_config() -> dict:
  """Fields every intrinsic method has (its module may add more)."""
  return {'d': 1000, 'projection': 'fastfood', 'payload_dtype': 'float32'}


def validate(config) -> None:
  """Shared checks: projection, payload dtype, d (d <= D is checked when D is known)."""
  from fedjax_intrinsic.config import ConfigError
  m = config.method
  if m.projection not in OPERATORS:
    raise ConfigError(f'method.projection={m.projection!r} is invalid; allowed: {", ".join(OPERATORS)}')
  if m.payload_dtype not in PAYLOAD_DTYPES:
    raise ConfigError(f'method.payload_dtype={m.payload_dtype!r} is invalid; allowed: '
                      f'{", ".join(PAYLOAD_DTYPES)}')
  if isinstance(m.d, bool) or not isinstance(m.d, int) or m.d <= 0:
    raise ConfigError(f'method.d={m.d!r} is invalid; allowed: a positive integer <= D '
                      '(the number of model parameters)')
  if config.simulation.cohort_shortcut and (config.client.local_steps != 1 or
                                            m.payload_dtype != 'float32'):
    raise ConfigError('simulation.cohort_shortcut=True is invalid with client.local_steps='
                      f'{config.client.local_steps}, method.payload_dtype={m.payload_dtype!r}; '
                      'allowed: local_steps=1 and payload_dtype=float32')


class Subspaces(NamedTuple):
  """The run's raveling and operator: `state(t)` is the random state of subspace t (jittable)."""
  D: int
  d: int
  op: P.Projection
  unravel: Any
  run_key: jax.Array

  def state(self, t):
    return self.op.init(keys.subspace_key(self.run_key, t))


def subspaces(method_config, ctx: base.BuildContext) -> Subspaces:
  flat0, unravel = ravel_pytree(ctx.params0)
  D = int(flat0.shape[0])
  if method_config.projection == 'identity':
    if method_config.d != D:
      raise ValueError(f'method.d={method_config.d} is invalid for method.projection=identity; '
                       f'allowed: d = D = {D}')
    op = P.identity(D)
  else:
    if method_config.d > D:
      raise ValueError(f'method.d={method_config.d} is invalid; allowed: 1 <= d <= D = {D} '
                       '(the number of model parameters)')
    op = P.get(method_config.projection, D=D, d=method_config.d)
  return Subspaces(D, method_config.d, op, unravel, ctx.run_key)


def flat(params) -> jax.Array:
  return ravel_pytree(params)[0]


def client_train(ctx: base.BuildContext, sub: Subspaces, theta_base: jax.Array, op_state: Any,
                 batches: dict) -> tuple[jax.Array, dict]:
  """Local SGD in the subspace from u = 0; returns (Δz = −u_end: f32[d], metrics).

  theta_base: f32[D] raveled θ the client starts from; batches: [S, B, ...] local steps.
  """
  model_loss = base.model_loss(ctx.model)
  loss = lambda u, batch: model_loss(sub.unravel(theta_base + sub.op.lift(op_state, u)), batch)
  u_end, metrics = base.local_sgd(loss, jnp.zeros((sub.d,), jnp.float32), batches, ctx.client_lr)
  return -u_end, metrics


def encode(delta_z: jax.Array, payload_dtype: str, key: jax.Array) -> Any:
  """Δz: f32[d] -> what travels up (see the module docstring)."""
  if payload_dtype == 'float32':
    return delta_z
  if payload_dtype == 'bfloat16':
    return delta_z.astype(jnp.bfloat16)
  scale = jnp.maximum(jnp.max(jnp.abs(delta_z)), 1e-30) / 127.0
  scaled = delta_z / scale
  low = jnp.floor(scaled)
  up = jax.random.uniform(key, scaled.shape) < (scaled - low)   # unbiased stochastic rounding
  q = jnp.clip(low + up, -127, 127).astype(jnp.int8)
  return {'q': q, 'scale': scale.astype(jnp.float32)}


def decode(payload: Any) -> jax.Array:
  """The inverse of `encode` (up to rounding): f32[..., d], with a leading client axis allowed."""
  if isinstance(payload, dict):
    return payload['q'].astype(jnp.float32) * payload['scale'][..., None]
  return payload.astype(jnp.float32)


def aggregate(payloads: Any, weights: jax.Array) -> jax.Array:
  """Σ_c w_c Δz_c: f32[d] (decoded per client, so linear in the (payload, weight) pairs)."""
  return jnp.einsum('c,cd->d', weights.astype(jnp.float32), decode(payloads),
                    precision=jax.lax.Precision.HIGHEST)


def floats_bytes(n) -> np.ndarray:
  return 4 * np.asarray(n, np.int64)
