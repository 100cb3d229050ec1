"""`fedavg`: Federated Averaging (McMahan et al. 2017) with a server optimiser (Reddi et al. 2021).

Each client runs `local_steps` steps of SGD at `client_lr` (the batches of one or more local epochs,
see the config's client settings) from the broadcast θ and sends Δ = θ_start − θ_end.
Up:   Δ, a pytree shaped like θ: D float32 (or bf16 / int8 + one scale per leaf, `method.quantize`).
Down: θ, D float32, to every participant.
State: server θ: f32[D] and optimiser state (`servers.dense`); no client state (the error memory
f32[D] with `method.error_feedback`). With one local step and client_lr = 1, Δ is the gradient
and FedAvg equals `uncompressed` (docs/paper.md §2).
Recipe: trainer `recipe.tree_delta`, compressor identity (+ quantiser), server `servers.dense`.
"""
from fedjax_intrinsic.algorithms import base, options, recipe, servers


FIELDS = {**options.QUANTIZE, **options.ERROR_FEEDBACK}


validate = options.validate


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  flat = servers.flat_setup(ctx.params0)
  return recipe.assemble('fedavg', recipe.tree_delta(ctx, flat),
                         options.dense(method_config, ctx.params0),
                         servers.dense(ctx.server_optimizer, flat), cohort_shortcut=False)
