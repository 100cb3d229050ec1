"""`local_topk`: each client sends the k largest-magnitude entries of its update (FetchSGD).

Client (FetchSGD's worker rule, on the raveled Δ: f32[D], see `topk_common`): with local momentum
ρ = `method.local_momentum` > 0, v ← ρ v + Δ; with `method.error_feedback` (the default),
a ← e + (v or Δ); it sends top-k(a) and zeroes the sent coordinates in e (error feedback: e keeps
exactly what was not sent) and in v (momentum factor masking).
Momentum placement is a config choice: on the client (`method.local_momentum`, kept per client), or
on the server (`server.optimizer=momentum`, FetchSGD's "virtual momentum" for local top-k: the
server's momentum of the mean sparse update, no masking) — not both (ConfigError).
Up:   {'values': f32[k], 'indices': i32[k]}: 8·k bytes per client (indices counted; FetchSGD's code
      counts values only); with `method.quantize=int8` the values are int8 + one float32 scale
      (5·k + 4 bytes), with bf16 bfloat16 (6·k); error feedback then also keeps the rounding error.
Down: the coordinates of θ changed since the client's last sync as f32 values + i32 indices, or θ
      (4·D bytes) when that is smaller (`sparse_sync`). The union of the clients' supports changes
      each round (every coordinate, with a momentum server), so this saturates at D quickly.
State: server θ: f32[D], optimiser state, last_changed: i32[D] (`servers.sparse_sync`). Client
      state: error f32[D] (`compressors.ErrorFeedback`) and/or velocity f32[D]
      (`compressors.Momentum`) per client on the host (`simulation.ClientStateStore`: clients × D floats,
      refused by `config.check_client_memory` when it cannot fit); none without them.
The message is non-linear per client: no cohort shortcut.
Recipe: trainer `recipe.flat_delta`, compressor momentum(error_feedback(top_k (+ quantiser))),
server `servers.sparse_sync`.
"""
from fedjax_intrinsic import compressors
from fedjax_intrinsic.algorithms import base, options, recipe, servers, topk_common as tc

FIELDS = {**tc.topk_fields('the client keeps what its top-k did not send (and what the quantiser '
                           'left out) and adds it next round: an f32[D] memory per client',
                           'local_momentum'),
          **options.QUANTIZE}


def validate(config) -> None:
  tc.check_one_momentum(config, 'method.local_momentum')
  tc.check_no_cohort_shortcut(config)
  options.validate(config, error_feedback=False)


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  flat, D, k, rho = tc.sizes(method_config, ctx.params0, 'local_momentum')
  sparsifier = options.quantized(compressors.top_k(D, k, method_config.topk_method), method_config)
  compressor = compressors.feedback_and_momentum(sparsifier, D, rho,
                                                 method_config.error_feedback)
  return recipe.assemble('local_topk', recipe.flat_delta(ctx, flat), compressor,
                         servers.sparse_sync(ctx.server_optimizer, flat, ctx.num_rounds))
