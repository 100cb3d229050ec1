"""`intrinsic_static`: one fixed random subspace for the whole run (docs/paper.md §3, algorithm 1).

θ = θ0 + A z with A from `keys.subspace_key(run_key, 0)`. Clients train in z-space and upload Δz.
Up:   Δz, d float32 per client (or bf16 / int8 + scale, `method.payload_dtype`).
Down: z, d float32 per client per round (with θ0 and the seed it rebuilds θ = θ0 + A z).
State: `servers.SubspaceState`: server z: f32[d] and the server optimiser's state in z-space (d
       floats per slot); θ0 and the operator's random state are derived data, not traffic. No
       client state.
Recipe: trainer `recipe.in_subspace`, compressor identity or a quantiser (`intrinsic.compressor`),
server `servers.subspace`.
"""
from fedjax_intrinsic.algorithms import base, intrinsic, recipe, servers

FIELDS = intrinsic.FIELDS


def validate(config) -> None:
  intrinsic.validate(config)


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  sub = intrinsic.subspaces(method_config, ctx)
  return recipe.assemble(
      'intrinsic_static', recipe.in_subspace(ctx, sub), intrinsic.compressor(method_config),
      servers.subspace(ctx.server_optimizer, sub, servers.flat_setup(ctx.params0)))
