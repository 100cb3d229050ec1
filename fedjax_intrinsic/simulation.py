"""One federated round, compiled once: the clients of a round in parallel, then the server.

Client parallelism (`config.simulation.client_parallelism`), all computing the same round:
- `vmap`: every client of the round at once under `jax.vmap` (per-client keys from
  `keys.client_key(round_key, client_id)`), local steps under `lax.scan`;
- `chunked_vmap`: `lax.scan` over chunks of `clients_per_chunk` vmapped clients; the aggregate is
  accumulated chunk by chunk, so only one chunk of payloads exists at a time (memory bounded by the
  chunk, not the cohort);
- `map`: the same scan one client at a time (a chunk of one, without vmap);
- `loop`: a Python loop over the same jitted per-client function: the reference oracle.
The exact cohort shortcut (`cohort_shortcut=True`, only for methods whose client message is linear in
one gradient and that keep no client state): one gradient over the whole cohort's examples, each
weighted so that the result equals the weighted mean of the per-client gradients, compressed once.

Shapes: the cohort has C clients (padding clients included: weight 0, all examples masked);
`batches['x']: [C, S, B, ...]`, `batches['mask']: f32[C, S, B]`, `weights: f32[C]` summing to one over
the real clients, `client_ids: i32[C]` (−1 for padding clients), client states: leaves `[C, ...]`.
"""
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_intrinsic import keys
from fedjax_intrinsic.algorithms.base import FederatedAlgorithm, weighted_sum

STRATEGIES = ('vmap', 'chunked_vmap', 'map', 'loop')


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

  chunk = 1 if strategy == 'map' else clients_per_chunk
  num_clients = weights.shape[0]
  if num_clients % chunk:
    raise ValueError(f'simulation.clients_per_chunk={chunk} must divide the padded cohort size '
                     f'{num_clients}')
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
  cstates = jax.tree.map(lambda x: x.reshape((num_clients,) + x.shape[2:]), cstates)
  return agg, cstates, msum


def _merge_cohort(batches, weights):
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


def build_round(alg: FederatedAlgorithm, strategy: str = 'vmap', clients_per_chunk: int = 1,
                cohort_shortcut: bool = False, mesh=None):
  """Returns round_fn(server_state, client_states, batches, weights, client_ids, round_key).

  The result is a `RoundOutput`. For every strategy but `loop` the whole round is one jitted
  function (compiled once per cohort shape). With a `jax.sharding.Mesh` (`sharding.make_mesh`) the
  cohort is sharded over its `clients` axis: each device runs its clients with `strategy`, and the
  aggregates and metric sums are summed over devices (`sharding.shard_round`).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f'simulation.client_parallelism={strategy!r}; allowed: {", ".join(STRATEGIES)}')
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
      payload, _, metrics = alg.client_update(bc, (), _merge_cohort(batches, weights), ckeys[0])
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
    return RoundOutput(new_state, cstates, metrics, request)

  if mesh is not None:
    from fedjax_intrinsic import sharding
    return sharding.shard_round(round_fn, mesh)
  return jax.jit(round_fn)


def _loop_round(alg: FederatedAlgorithm):
  """The reference oracle: a Python loop over the jitted per-client step."""
  client = jax.jit(alg.client_update)
  respond = jax.jit(alg.respond) if alg.respond is not None else None
  scaled = jax.jit(lambda agg_fn, p, w: agg_fn(jax.tree.map(lambda x: x[None], p), w[None]),
                   static_argnums=0)
  add = jax.jit(_tree_add)
  broadcast = jax.jit(alg.broadcast)
  server_update = jax.jit(alg.server_update)
  query = jax.jit(alg.query) if alg.query is not None else None

  def round_fn(server_state, client_states, batches, weights, client_ids, round_key):
    bc = broadcast(server_state)
    ckeys = _client_keys(round_key, jnp.asarray(client_ids))
    num = len(weights)
    agg = msum = None
    cstates = []
    for c in range(num):
      payload, cstate, metrics = client(bc, _index(client_states, c), _index(batches, c), ckeys[c])
      part = scaled(alg.aggregate, payload, weights[c])
      m = scaled(weighted_sum, metrics, weights[c])
      agg = part if agg is None else add(agg, part)
      msum = m if msum is None else add(msum, m)
      cstates.append(cstate)
    request = second_agg = None
    if query is not None:
      request = query(server_state, agg)
      for c in range(num):
        payload, cstates[c] = respond(bc, request, cstates[c], _index(batches, c), ckeys[c])
        part = scaled(alg.aggregate2, payload, weights[c])
        second_agg = part if second_agg is None else add(second_agg, part)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *cstates) if cstates else client_states
    new_state = server_update(server_state, agg, second_agg)
    return RoundOutput(new_state, stacked, msum, request)

  return round_fn


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
