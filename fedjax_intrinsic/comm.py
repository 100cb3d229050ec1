"""The byte ledger: what travelled up and down, counted from the arrays themselves.

Upload: every real participant sends its payload (and, with a second exchange, its second payload);
their bytes are the arrays' `size x itemsize` (`tree_bytes` of their shapes, which are static).
Download: staleness-aware. The ledger remembers the round whose broadcast each client last received
(`held_round`, 1 for a fresh client, which holds θ0 and the run's seed); a participant downloads what
the method's `download_bytes` says it needs to catch up (and the second exchange's request, if any).
Ratios are relative to uncompressed training of the same model on the same cohorts: 4·D bytes up and
4·D bytes down per participant per round (float32 θ and gradient).

`per_client_bytes` sets up what does not change from round to round, once per run, from shapes
alone (`jax.eval_shape`: nothing runs): what one participant uploads, and what every participant
downloads besides its catch-up.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_intrinsic.algorithms.base import FederatedAlgorithm, tree_bytes


def per_client_bytes(alg: FederatedAlgorithm, server_state: Any, params0: Any,
                     batch: Any) -> tuple[int, int]:
  """(upload, request): the bytes one participant sends in a round, and the bytes every participant
  downloads besides its catch-up (`download_bytes`).

  upload: its payload (and, with a second exchange, its second payload); request: the second
  exchange's request and the end-of-round notice (0 without them). server_state, params0 (θ0, what
  `init_client` takes) and batch (one client's batches, leaves [S, B, ...]) may be arrays or
  ShapeDtypeStructs: only their shapes are used.
  """
  bc = jax.eval_shape(alg.broadcast, server_state)
  cstate = jax.eval_shape(lambda: alg.init_client(params0))
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  payload = jax.eval_shape(alg.client_update, bc, cstate, batch, key)[0]
  upload = tree_bytes(payload)
  request = tree_bytes(jax.eval_shape(alg.notice, server_state)) if alg.finish is not None else 0
  if alg.query is not None:
    agg = jax.eval_shape(lambda p: alg.aggregate(jax.tree.map(lambda x: x[None], p),
                                                 jnp.ones((1,))), payload)
    query = jax.eval_shape(alg.query, server_state, agg)
    request += tree_bytes(query)
    upload += tree_bytes(jax.eval_shape(alg.respond, bc, query, cstate, batch, key)[0])
  return upload, request


@dataclasses.dataclass
class ByteLedger:
  """Per-client last-sync table and running byte totals (host-side numpy, int64 bytes)."""
  num_clients: int
  dense_bytes: int                     # 4·D: one float32 model or gradient
  held_round: np.ndarray = None        # int64[num_clients]; 1 = fresh
  up: int = 0
  down: int = 0
  dense_up: int = 0
  dense_down: int = 0

  def __post_init__(self):
    if self.held_round is None:
      self.held_round = np.ones(self.num_clients, np.int64)

  def record_round(self, round_num: int, client_ids: np.ndarray, upload_per_client: int,
                   download_per_client: np.ndarray, held_after: np.ndarray = None) -> dict:
    """Adds one round's traffic for the real clients of `client_ids`; returns this round's figures.

    download_per_client: int64[C] from the method's `download_bytes` (padding clients ignored).
    held_after: int64[C], the round each participant holds now (default `round_num`; a method's
    `held_after` may say less, for a client that kept less than the round's state).
    """
    ids = np.asarray(client_ids)
    real = ids >= 0
    n = int(real.sum())
    up = n * int(upload_per_client)
    down = int(np.asarray(download_per_client, np.int64)[real].sum())
    self.up += up
    self.down += down
    self.dense_up += n * self.dense_bytes
    self.dense_down += n * self.dense_bytes
    now = np.full(ids.shape, round_num, np.int64) if held_after is None else np.asarray(held_after)
    self.held_round[ids[real]] = now[real]   # they now hold this round's broadcast
    return {'bytes_up': up, 'bytes_down': down, 'bytes_total': up + down,
            'cum_bytes_up': self.up, 'cum_bytes_down': self.down,
            'cum_bytes_total': self.up + self.down, **self.ratios()}

  def ratios(self) -> dict:
    """Compression ratios so far, relative to uncompressed training on the same cohorts."""
    ratio = lambda ref, ours: float(ref / ours) if ours else float('inf')
    return {'upload_compression': ratio(self.dense_up, self.up),
            'download_compression': ratio(self.dense_down, self.down),
            'overall_compression': ratio(self.dense_up + self.dense_down, self.up + self.down)}

  def state_dict(self) -> dict:
    return {'held_round': self.held_round.copy(), 'up': self.up, 'down': self.down,
            'dense_up': self.dense_up, 'dense_down': self.dense_down}

  def load_state_dict(self, state: dict) -> None:
    self.held_round = np.asarray(state['held_round'], np.int64).copy()
    for field in ('up', 'down', 'dense_up', 'dense_down'):
      setattr(self, field, int(state[field]))
