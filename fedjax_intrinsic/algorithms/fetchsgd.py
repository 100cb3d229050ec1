"""`fetchsgd`: FetchSGD (Rothchild et al. 2020): count sketches up, momentum and error in the sketch.

One count sketch S: f32[D] -> f32[rows, cols] (`projections.count_sketch`, D = the raveled θ) whose
hashes come from `keys.sketch_key(run_key)`: every client and the server derive them from the seed,
they never travel. A client runs `client.local_steps` SGD steps at `client.lr` from the broadcast θ and
sketches its pseudo-gradient Δ = θ_start − θ_end: f32[D]. The server, with S̄ = Σ_c w_c S(Δ_c) the
weighted mean sketch (linear, so the engine may chunk it) and ρ = `method.rho`:

    V ← ρ V + S̄;   E ← E + V                    momentum and error accumulation, in sketch space
    (u_idx, u_val) ← top-k of estimate(E)        unsketch: the k largest estimated coordinates
    u = densify(u_val, u_idx): f32[D], k-sparse
    zero the applied coordinates in E and V (`method.masking`):
      'buckets' (the default): zero every bucket of E and V that a coordinate of u_idx with a
                  nonzero value hashes to, in every row: FetchSGD's released code (CommEfficient,
                  fed_aggregator._server_helper_sketched: it zeroes the nonzero buckets of S(u), the
                  same buckets unless two applied values cancel exactly in one), whose comment says
                  the subtraction below made its models diverge (so it does here: README, methods);
      'subtract': E ← E − S(u), V ← V − S(densify(v̂, u_idx)) with v̂ the estimate of V at u_idx
                  (exact when the sketch is, so FetchSGD then equals true top-k with server momentum,
                  error feedback and momentum masking). Where applied coordinates share buckets it
                  over-subtracts, and the error sketch can grow round after round.
    θ, opt_state ← one optax step of `ctx.server_optimizer` with u as the gradient.

How the optax transformation composes: the unsketched k-sparse u is the gradient it receives; with
`server.optimizer='sgd'` at rate η (any schedule) the step is θ ← θ − η u, FetchSGD's update (its rate
multiplies the unsketched update, outside the error accumulator). Momentum lives in the sketch (ρ);
with ρ > 0 the optimisers 'momentum' and 'nesterov' are rejected (momentum in two places); with ρ = 0
they apply their momentum to u. adam/adamw, weight decay and optax momentum move θ densely, which the
download accounting then counts.

Optional second exchange (`method.fetch_exact`): the server sends the k coordinates u_idx it is about
to update (k int32 down to every participant) and each client answers with its exact Δ at them (k
float32 up; it recomputes Δ, which is deterministic). The applied values are then
u_val = estimate(E_prev + ρ V_prev)[u_idx] + Δ̄[u_idx]: the sketched history plus the round's exact
weighted mean (the project's reading of FetchSGD's optional exact-value round; with an exact sketch it
changes nothing). The momentum values masked at u_idx are likewise ρ·estimate(V_prev) + Δ̄.

Up:   S(Δ): f32[rows, cols], 4·rows·cols bytes per client (+ 4·k with fetch_exact).
Down: the coordinates of θ that changed since the client's last sync, as float32 values + int32
      indices, or θ itself when smaller (`sparse_sync`; + 4·k bytes of request with fetch_exact).
With `method.quantize` (bf16 / int8 + one float32 scale) the sketch table travels quantised.
State: server θ: f32[D] (raveled), optimiser state (θ-space), last_changed: i32[D]
       (`servers.sparse_sync`) and in `extra`: 'momentum' V, 'error' E: f32[rows, cols] and
       'sketch_state', the sketch's hashes (derived from the seed, `compressors.Sketcher`).
       No client state. The client message is the sketch of one gradient
       with one local step, so the cohort shortcut applies (float32 only).
Recipe: trainer `recipe.raveled_delta`, compressor `compressors.count_sketch` (+ quantiser),
server `servers.sparse_sync` whose step unsketches as above.

This module also holds the count-sketch fields and checks `sketched_sgd` shares.
"""
import jax.numpy as jnp

from fedjax_intrinsic import compressors
from fedjax_intrinsic.algorithms import base, options, recipe, servers
from fedjax_intrinsic.fields import Bool, Choice, ConfigError, Int, Number
from projections import sketch as sketch_lib

MASKINGS = ('buckets', 'subtract')


# ---------------------------------------------------------------------------------------------
# Shared with `sketched_sgd`.


# Count-sketch fields and defaults, tuned on digits (MLP, D = 9,610): see FIELDS below.
SKETCH_FIELDS = {
    'rows': Int(5, lo=1, test=lambda rows: rows % 2 == 1,
                allowed='an odd positive integer (the estimate is the median over rows)',
                doc='rows of the sketch'),
    'cols': Int(1000, 1, sketch_lib.PRIME, note='and >= method.k',
                doc='buckets per row; rows × cols floats travel up'),
    'k': Int(100, lo=1, note='<= D (the number of model parameters) and <= method.cols',
             doc='coordinates applied per round (the heavy hitters)'),
    'rho': Number(0.0, 0, 1, hi_open=True,
                  doc='momentum ρ in the sketch; not with a momentum server optimiser'),
}


