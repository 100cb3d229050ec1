"""`sketched_sgd`: Sketched SGD (Ivkin et al. 2019): local momentum and error, sketches, heavy hitters.

The count sketch S: f32[D] -> f32[rows, cols] and its hashes from `keys.sketch_key(run_key)` are
FetchSGD's (`compressors.Sketcher`: derived from the seed, never sent). Client c keeps, across rounds,
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

Up:   S(v_c): f32[rows, cols] then v_c[H]: f32[p2·k]: 4·(rows·cols + p2·k) bytes per client; with
      `method.quantize` both as bf16, or int8 + one float32 scale each (the second rounded with
      `keys.chain_key(key, 2)`); the error v_c stays exact (the server says what to zero).
Down: the request H, 4·p2·k bytes, with p2 > 1 the applied A, 4·k bytes, and the coordinates of θ
      changed since the client's last sync as float32 values + int32 indices, or θ itself when
      smaller (`sparse_sync`).
State: server θ: f32[D] (raveled), optimiser state (θ-space), last_changed: i32[D]
       (`servers.sparse_sync`), and in `extra` the last applied 'applied' A: i32[k] and
       'sketch_state', the sketch's hashes (derived from the seed: `compressors.Sketcher`); per
       client the error v_c (`compressors.ErrorFeedback`, kept whole: the server says what to zero)
       and with rho > 0 the momentum u_c (`compressors.Momentum`, unmasked), f32[D] each, kept
       on the host for every client.
No cohort shortcut (client state).
Recipe: trainer `recipe.raveled_delta`, compressor momentum(error_feedback(count_sketch)),
server `servers.sparse_sync`, and the heavy-hitter exchange above.
"""
import jax
import jax.numpy as jnp

from fedjax_intrinsic import compressors, keys
from fedjax_intrinsic.algorithms import base, fetchsgd, options, recipe, servers
from fedjax_intrinsic.fields import ConfigError, Int


# rows × cols = 5 × 1,000 floats + p2·k = 4,000 values up per client (the digits CNN's D is 53,098).
# k = 1,000 and p2 = 4: the project's choice on configs/digits_cnn.py, where with 10 of 100 clients
# a round each client's error is about 10 rounds stale and smaller k or p2 learned less (README,
# methods table). rho = 0: the digits protocol's server rate is tuned without momentum (rho = 0.9
# does not learn there).
FIELDS = {
    **fetchsgd.SKETCH_FIELDS,
    'k': fetchsgd.SKETCH_FIELDS['k']._replace(default=1000),
    'p2': Int(4, lo=1, note='(candidates = p2·k, <= D)',
              doc='candidates whose exact values the second exchange fetches, per k'),
    **options.QUANTIZE,
}


def validate(config) -> None:
  fetchsgd.validate_sketch_fields(config)
  if config.simulation.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid for method.name='
                      f'{config.method.name!r} (clients keep error and momentum); allowed: False')
  options.validate(config, error_feedback=False)


def error_of(cstate) -> jax.Array:
  """The client's error accumulator v_c: f32[D]."""
  return cstate.inner.error if isinstance(cstate, compressors.Momentum) else cstate.error


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  sk = fetchsgd.sketcher(method_config, ctx)
  flat = servers.flat_setup(ctx.params0)
  rho = float(method_config.rho)
  k = method_config.k
  p2 = method_config.get('p2', 1)
  if p2 * k > sk.D:
    raise ValueError(f'method.p2={p2} is invalid with method.k={k}; allowed: p2·k <= D = {sk.D} '
                     '(the number of model parameters)')
  candidates = sk._replace(k=p2 * k)
  server = servers.sparse_sync(ctx.server_optimizer, flat, ctx.num_rounds)
  zeros = lambda: jnp.zeros((sk.D,), jnp.float32)
  compressor = compressors.error_feedback(
      options.quantized(compressors.count_sketch(sk), method_config), zeros, keep_all=True)
  up = compressors.upload(compressors.quantizer(method_config.get('quantize', 'none')))
  if rho > 0:
    compressor = compressors.momentum(compressor, rho, zeros, masked=False)

  def heavy_hitters(state, agg):
    """H: i32[p2·k], the p2·k coordinates of largest |estimate(S̄)|."""
    return candidates.top_k(sk.estimate(state.extra['sketch_state'], agg))[1]

  def zero_at(cstate, indices):
    """Error and momentum zeroed at `indices` (error feedback, momentum masking)."""
    return jax.tree.map(lambda x: compressors.zero_at(x, indices), cstate)

  def respond(bc, request, cstate, batches, key):
    """v_c[H]: f32[p2·k] up; with p2 = 1 (A = H) the client zeroes H in its error and momentum."""
    del bc, batches
    payload = compressors.transmit(up, error_of(cstate)[request], keys.chain_key(key, 2))[0]
    return payload, (zero_at(cstate, request) if p2 == 1 else cstate)

  def server_update(state, agg, second=None):
    hh = heavy_hitters(state, agg)
    if p2 == 1:
      values, applied = second, hh
    else:   # the exact top-k of the candidates' exact mean values
      values, pos = sk.top_k(second)
      applied = hh[pos]
    return server.step(state, sk.densify(values, applied),
                       {'applied': applied.astype(jnp.int32),
                        'sketch_state': state.extra['sketch_state']})

  def finish(bc, request, applied, cstate):
    """p2 > 1: the participant zeroes the applied coordinates A (the notice) in its accumulators."""
    del bc, request
    return zero_at(cstate, applied)

  return recipe.assemble(
      'sketched_sgd', recipe.raveled_delta(ctx, flat), compressor, server,
      extra=lambda: {'applied': jnp.zeros((k,), jnp.int32), 'sketch_state': sk.init_state()},
      shared=lambda state: state.extra['sketch_state'], server_update=server_update,
      cohort_shortcut=False, query=heavy_hitters, respond=respond,
      aggregate2=up.aggregate,
      notice=(lambda state: state.extra['applied']) if p2 > 1 else None,
      finish=finish if p2 > 1 else None)
