"""The one interface every federated method implements (docs/design.md, "The core types").

A method is a `FederatedAlgorithm`: a NamedTuple of pure functions, optax style. The round
(`fedjax_intrinsic.simulation`) calls them in this order, the same for every method:

    bc = broadcast(server_state)                                   # what every client starts from
    payload, cstate, m = client_update(bc, cstate, batch, key)     # per client, in parallel
    agg = aggregate(payloads, weights)                             # weighted SUM over the client axis
    request = query(server_state, agg)                             # optional second exchange (download)
    payload2, cstate = respond(bc, request, cstate, batch, key)    #   per client (upload)
    second = aggregate2(payloads2, weights)                        #   weighted SUM again
    server_state = server_update(server_state, agg, second)
    note = notice(server_state)                                    # optional: down to participants
    cstate = finish(bc, request, note, cstate)                     #   per participant

Contracts the engine relies on:
- `payload` is exactly the pytree that travels up; its bytes are its arrays' bytes (`tree_bytes`).
- `aggregate(payloads[C, ...], weights f32[C])` is LINEAR in the (payload, weight) pairs: a weighted
  sum over the leading client axis. The engine may call it chunk by chunk, or per device, and add the
  results; any non-linear server step (majority vote, unsketching) belongs in `server_update`.
  The weights sum to one over the real clients of the round (padding clients weigh zero).
- Everything except `download_bytes`, `catch_up`, `rebuild`, `keep` and `held_after` is jittable;
  those are host-side byte accounting and its check.
- Rounds are numbered e = 1, 2, ...; `server_state.round` is the round about to run. A client's
  `held_round` h is the round whose broadcast it last received (1 for a fresh client, which holds θ0
  and the run's seed, nothing else); it must catch up on the server updates of rounds h .. e−1.
"""
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_intrinsic.models import Model, weighted_loss

Params = Any
PyTree = Any


class BuildContext(NamedTuple):
  """What every method factory receives besides its own config.

  model: the model (loss, apply). params0: θ0 from keys.init_key, the same for every method.
  run_key: the run's root key (keys.py derives every other key from it).
  server_optimizer: the optax transformation the server applies to the mean pseudo-gradient.
  client_lr: the clients' local SGD rate. num_clients, num_rounds: sizes of the run.
  """
  model: Model
  params0: Params
  run_key: jax.Array
  server_optimizer: optax.GradientTransformation
  client_lr: float
  num_clients: int
  num_rounds: int
  server_optimizer_stateless: bool = False


class Broadcast(NamedTuple):
  """What every participant starts from when it is more than θ."""
  theta: jax.Array     # f32[D]: θ raveled, the point clients start from
  shared: Any          # state every client derives from the seed or gets from the server (the
                       # count sketch's hashes, a subspace's random state, PowerSGD's Q)


