"""Pieces shared by the sparsification baselines `local_topk`, `true_topk` and `random_k`.

All three work on the raveled parameters θ: f32[D] (`jax.flatten_util.ravel_pytree` of θ0). A
client's pseudo-gradient is Δ = θ_start − θ_end after `client.local_steps` SGD steps at `client.lr`
(docs/paper.md §2; the gradient with one step at lr 1). A sparse payload is
`{'values': f32[k], 'indices': i32[k]}` (4·k + 4·k bytes); its aggregate is the dense weighted sum
Σ_c w_c · densify(values_c, indices_c): f32[D], linear in the (payload, weight) pairs.
The server keeps θ, its optimiser state and `last_changed: i32[D]` (`sparse_sync`): a client
downloads the coordinates changed since its last sync (values + int32 indices) or θ itself.
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import projections as P
from fedjax_intrinsic.algorithms import base, sparse_sync

TOPK_METHODS = P.sparsify.METHODS   # ('exact', 'threshold')


class ServerState(NamedTuple):
  """The server of a sparse method. Leaves of absent accumulators are `()`."""
  round: jax.Array          # i32[]: the round about to run (1-based)
  theta: jax.Array          # f32[D]: θ raveled
  opt_state: Any            # the server optimiser's state, θ-space
  last_changed: jax.Array   # i32[D]: last round in which each coordinate changed (0 = never)
  velocity: Any = ()        # f32[D] server-side (virtual) momentum, or ()
  error: Any = ()           # f32[D] server-side (virtual) error accumulator, or ()


class ClientState(NamedTuple):
  """Per-client accumulators kept on the host between participations. Absent ones are `()`."""
  error: Any = ()           # f32[D]: local error feedback, what was not sent yet
  velocity: Any = ()        # f32[D]: local momentum


class Flat(NamedTuple):
  """The run's raveling: D, θ0: f32[D] and unravel(f32[D]) -> pytree."""
  D: int
  theta0: jax.Array
  unravel: Callable[[jax.Array], Any]


def ravel(params) -> jax.Array:
  """θ as f32[D] (`ravel_pytree` order)."""
  return ravel_pytree(params)[0]


def flat_setup(ctx: base.BuildContext) -> Flat:
  theta0, unravel = ravel_pytree(ctx.params0)
  return Flat(int(theta0.shape[0]), theta0, unravel)


# ----------------------------------------------------------------------------- config checks


def check_positive_int(value: Any, field: str) -> None:
  from fedjax_intrinsic.config import ConfigError
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f'{field}={value!r} is invalid; allowed: a positive integer <= D '
                      '(the number of model parameters)')


def check_choice(value: Any, field: str, allowed: tuple) -> None:
  from fedjax_intrinsic.config import ConfigError
  if value not in allowed:
    raise ConfigError(f'{field}={value!r} is invalid; allowed: {", ".join(allowed)}')


def check_momentum(value: Any, field: str) -> None:
  from fedjax_intrinsic.config import ConfigError
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
    raise ConfigError(f'{field}={value!r} is invalid; allowed: 0 <= {field.split(".")[-1]} < 1')


def check_one_momentum(config, field: str) -> None:
  """Momentum lives in one place: `field` (the method's) or the server optimiser, not both."""
  from fedjax_intrinsic.config import ConfigError
  if _get(config, field) > 0 and config.server.optimizer in ('momentum', 'nesterov'):
    raise ConfigError(f'{field}={_get(config, field)} is invalid with server.optimizer='
                      f'{config.server.optimizer!r} (momentum in two places); allowed: '
                      f'{field}=0, or server.optimizer=sgd/adam/adamw')


def check_no_cohort_shortcut(config) -> None:
  from fedjax_intrinsic.config import ConfigError
  if config.simulation.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid for method.name='
                      f'{config.method.name!r} (each client compresses its own message); '
                      'allowed: False')


def check_k(k: int, D: int) -> None:
  """Build-time check (D is known only then); ValueError, turned into a ConfigError upstream."""
  if k > D:
    raise ValueError(f'method.k={k} is invalid; allowed: 1 <= k <= D = {D} '
                     '(the number of model parameters)')


def check_feedback_needs_loss(k: int, D: int, error_type: str) -> None:
  if error_type != 'none' and k == D:
    raise ValueError(f'method.error_type={error_type!r} is invalid with method.k = D = {D} '
                     '(everything is sent, nothing to feed back); allowed: none')


def check_masked_momentum(k: int, D: int, momentum: float, field: str) -> None:
  if momentum > 0 and k == D:
    raise ValueError(f'{field}={momentum} is invalid with method.k = D = {D} (momentum factor '
                     'masking zeroes every coordinate each round: no momentum); allowed: 0')


def _get(config, field: str):
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


# ----------------------------------------------------------------------------- client side


