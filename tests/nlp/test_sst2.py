"""SST-2 offline: `tfds.testing.mock_data` serves random examples of glue/sst2's real feature spec
(sentences of letters a..j) through `tfds.data_source`; tokenised with the tiny BERT vocabulary."""
import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from fedjax_intrinsic import data, keys, tokenizers
from fedjax_intrinsic.data import glue

N = 60


def _key(seed):
  return keys.data_key(keys.run_key(seed))


def test_loader_with_mocked_examples(tmp_path, bert_vocab):
  opts = dict(data_dir=str(tmp_path), vocab_file=bert_vocab, seq_len=12, num_clients=5,
              alpha=0.3, validation_fraction=0.2)
  with tfds.testing.mock_data(num_examples=N):
    d = data.get('sst2', key=_key(0), **opts)
    again = data.get('sst2', key=_key(0), **opts)
    other = data.get('sst2', key=_key(1), **opts)
    glue._tfds()
    source = tfds.data_source('glue/sst2', split='validation', data_dir=str(tmp_path))
    sentences = [source[i]['sentence'] for i in range(N)]
    labels = np.array([source[i]['label'] for i in range(N)])
  assert d.task == 'classification' and d.num_classes == 2 and d.num_clients == 5
  assert d.example_spec == {'x': ((12,), np.int32), 'y': ((), np.int32)}
  n_val = len(d.validation['y'])
  assert abs(n_val - 12) <= 1 and d.client_sizes.sum() == N - n_val   # 20% per class, rounded
  assert set(d.client_sizes.tolist()) <= {(N - n_val) // 5, (N - n_val) // 5 + 1}
  # Test = GLUE's validation split, in order, each sentence as [CLS] pieces [SEP] [PAD]...
  tok = tokenizers.bert(bert_vocab)
  expect = [tokenizers.bert_classification_ids(tok, s, 12)[0] for s in sentences]
  np.testing.assert_array_equal(d.test['x'], expect)
  np.testing.assert_array_equal(d.test['y'], labels)
  assert np.all(d.train['x'][:, 0] == 2) and np.all((d.train['x'] == 3).sum(1) == 1)
  pieces = (d.train['x'] != 0).sum(1)                     # a..j words: every piece is in vocab
  assert not np.any(d.train['x'] == 1) and pieces.min() >= 2
  # Same key, same data; another key, another validation draw and client assignment.
  np.testing.assert_array_equal(again.train['x'], d.train['x'])
  assert not np.array_equal(other.train['x'], d.train['x'])
  assert d.metadata['partition'] == {'name': 'dirichlet', 'alpha': 0.3}
  assert d.metadata['tokenizer']['pad_id'] == 0
  assert d.metadata['split']['test'] == N


def test_missing_data_and_vocab_are_clear_errors(tmp_path, bert_vocab):
  with pytest.raises(ValueError) as info:
    data.check_available('sst2', data_dir=str(tmp_path))
  message = str(info.value)
  assert "vocab_file='' (data.vocab_file) is empty" in message and 'vocab.txt' in message
  for call in (lambda: data.check_available('sst2', data_dir=str(tmp_path), vocab_file=bert_vocab),
               lambda: data.get('sst2', key=_key(0), data_dir=str(tmp_path), vocab_file=bert_vocab),
               lambda: data.get('sst2', key=_key(0), data_dir=str(tmp_path / 'absent'),
                                vocab_file=bert_vocab)):
    with pytest.raises(ValueError) as info:
      call()
    message = str(info.value)
    assert '\n' not in message and "data set 'sst2'" in message and '(data.data_dir)' in message
    assert "tfds.builder('glue/sst2'" in message and 'not prepared' in message
  with pytest.raises(ValueError, match='seq_len=2 is invalid'):
    data.check_available('sst2', vocab_file=bert_vocab, seq_len=2)
  shifted = tmp_path / 'shifted.txt'
  shifted.write_text('[UNK]\n[PAD]\n[CLS]\n[SEP]\n')
  with pytest.raises(ValueError, match=r'\[PAD\] at id 1'):
    data.get('sst2', key=_key(0), data_dir=str(tmp_path), vocab_file=str(shifted))
