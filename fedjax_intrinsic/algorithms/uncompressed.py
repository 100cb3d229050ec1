"""`uncompressed`: every client sends its full gradient; FetchSGD's "uncompressed" row.

Up:   the gradient of the client's masked mean loss at the broadcast θ on its whole local batch,
      a pytree shaped like θ: D float32 (4·D bytes).
Down: θ itself, D float32, to every participant (it changes in every coordinate every round).
State: server θ and the server optimiser's state (θ-space); no client state.
The client message is linear in one gradient, so the cohort shortcut applies.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fedjax_intrinsic.algorithms import base


class ServerState(NamedTuple):
  round: jax.Array       # i32[]: the round about to run (1-based)
  params: Any            # θ
  opt_state: Any         # the server optimiser's state, θ-space


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  del method_config  # nothing to configure
  loss = base.model_loss(ctx.model)
  opt = ctx.server_optimizer

  def init(params0):
    return ServerState(jnp.ones((), jnp.int32), params0, opt.init(params0))

  def client_update(bc, cstate, batch, key):
    del key
    step = jax.tree.map(lambda x: x[0], batch)   # one step: the client's whole data
    value, grad = jax.value_and_grad(loss)(bc, step)
    return grad, cstate, {'loss': value}

  def server_update(state, agg, second=None):
    del second
    params, opt_state = base.server_step(opt, state.params, state.opt_state, agg)
    return ServerState(state.round + 1, params, opt_state)

  return base.FederatedAlgorithm(
      name='uncompressed',
      init=init,
      init_client=lambda params0: (),
      broadcast=lambda state: state.params,
      client_update=client_update,
      aggregate=base.weighted_sum,
      server_update=server_update,
      model_params=lambda state: state.params,
      download_bytes=base.dense_download_bytes(ctx.params0),
      catch_up=lambda state, held_round: state.params,
      rebuild=lambda held_state, payload, held_round, round_now: payload,
      cohort_shortcut=True,
  )


def validate(config) -> None:
  """One gradient on the client's whole local data: client.local_steps must be 1."""
  from fedjax_intrinsic.config import ConfigError
  if config.client.local_steps != 1:
    raise ConfigError(f'client.local_steps={config.client.local_steps} is invalid for '
                      f'method.name={config.method.name!r}; allowed: 1 (use method.name=fedavg '
                      'for several local steps)')
