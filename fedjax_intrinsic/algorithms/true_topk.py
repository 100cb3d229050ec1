"""`true_topk`: the server applies the top-k of the mean full update (FetchSGD's reference bound).

Clients send their full Δ (uncompressed); the server sparsifies the weighted mean g = mean Δ as
FetchSGD's `_server_helper_true_topk` does, on θ raveled to f32[D]: with virtual momentum
ρ = `method.momentum` > 0, v ← ρ v + g; with `method.error_type='virtual'`, a ← e + (v or g), else
a = (v or g); s = top-k(a) as a dense f32[D]; e ← a with the k applied coordinates zeroed, v ← v
with them zeroed (momentum factor masking). s goes to the server optimiser as the gradient
(FetchSGD applies lr · s: `server.optimizer=sgd`), so with a stateless optimiser the applied update
is k-sparse. Momentum belongs to the method here (before the top-k); `server.optimizer=momentum`
too is refused (momentum in two places). A stateful optimiser (adam) is allowed: its update is
then not sparse, and the download accounting counts what changed.
Up:   Δ: f32[D], 4·D bytes per client (no compression up).
Down: the coordinates of θ changed since the client's last sync as f32 values + i32 indices, or θ
      (4·D bytes) when smaller (`sparse_sync`): about 8·k·(rounds missed) bytes under server SGD.
State: server θ: f32[D], optimiser state, last_changed: i32[D], velocity f32[D] (momentum > 0),
       error f32[D] (virtual error). No client state.
The client message is Δ itself: with one local step it is linear in one gradient (cohort shortcut).
"""
import jax.numpy as jnp

import projections as P
from fedjax_intrinsic.algorithms import base, topk_common as tc

ERROR_TYPES = ('virtual', 'none')
ServerState = tc.ServerState


def default_config() -> dict:
  """k ≈ 3% of the digits MLP's D = 9,610 (learns on digits; see tests/algorithms/test_topk.py)."""
  return {'k': 300, 'error_type': 'virtual', 'momentum': 0.0, 'topk_method': 'exact'}


def validate(config) -> None:
  from fedjax_intrinsic.config import ConfigError
  m = config.method
  tc.check_positive_int(m.k, 'method.k')
  tc.check_choice(m.error_type, 'method.error_type', ERROR_TYPES)
  tc.check_choice(m.topk_method, 'method.topk_method', tc.TOPK_METHODS)
  tc.check_momentum(m.momentum, 'method.momentum')
  tc.check_one_momentum(config, 'method.momentum')
  if config.simulation.cohort_shortcut and config.client.local_steps != 1:
    raise ConfigError('simulation.cohort_shortcut=True is invalid with client.local_steps='
                      f'{config.client.local_steps} for method.name=true_topk; allowed: '
                      'local_steps=1')


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  flat = tc.flat_setup(ctx)
  D, k = flat.D, method_config.k
  tc.check_k(k, D)
  tc.check_feedback_needs_loss(k, D, method_config.error_type)
  rho = float(method_config.momentum)
  tc.check_masked_momentum(k, D, rho, 'method.momentum')
  virtual_error = method_config.error_type == 'virtual'
  topk_method = method_config.topk_method
  opt = ctx.server_optimizer
  sync = tc.sync(flat, ctx.num_rounds)

  def client_update(bc, cstate, batches, key):
    del key
    delta, metrics = tc.client_delta(ctx, flat, bc, batches)
    return delta, cstate, metrics

  def aggregate(payloads, weights):
    return jnp.einsum('c,cd->d', weights.astype(jnp.float32), payloads.astype(jnp.float32),
                      precision='highest')

  def server_update(state, agg, second=None):
    """agg: the mean Δ̄: f32[D] -> the top-k step (see the module docstring)."""
    del second
    accumulators = {}
    x = agg
    if rho > 0:
      velocity = rho * state.velocity + agg
      x = velocity
    if virtual_error:
      x = state.error + x
    values, indices = P.top_k(x, k, topk_method)
    sparse = P.densify(values, indices, D)
    sent = tc.sent_mask(indices, D)
    if virtual_error:
      accumulators['error'] = jnp.where(sent, 0.0, x)
    if rho > 0:
      accumulators['velocity'] = jnp.where(sent, 0.0, velocity)
    return tc.apply_update(opt, state, sparse, **accumulators)

  return base.FederatedAlgorithm(
      name='true_topk',
      init=lambda params0: tc.init_server(opt, tc.ravel(params0), velocity=rho > 0,
                                          error=virtual_error),
      init_client=lambda params0: (),
      broadcast=lambda state: state.theta,
      client_update=client_update,
      aggregate=aggregate,
      server_update=server_update,
      model_params=lambda state: flat.unravel(state.theta),
      download_bytes=sync.download_bytes,
      catch_up=sync.catch_up,
      rebuild=sync.rebuild,
      keep=sync.keep,
      cohort_shortcut=True,
  )
