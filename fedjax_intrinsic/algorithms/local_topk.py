"""`local_topk`: each client sends the k largest-magnitude entries of its update (FetchSGD).

Client (FetchSGD's worker rule, on the raveled Δ: f32[D], see `topk_common`): with local momentum
ρ = `method.local_momentum` > 0, v ← ρ v + Δ; with `method.error_type='local'`, a ← e + (v or Δ);
it sends top-k(a) and zeroes the sent coordinates in e (error feedback: e keeps exactly what was
not sent) and in v (momentum factor masking).
Momentum placement is a config choice: on the client (`method.local_momentum`, kept per client), or
on the server (`server.optimizer=momentum`, FetchSGD's "virtual momentum" for local top-k: the
server's momentum of the mean sparse update, no masking) — not both (ConfigError).
Up:   {'values': f32[k], 'indices': i32[k]}: 8·k bytes per client (indices counted; FetchSGD's code
      counts values only).
Down: the coordinates of θ changed since the client's last sync as f32 values + i32 indices, or θ
      (4·D bytes) when that is smaller (`sparse_sync`). The union of the clients' supports changes
      each round (every coordinate, with a momentum server), so this saturates at D quickly.
State: server θ: f32[D], optimiser state, last_changed: i32[D]. Client state: error f32[D] and/or
      velocity f32[D] per client on the host (`simulation.ClientStateStore`: clients × D floats,
      refused by `config.check_client_memory` when it cannot fit); none without them.
The message is non-linear per client: no cohort shortcut.
"""
import projections as P
from fedjax_intrinsic.algorithms import base, topk_common as tc

ERROR_TYPES = ('local', 'none')
ServerState = tc.ServerState
ClientState = tc.ClientState


def default_config() -> dict:
  """k ≈ 3% of the digits MLP's D = 9,610 (learns on digits; see tests/algorithms/test_topk.py)."""
  return {'k': 300, 'error_type': 'local', 'local_momentum': 0.0, 'topk_method': 'exact'}


def validate(config) -> None:
  m = config.method
  tc.check_positive_int(m.k, 'method.k')
  tc.check_choice(m.error_type, 'method.error_type', ERROR_TYPES)
  tc.check_choice(m.topk_method, 'method.topk_method', tc.TOPK_METHODS)
  tc.check_momentum(m.local_momentum, 'method.local_momentum')
  tc.check_one_momentum(config, 'method.local_momentum')
  tc.check_no_cohort_shortcut(config)


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  flat = tc.flat_setup(ctx)
  D, k = flat.D, method_config.k
  tc.check_k(k, D)
  tc.check_feedback_needs_loss(k, D, method_config.error_type)
  rho = float(method_config.local_momentum)
  tc.check_masked_momentum(k, D, rho, 'method.local_momentum')
  feedback = method_config.error_type == 'local'
  topk_method = method_config.topk_method
  opt = ctx.server_optimizer
  sync = tc.sync(flat, ctx.num_rounds)

  def client_update(bc, cstate, batches, key):
    del key
    delta, metrics = tc.client_delta(ctx, flat, bc, batches)
    values, indices, new = tc.compress_with_feedback(
        delta, cstate, rho, feedback, lambda a: P.top_k(a, k, topk_method))
    return ({'values': values, 'indices': indices},
            new if (feedback or rho > 0) else cstate, metrics)

  def aggregate(payloads, weights):
    return tc.sparse_sum(payloads['values'], payloads['indices'], weights, D)

  def server_update(state, agg, second=None):
    del second
    return tc.apply_update(opt, state, agg)

  return base.FederatedAlgorithm(
      name='local_topk',
      init=lambda params0: tc.init_server(opt, tc.ravel(params0)),
      init_client=lambda params0: tc.init_client_state(D, rho, feedback),
      broadcast=lambda state: state.theta,
      client_update=client_update,
      aggregate=aggregate,
      server_update=server_update,
      model_params=lambda state: flat.unravel(state.theta),
      download_bytes=sync.download_bytes,
      catch_up=sync.catch_up,
      rebuild=sync.rebuild,
      keep=sync.keep,
      cohort_shortcut=False,
  )
