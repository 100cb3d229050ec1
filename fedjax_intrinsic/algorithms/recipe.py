"""A method as a recipe: a trainer, a compressor and a server kind make a `FederatedAlgorithm`.

    trainer(theta f32[D], batches) -> (x, metrics)         the client's update x (docs/paper.md §2)
    compressor (fedjax_intrinsic.compressors)               x -> payload -> linear aggregate -> g
    server (algorithms/servers.py)                          θ + optax, and the download accounting

`assemble` wires them in the order of `base.FederatedAlgorithm`: the broadcast is
`base.Broadcast(theta, shared)` (shared: state every client derives from the seed, e.g. the count
sketch's hashes, or None), each client encodes its trainer's x with its own key, the server
finalizes the aggregate to g: f32[D] and steps. `server_update` (optional) replaces the last step
(e.g. true top-k's server-side sparsifier); other `FederatedAlgorithm` fields pass through.
"""
from typing import Any, Callable, Optional

import jax
from jax.flatten_util import ravel_pytree

from fedjax_intrinsic import compressors
from fedjax_intrinsic.algorithms import base, servers


# ----------------------------------------------------------------------------- trainers


def gradient(ctx: base.BuildContext, flat: servers.Flat):
  """The gradient of the client's masked mean loss on its whole data (one step): a θ pytree."""
  loss = base.model_loss(ctx.model)

  def train(theta, batches):
    step = jax.tree.map(lambda x: x[0], batches)
    value, grad = jax.value_and_grad(loss)(flat.unravel(theta), step)
    return grad, {'loss': value}
  return train


def tree_delta(ctx: base.BuildContext, flat: servers.Flat):
  """Δ = θ_start − θ_end after `client.local_steps` SGD steps on the θ pytree: a θ pytree."""
  loss = base.model_loss(ctx.model)

  def train(theta, batches):
    start = flat.unravel(theta)
    end, metrics = base.local_sgd(loss, start, batches, ctx.client_lr)
    return base.tree_sub(start, end), metrics
  return train


def raveled_delta(ctx: base.BuildContext, flat: servers.Flat):
  """`tree_delta` raveled: Δ: f32[D]."""
  train = tree_delta(ctx, flat)

  def raveled(theta, batches):
    delta, metrics = train(theta, batches)
    return ravel_pytree(delta)[0], metrics
  return raveled


def flat_delta(ctx: base.BuildContext, flat: servers.Flat):
  """Δ: f32[D] after `client.local_steps` SGD steps taken on the raveled θ itself."""
  model_loss = base.model_loss(ctx.model)
  loss = lambda w, batch: model_loss(flat.unravel(w), batch)

  def train(theta, batches):
    end, metrics = base.local_sgd(loss, theta, batches, ctx.client_lr)
    return theta - end, metrics
  return train


# ----------------------------------------------------------------------------- assembly


def assemble(name: str, trainer: Callable, compressor: compressors.Compressor,
             server: servers.Server, *, extra: Callable[[], Any] = lambda: (),
             shared: Optional[Callable[[Any], Any]] = None,
             server_update: Optional[Callable] = None, cohort_shortcut: Optional[bool] = None,
             **fields) -> base.FederatedAlgorithm:
  """The `FederatedAlgorithm` of trainer + compressor + server (see the module docstring).

  extra() -> the method's own initial `ServerState.extra`; shared(state) -> what clients get
  besides θ (None: the broadcast is θ itself); cohort_shortcut defaults to `compressor.linear`.
  """
  def broadcast(state):
    return state.theta if shared is None else base.Broadcast(state.theta, shared(state))

  def client_update(bc, cstate, batches, key):
    theta, common = (bc, None) if shared is None else bc
    x, metrics = trainer(theta, batches)
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
      cohort_shortcut=compressor.linear if cohort_shortcut is None else cohort_shortcut,
      **fields)