def validate_sketch_fields(config) -> None:
  """The rules between the sketch fields: k <= cols, and momentum in one place only (rho or the
  optimiser)."""
  m = config.method
  if m.cols < m.k:
    raise ConfigError(f'method.cols={m.cols} is invalid with method.k={m.k}; allowed: cols >= k '
                      '(a sketch with fewer buckets than k cannot recover k heavy coordinates)')
  if m.rho > 0 and config.server.optimizer in ('momentum', 'nesterov'):
    raise ConfigError(f'method.rho={m.rho} is invalid with server.optimizer='
                      f'{config.server.optimizer!r} (momentum in two places); allowed: method.rho=0, '
                      'or server.optimizer=sgd/adam/adamw')


def sketcher(method_config, ctx: base.BuildContext) -> compressors.Sketcher:
  """Builds the sketch for θ's size D; k > D raises ValueError (D is known only here)."""
  D = servers.flat_setup(ctx.params0).D
  if method_config.k > D:
    raise ValueError(f'method.k={method_config.k} is invalid; allowed: 1 <= k <= D = {D} (the '
                     'number of model parameters)')
  return compressors.sketcher(D, method_config.rows, method_config.cols, method_config.k,
                              ctx.run_key)


# ---------------------------------------------------------------------------------------------
# FetchSGD.


# rows × cols = 5 × 1,000 floats up (1.9× less than the digits MLP's D = 9,610), k = 100.
# rho = 0 (FetchSGD's papers use 0.9 with a 10× smaller rate): the digits protocol's server rate
# (configs/digits_cnn.py) is tuned without momentum; with it, ρ = 0.9 diverges there.
FIELDS = {
    **SKETCH_FIELDS,
    'fetch_exact': Bool(False, doc='a second exchange: the exact values at the k coordinates'),
    'masking': Choice('buckets', MASKINGS,
                      doc='what is zeroed in momentum and error after a step: the buckets the '
                          'applied coordinates hash to (the released code), or S(u) subtracted'),
    **options.QUANTIZE,
}


def validate(config) -> None:
  validate_sketch_fields(config)
  options.validate(config, error_feedback=False)
  if config.simulation.cohort_shortcut and config.client.local_steps != 1:
    raise ConfigError('simulation.cohort_shortcut=True is invalid with client.local_steps='
                      f'{config.client.local_steps}; allowed: local_steps=1')


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  sk = sketcher(method_config, ctx)
  flat = servers.flat_setup(ctx.params0)
  rho = float(method_config.rho)
  fetch = bool(method_config.fetch_exact)
  masking = method_config.masking
  server = servers.sparse_sync(ctx.server_optimizer, flat, ctx.num_rounds)
  trainer = recipe.raveled_delta(ctx, flat)
  exact = compressors.upload()   # the second exchange's values travel exact, even with quantize

  def extra():
    table = jnp.zeros((sk.cs.rows, sk.cs.cols), jnp.float32)
    return {'momentum': table, 'error': table, 'sketch_state': sk.init_state()}

  def accumulate(state, agg):
    """(history H = E + ρV before this round's sketch, V_new, E_new): f32[rows, cols] each."""
    momentum = rho * state.extra['momentum'] + agg
    return state.extra['error'] + rho * state.extra['momentum'], momentum, \
        state.extra['error'] + momentum

  def query(state, agg):
    """The k coordinates about to be updated: i32[k], sent to every participant."""
    return sk.top_k(sk.estimate(state.extra['sketch_state'], accumulate(state, agg)[2]))[1]

  def respond(bc, request, cstate, batches, key):
    """The client's exact Δ at the requested coordinates: f32[k] up."""
    return compressors.transmit(exact, trainer(bc.theta, batches)[0][request], key)[0], cstate

  def server_update(state, agg, second=None):
    hs = state.extra['sketch_state']
    history, momentum, error = accumulate(state, agg)
    values, idx = sk.top_k(sk.estimate(hs, error))
    if fetch:   # exact current-round mean at idx on top of the sketched history
      values = sk.estimate(hs, history)[idx] + second
      momentum_at = rho * sk.estimate(hs, state.extra['momentum'])[idx] + second
    else:
      momentum_at = sk.estimate(hs, momentum)[idx]
    update = sk.densify(values, idx)
    if masking == 'subtract':
      error = error - sk.sketch(hs, update)
      momentum = momentum - sk.sketch(hs, sk.densify(momentum_at, idx))
    else:
      touched = sk.buckets_of(hs, idx, values)
      error = jnp.where(touched, 0.0, error)
      momentum = jnp.where(touched, 0.0, momentum)
    return server.step(state, update, {'momentum': momentum, 'error': error, 'sketch_state': hs})

  return recipe.assemble(
      'fetchsgd', trainer, options.quantized(compressors.count_sketch(sk), method_config), server,
      extra=extra, shared=lambda state: state.extra['sketch_state'], server_update=server_update,
      query=query if fetch else None, respond=respond if fetch else None,
      aggregate2=exact.aggregate if fetch else None)
