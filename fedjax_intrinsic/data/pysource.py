"""`pysource`: next-byte language modelling on the Python standard library's own source files.

One client per module file, a natural non-IID partition (like LEAF's Shakespeare, one client per
role). Works offline: the corpus is the stdlib of the running Python (or `source_dir`).

Pinned module list (the rule; the list itself, the Python version and a content hash go into
`metadata`, since the corpus changes with the Python version):
- the top-level `*.py` files of `source_dir` (default `sysconfig.get_paths()['stdlib']`), not
  subpackages, whose size is in [min_bytes, max_bytes] (defaults 4 KiB and 1 MiB), sorted by name;
- held out by position i in that sorted list: i % 10 == 9 → test, i % 10 == 4 → validation, all
  others → one training client each (Python 3.11.7: 146 modules, 117 clients, 15 validation and 14
  test modules);
- `sha256`: over the sorted list, of each module's name, a NUL byte, its length in bytes (decimal),
  a NUL byte and its bytes. A config may pin `expected_sha256`; a different corpus is an error.
Examples: a file's token ids cut into non-overlapping windows of seq_len + 1 ids from its start (a
shorter tail is dropped); x = window[:-1], y = window[1:], both int32[seq_len]. Vocabulary
(`tokenizer`, see data/lm_text.py): None (default) = the 256 byte values, with nothing reserved;
a GGUF path or preset such as 'smollm2_135m' = that file's byte-level BPE over the file's UTF-8
text (for a pretrained model of the same GGUF; num_classes = its vocabulary, 49,152). Every window
is full, so no padding token is needed; batch masks work per example. Per module (training client
or held-out module) at most `max_windows` windows (default 64; None = all) are kept, evenly spaced
over the file (windows floor(j * W / max_windows), j < max_windows, of its W), so the data are a
pure function of the corpus and the options: the run's key does not enter. With a BPE tokenizer
every training module must still yield a window (else ValueError naming it; raise min_bytes).
"""
import hashlib
import os
import platform
import sysconfig
from typing import Optional

import jax
import numpy as np

from fedjax_intrinsic import fields
from fedjax_intrinsic.data import lm_text
from fedjax_intrinsic.data.base import FederatedData

VOCAB_SIZE = 256
SPLIT_RULE = 'i % 10 == 9 -> test, i % 10 == 4 -> validation, else train (i: index in sorted list)'
OPTIONS = {      # the loader's options, declared once (config data.*)
    'source_dir': fields.Text(None, also=(None,),
                              doc='a directory of .py files (None: this Python\'s stdlib)'),
    'seq_len': fields.Int(64, lo=1, doc='tokens an example predicts (windows of seq_len + 1)'),
    'max_windows': fields.Int(64, lo=1, also=(None,),
                              doc='windows kept per module, evenly spaced (None: all)'),
    'min_bytes': fields.Int(4096, lo=1, note='(>= seq_len + 1)',
                            doc='smallest module file kept, in bytes'),
    'max_bytes': fields.Int(1 << 20, lo=1, note='(>= min_bytes)',
                            doc='largest module file kept, in bytes'),
    'expected_sha256': fields.Text(None, also=(None,),
                                   doc='the corpus hash a run pins (None: any corpus)'),
    'tokenizer': lm_text.TOKENIZER,
}


def default_source_dir() -> str:
  return sysconfig.get_paths()['stdlib']


def _check_options(source_dir: str, seq_len, min_bytes, max_bytes) -> None:
  """The rules between options (each option on its own: `OPTIONS`) and the source directory."""
  if min_bytes < seq_len + 1:
    raise ValueError(f'min_bytes={min_bytes} is invalid; allowed: at least seq_len + 1 = '
                     f'{seq_len + 1}, so every module holds a window')
  if max_bytes < min_bytes:
    raise ValueError(f'max_bytes={max_bytes} is invalid; allowed: at least min_bytes={min_bytes}')
  if not os.path.isdir(source_dir):
    raise ValueError(f'source_dir={source_dir!r} is invalid; allowed: a directory of .py files '
                     f'(default: this Python\'s stdlib, {default_source_dir()!r})')


def module_list(source_dir: str, min_bytes: int, max_bytes: int) -> list[str]:
  """The pinned list: sorted top-level *.py file names of source_dir sized in [min, max] bytes."""
  names = []
  for name in sorted(os.listdir(source_dir)):
    path = os.path.join(source_dir, name)
    if name.endswith('.py') and os.path.isfile(path) and min_bytes <= os.path.getsize(path) <= max_bytes:
      names.append(name)
  return names


def corpus_sha256(contents: dict[str, bytes]) -> str:
  """sha256 over sorted names of: name, NUL, decimal length, NUL, bytes."""
  h = hashlib.sha256()
  for name in sorted(contents):
    h.update(name.encode() + b'\0' + str(len(contents[name])).encode() + b'\0')
    h.update(contents[name])
  return h.hexdigest()


def split_of(i: int) -> str:
  """Which split the i-th module of the sorted list belongs to (SPLIT_RULE)."""
  return 'test' if i % 10 == 9 else 'validation' if i % 10 == 4 else 'train'


