"""`true_topk`: the server applies the top-k of the mean full update (FetchSGD's reference bound).

Clients send their full Δ (uncompressed); the server sparsifies the weighted mean g = mean Δ as
FetchSGD's `_server_helper_true_topk` does, on θ raveled to f32[D]: with virtual momentum
ρ = `method.momentum` > 0, v ← ρ v + g; with `method.error_feedback` (the default: FetchSGD's
"virtual" error, accumulated on the server), a ← e + (v or g), else a = (v or g); s = top-k(a) as
a dense f32[D]; e ← a with the k applied coordinates zeroed, v ← v with them zeroed (momentum factor
masking). s goes to the server optimiser as the gradient (FetchSGD applies lr · s:
`server.optimizer=sgd`), so with a stateless optimiser the applied update is k-sparse. Momentum belongs to the method here (before the top-k); `server.optimizer=momentum`
too is refused (momentum in two places). A stateful optimiser (adam) is allowed: its update is
then not sparse, and the download accounting counts what changed.
Up:   Δ: f32[D], 4·D bytes per client (no compression up; `method.quantize` bf16: 2·D, int8:
      D + 4, with `method.client_error_feedback` the client keeps the rounding error).
Down: the coordinates of θ changed since the client's last sync as f32 values + i32 indices, or θ
      (4·D bytes) when smaller (`sparse_sync`): about 8·k·(rounds missed) bytes under server SGD.
State: server θ: f32[D], optimiser state, last_changed: i32[D] (`servers.sparse_sync`); in
       `extra`, the server-side compressor's state: velocity f32[D] (momentum > 0,
       `compressors.Momentum`), error f32[D] (virtual error, `compressors.ErrorFeedback`).
       No client state, but the rounding error f32[D] with `method.client_error_feedback`.
The client message is Δ itself: with one local step it is linear in one gradient (cohort shortcut).
Recipe: trainer `recipe.flat_delta`, compressor identity (+ quantiser), server `servers.sparse_sync`
whose step first runs the server-side compressor momentum(error_feedback(top_k)) on the mean.
"""
from fedjax_intrinsic import compressors
from fedjax_intrinsic.algorithms import base, options, recipe, servers, topk_common as tc
from fedjax_intrinsic.fields import ConfigError

FIELDS = {**tc.topk_fields('the server keeps what its top-k of the mean did not apply and adds it '
                           'next round (FetchSGD\'s virtual error): an f32[D] memory on the server',
                           'momentum'),
          **options.QUANTIZE,
          'client_error_feedback': options.ERROR_FEEDBACK['error_feedback']}


def validate(config) -> None:
  tc.check_one_momentum(config, 'method.momentum')
  options.validate(config, field='client_error_feedback')
  if config.simulation.cohort_shortcut and config.client.local_steps != 1:
    raise ConfigError('simulation.cohort_shortcut=True is invalid with client.local_steps='
                      f'{config.client.local_steps} for method.name=true_topk; allowed: '
                      'local_steps=1')


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  flat, D, k, rho = tc.sizes(method_config, ctx.params0, 'momentum')
  on_server = compressors.feedback_and_momentum(
      compressors.top_k(D, k, method_config.topk_method), D, rho,
      method_config.error_feedback)
  server = servers.sparse_sync(ctx.server_optimizer, flat, ctx.num_rounds)

  def server_update(state, agg, second=None):
    """agg: the mean Δ̄: f32[D] -> the top-k step (see the module docstring)."""
    del second
    sent, extra = on_server.encode(agg, state.extra, None)
    return server.step(state, on_server.decode(sent), extra)

  return recipe.assemble('true_topk', recipe.flat_delta(ctx, flat),
                         options.dense(method_config, flat.theta0, 'client_error_feedback'), server,
                         extra=on_server.init, server_update=server_update)
