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
Recipe: trainer `recipe.in_subspace`, compressor identity or a quantiser (`intrinsic.compressor`),
server `servers.k_subspace` with the schedule k(e) below.
"""
import jax
import jax.numpy as jnp
import numpy as np

from fedjax_intrinsic import keys
from fedjax_intrinsic.algorithms import base, intrinsic, recipe, servers
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
  server = servers.k_subspace(ctx.server_optimizer, sub, servers.flat_setup(ctx.params0),
                              method_config.num_subspaces,
                              subspace_schedule(method_config, ctx.run_key, ctx.num_rounds))
  return recipe.assemble('intrinsic_k_subspace', recipe.in_subspace(ctx, sub),
                         intrinsic.compressor(method_config), server)
