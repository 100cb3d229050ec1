"""PersonaChat on a tiny JSON: clients per personality, example layout, targets, truncation, errors.

Encodings in the tiny BPE vocabulary (helpers.py): 'hello' = [259, 111], 'world' = [119, 260,
108, 100], 'hello world' = [259, 111, 261, 108, 100], 'o' = [111], 'hell' = [259], eos = 262.
"""
import json

import numpy as np
import pytest

from fedjax_intrinsic import data, keys
from fedjax_intrinsic.data import personachat
from tests.nlp.helpers import EOS, TINY_PERSONACHAT

HELLO, WORLD, HELLO_WORLD = [259, 111], [119, 260, 108, 100], [259, 111, 261, 108, 100]
KEY = keys.data_key(keys.run_key(0))


class Arrays:
  """personachat.arrays(...) with FederatedData's accessors (see test_federated_data)."""

  def __init__(self, fields):
    self.__dict__.update(fields)
    self.client_sizes = np.diff(self.client_offsets)
    self.num_clients = len(self.client_sizes)
    self.example_spec = {k: (v.shape[1:], v.dtype) for k, v in self.train.items()}

  def client(self, c):
    lo, hi = self.client_offsets[c], self.client_offsets[c + 1]
    return {k: v[lo:hi] for k, v in self.train.items()}


def _load(path, files, **options):
  return Arrays(personachat.arrays(path=path, vocab_file=files[0], merges_file=files[1],
                                   **options))


def test_clients_per_personality_and_layout(personachat_json, gpt2_files):
  d = _load(personachat_json, gpt2_files, seq_len=16)
  assert d.num_classes == 263
  # Train dialogs: ['hello'] (2 utterances), ['or world', 'hell'] (1), ['hello'] again (1).
  assert d.num_clients == 2 and d.client_sizes.tolist() == [3, 1]
  assert d.example_spec == {'x': ((16,), np.int32), 'y': ((16,), np.int32)}
  assert len(d.test['x']) == 2 and len(d.validation['x']) == 0
  # Client 0, utterance 1: persona 'hello', history ['world'], reply 'hello world'.
  tokens = HELLO + [EOS] + WORLD + [EOS] + HELLO_WORLD + [EOS]                    # 14 tokens
  x, y = d.client(0)['x'][1], d.client(0)['y'][1]
  np.testing.assert_array_equal(x, tokens[:-1] + [EOS] * 3)
  np.testing.assert_array_equal(y, [-1] * 7 + HELLO_WORLD + [EOS] + [-1] * 3)   # reply targets only
  # Client 0's third example comes from its second dialog: persona 'hello', no history, reply 'o'.
  np.testing.assert_array_equal(d.client(0)['x'][2][:3], HELLO + [EOS])
  np.testing.assert_array_equal(d.client(0)['y'][2][:4], [-1, -1, 111, EOS])
  # Client 1: persona 'or world hell' (sentences joined by a space), reply 'hello'.
  assert d.client(1)['y'][0].max() == EOS and (d.client(1)['y'][0] >= 0).sum() == 3
  assert d.metadata['num_clients'] == 2 and d.metadata['truncated'] == {'train': 0, 'test': 0}
  # Every padded or context position has a negative target; no target on padded input.
  assert np.all((d.train['y'] >= 0).sum(1) >= 2)


def test_targets_history_truncation_and_max_clients(personachat_json, gpt2_files):
  full = HELLO + [EOS] + WORLD + [EOS] + HELLO_WORLD + [EOS]
  d = _load(personachat_json, gpt2_files, seq_len=16, targets='all')
  np.testing.assert_array_equal(d.client(0)['y'][1], full[1:] + [-1] * 3)
  # seq_len 9: the last 10 tokens are kept (persona and history are cut first).
  d = _load(personachat_json, gpt2_files, seq_len=9)
  np.testing.assert_array_equal(d.client(0)['x'][1], full[4:-1])
  np.testing.assert_array_equal(d.client(0)['y'][1], [-1] * 3 + HELLO_WORLD + [EOS])
  assert d.metadata['truncated']['train'] == 1
  # max_history=0 keeps the last 1 turn; a 3-turn dialog's last utterance sees only turn 2.
  content = {'train': [{'personality': ['o'], 'utterances': [
      {'history': ['hell', 'o', 'world'], 'candidates': ['hello']}]}], 'valid': []}
  path = personachat_json.replace('.json', '_h.json')
  with open(path, 'w') as f:
    json.dump(content, f)
  d = _load(path, gpt2_files, seq_len=12, max_history=0)
  np.testing.assert_array_equal(d.train['x'][0][:9], [111, EOS] + WORLD + [EOS] + HELLO)
  assert len(d.test['x']) == 0
  d = _load(personachat_json, gpt2_files, seq_len=16, max_clients=1)
  assert d.num_clients == 1 and d.client_sizes.tolist() == [3]


def test_missing_and_malformed_files(tmp_path, personachat_json, gpt2_files):
  with pytest.raises(ValueError) as info:
    data.check_available('personachat', path='', vocab_file=gpt2_files[0],
                         merges_file=gpt2_files[1])
  message = str(info.value)
  assert "path='' (data.path) is empty" in message and personachat.URL in message
  assert '\n' not in message
  with pytest.raises(ValueError, match=r"vocab_file='' \(data.vocab_file\) is empty.*vocab.json"):
    data.check_available('personachat', path=personachat_json)
  with pytest.raises(ValueError, match=r"merges_file=.*\(data.merges_file\) does not exist"):
    data.check_available('personachat', path=personachat_json, vocab_file=gpt2_files[0],
                         merges_file=str(tmp_path / 'absent.txt'))
  data.check_available('personachat', path=personachat_json, vocab_file=gpt2_files[0],
                       merges_file=gpt2_files[1])
  bad = json.loads(json.dumps(TINY_PERSONACHAT))
  del bad['train'][1]['utterances'][0]['candidates']
  path = tmp_path / 'bad.json'
  path.write_text(json.dumps(bad))
  with pytest.raises(ValueError, match=r'train\[1\]\["utterances"\]\[0\] is not'):
    _load(str(path), gpt2_files)
  path.write_text('{"train": []}')
  with pytest.raises(ValueError, match='lacks the lists "train" and "valid"'):
    _load(str(path), gpt2_files)
  for option, value in (('seq_len', 1), ('targets', 'persona'), ('max_history', -1),
                        ('max_clients', 0)):
    with pytest.raises(ValueError, match=f'{option}='):
      _load(personachat_json, gpt2_files, **{option: value})


def test_federated_data(personachat_json, gpt2_files):
  d = data.get('personachat', key=KEY, path=personachat_json, vocab_file=gpt2_files[0],
               merges_file=gpt2_files[1], seq_len=16)
  a = _load(personachat_json, gpt2_files, seq_len=16)
  assert d.task == 'language_model' and d.num_classes == 263 and d.num_clients == 2
  np.testing.assert_array_equal(d.train['y'], a.train['y'])
  np.testing.assert_array_equal(d.client_offsets, a.client_offsets)
