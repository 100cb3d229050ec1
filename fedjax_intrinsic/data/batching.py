"""Padded, masked client batches of one round, gathered host-side with numpy fancy indexing.

A cohort of C clients trains S local steps of B examples each; every client gets the same static
shapes so the round compiles once:

  batch['x']: [C, S, B, ...] (e.g. f32[C, S, B, 8, 8, 1]), batch['y']: int32[C, S, B(, T)],
  batch['mask']: f32[C, S, B] (1 = a real example), batch['num_examples']: f32[C].

Client c's n_c examples are shuffled by `rng` and laid out in order over the S x B slots, step by
step. `epochs` sets how many passes over its data a client makes:
- a number e > 0 (default 1): the order is the concatenation of ceil(e) independent permutations,
  cut after ceil(e * n_c) examples or at S * B slots, whichever comes first; with S * B < n_c a
  client sees a prefix of its shuffled data (a partial epoch). Slots after the last example have
  mask 0 and zero x and y. `steps_for_epochs` gives the S at which the largest client fits e epochs.
- None: passes repeat until all S * B slots are filled (a fixed number of local steps with full
  batches; the last pass is partial).
`num_examples[c] = n_c` (the client's whole data set, its aggregation weight). Client id -1 is a
padding client (pads a cohort for chunks or devices): all zeros, mask 0, num_examples 0.
"""
import math
from typing import Optional

import numpy as np

from fedjax_intrinsic import fields
from fedjax_intrinsic.data.base import FederatedData


def _positive_int(name: str, value) -> int:
  if not fields.is_int(value, 1):
    raise ValueError(f'{name}={value!r} is invalid; allowed: a positive integer')
  return int(value)


def _check_epochs(epochs) -> None:
  if epochs is None:
    return
  if not fields.is_number(epochs, 0, lo_open=True):
    raise ValueError(f'epochs={epochs!r} is invalid; allowed: a finite number > 0, or None '
                     '(fill every step)')


def steps_for_epochs(data: FederatedData, batch_size: int, epochs: float) -> int:
  """S = ceil(max client size * epochs / batch_size): the largest client fits `epochs` passes.

  One S for the whole run, so the round compiles once; smaller clients' extra slots are masked.
  """
  batch_size = _positive_int('batch_size', batch_size)
  _check_epochs(epochs)
  if epochs is None:
    raise ValueError('epochs=None is invalid; allowed: a finite number > 0')
  return max(1, math.ceil(int(data.client_sizes.max()) * epochs / batch_size))


def client_sizes(data: FederatedData, client_ids: np.ndarray) -> np.ndarray:
  """int64[C]: each client's example count n_c (0 for a padding client, id -1)."""
  ids = np.asarray(client_ids)
  return np.where(ids >= 0, data.client_sizes[np.maximum(ids, 0)], 0).astype(np.int64)


def _plan(sizes: np.ndarray, slots: int, epochs: Optional[float]) -> tuple:
  """(filled slots L_c, passes ceil(L_c / n_c)) of clients of `sizes` (int64[C]) in `slots`."""
  if epochs is None:
    used = np.where(sizes > 0, slots, 0)
  else:
    used = np.minimum(np.ceil(sizes * float(epochs)).astype(np.int64), slots)
  return used, -(-used // np.maximum(sizes, 1))


def skip(rng: np.random.Generator, data: FederatedData, client_ids: np.ndarray, *,
         batch_size: int, num_steps: int, epochs: Optional[float] = 1) -> None:
  """Advances `rng` past the draws `client_batches(data, client_ids, ...)` would make with it.

  `client_batches` draws one uniform per example and pass (n_c x passes per client, one 64-bit
  output of the bit generator each), so `client_batches` of the clients after `client_ids` with the
  advanced `rng` gives their part of one call over both groups, without loading the first group.
  """
  sizes = client_sizes(data, client_ids)
  _, passes = _plan(sizes, num_steps * batch_size, epochs)
  rng.bit_generator.advance(int((sizes * passes).sum()))


def batch_shapes(data: FederatedData, *, batch_size: int, num_steps: int) -> dict:
  """The shapes and dtypes of ONE client's `client_batches` (leaves [S, B, ...], without
  `num_examples`), from the data's arrays alone: what `jax.eval_shape` of a client step takes."""
  import jax
  out = {k: jax.ShapeDtypeStruct((num_steps, batch_size) + v.shape[1:], v.dtype)
         for k, v in data.train.items()}
  out['mask'] = jax.ShapeDtypeStruct((num_steps, batch_size), np.float32)
  return out


def client_batches(data: FederatedData, client_ids: np.ndarray, *, batch_size: int, num_steps: int,
                   rng: np.random.Generator, epochs: Optional[float] = 1) -> dict:
  """The padded batches of the clients `client_ids` (int[C], -1 = padding client).

  Returns {'x': [C, S, B, ...], 'y': [C, S, B(, T)], 'mask': f32[C, S, B], 'num_examples': f32[C]}
  with S = num_steps and B = batch_size; see the module docstring for the layout and `epochs`.
  """
  batch_size = _positive_int('batch_size', batch_size)
  num_steps = _positive_int('num_steps', num_steps)
  _check_epochs(epochs)
  ids = np.asarray(client_ids)
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f'client_ids with shape {ids.shape} and dtype {ids.dtype} are invalid; '
                     'allowed: a 1-D integer array')
  if ids.size and (ids.min() < -1 or ids.max() >= data.num_clients):
    raise ValueError(f'client_ids hold values in [{ids.min()}, {ids.max()}]; allowed: '
                     f'0 .. {data.num_clients - 1}, or -1 for a padding client')
  num = len(ids)
  slots = num_steps * batch_size
  real = ids >= 0
  safe = np.where(real, ids, 0)
  sizes = client_sizes(data, ids)                                          # n_c, int64[C]
  starts = data.client_offsets[safe]
  used, passes = _plan(sizes, slots, epochs)
  # One segment per (client, pass) of n_c random keys; a sort by (segment, key) permutes each.
  seg_len = np.repeat(sizes, passes)
  seg_client = np.repeat(np.arange(num), passes)
  seg_start = np.cumsum(seg_len) - seg_len
  seg_of = np.repeat(np.arange(len(seg_len)), seg_len)
  order = np.argsort(seg_of + rng.random(len(seg_of)), kind='stable')
  local = order - seg_start[seg_of]                                        # index within the client
  client = seg_client[seg_of]
  rank = np.arange(len(seg_of)) - np.repeat(np.cumsum(sizes * passes) - sizes * passes,
                                            sizes * passes)              # position in its sequence
  keep = rank < used[client]
  flat_pos = client[keep] * slots + rank[keep]
  rows = np.zeros(num * slots, np.int64)                                   # padding slots read row 0
  rows[flat_pos] = starts[client[keep]] + local[keep]
  mask = np.zeros(num * slots, np.float32)
  mask[flat_pos] = 1.0
  pad = np.flatnonzero(mask == 0)
  out = {}
  for k, v in data.train.items():
    buf = v[rows]                                                          # one gather per array
    buf[pad] = 0
    out[k] = buf.reshape((num, num_steps, batch_size) + v.shape[1:])
  out['mask'] = mask.reshape(num, num_steps, batch_size)
  out['num_examples'] = sizes.astype(np.float32)
  return out
