"""digits: split sizes, stratification, fixed held-out split, shard clients, determinism by key."""
import json

import numpy as np
import pytest
import sklearn.datasets

from fedjax_intrinsic import data, keys


def _key(seed):
  return keys.data_key(keys.run_key(seed))


@pytest.fixture(scope='module')
def raw():
  d = sklearn.datasets.load_digits()
  return (d.images / 16).astype(np.float32)[..., None], d.target


@pytest.fixture(scope='module')
def digits0():
  return data.get('digits', key=_key(0))


def _rows(x):
  return sorted(map(bytes, x.reshape(len(x), -1)))


def test_splits_and_shapes(digits0, raw):
  d = digits0
  assert d.task == 'classification' and d.num_classes == 10 and d.num_clients == 100
  assert len(d.train['y']) == 1437 and len(d.validation['y']) == 180 and len(d.test['y']) == 180
  assert d.example_spec == {'x': ((8, 8, 1), np.float32), 'y': ((), np.int32)}
  assert 0 <= d.train['x'].min() and d.train['x'].max() <= 1 and d.train['x'].max() == 1
  # Every image is in exactly one split (a multiset equality against the raw data).
  x_all = np.concatenate([d.train['x'], d.validation['x'], d.test['x']])
  y_all = np.concatenate([d.train['y'], d.validation['y'], d.test['y']])
  assert _rows(x_all) == _rows(raw[0])
  np.testing.assert_array_equal(np.bincount(y_all), np.bincount(raw[1]))
  json.dumps(d.metadata)
  assert d.metadata['split'] == {**d.metadata['split'], 'train': 1437, 'validation': 180, 'test': 180}


def test_held_out_splits_are_stratified(digits0, raw):
  counts = np.bincount(raw[1])
  for split in (digits0.validation, digits0.test):
    assert np.abs(np.bincount(split['y'], minlength=10) - 0.1 * counts).max() <= 1
  assert np.abs(np.bincount(digits0.train['y'], minlength=10) - 0.8 * counts).max() <= 1


def test_shard_clients(digits0):
  d = digits0
  assert set(d.client_sizes.tolist()) == {14, 15} and d.client_sizes.sum() == 1437
  purity = [np.bincount(d.client(c)['y']).max() / d.client_sizes[c] for c in range(100)]
  assert np.mean(purity) > 0.9 and min(purity) >= 0.5                # mostly one class
  assert all(len(np.unique(d.client(c)['y'])) <= 2 for c in range(100))
  assert d.metadata['partition'] == {'name': 'shards', 'shards_per_client': 1}


def test_key_changes_assignment_not_split(digits0):
  other = data.get('digits', key=_key(1))
  again = data.get('digits', key=_key(0))
  for split in ('validation', 'test'):                # the held-out split is fixed (seed 0)
    np.testing.assert_array_equal(getattr(other, split)['x'], getattr(digits0, split)['x'])
  assert _rows(other.train['x']) == _rows(digits0.train['x'])
  np.testing.assert_array_equal(again.train['x'], digits0.train['x'])
  np.testing.assert_array_equal(again.client_offsets, digits0.client_offsets)
  assert not np.array_equal(other.train['y'], digits0.train['y'])


@pytest.mark.parametrize('opts', [{'partition': 'iid', 'num_clients': 10},
                                  {'partition': 'dirichlet', 'alpha': 0.1, 'num_clients': 20},
                                  {'partition': 'single_class', 'num_clients': 50,
                                   'examples_per_client': 20}])
def test_other_partitions(opts):
  d = data.get('digits', key=_key(0), **opts)
  assert d.num_clients == opts['num_clients']
  if opts['partition'] == 'single_class':
    assert set(d.client_sizes.tolist()) == {20}
    assert all(len(np.unique(d.client(c)['y'])) == 1 for c in range(d.num_clients))
  else:
    assert d.client_sizes.sum() == 1437
  assert d.metadata['partition']['name'] == opts['partition']
