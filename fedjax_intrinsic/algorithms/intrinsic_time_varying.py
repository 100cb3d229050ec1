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
Recipe: trainer `recipe.in_subspace`, compressor identity or a quantiser (`intrinsic.compressor`),
server `servers.theta_replay` with t(e) below.
"""
from fedjax_intrinsic.algorithms import base, intrinsic, recipe, servers
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
  every = method_config.resample_every

  def subspace_of_round(e):
    """t(e): the index of round e's subspace."""
    return 0 * e if every == 0 else (e + every - 1) // every

  server = servers.theta_replay(ctx.server_optimizer, sub, servers.flat_setup(ctx.params0),
                                ctx.num_rounds, ctx.server_optimizer_stateless, subspace_of_round)
  return recipe.assemble('intrinsic_time_varying', recipe.in_subspace(ctx, sub),
                         intrinsic.compressor(method_config), server)
