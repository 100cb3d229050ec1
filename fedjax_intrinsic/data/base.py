"""`FederatedData`: every client's training examples in one set of arrays, plus held-out splits.

Layout: `train` holds the examples of all clients, grouped by client; client c owns rows
`client_offsets[c]:client_offsets[c + 1]`. One contiguous store keeps gathering a round's padded
batches (`batching.client_batches`) a single numpy fancy-indexing pass, for any number of clients.

  train['x']: [N, ...] (f32 images in [0, 1], or int32 token windows), train['y']: int32[N] or
  int32[N, T]; client_offsets: int64[num_clients + 1]; validation, test: the same keys, any length
  (validation may be empty).
"""
import dataclasses
from typing import Sequence

import numpy as np

from fedjax_intrinsic import fields

TASKS = ('classification', 'language_model')


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedData:
  """A federated data set (see the module docstring for the layout).

  name: the registry name. task: one of TASKS. num_classes: classes, or the vocabulary size of a
  language model. metadata: JSON-serialisable facts (source, split rule, partition, hashes).
  """
  name: str
  task: str
  num_classes: int
  train: dict
  client_offsets: np.ndarray
  validation: dict
  test: dict
  metadata: dict

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f'task={self.task!r} is invalid; allowed: {", ".join(TASKS)}')
    if not fields.is_int(self.num_classes, 1):
      raise ValueError(f'num_classes={self.num_classes!r} is invalid; allowed: a positive integer')
    for split_name in ('train', 'validation', 'test'):
      _check_split(split_name, getattr(self, split_name), self.num_classes, self.task)
    for split_name in ('validation', 'test'):
      split = getattr(self, split_name)
      if set(split) != set(self.train):
        raise ValueError(f'{split_name} keys {sorted(split)} are invalid; allowed: the train keys '
                         f'{sorted(self.train)}')
      for k in split:
        if split[k].shape[1:] != self.train[k].shape[1:] or split[k].dtype != self.train[k].dtype:
          raise ValueError(f'{split_name}[{k!r}] has shape {split[k].shape[1:]} {split[k].dtype} per '
                           f'example; allowed: {self.train[k].shape[1:]} {self.train[k].dtype} as in train')
    offsets = self.client_offsets
    n = len(self.train['y'])
    if n == 0:
      raise ValueError('train holds 0 examples; allowed: at least one training example')
    if (not isinstance(offsets, np.ndarray) or offsets.dtype != np.int64 or offsets.ndim != 1
        or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0)):
      raise ValueError(f'client_offsets={offsets!r} is invalid; allowed: int64[num_clients + 1], '
                       f'non-decreasing from 0 to the {n} train examples')

  @property
  def num_clients(self) -> int:
    return len(self.client_offsets) - 1

  @property
  def client_sizes(self) -> np.ndarray:
    """int64[num_clients]: each client's example count."""
    return np.diff(self.client_offsets)

  def client(self, c: int) -> dict:
    """Client c's examples (views into `train`): {'x': [n_c, ...], 'y': [n_c(, T)]}."""
    if not fields.is_int(c, 0, self.num_clients, hi_open=True):
      raise ValueError(f'client id c={c!r} is invalid; allowed: 0 .. {self.num_clients - 1}')
    lo, hi = self.client_offsets[c], self.client_offsets[c + 1]
    return {k: v[lo:hi] for k, v in self.train.items()}

  @property
  def example_spec(self) -> dict:
    """{key: (shape, dtype)} of ONE example, e.g. {'x': ((8, 8, 1), float32), 'y': ((), int32)}."""
    return {k: (tuple(v.shape[1:]), v.dtype) for k, v in self.train.items()}


def _check_split(split_name: str, split: dict, num_classes: int, task: str) -> None:
  if not isinstance(split, dict) or 'x' not in split or 'y' not in split:
    raise ValueError(f'{split_name} is invalid; allowed: a dict with keys x and y')
  n = len(split['y'])
  for k, v in split.items():
    if not isinstance(v, np.ndarray) or v.ndim < 1 or len(v) != n:
      raise ValueError(f'{split_name}[{k!r}] is invalid; allowed: a numpy array with {n} rows')
  y = split['y']
  if y.dtype != np.int32:
    raise ValueError(f'{split_name}["y"].dtype={y.dtype} is invalid; allowed: int32')
  # Language models mark padded target positions with negative ids (models/base.py).
  low = -np.inf if task == 'language_model' else 0
  if n and (y.min() < low or y.max() >= num_classes):
    allowed = (f'0 .. num_classes - 1 = {num_classes - 1}' if low == 0 else
               f'< num_classes = {num_classes} (negative = padding)')
    raise ValueError(f'{split_name}["y"] holds values in [{y.min()}, {y.max()}]; allowed: {allowed}')


def group_by_client(arrays: dict, parts: Sequence[np.ndarray]) -> tuple[dict, np.ndarray]:
  """Reorders `arrays` ({key: [N, ...]}) so each client's rows are contiguous.

  parts: per-client index arrays into the N rows (disjoint; need not cover all rows).
  Returns (train: {key: [sum of part sizes, ...]}, client_offsets: int64[len(parts) + 1]).
  """
  sizes = np.array([len(p) for p in parts], np.int64)
  order = np.concatenate([np.asarray(p, np.int64) for p in parts]) if len(parts) else \
      np.zeros(0, np.int64)
  offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
  return {k: v[order] for k, v in arrays.items()}, offsets


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Splits indices 0..N-1 into (rest, held_out), held_out ≈ fraction of each class.

  Each class c with n_c examples gives round(fraction * n_c) of them, drawn by rng, to held_out.
  Both index arrays are sorted (int64).
  """
  if not 0 <= fraction < 1:
    raise ValueError(f'fraction={fraction!r} is invalid; allowed: 0 <= fraction < 1')
  held = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    held.append(rng.permutation(idx)[:int(round(fraction * len(idx)))])
  held = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
  keep = np.ones(len(labels), bool)
  keep[held] = False
  return np.flatnonzero(keep).astype(np.int64), held.astype(np.int64)


def label_counts(labels: np.ndarray, num_classes: int) -> list[int]:
  """int counts per class, JSON-ready (for metadata)."""
  return np.bincount(labels, minlength=num_classes).astype(int).tolist()
