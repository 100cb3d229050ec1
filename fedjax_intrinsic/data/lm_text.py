"""Next-token prediction on raw text: the pieces every text data source shares.

A text source (pysource today; any corpus of documents grouped into clients) picks a vocabulary
with `tokenizer` and cuts each document's token ids into windows with `windows`:
- `tokenizer=None`: bytes. A document's UTF-8 bytes are its ids (vocabulary 256, none reserved).
- `tokenizer=<a GGUF path or preset>` (e.g. 'smollm2_135m', see models/gguf_checkpoint.py): the
  byte-level BPE stored in that GGUF (`tokenizers.from_gguf`), so a pretrained model of the same
  file reads the ids as it was trained to. No special token is added between or inside documents.
`vocab_size(tokenizer)` gives the model's num_classes; `check(tokenizer, field)` is the cheap
resource check (the file exists), run before anything is loaded.

`windows(ids, seq_len, max_windows)` -> int32[W', seq_len + 1]: non-overlapping windows from the
start (a shorter tail is dropped); at most max_windows (None = all) of the W, the windows
floor(j * W / max_windows), j < max_windows, evenly spaced over the document. Each window gives
x = window[:-1], y = window[1:] (`as_xy`), both full, so no padding token is needed.
"""
import functools
from typing import Optional, Sequence

import numpy as np

from fedjax_intrinsic import fields, tokenizers

BYTE_VOCAB = 256
# The `tokenizer` option of a text source, declared once (config data.tokenizer).
TOKENIZER = fields.Text(None, also=(None,), doc='None: bytes (vocabulary 256); a GGUF path or '
                                                'preset such as smollm2_135m: its byte-level BPE')


def check(tokenizer: Optional[str], field: str = 'data.tokenizer') -> None:
  """Raises ValueError (one line naming `field`) unless tokenizer is None or a readable GGUF."""
  if tokenizer is None:
    return
  from fedjax_intrinsic.models import gguf_checkpoint  # pylint: disable=import-outside-toplevel
  gguf_checkpoint.resolve(tokenizer, field)


@functools.lru_cache(maxsize=2)
def _bpe(tokenizer: str, field: str) -> tokenizers.Tokenizer:
  return tokenizers.from_gguf(tokenizer, field)


def describe(tokenizer: Optional[str]) -> str:
  return 'bytes 0..255, none reserved' if tokenizer is None else f'byte-level BPE of {tokenizer}'


def vocab_size(tokenizer: Optional[str], field: str = 'data.tokenizer') -> int:
  return BYTE_VOCAB if tokenizer is None else _bpe(tokenizer, field).vocab_size


def encode(tokenizer: Optional[str], content: bytes, field: str = 'data.tokenizer') -> np.ndarray:
  """int32[N]: the ids of one document (bytes as they are, or its UTF-8 text, bad bytes replaced
  by U+FFFD, through the GGUF's BPE)."""
  if tokenizer is None:
    return np.frombuffer(content, np.uint8).astype(np.int32)
  text = content.decode('utf-8', errors='replace')
  return np.asarray(_bpe(tokenizer, field).encode(text), np.int32)


def windows(ids: np.ndarray, seq_len: int, max_windows: Optional[int]) -> np.ndarray:
  """int32[W', seq_len + 1] (see the module docstring)."""
  ids = np.asarray(ids)
  count = len(ids) // (seq_len + 1)
  w = ids[:count * (seq_len + 1)].reshape(count, seq_len + 1)
  if max_windows is not None and count > max_windows:
    w = w[(np.arange(max_windows) * count) // max_windows]
  return w.astype(np.int32)


def as_xy(w: np.ndarray) -> dict:
  """{'x': w[:, :-1], 'y': w[:, 1:]} (contiguous int32)."""
  return {'x': np.ascontiguousarray(w[:, :-1]), 'y': np.ascontiguousarray(w[:, 1:])}


def stack(parts: Sequence[np.ndarray], seq_len: int) -> np.ndarray:
  """The windows of several documents in order (int32[0, seq_len + 1] when there are none)."""
  return np.concatenate(list(parts) or [np.zeros((0, seq_len + 1), np.int32)])