def client_delta(ctx: base.BuildContext, flat: Flat, theta: jax.Array,
                 batches: dict) -> tuple[jax.Array, dict]:
  """Local SGD from θ: f32[D]; returns (Δ = θ − θ_end: f32[D], metrics).

  batches: [S, B, ...] (`client.local_steps` steps).
  """
  model_loss = base.model_loss(ctx.model)
  loss = lambda w, batch: model_loss(flat.unravel(w), batch)
  end, metrics = base.local_sgd(loss, theta, batches, ctx.client_lr)
  return theta - end, metrics


def sent_mask(indices: jax.Array, D: int) -> jax.Array:
  """bool[D], True at the sent coordinates `indices: i32[k]`."""
  return jnp.zeros((D,), jnp.bool_).at[indices].set(True)


def compress_with_feedback(acc_in: jax.Array, cstate: ClientState, local_momentum: float,
                           error_feedback: bool,
                           select: Callable[[jax.Array], tuple[jax.Array, jax.Array]]):
  """FetchSGD's worker rule: momentum, then error accumulation, then the sparsifier.

  v ← ρ v + Δ (when ρ > 0); a ← e + (v or Δ) (error feedback) else (v or Δ); (values, idx) =
  select(a); e ← a with the sent coordinates zeroed (= a − densify(a[idx], idx), exactly);
  v ← v with the sent coordinates zeroed (momentum factor masking).
  acc_in: Δ: f32[D]. Returns (values f32[k], indices i32[k], new ClientState).
  """
  D = acc_in.shape[0]
  velocity = error = ()
  x = acc_in
  if local_momentum > 0:
    velocity = local_momentum * cstate.velocity + acc_in
    x = velocity
  if error_feedback:
    x = cstate.error + x
  values, indices = select(x)
  sent = sent_mask(indices, D)
  if error_feedback:
    error = jnp.where(sent, 0.0, x)
  if local_momentum > 0:
    velocity = jnp.where(sent, 0.0, velocity)
  return values, indices, ClientState(error, velocity)


def init_client_state(D: int, local_momentum: float, error_feedback: bool) -> Any:
  """() for a stateless client, else ClientState with f32[D] zeros where needed."""
  if not error_feedback and local_momentum <= 0:
    return ()
  zeros = lambda: jnp.zeros((D,), jnp.float32)
  return ClientState(zeros() if error_feedback else (), zeros() if local_momentum > 0 else ())


# ----------------------------------------------------------------------------- server side


def sparse_sum(values: jax.Array, indices: jax.Array, weights: jax.Array, D: int) -> jax.Array:
  """Σ_c w_c · densify(values[c], indices[c]): f32[D]. values: f[C, k], indices: i32[C, k]."""
  w = weights.astype(jnp.float32)[:, None]
  scaled = (values.astype(jnp.float32) * w).reshape(-1)
  return jax.ops.segment_sum(scaled, indices.reshape(-1), num_segments=D)


def init_server(opt, theta0: jax.Array, velocity: bool = False, error: bool = False) -> ServerState:
  D = theta0.shape[0]
  zeros = lambda: jnp.zeros((D,), jnp.float32)
  return ServerState(jnp.ones((), jnp.int32), theta0, opt.init(theta0),
                     sparse_sync.init_last_changed(D), zeros() if velocity else (),
                     zeros() if error else ())


def apply_update(opt, state: ServerState, gradient: jax.Array, **accumulators) -> ServerState:
  """One server optimiser step with `gradient: f32[D]`; records the changed coordinates."""
  theta, opt_state = base.server_step(opt, state.theta, state.opt_state, gradient)
  last_changed = sparse_sync.update_last_changed(state.last_changed, state.theta, theta,
                                                 state.round)
  return state._replace(round=state.round + 1, theta=theta, opt_state=opt_state,
                        last_changed=last_changed, **accumulators)


class Sync(NamedTuple):
  """download_bytes / catch_up / rebuild of a sparse-update server (see `sparse_sync`)."""
  download_bytes: Callable
  catch_up: Callable
  rebuild: Callable
  keep: Callable


def sync(flat: Flat, num_rounds: int) -> Sync:
  def download_bytes(state, held_rounds):
    return sparse_sync.download_bytes(state.last_changed, np.asarray(held_rounds), num_rounds)

  def catch_up(state, held_round):
    return sparse_sync.catch_up(state.theta, state.last_changed, int(held_round))

  def rebuild(held_state, payload, held_round, round_now):
    del held_round, round_now   # the client kept θ of its last sync; the payload patches it
    return flat.unravel(sparse_sync.rebuild(held_state.theta, payload))

  def keep(held_state, payload, held_round, round_now):
    """The client keeps the θ it rebuilt (raveled)."""
    del held_round, round_now
    return held_state._replace(theta=sparse_sync.rebuild(held_state.theta, payload))

  return Sync(download_bytes, catch_up, rebuild, keep)
