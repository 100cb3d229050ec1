"""Which clients take part in a round, and their batches: host-side numpy, a pure function of the
round number (so a round's inputs can be built ahead, on any process, in any order).

    cohorts = cohort.Cohorts(config, data, run_key, cohort_size)
    ids = cohorts.sample(r)                      # i32[C]: sampled ids, then -1 padding clients
    batches, weights = cohorts.inputs(r, ids)    # {'x': [C, S, B, ...], 'y', 'mask'}, f32[C]
    key = cohorts.round_key(r)                   # uint32[2], what the round function takes

Round r's cohort is `config.clients_per_round` clients drawn without replacement with
`keys.sample_key(run_key, r)`, padded with id −1 to `cohort_size` (what chunks and devices need:
`simulation.padded_cohort_size`). Its batches are shuffled with `keys.round_key(run_key, r)`
(`data.batching.client_batches`: S = `num_steps` steps of B = `batch_size` examples, `epochs`
passes); its weights are `simulation.aggregation_weights` of the clients' sizes (metadata).
Both key tables are derived once, for rounds 0 .. config.rounds (derived afresh past them).
"""
from typing import Optional

import jax
import ml_collections
import numpy as np

from fedjax_intrinsic import keys, sharding, simulation
from fedjax_intrinsic.data import FederatedData, batching


class Cohorts:
  """The cohorts and round inputs of a run (its data, sampling keys and client-training sizes)."""

  def __init__(self, config: ml_collections.ConfigDict, data: FederatedData, run_key,
               cohort_size: int):
    self.data = data
    self.run_key = run_key
    self.clients_per_round = config.clients_per_round
    self.cohort_size = cohort_size
    self.weighting = config.server.weighting
    # Every round's sampling and round key (uint32[rounds + 1, 2], host-side).
    self.sample_keys = keys.per_round(keys.sample_key, run_key, config.rounds)
    self.round_keys = keys.per_round(keys.round_key, run_key, config.rounds)
    c = config.client
    self.batch_size = c.batch_size or int(data.client_sizes.max())
    self.num_steps = c.local_steps or batching.steps_for_epochs(data, self.batch_size,
                                                                c.local_epochs)
    # Local epochs: that many passes; a fixed number of steps over the whole data (batch_size 0):
    # one pass; a fixed number of steps of smaller batches: fill every step (passes repeat).
    self.epochs = c.local_epochs or (1 if c.batch_size == 0 else None)

  def _key(self, table: np.ndarray, key_fn, round_num: int) -> np.ndarray:
    if round_num < len(table):
      return table[round_num]
    return np.asarray(jax.random.key_data(key_fn(self.run_key, round_num)))

  def round_key(self, round_num: int) -> np.ndarray:
    """uint32[2]: round `round_num`'s key (`keys.round_key`), as the round function takes it."""
    return self._key(self.round_keys, keys.round_key, round_num)

  def sample(self, round_num: int) -> np.ndarray:
    """i32[cohort_size]: the round's sampled client ids (seeded), then −1 for padding clients."""
    rng = keys.numpy_rng(self._key(self.sample_keys, keys.sample_key, round_num))
    ids = rng.choice(self.data.num_clients, self.clients_per_round, replace=False)
    pad = self.cohort_size - len(ids)
    return np.concatenate([ids, -np.ones(pad, ids.dtype)]).astype(np.int32)

  def inputs(self, round_num: int, client_ids: np.ndarray, share: Optional[slice] = None):
    """(batches, weights) of the clients `client_ids[share]` (default: all of them).

    batches: {'x': [C_s, S, B, ...], 'y': [C_s, S, B(, T)], 'mask': f32[C_s, S, B]}; weights:
    f32[C_s], the share of the whole cohort's weights. Only the share's data is read: the
    shuffling stream skips the draws of the clients before it (`batching.skip`), so a share equals
    the slice of the whole cohort's inputs.
    """
    ids = np.asarray(client_ids)
    share = share or slice(0, len(ids))
    sizes = batching.client_sizes(self.data, ids)
    weights = simulation.aggregation_weights(sizes.astype(np.float32), ids, self.weighting)
    sizes_kw = dict(batch_size=self.batch_size, num_steps=self.num_steps, epochs=self.epochs)
    rng = keys.numpy_rng(self.round_key(round_num))
    batching.skip(rng, self.data, ids[:share.start], **sizes_kw)
    batches = batching.client_batches(self.data, ids[share], rng=rng, **sizes_kw)
    batches.pop('num_examples')
    return batches, weights[share]

  def batch_shapes(self) -> dict:
    """ShapeDtypeStructs of one client's batches (leaves [S, B, ...]): `batching.batch_shapes`."""
    return batching.batch_shapes(self.data, batch_size=self.batch_size, num_steps=self.num_steps)

  def device_inputs(self, round_num: int, client_ids: np.ndarray, mesh) -> tuple:
    """(batches, weights, ids) as the round function takes them for this cohort.

    Without a mesh: batches and weights put on the device (asynchronously). With one: this
    process's share (`sharding.process_share`; every process samples the global cohort and loads
    only its share). ids stay host-side numpy: they also index the client-state store.
    """
    if mesh is None:
      return jax.device_put(self.inputs(round_num, client_ids)) + (client_ids,)
    share = sharding.process_share(len(client_ids))
    batches, weights = self.inputs(round_num, client_ids, share)
    return batches, weights, client_ids[share]
