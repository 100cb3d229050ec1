"""pysource: the pinned module list and hash, the split rule, windows, vocabulary, hash pinning."""
import hashlib
import json
import os
import platform
import sysconfig

import numpy as np
import pytest

from fedjax_intrinsic import data, keys
from fedjax_intrinsic.data import pysource

STDLIB = sysconfig.get_paths()['stdlib']


@pytest.fixture(scope='module')
def ps():
  return data.get('pysource', key=keys.data_key(keys.run_key(0)))


def _oracle_modules(lo=4096, hi=1 << 20):
  return sorted(f for f in os.listdir(STDLIB) if f.endswith('.py')
                and os.path.isfile(os.path.join(STDLIB, f))
                and lo <= os.path.getsize(os.path.join(STDLIB, f)) <= hi)


def test_pinned_list_and_hash(ps):
  md = ps.metadata
  names = _oracle_modules()
  assert md['modules'] == names and len(names) > 20
  assert md['python_version'] == platform.python_version()
  h = hashlib.sha256()
  for name in names:
    with open(os.path.join(STDLIB, name), 'rb') as f:
      content = f.read()
    h.update(b'%s\0%d\0%s' % (name.encode(), len(content), content))
  assert md['sha256'] == h.hexdigest()
  assert md['test_modules'] == names[9::10] and md['validation_modules'] == names[4::10]
  assert md['train_modules'] == [n for i, n in enumerate(names) if i % 10 not in (4, 9)]
  assert ps.num_clients == len(md['train_modules'])
  json.dumps(md)


def test_examples(ps):
  assert ps.task == 'language_model' and ps.num_classes == 256
  assert ps.example_spec == {'x': ((64,), np.int32), 'y': ((64,), np.int32)}
  for split in (ps.train, ps.validation, ps.test):
    assert len(split['y']) > 0
    np.testing.assert_array_equal(split['x'][:, 1:], split['y'][:, :-1])   # y is x shifted by one
    assert split['x'].min() >= 0 and split['y'].max() < 256
  assert ps.client_sizes.max() == 64 and ps.client_sizes.min() >= 4096 // 65
  # Client 0's first example is the first 65 bytes of its module; its last is window
  # floor(63 * W / 64) of the module's W windows.
  with open(os.path.join(STDLIB, ps.metadata['train_modules'][0]), 'rb') as f:
    content = np.frombuffer(f.read(), np.uint8).astype(np.int32)
  c0 = ps.client(0)
  np.testing.assert_array_equal(c0['x'][0], content[:64])
  np.testing.assert_array_equal(c0['y'][0], content[1:65])
  w = len(content) // 65
  last = (63 * w) // 64 if w > 64 else w - 1
  np.testing.assert_array_equal(c0['y'][-1], content[last * 65 + 1:last * 65 + 65])


def test_options_and_key_independence(ps):
  other = data.get('pysource', key=keys.data_key(keys.run_key(1)))
  np.testing.assert_array_equal(other.train['x'], ps.train['x'])
  small = data.get('pysource', key=keys.data_key(keys.run_key(0)), seq_len=16, max_windows=None,
                   expected_sha256=ps.metadata['sha256'])
  assert small.example_spec['x'] == ((16,), np.int32)
  module = small.metadata['train_modules'][1]
  assert small.client_sizes[1] == os.path.getsize(os.path.join(STDLIB, module)) // 17


def test_hash_mismatch_is_a_clear_error(ps):
  with pytest.raises(ValueError, match=f"expected_sha256='0+'.*{ps.metadata['sha256']}"):
    data.get('pysource', key=keys.data_key(keys.run_key(0)), expected_sha256='0' * 64)
  with pytest.raises(ValueError, match='expected_sha256'):
    data.check_available('pysource', expected_sha256='0' * 64)
  data.check_available('pysource', expected_sha256=ps.metadata['sha256'])


@pytest.mark.parametrize('opts,match', [({'seq_len': 0}, 'seq_len=0'),
                                        ({'max_windows': 0}, 'max_windows=0'),
                                        ({'min_bytes': 10}, 'min_bytes=10'),
                                        ({'source_dir': '/nonexistent'}, 'source_dir=')])
def test_bad_options(opts, match):
  with pytest.raises(ValueError, match=match):
    pysource.load(key=None, **opts)
