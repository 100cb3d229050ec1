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
State: server θ: f32[D] (raveled), optimiser state (θ-space), V, E: f32[rows, cols],
       last_changed: i32[D], and the sketch's hashes (derived from the seed, see `Sketcher`).
       No client state. The client message is the sketch of one gradient
       with one local step, so the cohort shortcut applies.

This module also holds the count-sketch pieces `sketched_sgd` shares (fields, validation, hashes).
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

import projections as P
from fedjax_intrinsic import keys
from fedjax_intrinsic.algorithms import base, sparse_sync
from projections import sketch as sketch_lib

MASKINGS = ('buckets', 'subtract')
_THRESHOLD_TOPK_ABOVE = 2**18   # D above which top-k uses counting passes instead of a sort
_CACHE_MAX = 2**25              # rows·D up to which the sketch state caches its buckets (128 MiB)


# ---------------------------------------------------------------------------------------------
# Shared with `sketched_sgd`.


def sketch_defaults() -> dict:
  """Count-sketch fields and defaults, tuned on digits (MLP, D = 9,610): see the default_configs."""
  return {'rows': 5, 'cols': 1000, 'k': 100, 'rho': 0.0}


def validate_sketch_fields(config) -> None:
  """rows (odd), cols, k (k <= cols), rho; and momentum in one place only (rho or the optimiser)."""
  from fedjax_intrinsic.config import ConfigError
  m = config.method
  for field in ('rows', 'cols', 'k'):
    value = m[field]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ConfigError(f'method.{field}={value!r} is invalid; allowed: a positive integer')
  if m.rows % 2 == 0:
    raise ConfigError(f'method.rows={m.rows} is invalid; allowed: an odd positive integer (the '
                      'estimate is the median over rows)')
  if m.cols > sketch_lib.PRIME:
    raise ConfigError(f'method.cols={m.cols} is invalid; allowed: 1 <= cols <= 2^31 - 1')
  if m.cols < m.k:
    raise ConfigError(f'method.cols={m.cols} is invalid with method.k={m.k}; allowed: cols >= k '
                      '(a sketch with fewer buckets than k cannot recover k heavy coordinates)')
  if isinstance(m.rho, bool) or not isinstance(m.rho, (int, float)) or not 0 <= m.rho < 1:
    raise ConfigError(f'method.rho={m.rho!r} is invalid; allowed: 0 <= rho < 1')
  if m.rho > 0 and config.server.optimizer in ('momentum', 'nesterov'):
    raise ConfigError(f'method.rho={m.rho} is invalid with server.optimizer='
                      f'{config.server.optimizer!r} (momentum in two places); allowed: method.rho=0, '
                      'or server.optimizer=sgd/adam/adamw')


