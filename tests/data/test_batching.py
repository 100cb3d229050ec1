"""Padded client batches against a per-client oracle: shapes, masks, padding, epochs, seeds."""
import numpy as np
import pytest

from fedjax_intrinsic.data import batching
from fedjax_intrinsic.data.base import FederatedData

SIZES = np.array([3, 7, 1, 12, 5])


def _data(lm=False):
  """Test arrays (not a data set): x[i] = i + 1 and y[i] = i, so a slot names its example."""
  n = int(SIZES.sum())
  x = (np.arange(n, dtype=np.float32) + 1)[:, None, None].repeat(2, 1).repeat(3, 2)  # [N, 2, 3]
  y = np.arange(n, dtype=np.int32)
  if lm:
    x = np.stack([np.arange(n) + 1] * 4, 1).astype(np.int32)          # [N, T=4]
    y = np.stack([np.arange(n)] * 4, 1).astype(np.int32)
  empty = {'x': x[:0], 'y': y[:0]}
  return FederatedData(name='t', task='language_model' if lm else 'classification',
                       num_classes=n, train={'x': x, 'y': y},
                       client_offsets=np.concatenate([[0], np.cumsum(SIZES)]).astype(np.int64),
                       validation=empty, test=empty, metadata={})


def _slots(batch, c):
  """Client c's (example id or -1) in slot order, from y and mask; checks zero padding."""
  mask = batch['mask'][c].reshape(-1)
  y = batch['y'][c].reshape(len(mask), -1)[:, 0]
  x = batch['x'][c].reshape(len(mask), -1)
  assert np.all(x[mask == 0] == 0) and np.all(y[mask == 0] == 0), 'padding slots must be zero'
  np.testing.assert_array_equal(x[mask == 1][:, 0], y[mask == 1] + 1)   # x and y stay paired
  return np.where(mask == 1, y, -1)


def test_shapes_masks_and_one_epoch():
  data = _data()
  ids = np.array([3, 0, -1, 4, 2])
  s = batching.steps_for_epochs(data, 4, 1)
  assert s == 3                                          # ceil(12 / 4)
  b = batching.client_batches(data, ids, batch_size=4, num_steps=s, rng=np.random.default_rng(0))
  assert b['x'].shape == (5, 3, 4, 2, 3) and b['x'].dtype == np.float32
  assert b['y'].shape == (5, 3, 4) and b['y'].dtype == np.int32
  assert b['mask'].shape == (5, 3, 4) and b['mask'].dtype == np.float32
  np.testing.assert_array_equal(b['num_examples'], [12, 3, 0, 5, 1])
  assert b['num_examples'].dtype == np.float32
  for c, cid in enumerate(ids):
    got = _slots(b, c)
    if cid < 0:
      assert np.all(got == -1) and not b['x'][c].any()
      continue
    lo = data.client_offsets[cid]
    n = SIZES[cid]
    np.testing.assert_array_equal(got[n:], -1)           # examples first, then padding
    np.testing.assert_array_equal(np.sort(got[:n]), np.arange(lo, lo + n))


def test_prefix_when_slots_are_fewer_than_examples():
  data = _data()
  b = batching.client_batches(data, np.array([3, 1]), batch_size=2, num_steps=2,
                              rng=np.random.default_rng(0))
  for c, cid in enumerate([3, 1]):
    got = _slots(b, c)
    assert b['mask'][c].sum() == 4 and len(np.unique(got)) == 4    # a partial epoch, no repeats
    lo = data.client_offsets[cid]
    assert np.all((got >= lo) & (got < lo + SIZES[cid]))
  np.testing.assert_array_equal(b['num_examples'], [12, 7])        # the weight is the full size


@pytest.mark.parametrize('epochs', [2, 2.5, None])
def test_epochs(epochs):
  data = _data()
  ids = np.array([0, 1, 2, 3, 4])
  s = 9 if epochs is None else batching.steps_for_epochs(data, 4, epochs)
  b = batching.client_batches(data, ids, batch_size=4, num_steps=s, rng=np.random.default_rng(1),
                              epochs=epochs)
  for c, cid in enumerate(ids):
    n, lo = SIZES[cid], data.client_offsets[cid]
    got = _slots(b, c)
    used = s * 4 if epochs is None else int(np.ceil(n * epochs))
    assert b['mask'][c].sum() == used
    np.testing.assert_array_equal(got[used:], -1)
    for start in range(0, used, n):                      # each pass is a permutation (the last a prefix)
      block = got[start:min(start + n, used)]
      assert len(np.unique(block)) == len(block)
      assert np.all((block >= lo) & (block < lo + n))
  if epochs == 2:
    assert s == 6                                        # ceil(12 * 2 / 4)
    got = _slots(b, 3)
    assert not np.array_equal(got[:12], got[12:24]), 'passes must be independent permutations'


def test_seed_determinism_and_language_model_targets():
  data = _data(lm=True)
  ids = np.array([1, 3, -1])
  run = lambda seed: batching.client_batches(data, ids, batch_size=3, num_steps=4,
                                             rng=np.random.default_rng(seed))
  a, b, c = run(5), run(5), run(6)
  assert a['x'].shape == (3, 4, 3, 4) and a['y'].shape == (3, 4, 3, 4) and a['x'].dtype == np.int32
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a['y'], c['y'])
  np.testing.assert_array_equal(a['mask'], c['mask'])
  m = a['mask'] == 1
  np.testing.assert_array_equal(a['x'][m], a['y'][m] + 1)


def test_many_clients_match_per_client_oracle():
  """Random cohort with repeats: each row holds exactly that client's data."""
  data = _data()
  rng = np.random.default_rng(0)
  ids = rng.integers(-1, 5, size=200)
  b = batching.client_batches(data, ids, batch_size=5, num_steps=2, rng=rng)
  for c, cid in enumerate(ids):
    got = _slots(b, c)
    if cid < 0:
      assert np.all(got == -1)
      continue
    n, lo = SIZES[cid], data.client_offsets[cid]
    k = min(n, 10)
    assert np.all(got[k:] == -1) and len(np.unique(got[:k])) == k
    assert np.all((got[:k] >= lo) & (got[:k] < lo + n))


@pytest.mark.parametrize('kw,match', [
    ({'client_ids': np.array([5])}, r'client_ids hold values in \[5, 5\]'),
    ({'client_ids': np.array([-2])}, 'client_ids'),
    ({'client_ids': np.array([[0]])}, 'client_ids with shape'),
    ({'batch_size': 0}, 'batch_size=0'),
    ({'num_steps': -1}, 'num_steps=-1'),
    ({'epochs': 0}, 'epochs=0'),
])
def test_bad_input(kw, match):
  args = dict(client_ids=np.array([0]), batch_size=2, num_steps=1, rng=np.random.default_rng(0))
  args.update(kw)
  with pytest.raises(ValueError, match=match):
    batching.client_batches(_data(), **args)


def test_steps_for_epochs_bad_input():
  with pytest.raises(ValueError, match='batch_size=0'):
    batching.steps_for_epochs(_data(), 0, 1)
  with pytest.raises(ValueError, match='epochs=-1'):
    batching.steps_for_epochs(_data(), 2, -1)
  assert batching.steps_for_epochs(_data(), 100, 0.5) == 1
