"""`sketched_sgd`: Sketched SGD (Ivkin et al. 2019): local momentum and error, sketches, heavy hitters.

The count sketch S: f32[D] -> f32[rows, cols] and its hashes from `keys.sketch_key(run_key)` are
FetchSGD's (`fetchsgd.Sketcher`: derived from the seed, never sent). Client c keeps, across rounds,
its momentum u_c and error v_c: f32[D] each (u_c only when ρ = `method.rho` > 0). In a round it runs
`client.local_steps` SGD steps at `client.lr` from the broadcast θ, Δ_c = θ_start − θ_end, and

    u_c ← ρ u_c + Δ_c;   v_c ← v_c + u_c;   sends S(v_c).

Heavy-hitter recovery, as in the authors' released code (CommEfficient's SketchedSGD/:
`ParameterServer.compute_hhcoords` / `compute_update`, `Worker.apply_update`): the server sums
S̄ = Σ_c w_c S(v_c) (linear) and takes the candidate set H = the p2·k coordinates of largest
|estimate(S̄)| (p2 = `method.p2`); a second exchange fetches their exact values (H, p2·k int32, goes
down to every participant, each answers with v_c[H], p2·k float32 up); the server takes the exact
top-k of the candidates' weighted mean v̄[H], A ⊆ H (k coordinates), and applies u = densify(v̄[A], A):
f32[D] as the gradient of one optax step (`ctx.server_optimizer`; with 'sgd' at rate η, θ ← θ − η u;
the rate multiplies the applied update, outside the clients' accumulators). The participants then
zero A (not all of H) in their error and momentum (error feedback, momentum masking): with p2 > 1
the server sends A, k int32, to them at the end of the round (the engine's `notice`); with p2 = 1,
A = H and the clients zero it when they answer. Momentum lives on the clients: with ρ > 0
server.optimizer 'momentum'/'nesterov' is rejected (two momenta).

Up:   S(v_c): f32[rows, cols] then v_c[H]: f32[p2·k]: 4·(rows·cols + p2·k) bytes per client.
Down: the request H, 4·p2·k bytes, with p2 > 1 the applied A, 4·k bytes, and the coordinates of θ
      changed since the client's last sync as float32 values + int32 indices, or θ itself when
      smaller (`sparse_sync`).
State: server θ: f32[D] (raveled), optimiser state (θ-space), last_changed: i32[D], the last applied
       A: i32[k], the sketch's hashes (derived from the seed: `fetchsgd.Sketcher`); per client
       {'error': f32[D], 'momentum': f32[D] (only with rho > 0)}, kept on the host for every client.
No cohort shortcut (client state).
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from fedjax_intrinsic.algorithms import base, fetchsgd, sparse_sync


class ServerState(NamedTuple):
  round: jax.Array          # i32[]: the round about to run (1-based)
  params: jax.Array         # f32[D]: θ raveled
  opt_state: Any            # the server optimiser's state, θ-space
  last_changed: jax.Array   # i32[D]: the last round each coordinate of θ changed in (0 = never)
  applied: jax.Array        # i32[k]: the coordinates the last round applied (A)
  sketch_state: Any         # CountSketchState (derived from the seed)


def default_config() -> dict:
  """rows × cols = 5 × 1,000 floats + p2·k = 4,000 values up per client (the digits CNN's D is
  53,098). k = 1,000 and p2 = 4: the project's choice on configs/digits_cnn.py, where with 10 of
  100 clients a round each client's error is about 10 rounds stale and smaller k or p2 learned less
  (README, methods table). rho = 0: the digits protocol's server rate is tuned without momentum
  (rho = 0.9 does not learn there)."""
  return {**fetchsgd.sketch_defaults(), 'k': 1000, 'p2': 4}


def validate(config) -> None:
  from fedjax_intrinsic.config import ConfigError
  fetchsgd.validate_sketch_fields(config)
  p2 = config.method.p2
  if isinstance(p2, bool) or not isinstance(p2, int) or p2 < 1:
    raise ConfigError(f'method.p2={p2!r} is invalid; allowed: an integer >= 1 (candidates = p2·k)')
  if config.simulation.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid for method.name='
                      f'{config.method.name!r} (clients keep error and momentum); allowed: False')


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  sk = fetchsgd.sketcher(method_config, ctx)
  opt = ctx.server_optimizer
  rho = float(method_config.rho)
  k = method_config.k
  p2 = method_config.get('p2', 1)
  if p2 * k > sk.D:
    raise ValueError(f'method.p2={p2} is invalid with method.k={k}; allowed: p2·k <= D = {sk.D} '
                     '(the number of model parameters)')
  candidates = fetchsgd.Sketcher(sk.D, p2 * k, sk.cs, sk.key, sk.unravel)

  def init(params0):
    theta0 = ravel_pytree(params0)[0]
    return ServerState(jnp.ones((), jnp.int32), theta0, opt.init(theta0),
                       sparse_sync.init_last_changed(sk.D), jnp.zeros((k,), jnp.int32),
                       sk.init_state())

  def init_client(params0):
    del params0
    zeros = jnp.zeros((sk.D,), jnp.float32)
    return {'error': zeros, 'momentum': zeros} if rho > 0 else {'error': zeros}

  def client_update(bc, cstate, batches, key):
    del key
    delta, metrics = fetchsgd.client_delta(ctx, bc.params, batches)
    cstate = dict(cstate)
    if rho > 0:
      cstate['momentum'] = rho * cstate['momentum'] + delta
      cstate['error'] = cstate['error'] + cstate['momentum']
    else:
      cstate['error'] = cstate['error'] + delta
    return sk.sketch(bc.sketch_state, cstate['error']), cstate, metrics

  def heavy_hitters(state, agg):
    """H: i32[p2·k], the p2·k coordinates of largest |estimate(S̄)|."""
    return candidates.top_k(sk.estimate(state.sketch_state, agg))[1]

  def zero_at(cstate, indices):
    return {name: x.at[indices].set(0.0) for name, x in cstate.items()}

  def respond(bc, request, cstate, batches, key):
    """v_c[H]: f32[p2·k] up; with p2 = 1 (A = H) the client zeroes H in its error and momentum."""
    del bc, batches, key
    payload = cstate['error'][request]
    return payload, (zero_at(cstate, request) if p2 == 1 else cstate)

  def server_update(state, agg, second=None):
    hh = heavy_hitters(state, agg)
    if p2 == 1:
      values, applied = second, hh
    else:   # the exact top-k of the candidates' exact mean values
      values, pos = sk.top_k(second)
      applied = hh[pos]
    update = sk.densify(values, applied)
    params, opt_state = base.server_step(opt, state.params, state.opt_state, update)
    last_changed = sparse_sync.update_last_changed(state.last_changed, state.params, params,
                                                   state.round)
    return ServerState(state.round + 1, params, opt_state, last_changed,
                       applied.astype(jnp.int32), state.sketch_state)

  def finish(bc, request, applied, cstate):
    """p2 > 1: the participant zeroes the applied coordinates A (the notice) in its accumulators."""
    del bc, request
    return zero_at(cstate, applied)

  download_bytes, catch_up, rebuild, keep = fetchsgd.sparse_download(sk, ctx.num_rounds)
  return base.FederatedAlgorithm(
      name='sketched_sgd',
      init=init,
      init_client=init_client,
      broadcast=lambda state: fetchsgd.Broadcast(sk.unravel(state.params), state.sketch_state),
      client_update=client_update,
      aggregate=base.weighted_sum,
      server_update=server_update,
      model_params=lambda state: sk.unravel(state.params),
      download_bytes=download_bytes,
      catch_up=catch_up,
      rebuild=rebuild,
      keep=keep,
      cohort_shortcut=False,
      query=heavy_hitters,
      respond=respond,
      aggregate2=base.weighted_sum,
      notice=(lambda state: state.applied) if p2 > 1 else None,
      finish=finish if p2 > 1 else None,
  )