class Sketcher(NamedTuple):
  """The run's raveling and count sketch. Its random state (`init_state()`, from
  `keys.sketch_key(run_key)`) is derived data: the server state carries it and the broadcast hands it
  to the clients, who would derive it from the seed; it is never counted as traffic. With
  rows·D <= 2^25 the state caches the signed buckets i32[rows, D] (computed once), else it holds the
  6·rows hash coefficients and every call rehashes arange(D)."""
  D: int
  k: int
  cs: P.CountSketch
  key: jax.Array
  unravel: Any

  def init_state(self) -> Any:
    return self.cs.init(self.key)

  def sketch(self, state, x: jax.Array) -> jax.Array:
    """x: f32[D] -> f32[rows, cols]."""
    return self.cs.sketch(state, x)

  def estimate(self, state, table: jax.Array) -> jax.Array:
    """table: f32[rows, cols] -> f32[D], the median estimate."""
    return self.cs.estimate(state, table)

  def top_k(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The k largest |x| of x: f32[D]: (values f32[k], indices i32[k]); ties to the lower index."""
    return P.top_k(x, self.k, method='threshold' if self.D > _THRESHOLD_TOPK_ABOVE else 'exact')

  def densify(self, values: jax.Array, indices: jax.Array) -> jax.Array:
    return P.densify(values, indices, self.D)

  def buckets_of(self, state, indices: jax.Array, values: jax.Array) -> jax.Array:
    """bool[rows, cols]: the buckets that the coordinates indices: i32[k] with values[j] != 0 hash to,
    in every row (the support of S(densify(values, indices)) barring exact cancellations)."""
    rows, cols = self.cs.rows, self.cs.cols
    b = sketch_lib.bucket_hash(state.bucket_coeffs[:, None, :],
                               indices.astype(jnp.uint32)[None, :], cols)     # i32[rows, k]
    r = jnp.broadcast_to(jnp.arange(rows)[:, None], b.shape)
    hit = jnp.broadcast_to((values != 0).astype(jnp.int32)[None, :], b.shape)
    return jnp.zeros((rows, cols), jnp.int32).at[r, b].max(hit) > 0


def sketcher(method_config, ctx: base.BuildContext) -> Sketcher:
  """Builds the sketch for θ's size D; k > D raises ValueError (D is known only here)."""
  flat0, unravel = ravel_pytree(ctx.params0)
  D = int(flat0.shape[0])
  if method_config.k > D:
    raise ValueError(f'method.k={method_config.k} is invalid; allowed: 1 <= k <= D = {D} (the '
                     'number of model parameters)')
  rows = method_config.rows
  cs = P.count_sketch(D, rows, method_config.cols, cache_buckets=rows * D <= _CACHE_MAX)
  return Sketcher(D, method_config.k, cs, keys.sketch_key(ctx.run_key), unravel)


class Broadcast(NamedTuple):
  params: Any               # θ as the model's pytree: where clients start
  sketch_state: Any         # the hashes (derived from the seed; not traffic)


def client_delta(ctx: base.BuildContext, params: Any, batches: dict) -> tuple[jax.Array, dict]:
  """Local SGD from the broadcast θ (a pytree): (Δ = θ_start − θ_end: f32[D] raveled, metrics)."""
  end, metrics = base.local_sgd(base.model_loss(ctx.model), params, batches, ctx.client_lr)
  return ravel_pytree(params)[0] - ravel_pytree(end)[0], metrics


def sparse_download(sk: Sketcher, num_rounds: int):
  """download_bytes, catch_up, rebuild, keep of a server whose state has `params`, `last_changed`."""
  def download_bytes(state, held_rounds):
    return sparse_sync.download_bytes(state.last_changed, held_rounds, num_rounds)

  def catch_up(state, held_round):
    return sparse_sync.catch_up(state.params, state.last_changed, held_round)

  def rebuild(held_state, payload, held_round, round_now):
    del held_round, round_now   # the client kept θ of its last sync; the payload brings it up to date
    return sk.unravel(sparse_sync.rebuild(held_state.params, payload))

  def keep(held_state, payload, held_round, round_now):
    """The client keeps the θ it rebuilt (raveled)."""
    del held_round, round_now
    return held_state._replace(params=sparse_sync.rebuild(held_state.params, payload))

  return download_bytes, catch_up, rebuild, keep


# ---------------------------------------------------------------------------------------------
# FetchSGD.


class ServerState(NamedTuple):
  round: jax.Array          # i32[]: the round about to run (1-based)
  params: jax.Array         # f32[D]: θ raveled
  opt_state: Any            # the server optimiser's state, θ-space
  momentum: jax.Array       # f32[rows, cols]: V
  error: jax.Array          # f32[rows, cols]: E
  last_changed: jax.Array   # i32[D]: the last round each coordinate of θ changed in (0 = never)
  sketch_state: Any         # CountSketchState (derived from the seed)


def default_config() -> dict:
  """rows × cols = 5 × 1,000 floats up (1.9× less than the digits MLP's D = 9,610), k = 100.

  rho = 0 (FetchSGD's papers use 0.9 with a 10× smaller rate): the digits protocol's server rate
  (configs/digits_cnn.py) is tuned without momentum; with it, ρ = 0.9 diverges there.
  """
  return {**sketch_defaults(), 'fetch_exact': False, 'masking': 'buckets'}


def validate(config) -> None:
  from fedjax_intrinsic.config import ConfigError
  validate_sketch_fields(config)
  m = config.method
  if not isinstance(m.fetch_exact, bool):
    raise ConfigError(f'method.fetch_exact={m.fetch_exact!r} is invalid; allowed: True, False')
  if m.masking not in MASKINGS:
    raise ConfigError(f'method.masking={m.masking!r} is invalid; allowed: {", ".join(MASKINGS)}')
  if config.simulation.cohort_shortcut and config.client.local_steps != 1:
    raise ConfigError('simulation.cohort_shortcut=True is invalid with client.local_steps='
                      f'{config.client.local_steps}; allowed: local_steps=1')


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  sk = sketcher(method_config, ctx)
  opt = ctx.server_optimizer
  rho = float(method_config.rho)
  fetch = bool(method_config.fetch_exact)
  masking = method_config.masking

  def init(params0):
    theta0 = ravel_pytree(params0)[0]
    table = jnp.zeros((sk.cs.rows, sk.cs.cols), jnp.float32)
    return ServerState(jnp.ones((), jnp.int32), theta0, opt.init(theta0), table, table,
                       sparse_sync.init_last_changed(sk.D), sk.init_state())

  def client_update(bc, cstate, batches, key):
    del key
    delta, metrics = client_delta(ctx, bc.params, batches)
    return sk.sketch(bc.sketch_state, delta), cstate, metrics

  def accumulate(state, agg):
    """(history H = E + ρV before this round's sketch, V_new, E_new): f32[rows, cols] each."""
    momentum = rho * state.momentum + agg
    return state.error + rho * state.momentum, momentum, state.error + momentum

  def query(state, agg):
    """The k coordinates about to be updated: i32[k], sent to every participant."""
    return sk.top_k(sk.estimate(state.sketch_state, accumulate(state, agg)[2]))[1]

  def respond(bc, request, cstate, batches, key):
    """The client's exact Δ at the requested coordinates: f32[k] up."""
    del key
    delta, _ = client_delta(ctx, bc.params, batches)
    return delta[request], cstate

  def server_update(state, agg, second=None):
    hs = state.sketch_state
    history, momentum, error = accumulate(state, agg)
    values, idx = sk.top_k(sk.estimate(hs, error))
    if fetch:   # exact current-round mean at idx on top of the sketched history
      values = sk.estimate(hs, history)[idx] + second
      momentum_at = rho * sk.estimate(hs, state.momentum)[idx] + second
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
    params, opt_state = base.server_step(opt, state.params, state.opt_state, update)
    last_changed = sparse_sync.update_last_changed(state.last_changed, state.params, params,
                                                   state.round)
    return ServerState(state.round + 1, params, opt_state, momentum, error, last_changed, hs)

  download_bytes, catch_up, rebuild, keep = sparse_download(sk, ctx.num_rounds)
  return base.FederatedAlgorithm(
      name='fetchsgd',
      init=init,
      init_client=lambda params0: (),
      broadcast=lambda state: Broadcast(sk.unravel(state.params), state.sketch_state),
      client_update=client_update,
      aggregate=base.weighted_sum,
      server_update=server_update,
      model_params=lambda state: sk.unravel(state.params),
      download_bytes=download_bytes,
      catch_up=catch_up,
      rebuild=rebuild,
      keep=keep,
      cohort_shortcut=True,
      query=query if fetch else None,
      respond=respond if fetch else None,
      aggregate2=base.weighted_sum if fetch else None,
  )
