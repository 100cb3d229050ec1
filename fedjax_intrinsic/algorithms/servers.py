"""Server kinds: the state the server keeps, its step, and what a client downloads to catch up.

Every server that keeps θ keeps it in one form, `ServerState.theta: f32[D]`, θ raveled in
`ravel_pytree` order (`Flat`); `model_params` unravels it. The server optimiser (optax) steps θ
with the round's estimate f32[D] as the gradient (`base.server_step`).

- `dense(opt, flat)`: θ + optax; every participant downloads θ (4·D bytes): every coordinate
  moves every round. Catch-up payload {'theta': f32[D]}.
  `dense(opt, flat, downloads)` also sends the `extra` entries named in `downloads` (PowerSGD's Q).
- `sparse_sync(opt, flat, num_rounds)`: θ + optax + `last_changed: i32[D]` (the last round each
  coordinate changed in, 0 = never); a client holding round h downloads the coordinates changed in
  rounds h … e−1 as f32 values + i32 indices, or θ when smaller (`algorithms/sparse_sync.py`).
- The subspace kinds (the intrinsic family, `compressors.Subspace`; g is the mean Δz̄: f32[d]):
  `subspace` keeps z: f32[d] (`SubspaceState`), clients download z; `k_subspace` keeps z: f32[K, d],
  clients download the z_k changed since their last sync, or θ; `theta_replay` keeps θ in
  `ServerState` and a history of Δz̄, clients replay the server's rule on the rounds they missed,
  or download θ. A subspace state stores θ0 and z (θ = θ0 + A z is derived, never stored).
A method's own server-side state (sketch accumulators, PowerSGD's Q, true top-k's virtual error)
is `ServerState.extra`, a dict. `Server.theta(state)` is the θ participants start from and
`Server.shared(state)` what the broadcast carries besides it (a subspace's random state).
"""
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fedjax_intrinsic import compressors
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
  """init(params0, extra) -> the state; step(state, g, extra=None) -> the next round's state (g:
  the round's estimate, f32[D] or a θ-shaped pytree for a θ server, f32[d] for a subspace one;
  extra None: unchanged); theta(state) -> f32[D], the θ participants start from; shared(state) ->
  what the broadcast carries besides θ (None: nothing); the rest as in `base.FederatedAlgorithm`."""
  init: Callable[..., Any]
  step: Callable[..., Any]
  model_params: Callable[[Any], Any]
  download_bytes: Callable
  catch_up: Callable
  rebuild: Callable
  keep: Any = None
  theta: Callable[[Any], jax.Array] = lambda state: state.theta
  shared: Any = None
  held_after: Any = None


def _init(opt, sparse: bool):
  def init(params0, extra=()):
    theta0 = ravel(params0)
    last = sync_lib.init_last_changed(int(theta0.shape[0])) if sparse else ()
    return ServerState(jnp.ones((), jnp.int32), theta0, opt.init(theta0), last, extra)
  return init


