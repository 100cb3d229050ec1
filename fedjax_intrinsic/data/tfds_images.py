"""TFDS image classification sets: `cifar10`, `cifar100`, `mnist`, `emnist` (default
`emnist/balanced`, 47 classes; `tfds_name` picks another EMNIST config).

Read through `tfds.data_source` (random access over array_record files), which needs neither
TensorFlow nor network; decoding PNGs needs Pillow (or OpenCV). The prepared data must already be
in `data_dir` (default: TFDS's, `$TFDS_DATA_DIR` or ~/tensorflow_datasets) in array_record format.
Preparing needs network and TensorFlow (TFDS encodes images with it); `prepare_command` gives the
command, which the missing-data error also prints.

- x: f32[H, W, C] = uint8 / 255 (CIFAR [32, 32, 3]; MNIST, EMNIST [28, 28, 1]); y: int32 (`label`;
  CIFAR-100's fine label). EMNIST's images are stored transposed (TFDS: "inverted horizontally and
  rotated 90 anti-clockwise"); they are transposed back to the upright MNIST orientation.
- Validation: a stratified `validation_fraction` (default 0.1) of the train split, drawn with the
  run's data key; 0 gives an empty validation set (FetchSGD's CIFAR-10 setting, 10,000 clients x 5
  images of one class, uses all 50,000 training images). Test: the TFDS test split.
- Clients: the rest of the train split, partitioned as for digits (`partitions`, default 100
  `shards`). TFDS's EMNIST has no writer ids, so there is no natural partition.
"""
import os
from typing import Optional

import jax
import numpy as np

from fedjax_intrinsic import fields, keys
from fedjax_intrinsic.data import partitions
from fedjax_intrinsic.data.base import FederatedData, group_by_client, label_counts, stratified_split

# registry name -> default TFDS name
SOURCES = {'cifar10': 'cifar10', 'cifar100': 'cifar100', 'mnist': 'mnist',
           'emnist': 'emnist/balanced'}
VALIDATION_FRACTION = fields.Number(0.1, 0, 1, hi_open=True,
                                    doc='stratified share of the train split held out')
OPTIONS = {      # the loader's options, declared once (config data.*)
    'data_dir': fields.Text(None, also=(None,), doc='TFDS data directory (None: TFDS\'s)'),
    'tfds_name': fields.Text(None, also=(None,), note='(the data set\'s TFDS name[/config])',
                             doc='TFDS name (None: the data set\'s; emnist: another config)'),
    'validation_fraction': VALIDATION_FRACTION,
    **partitions.options('shards'),
}


def _tfds():
  import tensorflow_datasets as tfds  # imported on use: importing it costs about a second
  return tfds


def _tfds_name(name: str, tfds_name: Optional[str]) -> str:
  if name not in SOURCES:
    raise ValueError(f'name={name!r} is invalid; allowed: {", ".join(SOURCES)}')
  if tfds_name is None:
    return SOURCES[name]
  if tfds_name.split('/')[0].split(':')[0] != SOURCES[name].split('/')[0]:
    raise ValueError(f'tfds_name={tfds_name!r} is invalid for data set {name!r}; allowed: '
                     f'{SOURCES[name].split("/")[0]}[/config][:version]')
  return tfds_name


def _shown_dir(data_dir: Optional[str]) -> str:
  return data_dir if data_dir is not None else _tfds().core.constants.DATA_DIR


def prepare_command(tfds_name: str, data_dir: Optional[str]) -> str:
  """The one-line shell command that prepares `tfds_name` in array_record under data_dir."""
  return (f'pip install tensorflow tensorflow-datasets && python -c "import tensorflow_datasets as '
          f"tfds; tfds.builder('{tfds_name}', data_dir='{_shown_dir(data_dir)}')"
          f".download_and_prepare(file_format='array_record')\"")


def _missing(name: str, tfds_name: str, data_dir: Optional[str], what: str) -> ValueError:
  return ValueError(
      f'data set {name!r} (TFDS {tfds_name!r}) is {what} under data_dir={_shown_dir(data_dir)!r}; '
      f'allowed: prepared array_record data; prepare it on a machine with network: '
      f'{prepare_command(tfds_name, data_dir)}')


