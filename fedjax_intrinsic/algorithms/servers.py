"""Server kinds: the state the server keeps, its step, and what a client downloads to catch up.

Every server that keeps θ keeps it in one form, `ServerState.theta: f32[D]`, θ raveled in
`ravel_pytree` order (`Flat`); `model_params` unravels it. The server optimiser (optax) steps θ
with the round's estimate f32[D] as the gradient (`base.server_step`).

- `dense(opt, flat)`: θ + optax; every participant downloads θ (4·D bytes): every coordinate
  moves every round. Catch-up payload {'theta': f32[D]}.
- `sparse_sync(opt, flat, num_rounds)`: θ + optax + `last_changed: i32[D]` (the last round each
  coordinate changed in, 0 = never); a client holding round h downloads the coordinates changed in
  rounds h … e−1 as f32 values + i32 indices, or θ when smaller (`algorithms/sparse_sync.py`).
- the subspace servers keep z, not θ (`SubspaceState`: intrinsic_static, intrinsic_k_subspace);
  the θ-replay server (intrinsic_time_varying) keeps θ in `ServerState` and its Δz̄ history.
A method's own server-side state (sketch accumulators, PowerSGD's Q, true top-k's virtual error)
is `ServerState.extra`, a dict.
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fedjax_intrinsic.algorithms import base, sparse_sync as sync_lib


class ServerState(NamedTuple):
  """The state of every θ-space server."""
  round: jax.Array          # i32[]: the round about to run (1-based)
  theta: jax.Array          # f32[D]: θ raveled
  opt_state: Any            # the server optimiser's state, θ-space
  last_changed: Any = ()    # i32[D] for a sparse-sync server, else ()
  extra: Any = ()           # the method's own server state (a dict), else ()


class SubspaceState(NamedTuple):
  """The state of a server that keeps subspace coordinates z instead of θ."""
  round: jax.Array          # i32[]: the round about to run (1-based)
  z: jax.Array              # f32[d] (static) or f32[K, d] (K subspaces)
  opt_state: Any            # the server optimiser's state, z-space (leaves [K, ...] for K)
  theta0: jax.Array         # f32[D]: θ0 raveled (every client holds it)
  op_state: Any             # the subspaces' random state (derived from the seed; leaves [K, ...])


class Flat(NamedTuple):
  """The run's raveling: D, θ0: f32[D] and unravel(f32[D]) -> pytree."""
  D: int
  theta0: jax.Array
  unravel: Callable[[jax.Array], Any]


def flat_setup(params0) -> Flat:
  theta0, unravel = ravel_pytree(params0)
  return Flat(int(theta0.shape[0]), theta0, unravel)


def ravel(tree) -> jax.Array:
  """A pytree (or an f32[D] already) as f32[D] in `ravel_pytree` order."""
  return tree if isinstance(tree, jax.Array) and tree.ndim == 1 else ravel_pytree(tree)[0]


class Server(NamedTuple):
  """init(params0, extra) -> ServerState; step(state, g f32[D] or a θ-shaped pytree, extra=None)
  -> the next round's state (extra None: unchanged); the rest as in `base.FederatedAlgorithm`."""
  init: Callable[..., ServerState]
  step: Callable[..., ServerState]
  model_params: Callable[[ServerState], Any]
  download_bytes: Callable
  catch_up: Callable
  rebuild: Callable
  keep: Any = None


def _init(opt, sparse: bool):
  def init(params0, extra=()):
    theta0 = ravel(params0)
    last = sync_lib.init_last_changed(int(theta0.shape[0])) if sparse else ()
    return ServerState(jnp.ones((), jnp.int32), theta0, opt.init(theta0), last, extra)
  return init


def dense(opt, flat: Flat) -> Server:
  """θ + optax; θ downloaded whole (see the module docstring)."""
  def step(state, gradient, extra=None):
    theta, opt_state = base.server_step(opt, state.theta, state.opt_state, ravel(gradient))
    return state._replace(round=state.round + 1, theta=theta, opt_state=opt_state,
                          extra=state.extra if extra is None else extra)

  nbytes = 4 * flat.D
  return Server(
      init=_init(opt, sparse=False), step=step,
      model_params=lambda state: flat.unravel(state.theta),
      download_bytes=lambda state, held: np.full(np.shape(held), nbytes, np.int64),
      catch_up=lambda state, held_round: {'theta': state.theta},
      rebuild=lambda held, payload, held_round, round_now: flat.unravel(payload['theta']))


def sparse_sync(opt, flat: Flat, num_rounds: int) -> Server:
  """θ + optax + last_changed; changed-coordinate download (see the module docstring)."""
  def step(state, gradient, extra=None):
    theta, opt_state = base.server_step(opt, state.theta, state.opt_state, ravel(gradient))
    last_changed = sync_lib.update_last_changed(state.last_changed, state.theta, theta,
                                                state.round)
    return state._replace(round=state.round + 1, theta=theta, opt_state=opt_state,
                          last_changed=last_changed,
                          extra=state.extra if extra is None else extra)

  def download_bytes(state, held_rounds):
    return sync_lib.download_bytes(state.last_changed, np.asarray(held_rounds), num_rounds)

  def catch_up(state, held_round):
    return sync_lib.catch_up(state.theta, state.last_changed, int(held_round))

  def rebuild(held, payload, held_round, round_now):
    del held_round, round_now   # the client kept θ of its last sync; the payload patches it
    return flat.unravel(sync_lib.rebuild(held.theta, payload))

  def keep(held, payload, held_round, round_now):
    """The client keeps the θ it rebuilt (raveled)."""
    del held_round, round_now
    return held._replace(theta=sync_lib.rebuild(held.theta, payload))

  return Server(init=_init(opt, sparse=True), step=step,
                model_params=lambda state: flat.unravel(state.theta),
                download_bytes=download_bytes, catch_up=catch_up, rebuild=rebuild, keep=keep)
