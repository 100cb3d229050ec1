"""`intrinsic_static`: one fixed random subspace for the whole run (docs/paper.md §3, algorithm 1).

θ = θ0 + A z with A from `keys.subspace_key(run_key, 0)`. Clients train in z-space and upload Δz.
Up:   Δz, d float32 per client (or bf16 / int8 + scale, `method.payload_dtype`).
Down: z, d float32 per client per round (with θ0 and the seed it rebuilds θ = θ0 + A z).
State: `servers.SubspaceState`: server z: f32[d] and the server optimiser's state in z-space (d
       floats per slot); θ0 and the operator's random state are derived data, not traffic. No
       client state.
Recipe: trainer and compressor `intrinsic.client_update`, the subspace server below.
"""
import jax.numpy as jnp
import numpy as np

from fedjax_intrinsic.algorithms import base, intrinsic, servers

FIELDS = intrinsic.FIELDS


def validate(config) -> None:
  intrinsic.validate(config)


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  sub = intrinsic.subspaces(method_config, ctx)
  opt = ctx.server_optimizer
  client_update, aggregate, linear = intrinsic.client_update(ctx, sub, method_config)

  def theta(state):
    return state.theta0 + sub.op.lift(state.op_state, state.z)

  def init(params0):
    z = jnp.zeros((sub.d,), jnp.float32)
    return servers.SubspaceState(jnp.ones((), jnp.int32), z, opt.init(z), intrinsic.flat(params0),
                                 sub.state(0))

  def server_update(state, agg, second=None):
    del second
    z, opt_state = intrinsic.server_step(opt, state.z, state.opt_state, agg)
    return state._replace(round=state.round + 1, z=z, opt_state=opt_state)

  def download_bytes(state, held_rounds):
    return np.full(np.shape(held_rounds), sub.d * 4, np.int64)

  def rebuild(held, payload, held_round, round_now):
    del held, held_round, round_now   # z alone, with θ0 and the seed's subspace, gives θ
    theta0 = intrinsic.flat(ctx.params0)
    return sub.unravel(theta0 + sub.op.lift(sub.state(0), payload))

  return base.FederatedAlgorithm(
      name='intrinsic_static',
      init=init,
      init_client=lambda params0: (),
      broadcast=lambda state: base.Broadcast(theta(state), state.op_state),
      client_update=client_update,
      aggregate=aggregate,
      server_update=server_update,
      model_params=lambda state: sub.unravel(theta(state)),
      download_bytes=download_bytes,
      catch_up=lambda state, held_round: state.z,
      rebuild=rebuild,
      cohort_shortcut=linear,
  )
