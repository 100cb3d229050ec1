"""TFDS image loaders, offline: `tfds.testing.mock_data` serves random examples of each data set's
real feature spec through `tfds.data_source`; the missing-data error names the prepare command."""
import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from fedjax_intrinsic import data, keys
from fedjax_intrinsic.data import tfds_images

SPECS = {'cifar10': ((32, 32, 3), 10), 'cifar100': ((32, 32, 3), 100),
         'mnist': ((28, 28, 1), 10), 'emnist': ((28, 28, 1), 47)}
N = 100


def _key(seed):
  return keys.data_key(keys.run_key(seed))


@pytest.mark.parametrize('name', list(SPECS))
def test_loader_with_mocked_examples(name, tmp_path):
  shape, num_classes = SPECS[name]
  with tfds.testing.mock_data(num_examples=N):
    d = data.get(name, key=_key(0), data_dir=str(tmp_path), num_clients=9, partition='iid',
                 validation_fraction=0.2)
    again = data.get(name, key=_key(0), data_dir=str(tmp_path), num_clients=9, partition='iid',
                     validation_fraction=0.2)
    other = data.get(name, key=_key(1), data_dir=str(tmp_path), num_clients=9, partition='iid',
                     validation_fraction=0.2)
    source = tfds.data_source(tfds_images.SOURCES[name], split='test', data_dir=str(tmp_path))
    test_images = np.stack([source[i]['image'] for i in range(N)])
    test_labels = np.array([source[i]['label'] for i in range(N)])
  assert d.task == 'classification' and d.num_classes == num_classes
  assert d.example_spec == {'x': (shape, np.float32), 'y': ((), np.int32)}
  assert d.num_clients == 9
  n_val = len(d.validation['y'])
  assert d.client_sizes.sum() + n_val == N and 0 < n_val < N / 2
  assert set(d.client_sizes.tolist()) <= {(N - n_val) // 9, (N - n_val) // 9 + 1}
  for split in (d.train, d.validation, d.test):
    assert split['x'].dtype == np.float32 and 0 <= split['x'].min() and split['x'].max() <= 1
    assert split['y'].dtype == np.int32 and split['y'].max() < num_classes
  # Test = the TFDS test split, in order, scaled to [0, 1]; EMNIST transposed upright.
  expect = test_images.transpose(0, 2, 1, 3) if name == 'emnist' else test_images
  np.testing.assert_allclose(d.test['x'] * 255, expect, atol=1e-4)
  np.testing.assert_array_equal(d.test['y'], test_labels)
  # Same key, same data; another key, another validation draw and client assignment.
  np.testing.assert_array_equal(again.train['x'], d.train['x'])
  np.testing.assert_array_equal(again.validation['y'], d.validation['y'])
  assert not np.array_equal(other.train['x'], d.train['x'])
  assert d.metadata['source'] == f'tensorflow_datasets:{tfds_images.SOURCES[name]}'


def test_single_class_and_no_validation(tmp_path):
  with tfds.testing.mock_data(num_examples=N):
    d = data.get('mnist', key=_key(0), data_dir=str(tmp_path), partition='single_class',
                 num_clients=5, examples_per_client=3, validation_fraction=0.0)
  assert len(d.validation['y']) == 0 and d.validation['x'].shape == (0, 28, 28, 1)
  assert d.num_clients == 5 and set(d.client_sizes.tolist()) == {3}
  assert all(len(np.unique(d.client(c)['y'])) == 1 for c in range(5))


@pytest.mark.parametrize('name', ['cifar10', 'emnist'])
def test_missing_data_is_a_clear_error(name, tmp_path):
  tfds_name = tfds_images.SOURCES[name]
  command = (f"tfds.builder('{tfds_name}', data_dir='{tmp_path}')"
             ".download_and_prepare(file_format='array_record')")
  for call in (lambda: data.check_available(name, data_dir=str(tmp_path)),
               lambda: data.get(name, key=_key(0), data_dir=str(tmp_path)),
               lambda: data.get(name, key=_key(0), data_dir=str(tmp_path / 'absent'))):
    with pytest.raises(ValueError) as info:
      call()
    message = str(info.value)
    assert '\n' not in message and f"data set '{name}'" in message
    assert 'not prepared' in message and 'tfds.builder' in message
  assert command in str(pytest.raises(ValueError, data.check_available, name,
                                      data_dir=str(tmp_path)).value)


def test_bad_options(tmp_path):
  with pytest.raises(ValueError, match='tfds_name=.*mnist'):
    data.get('emnist', key=_key(0), tfds_name='mnist', data_dir=str(tmp_path))
  with pytest.raises(ValueError, match='validation_fraction=1.0'):
    data.get('mnist', key=_key(0), validation_fraction=1.0, data_dir=str(tmp_path))