def windows(content: bytes, seq_len: int, max_windows: Optional[int],
            tokenizer: Optional[str] = None) -> np.ndarray:
  """int32[W', seq_len + 1]: non-overlapping windows from the start, at most max_windows, spaced."""
  return lm_text.windows(lm_text.encode(tokenizer, content), seq_len, max_windows)


def _read(source_dir: str, min_bytes: int, max_bytes: int) -> dict[str, bytes]:
  contents = {}
  for name in module_list(source_dir, min_bytes, max_bytes):
    with open(os.path.join(source_dir, name), 'rb') as f:
      contents[name] = f.read()
  if not contents:
    raise ValueError(f'source_dir={source_dir!r} holds no top-level .py file of {min_bytes} to '
                     f'{max_bytes} bytes; allowed: a directory with some (e.g. the stdlib)')
  return contents


def _check_hash(digest: str, expected_sha256: Optional[str], source_dir: str) -> None:
  if expected_sha256 is not None and digest != expected_sha256:
    raise ValueError(
        f'expected_sha256={expected_sha256!r} is invalid for the corpus found in {source_dir!r} '
        f'(Python {platform.python_version()}), whose sha256 is {digest!r}; allowed: that hash, '
        'or None (the corpus differs with the Python version: run with the pinned Python)')


def check_available(*, source_dir: Optional[str] = None, seq_len: int = 64,
                    max_windows: Optional[int] = 64, min_bytes: int = 4096,
                    max_bytes: int = 1 << 20, expected_sha256: Optional[str] = None,
                    tokenizer: Optional[str] = None) -> None:
  """Raises ValueError unless the corpus is readable, non-empty and matches expected_sha256 and
  the tokenizer's file exists."""
  fields.check(OPTIONS, locals(), 'data.')
  source_dir = default_source_dir() if source_dir is None else source_dir
  _check_options(source_dir, seq_len, min_bytes, max_bytes)
  lm_text.check(tokenizer)
  _check_hash(corpus_sha256(_read(source_dir, min_bytes, max_bytes)), expected_sha256, source_dir)


def load(*, key: jax.Array, source_dir: Optional[str] = None, seq_len: int = 64,
         max_windows: Optional[int] = 64, min_bytes: int = 4096, max_bytes: int = 1 << 20,
         expected_sha256: Optional[str] = None, tokenizer: Optional[str] = None) -> FederatedData:
  """The pysource data set; `key` is accepted for the common interface and unused (see above)."""
  del key
  fields.check(OPTIONS, locals(), 'data.')
  source_dir = default_source_dir() if source_dir is None else source_dir
  _check_options(source_dir, seq_len, min_bytes, max_bytes)
  lm_text.check(tokenizer)
  contents = _read(source_dir, min_bytes, max_bytes)
  digest = corpus_sha256(contents)
  _check_hash(digest, expected_sha256, source_dir)
  names = sorted(contents)
  groups = {'train': [], 'validation': [], 'test': []}
  for i, name in enumerate(names):
    groups[split_of(i)].append(name)

  per_client = [windows(contents[m], seq_len, max_windows, tokenizer) for m in groups['train']]
  sizes = np.array([len(w) for w in per_client], np.int64)
  empty = [m for m, n in zip(groups['train'], sizes) if n == 0]
  if empty:
    raise ValueError(f'min_bytes={min_bytes} is invalid for seq_len={seq_len} and tokenizer='
                     f'{tokenizer!r}: module {empty[0]!r} yields no window of seq_len + 1 tokens; '
                     'allowed: a larger min_bytes (or a smaller seq_len)')
  train_w = np.concatenate(per_client)
  held = {split: lm_text.stack([windows(contents[m], seq_len, max_windows, tokenizer)
                                for m in groups[split]], seq_len)
          for split in ('validation', 'test')}
  as_xy = lm_text.as_xy
  metadata = {
      'source': 'python stdlib source', 'python_version': platform.python_version(),
      'source_dir': source_dir, 'sha256': digest, 'modules': names,
      'module_rule': f'top-level *.py files sized {min_bytes}..{max_bytes} bytes, sorted by name',
      'split_rule': SPLIT_RULE,
      'train_modules': groups['train'], 'validation_modules': groups['validation'],
      'test_modules': groups['test'],
      'corpus_bytes': int(sum(len(c) for c in contents.values())),
      'seq_len': int(seq_len), 'max_windows': None if max_windows is None else int(max_windows),
      'vocab': lm_text.describe(tokenizer), 'tokenizer': tokenizer,
      'num_clients': len(groups['train']),
      'split': {'train': int(len(train_w)), 'validation': int(len(held['validation'])),
                'test': int(len(held['test']))},
  }
  return FederatedData(
      name='pysource', task='language_model', num_classes=lm_text.vocab_size(tokenizer),
      train=as_xy(train_w),
      client_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
      validation=as_xy(held['validation']), test=as_xy(held['test']), metadata=metadata)