class FederatedAlgorithm(NamedTuple):
  """A federated method as pure functions (see the module docstring for the call order).

  name: the config name. init(params0) -> ServerState. init_client(params0) -> ClientState
  (`()` when stateless). broadcast(ServerState) -> Broadcast. client_update(Broadcast, ClientState,
  batch, key) -> (payload, ClientState, metrics dict of scalars). aggregate(payloads, weights) ->
  aggregate. server_update(ServerState, aggregate, second) -> ServerState. model_params(ServerState)
  -> θ for evaluation. download_bytes(ServerState, held_rounds int[C]) -> int64[C] host-side.
  catch_up(ServerState, held_round) -> the arrays a client holding round `held_round` downloads.
  rebuild(held, catch_up_payload, held_round, round_now) -> θ as the client reconstructs it at
  the start of round `round_now`, where `held` is what the client kept: a ServerState-shaped
  value that is `init(params0)` for a fresh client and `keep(held, payload, held_round, round_now)`
  after each sync (`keep` None: the client keeps nothing that rebuild reads); θ0 and the seed's
  subspaces every client derives itself. held_after(ServerState, held_rounds int[C]) -> int[C]
  (None: `round_now` for all): the held round the ledger records for a client after that sync (a
  client that kept less than the round's state, e.g. θ instead of subspace coordinates, may be
  recorded as holding an earlier round, so that its next download covers what it lacks). A test
  simulates clients that sync at chosen rounds with only their kept state, for every method:
  rebuild == model_params(server state), and the payload's bytes == download_bytes.
  cohort_shortcut: True when the client message is linear in a single gradient with no client
  state, so the engine may compute the cohort's message from one big weighted batch.
  query/respond/aggregate2: the optional second exchange (None when absent).
  notice/finish: an optional last download to the round's participants (None when absent):
  notice(new ServerState) -> the pytree every participant downloads after the server step (its
  bytes are counted with the request's), and finish(Broadcast, request, notice, ClientState) ->
  ClientState, the participant's state update once it knows the round's outcome (e.g. error feedback
  that needs the aggregate). finish may use only its arguments.
  """
  name: str
  init: Callable[[Params], Any]
  init_client: Callable[[Params], Any]
  broadcast: Callable[[Any], Any]
  client_update: Callable[..., tuple]
  aggregate: Callable[[Any, jax.Array], Any]
  server_update: Callable[..., Any]
  model_params: Callable[[Any], Params]
  download_bytes: Callable[[Any, np.ndarray], np.ndarray]
  catch_up: Callable[[Any, int], PyTree]
  rebuild: Callable[[Any, PyTree, int, int], Params]
  cohort_shortcut: bool = False
  query: Optional[Callable[[Any, Any], Any]] = None
  respond: Optional[Callable[..., tuple]] = None
  aggregate2: Optional[Callable[[Any, jax.Array], Any]] = None
  notice: Optional[Callable[[Any], Any]] = None
  finish: Optional[Callable[..., Any]] = None
  keep: Optional[Callable[[Any, PyTree, int, int], Any]] = None
  held_after: Optional[Callable[[Any, np.ndarray], np.ndarray]] = None


# ---------------------------------------------------------------------------------------------
# Shared pieces that methods compose.


def weighted_sum(payloads: PyTree, weights: jax.Array) -> PyTree:
  """sum_c weights[c] * payloads[c] for every leaf; payload leaves: [C, ...], weights: f32[C].

  A contraction (tensordot), not a multiply-then-reduce: XLA:CPU runs reductions over the client
  axis slowly (benchmarks/README.md, simulation section), while a dot is a GEMV.
  """
  w = weights.astype(jnp.float32)

  def leaf(x):
    out = jnp.tensordot(w, x.astype(jnp.float32), axes=1, precision=jax.lax.Precision.HIGHEST)
    return out.astype(x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32)
  return jax.tree.map(leaf, payloads)


def tree_bytes(tree: PyTree) -> int:
  """Bytes of the arrays of a pytree (size x itemsize of every leaf), from shapes and dtypes only."""
  return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(tree)))


def local_sgd(loss_fn: Callable[[PyTree, dict], jax.Array], start: PyTree, batches: dict,
              lr: float) -> tuple[PyTree, dict]:
  """Runs len(steps) plain SGD steps of `loss_fn` from `start`; returns (end, metrics).

  batches: {'x': [S, B, ...], 'y': [S, B, ...], 'mask': f32[S, B]} (one batch per step; an all-masked
  step has zero loss and zero gradient, so it changes nothing). metrics['loss'] is the loss at the
  start point of the first step (the round's training loss at the broadcast point).
  """
  grad_fn = jax.value_and_grad(loss_fn)

  def step(w, batch):
    loss, g = grad_fn(w, batch)
    return jax.tree.map(lambda a, b: a - lr * b.astype(a.dtype), w, g), loss

  end, losses = jax.lax.scan(step, start, batches)
  return end, {'loss': losses[0]}


def model_loss(model: Model) -> Callable[[Params, dict], jax.Array]:
  """The training objective of one batch: the masked (or explicitly weighted) mean example loss."""
  return lambda params, batch: weighted_loss(model, params, batch)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
  return jax.tree.map(jnp.subtract, a, b)


def server_step(optimizer: optax.GradientTransformation, params: PyTree, opt_state: Any,
                pseudo_gradient: PyTree) -> tuple[PyTree, Any]:
  """One optax step with the mean pseudo-gradient as the gradient: (params, opt_state)."""
  updates, opt_state = optimizer.update(pseudo_gradient, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def dense_download_bytes(params: PyTree) -> Callable[[Any, np.ndarray], np.ndarray]:
  """download_bytes for methods whose clients always download the full model θ."""
  nbytes = tree_bytes(params)
  return lambda state, held_rounds: np.full(np.shape(held_rounds), nbytes, np.int64)