def check_available(name: str, data_dir: Optional[str] = None,
                    tfds_name: Optional[str] = None) -> None:
  """Cheap check (metadata only, no examples read) that `name` is prepared for random access."""
  fields.check(OPTIONS, locals(), 'data.')
  tfds = _tfds()
  tfds_name = _tfds_name(name, tfds_name)
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  if not builder.is_prepared():
    raise _missing(name, tfds_name, data_dir, 'not prepared')
  random_access = tfds.core.file_adapters.FileFormat.with_random_access()
  if not builder.info.available_file_formats() & set(random_access):
    raise _missing(name, tfds_name, data_dir,
                   f'prepared as {builder.info.file_format} only, not array_record,')


def _read_split(name: str, tfds_name: str, split: str, data_dir: Optional[str]
                ) -> tuple[np.ndarray, np.ndarray, int]:
  """(images uint8[N, H, W, C], labels int32[N], num_classes) of one TFDS split."""
  tfds = _tfds()
  try:
    source = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False,
                              builder_kwargs={'file_format': 'array_record'})
  except (KeyError, NotImplementedError, FileNotFoundError, ValueError) as e:
    raise _missing(name, tfds_name, data_dir, 'not prepared in array_record format') from e
  features = source.dataset_info.features
  num_classes = int(features['label'].num_classes)
  shape = tuple(features['image'].shape)
  n = len(source)
  images = np.empty((n,) + shape, np.uint8)
  labels = np.empty(n, np.int32)
  for i in range(n):                       # per item: the mocked source in tests has no batch read
    example = source[i]
    images[i] = example['image']
    labels[i] = example['label']
  return images, labels, num_classes


def load(name: str, *, key: jax.Array, data_dir: Optional[str] = None,
         tfds_name: Optional[str] = None, validation_fraction: float = 0.1,
         partition: str = 'shards', num_clients: int = 100, alpha: float = 0.5,
         shards_per_client: int = 1, examples_per_client: Optional[int] = None) -> FederatedData:
  """The TFDS image set `name` (a SOURCES key) partitioned over clients (key: the run's data key)."""
  fields.check(OPTIONS, locals(), 'data.')
  tfds_name = _tfds_name(name, tfds_name)
  if data_dir is not None and not os.path.isdir(data_dir):
    raise _missing(name, tfds_name, data_dir, 'not prepared (no such directory)')
  train_u8, train_y, num_classes = _read_split(name, tfds_name, 'train', data_dir)
  test_u8, test_y, _ = _read_split(name, tfds_name, 'test', data_dir)
  if name == 'emnist':
    train_u8, test_u8 = train_u8.transpose(0, 2, 1, 3), test_u8.transpose(0, 2, 1, 3)
  to_float = lambda u8: (u8.astype(np.float32) / 255.0)
  rng = keys.numpy_rng(key)
  rest, val = stratified_split(train_y, validation_fraction, rng)
  parts = partitions.make(partition, train_y[rest], num_clients, rng, alpha=alpha,
                          shards_per_client=shards_per_client,
                          examples_per_client=examples_per_client)
  train, offsets = group_by_client({'x': train_u8[rest], 'y': train_y[rest]}, parts)
  train['x'] = to_float(train['x'])
  metadata = {
      'source': f'tensorflow_datasets:{tfds_name}', 'tfds_version': _tfds().__version__,
      'data_dir': _shown_dir(data_dir),
      'split': {'rule': f'stratified {validation_fraction} of the train split held out for '
                        'validation (run data key); test = the TFDS test split',
                'train': int(len(rest)), 'validation': int(len(val)), 'test': int(len(test_y))},
      'partition': partitions.describe(partition, alpha=alpha, shards_per_client=shards_per_client,
                                       examples_per_client=examples_per_client),
      'num_clients': int(num_clients),
      'transposed': name == 'emnist',
      'train_label_counts': label_counts(train_y[rest], num_classes),
  }
  return FederatedData(
      name=name, task='classification', num_classes=num_classes, train=train,
      client_offsets=offsets,
      validation={'x': to_float(train_u8[val]), 'y': train_y[val]},
      test={'x': to_float(test_u8), 'y': test_y}, metadata=metadata)
