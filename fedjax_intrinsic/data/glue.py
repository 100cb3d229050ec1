"""`sst2`: GLUE's SST-2 sentiment classification (2 classes), split non-IID over clients.

Read through `tfds.data_source('glue/sst2')` (random access over array_record files: neither
TensorFlow nor network needed to read); the data must be prepared beforehand in `data_dir` ('' or
None: TFDS's default, `$TFDS_DATA_DIR` or ~/tensorflow_datasets) — the missing-data error prints
the command, which needs network and TensorFlow.

- Test: GLUE's validation split (872 sentences): GLUE's test labels are hidden, so the reported
  metric is validation accuracy. Validation: a stratified `validation_fraction` (default 0.1) of the
  train split, drawn with the run's data key, for tuning (0 gives an empty validation set).
- Clients: the rest of the train split (67,349 sentences in all), partitioned by `partitions`
  (default `dirichlet`: label skew with concentration `alpha`, default 0.5, over `num_clients`,
  default 100, clients of near-equal size; the project's choice).
- x: int32[seq_len] = [CLS] + the sentence's first seq_len - 2 WordPiece ids + [SEP], padded with
  [PAD] (BERT's uncased vocab.txt from `vocab_file`, see tokenizers.py; `do_lower_case`); the
  `bert_classifier` model masks positions equal to its pad_id, which must be this vocabulary's [PAD]
  id (0 in every BERT vocab.txt: checked). y: int32 label (0 negative, 1 positive).
"""
import hashlib
import os
from typing import Optional

import jax
import numpy as np

from fedjax_intrinsic import fields, keys, tokenizers
from fedjax_intrinsic.data import partitions, tfds_images
from fedjax_intrinsic.data.base import (FederatedData, group_by_client, label_counts,
                                         stratified_split)

TFDS_NAME = 'glue/sst2'
NUM_CLASSES = 2


def _tfds():
  import tensorflow_datasets as tfds  # imported on use: importing it costs about a second
  try:
    import tensorflow_datasets.text.glue  # noqa: F401  registers the builder (no TensorFlow needed)
  except ImportError:
    pass
  return tfds


def _data_dir(data_dir: Optional[str]) -> Optional[str]:
  return data_dir or None


def _shown_dir(data_dir: Optional[str]) -> str:
  return data_dir or _tfds().core.constants.DATA_DIR


def prepare_command(data_dir: Optional[str]) -> str:
  """The one-line shell command that prepares glue/sst2 in array_record under data_dir."""
  return (f'pip install tensorflow tensorflow-datasets && python -c "import tensorflow_datasets as '
          f"tfds; tfds.builder('{TFDS_NAME}', data_dir='{_shown_dir(data_dir)}')"
          f".download_and_prepare(file_format='array_record')\"")


def _missing(data_dir: Optional[str], what: str) -> ValueError:
  return ValueError(f'data set \'sst2\' (TFDS {TFDS_NAME!r}) is {what} under data_dir='
                    f'{_shown_dir(data_dir)!r} (data.data_dir); allowed: prepared array_record '
                    f'data; prepare it on a machine with network: {prepare_command(data_dir)}')


OPTIONS = {      # the loader's options, declared once (config data.*)
    'data_dir': fields.Text('', also=(None,), doc='TFDS data directory (\'\' or None: TFDS\'s)'),
    'vocab_file': fields.Text('', doc='a BERT vocab.txt ([PAD] on its first line)'),
    'seq_len': fields.Int(64, lo=3, note='([CLS], a piece, [SEP])', doc='WordPiece ids per example'),
    'do_lower_case': fields.Bool(True, doc='lower-case and strip accents before WordPiece'),
    'validation_fraction': tfds_images.VALIDATION_FRACTION,
    **partitions.options('dirichlet'),
}


def check_available(*, data_dir: Optional[str] = '', vocab_file: str = '', seq_len: int = 64,
                    do_lower_case: bool = True, validation_fraction: float = 0.1,
                    partition: str = 'dirichlet', num_clients: int = 100, alpha: float = 0.5,
                    shards_per_client: int = 1, examples_per_client: Optional[int] = None) -> None:
  """Cheap (metadata only): raises ValueError unless vocab_file exists and glue/sst2 is prepared.

  Takes the options of `load`, each checked against `OPTIONS`; the partition bounds that need
  the labels (num_clients <= the examples, ...) are checked when loading.
  """
  fields.check(OPTIONS, locals(), 'data.')
  tokenizers.check_file('vocab_file', vocab_file, 'bert', 'data.vocab_file')
  tfds = _tfds()
  if data_dir and not os.path.isdir(data_dir):
    raise _missing(data_dir, 'not prepared (no such directory)')
  builder = tfds.builder(TFDS_NAME, data_dir=_data_dir(data_dir))
  if not builder.is_prepared():
    raise _missing(data_dir, 'not prepared')
  random_access = tfds.core.file_adapters.FileFormat.with_random_access()
  if not builder.info.available_file_formats() & set(random_access):
    raise _missing(data_dir, f'prepared as {builder.info.file_format} only, not array_record,')


