"""The registry (`data.get`, `data.options`, `data.check_available`) and FederatedData's checks."""
import numpy as np
import pytest

from fedjax_intrinsic import data, keys
from fedjax_intrinsic.data.base import FederatedData, group_by_client, stratified_split


def test_names_and_errors():
  assert data.DATASETS == ('digits', 'pysource', 'cifar10', 'cifar100', 'mnist', 'emnist',
                           'personachat', 'sst2', 'tweets', 'tweets_lm')
  with pytest.raises(ValueError, match="name='nope'.*digits, pysource, cifar10"):
    data.get('nope', key=keys.data_key(keys.run_key(0)))
  with pytest.raises(ValueError, match="name='nope'"):
    data.check_available('nope')
  with pytest.raises(ValueError, match="data option data_dir='/x' is invalid.*'digits'.*partition"):
    data.get('digits', key=keys.data_key(keys.run_key(0)), data_dir='/x')
  with pytest.raises(ValueError, match='bogus'):
    data.check_available('pysource', bogus=1)
  assert 'data_dir' in data.options('cifar10') and 'key' not in data.options('cifar10')
  assert 'expected_sha256' in data.options('pysource')
  data.check_available('digits', partition='iid', num_clients=10)     # offline: always there


def _fd(**override):
  x = np.zeros((6, 2), np.float32)
  y = np.arange(6, dtype=np.int32) % 3
  kw = dict(name='t', task='classification', num_classes=3, train={'x': x, 'y': y},
            client_offsets=np.array([0, 2, 6], np.int64), validation={'x': x[:1], 'y': y[:1]},
            test={'x': x[:2], 'y': y[:2]}, metadata={})
  kw.update(override)
  return FederatedData(**kw)


def test_federated_data_accessors():
  d = _fd()
  assert d.num_clients == 2
  np.testing.assert_array_equal(d.client_sizes, [2, 4])
  np.testing.assert_array_equal(d.client(1)['y'], [2, 0, 1, 2])
  assert d.example_spec == {'x': ((2,), np.float32), 'y': ((), np.int32)}
  with pytest.raises(ValueError, match='c=2'):
    d.client(2)


@pytest.mark.parametrize('override,match', [
    ({'task': 'regression'}, "task='regression'"),
    ({'num_classes': 0}, 'num_classes=0'),
    ({'client_offsets': np.array([0, 7], np.int64)}, 'client_offsets'),
    ({'client_offsets': np.array([0, 4, 2, 6], np.int64)}, 'client_offsets'),
    ({'client_offsets': np.array([0, 6], np.int32)}, 'client_offsets'),
    ({'train': {'x': np.zeros((6, 2), np.float32), 'y': np.arange(6)}}, 'dtype'),
    ({'num_classes': 2}, 'values in'),
    ({'test': {'x': np.zeros((2, 3), np.float32), 'y': np.zeros(2, np.int32)}}, r'test\[.x.\]'),
])
def test_federated_data_checks(override, match):
  with pytest.raises(ValueError, match=match):
    _fd(**override)


def test_helpers():
  arrays = {'x': np.arange(10) * 10, 'y': np.arange(10)}
  train, offsets = group_by_client(arrays, [np.array([3, 1]), np.array([0, 9, 5])])
  np.testing.assert_array_equal(train['y'], [3, 1, 0, 9, 5])
  np.testing.assert_array_equal(offsets, [0, 2, 5])
  labels = np.repeat(np.arange(3), [10, 20, 30])
  rest, held = stratified_split(labels, 0.1, np.random.default_rng(0))
  np.testing.assert_array_equal(np.bincount(labels[held]), [1, 2, 3])
  np.testing.assert_array_equal(np.sort(np.concatenate([rest, held])), np.arange(60))
