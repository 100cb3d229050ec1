"""A method as a recipe: a trainer, a compressor and a server kind make a `FederatedAlgorithm`.

    trainer(theta f32[D], batches, shared) -> (x, metrics)  the client's update x (docs/paper.md §2)
    compressor (fedjax_intrinsic.compressors)               x -> payload -> linear aggregate -> g
    server (algorithms/servers.py)                          its state (θ, or subspace z), its step,
                                                            and the download accounting

`assemble` wires them in the order of `base.FederatedAlgorithm`: the broadcast is
`base.Broadcast(server.theta(state), shared(state))` (shared: state every client derives from the
seed or gets from the server, e.g. the count sketch's hashes, a subspace's random state,
PowerSGD's Q; the method's `shared`, else the server's; None: the broadcast is θ itself), each
client trains from it and encodes its trainer's x with its own key, the server finalizes the
aggregate to g and steps. `server_update` (optional) replaces the last step (e.g. true top-k's
server-side sparsifier, PowerSGD's second exchange); other `FederatedAlgorithm` fields pass through
(a second exchange: `query`, `respond`, `aggregate2`, `notice`, `finish`).
"""
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from fedjax_intrinsic import compressors
from fedjax_intrinsic.algorithms import base, servers


# ----------------------------------------------------------------------------- trainers


def gradient(ctx: base.BuildContext, flat: servers.Flat):
  """The gradient of the client's masked mean loss on its whole data (one step): a θ pytree."""
  loss = base.model_loss(ctx.model)

  def train(theta, batches, shared=None):
    step = jax.tree.map(lambda x: x[0], batches)
    value, grad = jax.value_and_grad(loss)(flat.unravel(theta), step)
    return grad, {'loss': value}
  return train


def tree_delta(ctx: base.BuildContext, flat: servers.Flat):
  """Δ = θ_start − θ_end after `client.local_steps` SGD steps on the θ pytree: a θ pytree."""
  loss = base.model_loss(ctx.model)

  def train(theta, batches, shared=None):
    start = flat.unravel(theta)
    end, metrics = base.local_sgd(loss, start, batches, ctx.client_lr)
    return base.tree_sub(start, end), metrics
  return train


def raveled_delta(ctx: base.BuildContext, flat: servers.Flat):
  """`tree_delta` raveled: Δ: f32[D]."""
  train = tree_delta(ctx, flat)

  def raveled(theta, batches, shared=None):
    delta, metrics = train(theta, batches)
    return ravel_pytree(delta)[0], metrics
  return raveled


def flat_delta(ctx: base.BuildContext, flat: servers.Flat):
  """Δ: f32[D] after `client.local_steps` SGD steps taken on the raveled θ itself."""
  model_loss = base.model_loss(ctx.model)
  loss = lambda w, batch: model_loss(flat.unravel(w), batch)

  def train(theta, batches, shared=None):
    end, metrics = base.local_sgd(loss, theta, batches, ctx.client_lr)
    return theta - end, metrics
  return train


def in_subspace(ctx: base.BuildContext, sub: compressors.Subspace):
  """The intrinsic family's client (docs/paper.md §3): u ∈ R^d from 0, `client.local_steps` SGD
  steps on L(θ + A u), A the broadcast subspace (shared: its random state); x = Δz = −u_end: f32[d]
  (= Aᵀ∇L with one step at rate 1).

  The first step starts at u = 0, where θ + A·0 = θ and ∇_u L = Aᵀ ∇_θ L(θ): it takes the
  gradient in θ and projects it, without lifting u = 0 (one transform instead of two; for the
  fastfood and sparse operators the same bits as differentiating through the lift). The later
  steps differentiate through the lift.
  """
  model_loss = base.model_loss(ctx.model)
  flat_loss = lambda th, batch: model_loss(sub.unravel(th), batch)

  def train(theta, batches, shared):
    first = jax.tree.map(lambda b: b[0], batches)
    loss0, g = jax.value_and_grad(flat_loss)(theta, first)
    # 0 − lr·g as local_sgd's step from 0 computes it (the same bits, zeros' signs included)
    u1 = jnp.zeros((sub.d,), jnp.float32) - ctx.client_lr * sub.op.project(shared, g)
    u_end = u1
    if jax.tree.leaves(batches)[0].shape[0] > 1:     # the number of steps is static
      loss = lambda u, batch: flat_loss(theta + sub.op.lift(shared, u), batch)
      u_end, _ = base.local_sgd(loss, u1, jax.tree.map(lambda b: b[1:], batches), ctx.client_lr)
    return -u_end, {'loss': loss0}
  return train


# ----------------------------------------------------------------------------- assembly


def assemble(name: str, trainer: Callable, compressor: compressors.Compressor,
             server: servers.Server, *, extra: Callable[[], Any] = lambda: (),
             shared: Optional[Callable[[Any], Any]] = None,
             server_update: Optional[Callable] = None, cohort_shortcut: Optional[bool] = None,
             **fields) -> base.FederatedAlgorithm:
  """The `FederatedAlgorithm` of trainer + compressor + server (see the module docstring).

  extra() -> the method's own initial `ServerState.extra`; shared(state) -> what clients get
  besides θ (None: the server's `shared`; both None: the broadcast is θ itself); cohort_shortcut
  defaults to `compressor.linear`.
  """
  shared = shared or server.shared

  def broadcast(state):
    theta = server.theta(state)
    return theta if shared is None else base.Broadcast(theta, shared(state))

  def client_update(bc, cstate, batches, key):
    theta, common = (bc, None) if shared is None else bc
    x, metrics = trainer(theta, batches, common)
    payload, cstate = compressor.encode(x, cstate, key, common)
    return payload, cstate, metrics

  def step(state, agg, second=None):
    del second
    return server.step(state, compressor.finalize(agg))

  return base.FederatedAlgorithm(
      name=name,
      init=lambda params0: server.init(params0, extra()),
      init_client=lambda params0: compressor.init(),
      broadcast=broadcast,
      client_update=client_update,
      aggregate=compressor.aggregate,
      server_update=server_update or step,
      model_params=server.model_params,
      download_bytes=server.download_bytes,
      catch_up=server.catch_up,
      rebuild=server.rebuild,
      keep=server.keep,
      held_after=server.held_after,
      cohort_shortcut=compressor.linear if cohort_shortcut is None else cohort_shortcut,
      **fields)
