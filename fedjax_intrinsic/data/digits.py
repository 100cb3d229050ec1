"""`digits`: scikit-learn's handwritten digits (1,797 8x8 images, 10 classes), offline (docs/paper.md §5).

The data ship inside scikit-learn's wheel (`sklearn.datasets.load_digits`, the UCI optical
recognition test set), so this works without network.
- x: f32[8, 8, 1] = pixel counts / 16, in [0, 1]; y: int32 in 0..9.
- Held out: a 20% stratified split with seed 0 (360 images), fixed whatever the run's seed, cut in
  half stratified with seed 0 again: validation 180, test 180. Train: the other 1,437.
- Clients: 100 by default, FetchSGD-style `shards` (sorted by label, 100 contiguous shards of
  14–15 examples, mostly one class), the shard-to-client deal seeded by the run's data key. Other
  partitions: see `partitions`.
"""
import hashlib
from typing import Optional

import jax
import numpy as np

from fedjax_intrinsic import fields, keys
from fedjax_intrinsic.data import partitions
from fedjax_intrinsic.data.base import FederatedData, group_by_client, label_counts

NUM_CLASSES = 10
HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0
OPTIONS = partitions.options('shards')      # the loader's options, declared once (config data.*)


def load(*, key: jax.Array, partition: str = 'shards', num_clients: int = 100, alpha: float = 0.5,
         shards_per_client: int = 1, examples_per_client: Optional[int] = None) -> FederatedData:
  """The digits data set partitioned over `num_clients` clients (key: the run's data key)."""
  fields.check(OPTIONS, locals(), 'data.')
  import sklearn                      # here, not at module import: every run (and a refused one)
  import sklearn.datasets             # imports this module, and scikit-learn takes seconds
  from sklearn.model_selection import train_test_split
  raw = sklearn.datasets.load_digits()
  x = (raw.images / 16.0).astype(np.float32)[..., None]                  # [1797, 8, 8, 1]
  y = raw.target.astype(np.int32)
  idx = np.arange(len(y))
  train_idx, held_idx = train_test_split(idx, test_size=HELD_OUT_FRACTION, stratify=y,
                                         random_state=SPLIT_SEED)
  val_idx, test_idx = train_test_split(held_idx, test_size=0.5, stratify=y[held_idx],
                                       random_state=SPLIT_SEED)
  parts = partitions.make(partition, y[train_idx], num_clients, keys.numpy_rng(key), alpha=alpha,
                          shards_per_client=shards_per_client,
                          examples_per_client=examples_per_client)
  train, offsets = group_by_client({'x': x[train_idx], 'y': y[train_idx]}, parts)
  digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
  metadata = {
      'source': 'sklearn.datasets.load_digits', 'sklearn_version': sklearn.__version__,
      'sha256': digest, 'num_examples': int(len(y)),
      'split': {'rule': f'stratified {HELD_OUT_FRACTION:.0%} held out (random_state={SPLIT_SEED}), '
                        'halved stratified into validation and test',
                'train': int(len(train_idx)), 'validation': int(len(val_idx)),
                'test': int(len(test_idx))},
      'partition': partitions.describe(partition, alpha=alpha, shards_per_client=shards_per_client,
                                       examples_per_client=examples_per_client),
      'num_clients': int(num_clients),
      'train_label_counts': label_counts(y[train_idx], NUM_CLASSES),
  }
  return FederatedData(
      name='digits', task='classification', num_classes=NUM_CLASSES, train=train,
      client_offsets=offsets,
      validation={'x': x[val_idx], 'y': y[val_idx]}, test={'x': x[test_idx], 'y': y[test_idx]},
      metadata=metadata)
