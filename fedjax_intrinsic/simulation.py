"""One federated round, compiled once: the clients of a round in parallel, then the server.

Client parallelism (`config.simulation.client_parallelism`), all computing the same round:
- `vmap`: every client of the round at once under `jax.vmap` (per-client keys from
  `keys.client_key(round_key, client_id)`), local steps under `lax.scan`;
- `chunked_vmap`: `lax.scan` over chunks of `clients_per_chunk` vmapped clients; the aggregate is
  accumulated chunk by chunk, so only one chunk of payloads exists at a time (memory bounded by the
  chunk, not the cohort); a cohort the chunk does not divide is padded inside the round with
  weight-0 copies of its first client (dropped again from the returned client states);
- `map`: the same scan one client at a time (a chunk of one, without vmap);
- `loop`: a Python loop over the clients, one jitted call per client (the client's update plus its
  weighted share of the sums): the reference oracle;
- `auto`: `default_strategy(backend, family)`, by the backend and the family the model declares.
The exact cohort shortcut (`cohort_shortcut=True`, only for methods whose client message is linear in
one gradient and that keep no client state): one gradient over the whole cohort's examples, each
weighted so that the result equals the weighted mean of the per-client gradients, compressed once.

Shapes: the cohort has C clients (padding clients included: weight 0, all examples masked);
`batches['x']: [C, S, B, ...]`, `batches['mask']: f32[C, S, B]`, `weights: f32[C]` summing to one over
the real clients, `client_ids: i32[C]` (−1 for padding clients), client states: leaves `[C, ...]`.
"""
import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_intrinsic import keys, sharding
from fedjax_intrinsic.algorithms.base import FederatedAlgorithm, weighted_sum

STRATEGIES = ('vmap', 'chunked_vmap', 'map', 'loop')
CLIENT_PARALLELISM = STRATEGIES + ('auto',)   # the allowed config values


class RoundOutput(NamedTuple):
  server_state: Any
  client_states: Any     # leaves [C, ...]: the cohort's client states after the round
  metrics: dict          # weighted means over the real clients, e.g. {'loss': f32[]}
  request: Any           # what the second exchange sent down (None without one)


def _tree_add(a, b):
  return jax.tree.map(jnp.add, a, b)


def _client_keys(round_key, client_ids):
  return jax.vmap(lambda c: keys.client_key(round_key, c))(client_ids)


