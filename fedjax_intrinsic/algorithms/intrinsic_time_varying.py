"""`intrinsic_time_varying`: a fresh random subspace every round (docs/paper.md §3, algorithm 3).

Round e uses A_e from `keys.subspace_key(run_key, t(e))` with t(e) = e (`method.resample_every = 1`,
the paper's method; N > 1 keeps each subspace N rounds, t(e) = ⌈e / N⌉; 0 keeps t = 0 throughout, an
ablation that equals the static method under server SGD): θ_e = θ_{e−1} + u_e, u_e = opt(A_e Δz̄_e): the
server keeps θ and its optimiser state in θ-space and applies the optimiser to the lifted mean.
Up:   Δz of round e's subspace, d float32 per client (or bf16 / int8 + scale).
Down: what rebuilds θ_{e−1} by replaying the server's deterministic rule on the history of mean Δz̄
      (the subspaces clients derive themselves): with a stateless server optimiser (plain SGD at a
      constant rate) from the client's last synchronised θ, the Δz̄ of the rounds it missed; with a
      stateful one (momentum, Adam, schedules) from θ0, all Δz̄ of rounds 1 … e−1; or θ_{e−1} itself
      (D floats), whichever is smaller: Σ_e min(d·(e−1), D) for clients fresh every round.
State: `servers.ServerState`: server θ: f32[D], optimiser state in θ-space, and in `extra` a ring
       buffer 'history' f32[R, d] of the last R = min(⌈D/d⌉, rounds) mean Δz̄ (row (r − 1) mod R
       for round r; beyond R rounds θ is always the smaller catch-up, so shapes are static and the
       round compiles once) and 'op_state', the random state of this round's subspace (derived
       from the seed). No client state.
Recipe: trainer and compressor `intrinsic.client_update`, the θ-replay server below.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_intrinsic.algorithms import base, intrinsic, servers
from fedjax_intrinsic.fields import Int


FIELDS = {
    **intrinsic.FIELDS,
    'resample_every': Int(1, lo=0, note='(1 = a new subspace every round, the paper\'s method; '
                                        '0 = never, subspace 0 throughout, which is the static '
                                        'method with a θ-space server)',
                          doc='rounds each subspace is kept'),
}


def validate(config) -> None:
  intrinsic.validate(config)


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  sub = intrinsic.subspaces(method_config, ctx)
  opt = ctx.server_optimizer
  stateless = ctx.server_optimizer_stateless
  client_update, aggregate, linear = intrinsic.client_update(ctx, sub, method_config)
  ring = max(1, min(math.ceil(sub.D / sub.d), ctx.num_rounds))
  every = method_config.resample_every

  def subspace_of_round(e):
    """t(e): the index of round e's subspace."""
    return 0 * e if every == 0 else (e + every - 1) // every

  def state_of_round(e):
    return sub.state(subspace_of_round(e))

  theta0 = intrinsic.flat(ctx.params0)

  def apply_round(params, opt_state, mean_dz, op_state):
    """The server's rule for one round, which clients replay: θ ← θ + opt(A_e Δz̄_e), the
    optimiser seeing θ − θ0 as its params (weight decay toward θ0: intrinsic.py)."""
    return intrinsic.server_step(opt, params, opt_state, sub.op.lift(op_state, mean_dz), theta0)

  apply_round_jit = jax.jit(apply_round)
  state_of_round_jit = jax.jit(state_of_round)

  def init(params0):
    theta0 = intrinsic.flat(params0)
    return servers.ServerState(jnp.ones((), jnp.int32), theta0, opt.init(theta0), (),
                               {'history': jnp.zeros((ring, sub.d), jnp.float32),
                                'op_state': state_of_round(1)})

  def server_update(state, agg, second=None):
    del second
    theta, opt_state = apply_round(state.theta, state.opt_state, agg, state.extra['op_state'])
    history = state.extra['history'].at[(state.round - 1) % ring].set(agg)
    return state._replace(round=state.round + 1, theta=theta, opt_state=opt_state,
                          extra={'history': history, 'op_state': state_of_round(state.round + 1)})

  def replay_rounds(round_now: int, held_round: int) -> tuple[int, int]:
    """(first round to replay, count) for a client holding `held_round` at round `round_now`."""
    first = held_round if stateless else 1
    return first, round_now - first

  def download_bytes(state, held_rounds):
    e = int(state.round)
    n = np.array([replay_rounds(e, int(h))[1] for h in np.ravel(held_rounds)], np.int64)
    return intrinsic.floats_bytes(np.minimum(n * sub.d, sub.D)).reshape(np.shape(held_rounds))

  def catch_up(state, held_round):
    e = int(state.round)
    first, n = replay_rounds(e, int(held_round))
    if n * sub.d >= sub.D and n:
      return {'theta': state.theta}
    rows = (np.arange(first, e) - 1) % ring
    return {'delta_z': state.extra['history'][jnp.asarray(rows, jnp.int32)]}    # [n, d], rounds first … e−1

  def rebuild(held_state, payload, held_round, round_now):
    if 'theta' in payload:
      return sub.unravel(payload['theta'])
    first, n = replay_rounds(round_now, held_round)
    if stateless:   # the client kept θ of its last sync; a stateless rule needs nothing else
      params, opt_state = held_state.theta, opt.init(held_state.theta)
    else:           # replay from θ0
      theta0 = intrinsic.flat(ctx.params0)
      params, opt_state = theta0, opt.init(theta0)
    for i, r in enumerate(range(first, first + n)):
      params, opt_state = apply_round_jit(params, opt_state, payload['delta_z'][i],
                                          state_of_round_jit(r))
    return sub.unravel(params)

  return base.FederatedAlgorithm(
      name='intrinsic_time_varying',
      init=init,
      init_client=lambda params0: (),
      broadcast=lambda state: base.Broadcast(state.theta, state.extra['op_state']),
      client_update=client_update,
      aggregate=aggregate,
      server_update=server_update,
      model_params=lambda state: sub.unravel(state.theta),
      download_bytes=download_bytes,
      catch_up=catch_up,
      rebuild=rebuild,
      keep=lambda held, payload, h, e: held._replace(
          theta=intrinsic.flat(rebuild(held, payload, h, e))),   # the client keeps its θ
      cohort_shortcut=linear,
  )
