"""Pieces shared by the three intrinsic methods (docs/paper.md §3): subspaces, client training, payloads.

θ is raveled to one vector θ_flat: f32[D]. A subspace is a `projections` operator A: f[D, d] whose
random state is made from `keys.subspace_key(run_key, t)`; every client derives it from the run's
seed, so no seed or matrix ever travels. `method.per_leaf=False` (the default, Li et al. 2018's
standard choice): one operator over all of θ_flat (`projections.global_projection`);
`method.per_leaf=True`: one operator per parameter leaf (`projections.per_leaf`, leaf i keyed by
fold_in(subspace key, i), d split over the leaves in proportion to their sizes), so A is block
diagonal in tree_flatten order; z is the leaves' coordinates concatenated.

Weight decay (`server.weight_decay`, one meaning for the three methods): it pulls θ toward θ0, not
toward 0. The server optimiser's `params` argument (what optax's add_decayed_weights / adamw decay)
is the displacement from θ0 in the method's own coordinates (`server_step`): z (θ − θ0 = A z) for
intrinsic_static, the active z_k for intrinsic_k_subspace (each subspace's coordinates decay in the
rounds that step it), θ − θ0 for intrinsic_time_varying. With server SGD at rate η and decay λ a
round then maps θ − θ0 to (1 − ηλ)(θ − θ0) − η·(the lifted step) in all three (k-subspace: the
active subspace's part). A client trains u ∈ R^d from 0 with the loss L(θ_base + A u) for
`client.local_steps` SGD steps at `client.lr` and uploads Δz = −u_end (= Aᵀ∇L with one step at lr 1).

Payload encodings of Δz (`method.payload_dtype`, or the same choice as `method.quantize` ∈ {none,
bf16, int8}, the name every method shares; setting both is refused): 'float32' (4·d bytes),
'bfloat16' (2·d bytes), 'int8' (d bytes + one float32 scale: stochastic rounding of Δz / scale with
scale = max|Δz| / 127, unbiased, drawn from the client's key; `compressors.int8`). Only float32 is
linear, so only it allows the cohort shortcut.
Recipe: trainer `client_train` (the subspace), compressor identity or a quantiser (`compressor`),
and the method's own subspace or θ-replay server.
"""
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import projections as P
from fedjax_intrinsic import compressors, keys
from fedjax_intrinsic.algorithms import base, options
from fedjax_intrinsic.fields import Bool, Choice, ConfigError, Int

PAYLOAD_DTYPES = ('float32', 'bfloat16', 'int8')
_AS_QUANTIZE = dict(zip(PAYLOAD_DTYPES, compressors.QUANTIZE))   # float32 -> none, ...
OPERATORS = ('dense_gaussian', 'fastfood', 'sparse', 'identity')


# Fields every intrinsic method has (its module may add more).
FIELDS = {
    'd': Int(1000, lo=1, note='<= D (the number of model parameters)',
             doc='dimension of the subspace: Δz has d coordinates'),
    'projection': Choice('fastfood', OPERATORS, doc='the random operator A: f[D, d] (identity: d = D)'),
    'payload_dtype': Choice('float32', PAYLOAD_DTYPES,
                            doc='how Δz travels (the same choice as method.quantize)'),
    'per_leaf': Bool(False, doc='one operator per parameter leaf (A block diagonal), d split over '
                                'the leaves by size'),
    **options.QUANTIZE,
}


def validate(config) -> None:
  """The rules between the shared fields (each field itself: FIELDS; d <= D when D is known)."""
  m = config.method
  if m.per_leaf and m.projection == 'identity':
    raise ConfigError('method.per_leaf=True is invalid with method.projection=identity (d = D '
                      'leaves nothing to split); allowed: per_leaf=False, or another projection')
  options.validate(config, error_feedback=False)
  if m.quantize != 'none' and m.payload_dtype != 'float32':
    raise ConfigError(f'method.quantize={m.quantize} is invalid with method.payload_dtype='
                      f'{m.payload_dtype} (the same choice twice); allowed: quantize=none, or '
                      'payload_dtype=float32')
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
    if method_config.get('per_leaf', False):
      op = _flat_per_leaf(method_config, ctx.params0, unravel)
    else:
      op = P.get(method_config.projection, D=D, d=method_config.d)
  return Subspaces(D, op.d, op, unravel, ctx.run_key)


def _flat_per_leaf(method_config, params0, unravel) -> P.Projection:
  """`projections.per_leaf` as an operator on θ_flat: f[D] <-> f[d] (block diagonal A)."""
  if method_config.d < len(jax.tree.leaves(params0)):
    raise ValueError(f'method.d={method_config.d} is invalid with method.per_leaf=True; allowed: '
                     f'd >= the number of parameter leaves ({len(jax.tree.leaves(params0))})')
  tp = P.per_leaf(lambda D, d: P.get(method_config.projection, D=D, d=d), params0,
                  d=method_config.d)
  return P.Projection(D=tp.D, d=tp.d, init=tp.init,
                      project=lambda state, x: tp.project(state, unravel(x)),
                      lift=lambda state, z: ravel_pytree(tp.lift(state, z))[0], name=tp.name)


def server_step(opt, displacement: jax.Array, opt_state: Any, grad: jax.Array,
                anchor: Optional[jax.Array] = None) -> tuple[jax.Array, Any]:
  """One optax step whose weight decay pulls toward θ0 (the module docstring): the optimiser sees
  `displacement − anchor` as its params (anchor None: the coordinates are a displacement already,
  z; anchor θ0 for θ-space servers) and returns (new coordinates, opt_state)."""
  params = displacement if anchor is None else displacement - anchor
  updates, opt_state = opt.update(grad, opt_state, params)
  return displacement + updates, opt_state


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


def quantize_of(method_config) -> str:
  """The payload's encoding as a `method.quantize` value (none / bf16 / int8)."""
  q = method_config.get('quantize', 'none')
  return q if q != 'none' else _AS_QUANTIZE[method_config.payload_dtype]


def compressor(method_config) -> compressors.Compressor:
  """Δz: f32[d] -> the payload: itself (float32), or bf16 / int8 + scale (`compressors`)."""
  return compressors.quantizer(quantize_of(method_config)) or compressors.identity()


def client_update(ctx: base.BuildContext, sub: Subspaces, method_config):
  """The client of every intrinsic method: trains in the broadcast subspace
  (bc: `base.Broadcast(theta f32[D], shared = the subspace's random state)`), encodes Δz."""
  c = compressor(method_config)

  def update(bc, cstate, batches, key):
    delta_z, metrics = client_train(ctx, sub, bc.theta, bc.shared, batches)
    payload, cstate = c.encode(delta_z, cstate, key)
    return payload, cstate, metrics
  return update, c.aggregate, c.linear


def floats_bytes(n) -> np.ndarray:
  return 4 * np.asarray(n, np.int64)