def _index(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


def _exchange(fn, aggregate, strategy, clients_per_chunk, per_client, weights):
  """Runs fn(per_client_args) -> (payload, cstate, metrics) over the client axis.

  Returns (aggregate(payloads, weights) [a weighted sum], cstates [C, ...], weighted metric sums).
  """
  def agg_and_metrics(payloads, cstates, metrics, w):
    return (aggregate(payloads, w), weighted_sum(metrics, w)), cstates

  if strategy == 'vmap':
    payloads, cstates, metrics = jax.vmap(fn)(per_client)
    (agg, msum), cstates = agg_and_metrics(payloads, cstates, metrics, weights)
    return agg, cstates, msum

  chunk = 1 if strategy == 'map' else min(clients_per_chunk, weights.shape[0])
  num_real = weights.shape[0]
  pad = -num_real % chunk
  if pad:   # pad with weight-0 copies of client 0 (finite payloads, removed again below)
    per_client, weights = jax.tree.map(
        lambda x: jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]), (per_client, weights))
    weights = weights.at[num_real:].set(0)
  num_clients = num_real + pad
  one = jax.tree.map(lambda x: x[:chunk], per_client)
  if strategy == 'map':
    mapped = lambda args: jax.tree.map(lambda x: x[None], fn(_index(args, 0)))
  else:
    mapped = jax.vmap(fn)
  out_shape = jax.eval_shape(
      lambda a, w: agg_and_metrics(*mapped(a), w)[0], one, weights[:chunk])
  carry0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)

  def body(carry, args_and_w):
    args, w = args_and_w
    payloads, cstates, metrics = mapped(args)
    part, cstates = agg_and_metrics(payloads, cstates, metrics, w)
    return _tree_add(carry, part), cstates

  chunked = jax.tree.map(lambda x: x.reshape((num_clients // chunk, chunk) + x.shape[1:]),
                         (per_client, weights))
  (agg, msum), cstates = jax.lax.scan(body, carry0, chunked)
  cstates = jax.tree.map(lambda x: x.reshape((num_clients,) + x.shape[2:])[:num_real], cstates)
  return agg, cstates, msum


def merge_cohort(batches, weights):
  """The cohort as ONE weighted batch: {'x': [1, C*B, ...], 'weight': f32[1, C*B]}.

  Example i of client c weighs weights[c] * mask[c, i] / n_c (n_c = the client's unmasked count), so
  the loss's gradient is exactly sum_c weights[c] * (client c's masked-mean gradient).
  """
  mask = batches['mask'][:, 0]                                      # [C, B]
  count = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1.0)
  example_weight = mask * (weights[:, None] / count)
  merged = {k: v[:, 0].reshape((1, -1) + v.shape[3:]) for k, v in batches.items()
            if k != 'mask'}
  merged['mask'] = mask.reshape(1, -1)
  merged['weight'] = example_weight.reshape(1, -1)
  return merged


# What `auto` picks on CPU, by the family a model declares (`models.ModelSpec.family`).
CPU_DEFAULTS = {'dense': 'chunked_vmap', 'small_conv': 'chunked_vmap', 'large_conv': 'map',
                'transformer': 'map'}


def default_strategy(backend: str, family: Optional[str] = None) -> str:
  """The client parallelism `auto` picks for `backend` and the model's `family`.

  family: what the model's registry entry declares (`models.family(name)`: 'dense', 'small_conv',
  'large_conv', 'transformer'), or None. CPU: `chunked_vmap` (chunks of
  `simulation.clients_per_chunk`) for 'dense' and 'small_conv', `map` for 'large_conv',
  'transformer' and None or an unknown family; any other backend: `vmap`. This is the fastest of
  the strategies measured per backend and family by `python -m benchmarks.simulation`; the figures
  and the reasons are in benchmarks/README.md ("Simulation speed").
  """
  if backend == 'cpu':
    return CPU_DEFAULTS.get(family, 'map')
  return 'vmap'


def resolve_strategy(strategy: str, family: Optional[str] = None,
                     backend: Optional[str] = None) -> str:
  """`strategy`, with 'auto' replaced by `default_strategy(backend or JAX's default, family)`."""
  if strategy not in CLIENT_PARALLELISM:
    raise ValueError(f'simulation.client_parallelism={strategy!r} is invalid; allowed: '
                     f'{", ".join(CLIENT_PARALLELISM)}')
  if strategy == 'auto':
    return default_strategy(backend or jax.default_backend(), family)
  return strategy


def build_round(alg: FederatedAlgorithm, strategy: str = 'vmap', clients_per_chunk: int = 1,
                cohort_shortcut: bool = False, family: Optional[str] = None, mesh=None):
  """Returns round_fn(server_state, client_states, batches, weights, client_ids, round_key).

  The result is a `RoundOutput`. For every strategy but `loop` the whole round is one jitted
  function (compiled once per cohort shape). strategy='auto' is `default_strategy` for JAX's
  default backend and the model's `family` (`models.family`). With a `jax.sharding.Mesh` (`sharding.make_mesh`) the cohort
  is sharded over its `clients` axis: each device runs its clients with `strategy`, and the
  aggregates and metric sums are summed over devices (`sharding.shard_round`).
  """
  strategy = resolve_strategy(strategy, family)
  if cohort_shortcut and not alg.cohort_shortcut:
    raise ValueError(f'simulation.cohort_shortcut=True but method {alg.name!r} is not linear in one '
                     'gradient with no client state; allowed: False')
  if strategy == 'loop':
    if mesh is not None:
      raise ValueError("simulation.client_parallelism='loop' is invalid with a device mesh; "
                       "allowed: 'vmap', 'chunked_vmap', 'map', 'auto'")
    return _loop_round(alg)

  def first(bc, per_client, weights):
    fn = lambda a: alg.client_update(bc, a[0], a[1], a[2])
    return _exchange(fn, alg.aggregate, strategy, clients_per_chunk, per_client, weights)

  def second(bc, request, per_client, weights):
    def fn(a):
      payload, cstate = alg.respond(bc, request, a[0], a[1], a[2])
      return payload, cstate, {}
    agg, cstates, _ = _exchange(fn, alg.aggregate2, strategy, clients_per_chunk, per_client,
                                weights)
    return agg, cstates

  def round_fn(server_state, client_states, batches, weights, client_ids, round_key,
               allsum=lambda sums: sums):
    """The round on these clients; `allsum` adds the sums of all devices (identity on one)."""
    bc = alg.broadcast(server_state)
    ckeys = _client_keys(round_key, client_ids)
    if cohort_shortcut:
      payload, _, metrics = alg.client_update(bc, (), merge_cohort(batches, weights), ckeys[0])
      agg = alg.aggregate(jax.tree.map(lambda x: x[None], payload), jnp.ones((1,), jnp.float32))
      cstates = client_states
    else:
      agg, cstates, metrics = first(bc, (client_states, batches, ckeys), weights)
    agg, metrics = allsum((agg, metrics))
    request = None
    second_agg = None
    if alg.query is not None:
      request = alg.query(server_state, agg)
      second_agg, cstates = second(bc, request, (cstates, batches, ckeys), weights)
      second_agg = allsum(second_agg)
    new_state = alg.server_update(server_state, agg, second_agg)
    if alg.finish is not None:
      note = alg.notice(new_state)
      cstates = jax.vmap(lambda c: alg.finish(bc, request, note, c))(cstates)
    return RoundOutput(new_state, cstates, metrics, request)

  if mesh is not None:
    return sharding.shard_round(round_fn, mesh, RoundOutput(
        sharding.REPLICATED, sharding.SPLIT, sharding.REPLICATED, sharding.REPLICATED))
  return jax.jit(round_fn)


def _loop_round(alg: FederatedAlgorithm):
  """The reference oracle: a Python loop over clients, one jitted call per client.

  Each call runs the client's update and adds its weighted payload and metrics to the running sums
  (client c's inputs are sliced inside the call, so a client costs one dispatch, not one per array).
  """
  def expand(tree):
    return jax.tree.map(lambda x: x[None], tree)

  def step(agg_fn, acc, payload, metrics, w):
    part = agg_fn(expand(payload), w[None])
    if metrics is not None:
      part = (part, weighted_sum(expand(metrics), w[None]))
    return _tree_add(acc, part)

  @functools.partial(jax.jit, static_argnums=0)
  def zeros(shapes):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes.tree)

  @jax.jit
  def client(acc, bc, client_states, batches, ckeys, weights, c):
    payload, cstate, metrics = alg.client_update(bc, _index(client_states, c), _index(batches, c),
                                                 ckeys[c])
    return step(alg.aggregate, acc, payload, metrics, weights[c]), cstate

  @jax.jit
  def respond(acc, bc, request, cstate, batches, ckeys, weights, c):
    payload, cstate = alg.respond(bc, request, cstate, _index(batches, c), ckeys[c])
    return step(alg.aggregate2, acc, payload, None, weights[c]), cstate

  shapes_cache = {}

  def sums_shape(fn, agg_fn, *args):
    """The shapes of the running sums: (aggregate of one payload[, weighted metrics])."""
    leaves, treedef = jax.tree.flatten(args)
    key = (fn, treedef, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves))
    if key not in shapes_cache:
      def one(*a):
        out = fn(*a)
        part = agg_fn(expand(out[0]), jnp.ones((1,), jnp.float32))
        if len(out) == 3:   # client_update: (payload, cstate, metrics)
          part = (part, weighted_sum(expand(out[2]), jnp.ones((1,), jnp.float32)))
        return part
      shapes_cache[key] = _Hashable(jax.eval_shape(one, *args))
    return shapes_cache[key]

  broadcast = jax.jit(alg.broadcast)
  server_update = jax.jit(alg.server_update)
  query = jax.jit(alg.query) if alg.query is not None else None
  notice = jax.jit(alg.notice) if alg.finish is not None else None
  finish = jax.jit(alg.finish) if alg.finish is not None else None

  def round_fn(server_state, client_states, batches, weights, client_ids, round_key):
    bc = broadcast(server_state)
    ckeys = _client_keys(round_key, jnp.asarray(client_ids))
    weights = jnp.asarray(weights)
    num = len(weights)
    first = (bc, _index(client_states, 0), _index(batches, 0), ckeys[0])
    acc = zeros(sums_shape(alg.client_update, alg.aggregate, *first))
    cstates = []
    for c in range(num):
      acc, cstate = client(acc, bc, client_states, batches, ckeys, weights, c)
      cstates.append(cstate)
    agg, msum = acc
    request = second_agg = None
    if query is not None:
      request = query(server_state, agg)
      second_agg = zeros(sums_shape(alg.respond, alg.aggregate2, bc, request, cstates[0],
                                    _index(batches, 0), ckeys[0]))
      for c in range(num):
        second_agg, cstates[c] = respond(second_agg, bc, request, cstates[c], batches, ckeys,
                                         weights, c)
    new_state = server_update(server_state, agg, second_agg)
    if finish is not None:
      note = notice(new_state)
      cstates = [finish(bc, request, note, cstate) for cstate in cstates]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *cstates) if cstates else client_states
    return RoundOutput(new_state, stacked, msum, request)

  return round_fn