def dense(opt, flat: Flat, downloads: tuple = ()) -> Server:
  """θ + optax; θ downloaded whole, with the entries `downloads` of `extra` (server state the
  clients cannot derive, e.g. PowerSGD's warm-start Q) beside it (see the module docstring)."""
  def step(state, gradient, extra=None):
    theta, opt_state = base.server_step(opt, state.theta, state.opt_state, ravel(gradient))
    return state._replace(round=state.round + 1, theta=theta, opt_state=opt_state,
                          extra=state.extra if extra is None else extra)

  def download_bytes(state, held_rounds):
    nbytes = 4 * flat.D + base.tree_bytes([state.extra[k] for k in downloads])
    return np.full(np.shape(held_rounds), nbytes, np.int64)

  return Server(
      init=_init(opt, sparse=False), step=step,
      model_params=lambda state: flat.unravel(state.theta),
      download_bytes=download_bytes,
      catch_up=lambda state, held_round: {'theta': state.theta,
                                          **{k: state.extra[k] for k in downloads}},
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


# ----------------------------------------------------------------------------- subspace servers


def anchored_step(opt, displacement: jax.Array, opt_state: Any, grad: jax.Array,
                  anchor: Optional[jax.Array] = None) -> tuple[jax.Array, Any]:
  """One optax step whose weight decay pulls toward θ0: the optimiser sees `displacement − anchor`
  as its params (anchor None: the coordinates are a displacement already, z; anchor θ0 for a
  θ-space server) and returns (new coordinates, opt_state). With server SGD at rate η and decay λ
  a round maps θ − θ0 to (1 − ηλ)(θ − θ0) − η·(the lifted step) in every subspace server."""
  params = displacement if anchor is None else displacement - anchor
  updates, opt_state = opt.update(grad, opt_state, params)
  return displacement + updates, opt_state


def floats_bytes(n) -> np.ndarray:
  return 4 * np.asarray(n, np.int64)


def subspace(opt, sub: compressors.Subspace, flat: Flat) -> Server:
  """z: f32[d] in one fixed subspace A (`sub.state(0)`): θ = θ0 + A z, the optimiser in z-space
  with g = Δz̄ (`SubspaceState`, op_state: A's random state). A client downloads z (4·d bytes) and
  rebuilds θ with θ0 and the seed's subspace; it keeps nothing."""
  def theta(state):
    return state.theta0 + sub.lift(state.op_state, state.z)

  def init(params0, extra=()):
    z = jnp.zeros((sub.d,), jnp.float32)
    return SubspaceState(jnp.ones((), jnp.int32), z, opt.init(z), ravel(params0), sub.state(0))

  def step(state, g, extra=None):
    z, opt_state = anchored_step(opt, state.z, state.opt_state, g)
    return state._replace(round=state.round + 1, z=z, opt_state=opt_state)

  @jax.jit
  def theta_of_z(theta0, z):   # rebuild's θ0 + A z: one compiled program, not one per operation
    return theta0 + sub.lift(sub.state(0), z)

  def rebuild(held, payload, held_round, round_now):
    del held, held_round, round_now   # z alone, with θ0 and the seed's subspace, gives θ
    return sub.unravel(theta_of_z(flat.theta0, payload))

  return Server(
      init=init, step=step, theta=theta, shared=lambda state: state.op_state,
      model_params=lambda state: sub.unravel(theta(state)),
      download_bytes=lambda state, held: np.full(np.shape(held), sub.d * 4, np.int64),
      catch_up=lambda state, held_round: state.z, rebuild=rebuild)


def k_subspace(opt, sub: compressors.Subspace, flat: Flat, K: int,
               schedule: np.ndarray) -> Server:
  """z: f32[K, d] in K fixed subspaces A_k (`sub.state(k)`): θ = θ0 + Σ_k A_k z_k; round e steps
  z_{k(e)} with k(e) = schedule[e] (one optimiser state per subspace, leaves [K, ...]; the
  broadcast carries A_{k(e)}'s random state). A client holding round h downloads the z_k updated
  in rounds h … e−1 ([n, d]; which k each is, clients derive from the seed), or θ itself when
  n·d >= D; after θ it keeps no z, so the ledger records it as holding round 1 (`held_after`)."""
  schedule_j = jnp.asarray(schedule)

  def lifted(z, theta0, op_states):
    return theta0 + jnp.sum(jax.vmap(sub.lift)(op_states, z), axis=0)   # [K, D] summed

  @jax.jit
  def theta_of_z(theta0, z):   # rebuild's θ: one compiled program, not one per operation
    op_states = jax.vmap(sub.state)(jnp.arange(K))        # every client derives them from the seed
    return lifted(z, theta0, op_states)

  def theta(state):
    return lifted(state.z, state.theta0, state.op_state)

  def init(params0, extra=()):
    z = jnp.zeros((K, sub.d), jnp.float32)
    return SubspaceState(jnp.ones((), jnp.int32), z, jax.vmap(opt.init)(z), ravel(params0),
                         jax.vmap(sub.state)(jnp.arange(K)))

  def shared(state):
    k = schedule_j[state.round]
    return jax.tree.map(lambda s: s[k], state.op_state)

  def step(state, g, extra=None):
    k = schedule_j[state.round]
    opt_k = jax.tree.map(lambda s: s[k], state.opt_state)
    z_k, opt_k = anchored_step(opt, state.z[k], opt_k, g)
    opt_state = jax.tree.map(lambda s, n: s.at[k].set(n), state.opt_state, opt_k)
    return state._replace(round=state.round + 1, z=state.z.at[k].set(z_k), opt_state=opt_state)

  def changed(round_now: int, held_round: int) -> np.ndarray:
    """The subspaces updated in rounds held_round … round_now − 1, sorted."""
    return np.unique(schedule[held_round:round_now])

  def sends_theta(n: int) -> bool:
    return n > 0 and n * sub.d >= sub.D

  def download_bytes(state, held_rounds):
    e = int(state.round)
    n = np.array([len(changed(e, int(h))) for h in np.ravel(held_rounds)], np.int64)
    return floats_bytes(np.minimum(n * sub.d, sub.D)).reshape(np.shape(held_rounds))

  def catch_up(state, held_round):
    ks = changed(int(state.round), int(held_round))
    if sends_theta(len(ks)):
      return {'theta': theta(state)}
    return {'z': state.z[jnp.asarray(ks, jnp.int32)]}   # [n, d]

  def held_after(state, held_rounds):
    """round_now, or 1 for the clients whose catch-up is θ (they keep no z)."""
    e = int(state.round)
    got_theta = [sends_theta(len(changed(e, int(h)))) for h in np.ravel(held_rounds)]
    return np.where(np.array(got_theta, bool), 1, e).reshape(np.shape(held_rounds)).astype(
        np.int64)

  def patched(held_state, payload, held_round, round_now):
    ks = changed(round_now, held_round)
    return held_state.z.at[jnp.asarray(ks, jnp.int32)].set(payload['z']) if len(ks) else \
        held_state.z

  def keep(held_state, payload, held_round, round_now):
    """The z the client holds after the sync; after θ it holds no z (a fresh client's zeros)."""
    if 'theta' in payload:
      return init(flat.theta0)
    return held_state._replace(z=patched(held_state, payload, held_round, round_now))

  def rebuild(held_state, payload, held_round, round_now):
    if 'theta' in payload:
      return sub.unravel(payload['theta'])
    z = patched(held_state, payload, held_round, round_now)
    return sub.unravel(theta_of_z(flat.theta0, z))

  return Server(init=init, step=step, theta=theta, shared=shared,
                model_params=lambda state: sub.unravel(theta(state)),
                download_bytes=download_bytes, catch_up=catch_up, rebuild=rebuild, keep=keep,
                held_after=held_after)


def theta_replay(opt, sub: compressors.Subspace, flat: Flat, num_rounds: int, stateless: bool,
                 subspace_of: Callable) -> Server:
  """θ: f32[D] (`ServerState`), round e's subspace A_e = `sub.state(subspace_of(e))`:
  θ_e = θ_{e−1} + opt(A_e Δz̄_e), the optimiser in θ-space (seeing θ − θ0). `extra`: 'history',
  a ring f32[R, d] of the last R = min(⌈D/d⌉, rounds) Δz̄ (row (r − 1) mod R for round r; beyond R
  rounds θ is the smaller catch-up, so shapes are static), and 'op_state', this round's A_e
  (broadcast). A client replays the server's rule on the Δz̄ it missed: with a stateless
  optimiser from the θ it kept, the rounds h … e−1; with a stateful one from θ0, rounds 1 … e−1;
  or it downloads θ when n·d >= D."""
  ring = max(1, min(math.ceil(sub.D / sub.d), num_rounds))

  def state_of_round(e):
    return sub.state(subspace_of(e))

  def apply_round(params, opt_state, mean_dz, op_state):
    """The server's rule for one round, which clients replay."""
    return anchored_step(opt, params, opt_state, sub.lift(op_state, mean_dz), flat.theta0)

  apply_round_jit = jax.jit(apply_round)
  state_of_round_jit = jax.jit(state_of_round)

  def init(params0, extra=()):
    theta0 = ravel(params0)
    return ServerState(jnp.ones((), jnp.int32), theta0, opt.init(theta0), (),
                       {'history': jnp.zeros((ring, sub.d), jnp.float32),
                        'op_state': state_of_round(1)})

  def step(state, g, extra=None):
    theta, opt_state = apply_round(state.theta, state.opt_state, g, state.extra['op_state'])
    history = state.extra['history'].at[(state.round - 1) % ring].set(g)
    return state._replace(round=state.round + 1, theta=theta, opt_state=opt_state,
                          extra={'history': history, 'op_state': state_of_round(state.round + 1)})

  def replay_rounds(round_now: int, held_round: int) -> tuple[int, int]:
    """(first round to replay, count) for a client holding `held_round` at round `round_now`."""
    first = held_round if stateless else 1
    return first, round_now - first

  def download_bytes(state, held_rounds):
    e = int(state.round)
    n = np.array([replay_rounds(e, int(h))[1] for h in np.ravel(held_rounds)], np.int64)
    return floats_bytes(np.minimum(n * sub.d, sub.D)).reshape(np.shape(held_rounds))

  def catch_up(state, held_round):
    e = int(state.round)
    first, n = replay_rounds(e, int(held_round))
    if n * sub.d >= sub.D and n:
      return {'theta': state.theta}
    rows = (np.arange(first, e) - 1) % ring
    return {'delta_z': state.extra['history'][jnp.asarray(rows, jnp.int32)]}   # [n, d]

  def rebuild(held_state, payload, held_round, round_now):
    if 'theta' in payload:
      return sub.unravel(payload['theta'])
    first, n = replay_rounds(round_now, held_round)
    if stateless:   # the client kept θ of its last sync; a stateless rule needs nothing else
      params, opt_state = held_state.theta, opt.init(held_state.theta)
    else:           # replay from θ0
      params, opt_state = flat.theta0, opt.init(flat.theta0)
    for i, r in enumerate(range(first, first + n)):
      params, opt_state = apply_round_jit(params, opt_state, payload['delta_z'][i],
                                          state_of_round_jit(r))
    return sub.unravel(params)

  return Server(
      init=init, step=step, shared=lambda state: state.extra['op_state'],
      model_params=lambda state: sub.unravel(state.theta),
      download_bytes=download_bytes, catch_up=catch_up, rebuild=rebuild,
      keep=lambda held, payload, h, e: held._replace(
          theta=ravel(rebuild(held, payload, h, e))))   # the client keeps its θ
