"""`personachat`: PersonaChat language modelling, one client per personality (FetchSGD's split).

Source: ConvAI2's `personachat_self_original.json` at the local `path` (FetchSGD's code and Hugging
Face's transfer-learning-conv-ai download it from
https://s3.amazonaws.com/datasets.huggingface.co/personachat/personachat_self_original.json):
{"train": [dialog, ...], "valid": [dialog, ...]}, each dialog {"personality": [sentence, ...],
"utterances": [{"candidates": [str, ...], "history": [str, ...]}, ...]}; the last candidate is the
gold reply.

Clients (FetchSGD's split): the train dialogs grouped by their personality (the tuple of its
sentences), clients numbered in order of first appearance; a client's examples are all utterances of
all its dialogs, in file order. `max_clients` keeps the first that many clients (None = all).
Test: every utterance of the "valid" dialogs (ConvAI2's public held-out split; its test set is
hidden). Validation: empty.

One example per utterance, tokenised with GPT-2's BPE (`vocab_file`, `merges_file`; see
tokenizers.py), `eos` = `<|endoftext|>`:
  tokens = enc(persona sentences joined by ' ') + [eos] + (enc(turn) + [eos] for the last
           2 * max_history + 1 turns of the history) + enc(gold reply) + [eos]
(FetchSGD's history window; GPT-2's own vocabulary, so no special tokens are added and a pretrained
checkpoint fits as it is). A sequence longer than seq_len + 1 keeps its last seq_len + 1 tokens
(the reply survives; the persona and oldest turns are cut first). Then x = tokens[:-1], y =
tokens[1:], both int32[seq_len], x padded with eos and y with -1. `targets='reply'` (default, as
FetchSGD and TransferTransfo train and report perplexity) keeps only the targets of the reply and
its final eos and sets every other target to -1; `targets='all'` keeps every target.
num_classes = the vocabulary size (50,257 for GPT-2).
"""
import hashlib
import json
import os
from typing import Optional

import jax
import numpy as np

from fedjax_intrinsic import fields, tokenizers
from fedjax_intrinsic.data.base import FederatedData

URL = 'https://s3.amazonaws.com/datasets.huggingface.co/personachat/personachat_self_original.json'
TARGETS = ('reply', 'all')
OPTIONS = {      # the loader's options, declared once (config data.*)
    'path': fields.Text('', doc='ConvAI2\'s personachat_self_original.json'),
    'vocab_file': fields.Text('', doc='GPT-2\'s vocab.json'),
    'merges_file': fields.Text('', doc='GPT-2\'s merges.txt'),
    'seq_len': fields.Int(256, lo=2, doc='tokens per example'),
    'max_history': fields.Int(2, lo=0, note='(the last 2 * max_history + 1 turns are kept)',
                              doc='dialogue history kept before a reply'),
    'targets': fields.Choice('reply', TARGETS, doc='tokens scored: the reply only, or all'),
    'max_clients': fields.Int(None, lo=1, also=(None,), doc='personalities kept (None: all)'),
}


def _check_path(path: str) -> None:
  if not isinstance(path, str) or not path or not os.path.isfile(path):
    what = 'is empty' if not path else 'does not exist'
    raise ValueError(f'path={path!r} (data.path) {what}; allowed: the path of ConvAI2\'s '
                     f'personachat_self_original.json (download it from {URL})')


def check_available(*, path: str = '', vocab_file: str = '', merges_file: str = '',
                    seq_len: int = 256, max_history: int = 2, targets: str = 'reply',
                    max_clients: Optional[int] = None) -> None:
  """Cheap: raises ValueError unless the options are valid and the three files exist."""
  fields.check(OPTIONS, locals(), 'data.')
  _check_path(path)
  tokenizers.check_file('vocab_file', vocab_file, 'gpt2', 'data.vocab_file')
  tokenizers.check_file('merges_file', merges_file, 'gpt2', 'data.merges_file')


def _bad(path: str, where: str, what: str) -> ValueError:
  return ValueError(f'path={path!r} is invalid: {where} {what}; allowed: the layout of ConvAI2\'s '
                    'personachat_self_original.json ({"train": [...], "valid": [...]})')


def _check_dialog(path: str, where: str, dialog) -> None:
  if not isinstance(dialog, dict) or 'personality' not in dialog or 'utterances' not in dialog:
    raise _bad(path, where, 'is not a dialog with "personality" and "utterances"')
  if not isinstance(dialog['personality'], list) or \
      not all(isinstance(s, str) for s in dialog['personality']):
    raise _bad(path, f'{where}["personality"]', 'is not a list of strings')
  if not isinstance(dialog['utterances'], list):
    raise _bad(path, f'{where}["utterances"]', 'is not a list')
  for j, u in enumerate(dialog['utterances']):
    ok = (isinstance(u, dict) and isinstance(u.get('candidates'), list) and u['candidates']
          and isinstance(u.get('history'), list)
          and all(isinstance(s, str) for s in u['candidates'] + u['history']))
    if not ok:
      raise _bad(path, f'{where}["utterances"][{j}]', 'is not {"candidates": [str, ...] '
                 '(non-empty), "history": [str, ...]}')


