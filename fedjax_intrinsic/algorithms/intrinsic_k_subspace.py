"""`intrinsic_k_subspace`: K fixed random subspaces used in turn (docs/paper.md §3, algorithm 2).

θ = θ0 + Σ_k A_k z_k, A_k from `keys.subspace_key(run_key, k)`, k = 0 … K−1. Round e trains
subspace k(e) = (e − 1) mod K (`method.subspace_order='cyclic'`), or a seeded random choice
(`'random'`, from `keys.subspace_choice_key(run_key, e)`); clients derive k(e) from the seed.
Up:   Δz of the active subspace, d float32 per client (or bf16 / int8 + scale).
Down: the z_k that changed since the client last synchronised (all updated ones for a fresh
      client): d floats each, or θ itself (D floats) when that is smaller — Σ_e min(d·min(e−1, K), D)
      for clients that are fresh every round (docs/paper.md §4). A client that received θ keeps θ and no
      z, so for its next download it is like a fresh client (the ledger records it as holding
      round 1, `held_after`): it needs every subspace updated so far, or θ again.
State: `servers.SubspaceState`: server z: f32[K, d], one optimiser state per subspace (only the
       active one steps), the K subspaces' random states (leaves [K, ...]); clients keep the z_k
       they downloaded (K·d floats), or θ. No client state in the simulation.
Recipe: trainer and compressor `intrinsic.client_update`, the K-subspace server below.
"""
import jax
import jax.numpy as jnp
import numpy as np

from fedjax_intrinsic import keys
from fedjax_intrinsic.algorithms import base, intrinsic, servers
from fedjax_intrinsic.fields import Choice, Int

ORDERS = ('cyclic', 'random')


FIELDS = {
    **intrinsic.FIELDS,
    'num_subspaces': Int(4, lo=1, doc='K subspaces, used in turn'),
    'subspace_order': Choice('cyclic', ORDERS,
                             doc='round e trains subspace (e − 1) mod K, or a seeded random one'),
}


def validate(config) -> None:
  intrinsic.validate(config)


def subspace_schedule(method_config, run_key, num_rounds: int) -> np.ndarray:
  """int32[num_rounds + 2]: entry e is round e's subspace (entry 0 unused)."""
  K = method_config.num_subspaces
  rounds = np.arange(num_rounds + 2)
  if method_config.subspace_order == 'cyclic':
    return ((rounds - 1) % K).astype(np.int32)
  draw = jax.vmap(lambda e: jax.random.randint(keys.subspace_choice_key(run_key, e), (), 0, K))
  return np.asarray(draw(jnp.asarray(rounds)), np.int32)


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  sub = intrinsic.subspaces(method_config, ctx)
  K = method_config.num_subspaces
  opt = ctx.server_optimizer
  client_update, aggregate, linear = intrinsic.client_update(ctx, sub, method_config)
  schedule = subspace_schedule(method_config, ctx.run_key, ctx.num_rounds)
  schedule_j = jnp.asarray(schedule)

  def theta(z, theta0, op_states):
    lifted = jax.vmap(sub.op.lift)(op_states, z)          # [K, D]
    return theta0 + jnp.sum(lifted, axis=0)

  def init(params0):
    z = jnp.zeros((K, sub.d), jnp.float32)
    opt_state = jax.vmap(opt.init)(z)
    op_states = jax.vmap(sub.state)(jnp.arange(K))
    return servers.SubspaceState(jnp.ones((), jnp.int32), z, opt_state, intrinsic.flat(params0),
                                 op_states)

  def active(state):
    return schedule_j[state.round]

  def broadcast(state):
    k = active(state)
    return base.Broadcast(theta(state.z, state.theta0, state.op_state),
                          jax.tree.map(lambda s: s[k], state.op_state))

  def server_update(state, agg, second=None):
    del second
    k = active(state)
    opt_k = jax.tree.map(lambda s: s[k], state.opt_state)
    z_k, opt_k = intrinsic.server_step(opt, state.z[k], opt_k, agg)
    opt_state = jax.tree.map(lambda s, n: s.at[k].set(n), state.opt_state, opt_k)
    return state._replace(round=state.round + 1, z=state.z.at[k].set(z_k), opt_state=opt_state)

  def changed(round_now: int, held_round: int) -> np.ndarray:
    """The subspaces updated in rounds held_round … round_now − 1, sorted."""
    return np.unique(schedule[held_round:round_now])

  def download_bytes(state, held_rounds):
    e = int(state.round)
    n = np.array([len(changed(e, int(h))) for h in np.ravel(held_rounds)], np.int64)
    return intrinsic.floats_bytes(np.minimum(n * sub.d, sub.D)).reshape(np.shape(held_rounds))

  def catch_up(state, held_round):
    ks = changed(int(state.round), int(held_round))
    if sends_theta(len(ks)):
      return {'theta': theta(state.z, state.theta0, state.op_state)}
    return {'z': state.z[jnp.asarray(ks, jnp.int32)]}   # [n, d]; which k each is, clients derive

  def sends_theta(n: int) -> bool:
    return n > 0 and n * sub.d >= sub.D

  def held_after(state, held_rounds):
    """round_now, or 1 for the clients whose catch-up is θ (they keep no z)."""
    e = int(state.round)
    theta = [sends_theta(len(changed(e, int(h)))) for h in np.ravel(held_rounds)]
    return np.where(np.array(theta, bool), 1, e).reshape(np.shape(held_rounds)).astype(np.int64)

  def keep(held_state, payload, held_round, round_now):
    """The z the client holds after the sync; after θ it holds no z (a fresh client's zeros)."""
    if 'theta' in payload:
      return init(ctx.params0)
    ks = changed(round_now, held_round)
    z = held_state.z.at[jnp.asarray(ks, jnp.int32)].set(payload['z']) if len(ks) else held_state.z
    return held_state._replace(z=z)

  def rebuild(held_state, payload, held_round, round_now):
    if 'theta' in payload:
      return sub.unravel(payload['theta'])
    ks = changed(round_now, held_round)
    z = held_state.z.at[jnp.asarray(ks, jnp.int32)].set(payload['z']) if len(ks) else held_state.z
    op_states = jax.vmap(sub.state)(jnp.arange(K))        # every client derives them from the seed
    return sub.unravel(theta(z, intrinsic.flat(ctx.params0), op_states))

  return base.FederatedAlgorithm(
      name='intrinsic_k_subspace',
      init=init,
      init_client=lambda params0: (),
      broadcast=broadcast,
      client_update=client_update,
      aggregate=aggregate,
      server_update=server_update,
      model_params=lambda state: sub.unravel(theta(state.z, state.theta0, state.op_state)),
      download_bytes=download_bytes,
      catch_up=catch_up,
      rebuild=rebuild,
      keep=keep,
      held_after=held_after,
      cohort_shortcut=linear,
  )