class _Hashable:
  """A pytree of ShapeDtypeStructs usable as a static jit argument (hashed by its structure)."""

  def __init__(self, tree):
    self.tree = tree
    leaves, treedef = jax.tree.flatten(tree)
    self._key = (treedef, tuple((x.shape, str(x.dtype)) for x in leaves))

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, _Hashable) and self._key == other._key


def padded_cohort_size(clients_per_round: int, strategy: str, clients_per_chunk: int,
                       num_devices: int = 1) -> int:
  """The cohort size after padding with masked clients so chunks and devices divide it."""
  multiple = num_devices * (clients_per_chunk if strategy == 'chunked_vmap' else 1)
  return -(-clients_per_round // multiple) * multiple


def aggregation_weights(num_examples: np.ndarray, client_ids: np.ndarray, weighting: str) -> np.ndarray:
  """f32[C] summing to one over real clients: by example count ('examples') or 'uniform'."""
  real = (np.asarray(client_ids) >= 0).astype(np.float64)
  if weighting == 'examples':
    raw = np.asarray(num_examples, np.float64) * real
  elif weighting == 'uniform':
    raw = real
  else:
    raise ValueError(f"server.weighting={weighting!r}; allowed: 'examples', 'uniform'")
  return (raw / max(raw.sum(), 1e-30)).astype(np.float32)


class ClientStateStore:
  """Every client's `ClientState`, kept on the host as numpy arrays `[num_clients, ...]`.

  Stateless methods (`init_client` returns `()`) store nothing. `gather(ids)` gives the cohort's
  states `[C, ...]` (padding clients, id −1, get the initial state); `scatter(ids, states)` writes
  back the real clients' new states.
  """

  def __init__(self, initial_state: Any, num_clients: int):
    self.initial = jax.tree.map(np.asarray, initial_state)
    self.tables = jax.tree.map(
        lambda x: np.broadcast_to(x, (num_clients,) + x.shape).copy(), self.initial)

  @staticmethod
  def bytes_needed(initial_state: Any, num_clients: int) -> int:
    return num_clients * sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                             for x in jax.tree.leaves(initial_state))

  def gather(self, client_ids: np.ndarray) -> Any:
    ids = np.asarray(client_ids)
    real = (ids >= 0)
    def take(table, init):
      out = table[np.maximum(ids, 0)]
      out[~real] = init
      return out
    return jax.tree.map(take, self.tables, self.initial)

  def scatter(self, client_ids: np.ndarray, states: Any) -> None:
    ids = np.asarray(client_ids)
    real = ids >= 0
    def put(table, new):
      table[ids[real]] = np.asarray(new)[real]
    jax.tree.map(put, self.tables, states)

  def state_dict(self) -> Any:
    return self.tables

  def load_state_dict(self, tables: Any) -> None:
    self.tables = jax.tree.map(lambda t, x: np.asarray(x, t.dtype).reshape(t.shape), self.tables,
                               tables)