def _read_split(split: str, data_dir: Optional[str]) -> tuple[list, np.ndarray]:
  """(sentences: list[str], labels int32[N]) of one TFDS split."""
  tfds = _tfds()
  if data_dir and not os.path.isdir(data_dir):
    raise _missing(data_dir, 'not prepared (no such directory)')
  try:
    source = tfds.data_source(TFDS_NAME, split=split, data_dir=_data_dir(data_dir), download=False,
                              builder_kwargs={'file_format': 'array_record'})
  except (KeyError, NotImplementedError, FileNotFoundError, ValueError) as e:
    raise _missing(data_dir, 'not prepared in array_record format') from e
  sentences, labels = [], np.empty(len(source), np.int32)
  for i in range(len(source)):                # per item: the mocked source has no batch read
    ex = source[i]
    s = ex['sentence']
    sentences.append(s.decode('utf-8') if isinstance(s, bytes) else str(s))
    labels[i] = ex['label']
  if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
    raise ValueError(f'split {split!r} of {TFDS_NAME} holds labels in [{labels.min()}, '
                     f'{labels.max()}]; allowed: 0 .. 1 (GLUE hides its test labels)')
  return sentences, labels


def load(*, key: jax.Array, data_dir: Optional[str] = '', vocab_file: str = '', seq_len: int = 64,
         do_lower_case: bool = True, validation_fraction: float = 0.1,
         partition: str = 'dirichlet', num_clients: int = 100, alpha: float = 0.5,
         shards_per_client: int = 1, examples_per_client: Optional[int] = None) -> FederatedData:
  """SST-2 partitioned over clients (key: the run's data key; see the module docstring)."""
  fields.check(OPTIONS, locals(), 'data.')
  tokenizers.check_file('vocab_file', vocab_file, 'bert', 'data.vocab_file')
  tok = tokenizers.bert(vocab_file, do_lower_case=bool(do_lower_case))
  if tok.special_ids['pad'] != 0:
    raise ValueError(f'vocab_file={vocab_file!r} puts [PAD] at id {tok.special_ids["pad"]}; '
                     'allowed: a BERT vocab.txt with [PAD] on its first line (id 0, the '
                     'bert_classifier pad_id)')
  train_s, train_y = _read_split('train', data_dir)
  test_s, test_y = _read_split('validation', data_dir)

  def encode(sentences):
    rows = [tokenizers.bert_classification_ids(tok, s, seq_len) for s in sentences]
    x = np.array([r[0] for r in rows], np.int32).reshape(len(rows), seq_len)
    return x, int(sum(r[1] for r in rows))

  train_x, train_cut = encode(train_s)
  test_x, test_cut = encode(test_s)
  rng = keys.numpy_rng(key)
  rest, val = stratified_split(train_y, validation_fraction, rng)
  parts = partitions.make(partition, train_y[rest], num_clients, rng, alpha=alpha,
                          shards_per_client=shards_per_client,
                          examples_per_client=examples_per_client)
  train, offsets = group_by_client({'x': train_x[rest], 'y': train_y[rest]}, parts)
  with open(vocab_file, 'rb') as f:
    vocab_sha = hashlib.sha256(f.read()).hexdigest()
  metadata = {
      'source': f'tensorflow_datasets:{TFDS_NAME}', 'tfds_version': _tfds().__version__,
      'data_dir': _shown_dir(data_dir),
      'split': {'rule': f'stratified {validation_fraction} of the train split held out for '
                        'validation (run data key); test = the GLUE validation split (GLUE test '
                        'labels are hidden)',
                'train': int(len(rest)), 'validation': int(len(val)), 'test': int(len(test_y))},
      'partition': partitions.describe(partition, alpha=alpha, shards_per_client=shards_per_client,
                                       examples_per_client=examples_per_client),
      'num_clients': int(num_clients),
      'tokenizer': {'vocab_file': vocab_file, 'vocab_sha256': vocab_sha,
                    'vocab_size': tok.vocab_size, 'do_lower_case': bool(do_lower_case),
                    'seq_len': int(seq_len), 'pad_id': 0},
      'truncated': {'train': train_cut, 'test': test_cut},
      'train_label_counts': label_counts(train_y[rest], NUM_CLASSES),
  }
  return FederatedData(
      name='sst2', task='classification', num_classes=NUM_CLASSES, train=train,
      client_offsets=offsets, validation={'x': train_x[val], 'y': train_y[val]},
      test={'x': test_x, 'y': test_y}, metadata=metadata)