def read(path: str) -> dict:
  """The parsed JSON, with its layout checked (one-line ValueError naming the first bad entry)."""
  _check_path(path)
  try:
    with open(path, encoding='utf-8') as f:
      raw = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f'path={path!r} is not valid JSON ({e}); allowed: '
                     'personachat_self_original.json') from None
  if not isinstance(raw, dict) or not isinstance(raw.get('train'), list) \
      or not isinstance(raw.get('valid'), list):
    raise _bad(path, 'the top level', 'lacks the lists "train" and "valid"')
  for split in ('train', 'valid'):
    for i, dialog in enumerate(raw[split]):
      _check_dialog(path, f'{split}[{i}]', dialog)
  if not any(d['utterances'] for d in raw['train']):
    raise _bad(path, '"train"', 'holds no utterance')
  return raw


def example(encode, eos: int, personality: list, utterance: dict, *, seq_len: int,
            max_history: int, targets: str) -> tuple[np.ndarray, np.ndarray, bool]:
  """(x int32[seq_len], y int32[seq_len], truncated) of one utterance (see the module docstring)."""
  context = encode(' '.join(personality)) + [eos]
  for turn in utterance['history'][-(2 * max_history + 1):]:
    context += encode(turn) + [eos]
  tokens = context + encode(utterance['candidates'][-1]) + [eos]
  first_target = len(context) if targets == 'reply' else 1   # index in tokens of the first target
  cut = max(len(tokens) - (seq_len + 1), 0)
  tokens = tokens[cut:]
  first_target = max(first_target - cut, 1)
  n = len(tokens) - 1
  x = np.full(seq_len, eos, np.int32)
  y = np.full(seq_len, -1, np.int32)
  x[:n] = tokens[:-1]
  y[first_target - 1:n] = tokens[first_target:]
  return x, y, cut > 0


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def arrays(*, path: str = '', vocab_file: str = '', merges_file: str = '', seq_len: int = 256,
           max_history: int = 2, targets: str = 'reply', max_clients: Optional[int] = None) -> dict:
  """What `load` wraps: {'train': {'x', 'y'}, 'client_offsets', 'validation', 'test',
  'num_classes', 'metadata'} (the FederatedData fields, as numpy arrays)."""
  check_available(path=path, vocab_file=vocab_file, merges_file=merges_file, seq_len=seq_len,
                  max_history=max_history, targets=targets, max_clients=max_clients)
  tok = tokenizers.gpt2(vocab_file, merges_file)
  if 'eos' not in tok.special_ids:
    raise ValueError(f'vocab_file={vocab_file!r} lacks {tokenizers.GPT2_EOS!r}; allowed: GPT-2\'s '
                     'vocab.json')
  eos = tok.special_ids['eos']
  raw = read(path)
  cache = {}

  def encode(text: str) -> list:
    if text not in cache:
      cache[text] = tok.encode(text)
    return list(cache[text])

  clients = {}                               # personality tuple -> dialogs, in first-seen order
  for dialog in raw['train']:
    clients.setdefault(tuple(dialog['personality']), []).append(dialog)
  personalities = list(clients)[:max_clients]
  opts = dict(seq_len=seq_len, max_history=max_history, targets=targets)

  def build(dialogs):
    rows = [example(encode, eos, d['personality'], u, **opts) for d in dialogs
            for u in d['utterances']]
    if not rows:
      return (np.zeros((0, seq_len), np.int32),) * 2 + (0,)
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), sum(r[2] for r in rows)

  per_client = [build(clients[p]) for p in personalities]
  keep = [i for i, c in enumerate(per_client) if len(c[0])]   # a personality without utterances
  per_client = [per_client[i] for i in keep]
  sizes = np.array([len(c[0]) for c in per_client], np.int64)
  test_x, test_y, test_cut = build(raw['valid'])
  empty = np.zeros((0, seq_len), np.int32)
  metadata = {
      'source': f'PersonaChat (ConvAI2 personachat_self_original.json, {URL})',
      'path': path, 'sha256': _sha256(path),
      'tokenizer': {'vocab_file': vocab_file, 'vocab_sha256': _sha256(vocab_file),
                    'merges_file': merges_file, 'merges_sha256': _sha256(merges_file),
                    'vocab_size': tok.vocab_size, 'eos': eos},
      'partition': 'one client per personality of the train dialogs (FetchSGD), first-seen order',
      'num_personalities': len(clients), 'max_clients': max_clients,
      'num_clients': len(per_client),
      'split': {'train': int(sizes.sum()), 'validation': 0, 'test': int(len(test_x)),
                'rule': 'test = every utterance of the "valid" dialogs; validation empty'},
      'example': {'seq_len': int(seq_len), 'max_history': int(max_history), 'targets': targets,
                  'format': 'persona + eos + (turn + eos) x last 2*max_history+1 + reply + eos, '
                            'left-truncated to seq_len + 1'},
      'truncated': {'train': int(sum(c[2] for c in per_client)), 'test': int(test_cut)},
  }
  return {'num_classes': tok.vocab_size,
          'train': {'x': np.concatenate([c[0] for c in per_client]),
                    'y': np.concatenate([c[1] for c in per_client])},
          'client_offsets': np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
          'validation': {'x': empty, 'y': empty.copy()}, 'test': {'x': test_x, 'y': test_y},
          'metadata': metadata}


def load(*, key: jax.Array, path: str = '', vocab_file: str = '', merges_file: str = '',
         seq_len: int = 256, max_history: int = 2, targets: str = 'reply',
         max_clients: Optional[int] = None) -> FederatedData:
  """PersonaChat, one client per personality; `key` is accepted for the common interface and
  unused (the split is FetchSGD's natural one, a pure function of the file and the options)."""
  del key
  return FederatedData(name='personachat', task='language_model', **arrays(
      path=path, vocab_file=vocab_file, merges_file=merges_file, seq_len=seq_len,
      max_history=max_history, targets=targets, max_clients=max_clients))
