"""Partitions: disjointness, coverage, sizes, label structure, determinism by seed."""
import numpy as np
import pytest

from fedjax_intrinsic.data import partitions

# Test labels (not a data set): 10 classes of unequal sizes, in a scrambled order.
_COUNTS = np.array([50, 60, 40, 55, 45, 70, 30, 50, 65, 35])
LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(10), _COUNTS)).astype(np.int32)


def _check_disjoint(parts, n, covers_all):
  allidx = np.concatenate(parts)
  assert allidx.dtype == np.int64
  assert len(np.unique(allidx)) == len(allidx), 'an example is in two clients'
  assert allidx.min() >= 0 and allidx.max() < n
  assert all(len(p) > 0 for p in parts)
  if covers_all:
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))


def _make(name, seed, **kw):
  return partitions.make(name, LABELS, 20, np.random.default_rng(seed), **kw)


@pytest.mark.parametrize('name,kw', [('iid', {}), ('dirichlet', {'alpha': 0.3}),
                                     ('shards', {}), ('shards', {'shards_per_client': 2})])
def test_covering_partitions(name, kw):
  parts = _make(name, 0, **kw)
  assert len(parts) == 20
  _check_disjoint(parts, len(LABELS), covers_all=True)
  sizes = [len(p) for p in parts]
  assert max(sizes) - min(sizes) <= (kw.get('shards_per_client', 1) if name == 'shards' else 1)
  assert sum(sizes) == len(LABELS)


@pytest.mark.parametrize('name,kw', [('iid', {}), ('dirichlet', {'alpha': 0.3}), ('shards', {}),
                                     ('single_class', {'examples_per_client': 5})])
def test_determinism_by_seed(name, kw):
  a, b, c = _make(name, 7, **kw), _make(name, 7, **kw), _make(name, 8, **kw)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_shards_are_contiguous_pieces_of_the_label_sort():
  parts = partitions.shards(LABELS, 20, np.random.default_rng(0), shards_per_client=2)
  order = np.argsort(LABELS, kind='stable')
  piece_of = np.empty(len(LABELS), int)
  for i, piece in enumerate(np.array_split(order, 40)):
    piece_of[piece] = i
  piece_size = np.bincount(piece_of)
  for p in parts:                                  # each client: two whole pieces of the sort
    ids = np.unique(piece_of[p])
    assert len(ids) == 2 and len(p) == piece_size[ids].sum()
  assert sorted(np.concatenate([np.unique(piece_of[p]) for p in parts])) == list(range(40))
  # One shard each of 25 examples: at most two classes per client.
  parts = partitions.shards(LABELS, 20, np.random.default_rng(0))
  assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)


def test_single_class():
  parts = partitions.single_class(LABELS, 90, np.random.default_rng(0), examples_per_client=5)
  _check_disjoint(parts, len(LABELS), covers_all=False)
  for p in parts:
    assert len(p) == 5 and len(np.unique(LABELS[p])) == 1
  # Every count is a multiple of 5 and 100 chunks exist: 100 clients cover every example.
  _check_disjoint(partitions.single_class(LABELS, 100, np.random.default_rng(0),
                                          examples_per_client=5), len(LABELS), covers_all=True)
  with pytest.raises(ValueError, match='num_clients=101 .*at most 100'):
    partitions.single_class(LABELS, 101, np.random.default_rng(0), examples_per_client=5)


def test_dirichlet_alpha_controls_skew():
  def purity(alpha):
    parts = partitions.dirichlet(LABELS, 20, np.random.default_rng(1), alpha=alpha)
    return np.mean([np.bincount(LABELS[p]).max() / len(p) for p in parts])
  assert purity(0.01) > 0.8                    # nearly one class per client
  assert purity(1000.0) < 0.3                  # nearly the global mix (largest class 14%)
  # Large alpha: each client's class histogram is close to the global frequencies.
  parts = partitions.dirichlet(LABELS, 5, np.random.default_rng(1), alpha=1e4)
  freq = _COUNTS / _COUNTS.sum()
  for p in parts:
    assert np.abs(np.bincount(LABELS[p], minlength=10) / len(p) - freq).max() < 0.15   # multinomial noise: sd 0.03


def test_iid_sizes_and_mix():
  parts = partitions.iid(LABELS, 7, np.random.default_rng(0))
  assert sorted(len(p) for p in parts) == [71] * 4 + [72] * 3
  _check_disjoint(parts, len(LABELS), covers_all=True)


@pytest.mark.parametrize('call,match', [
    (lambda r: partitions.make('nope', LABELS, 5, r), "partition='nope'.*iid, dirichlet"),
    (lambda r: partitions.iid(LABELS, 0, r), 'num_clients=0'),
    (lambda r: partitions.iid(LABELS, len(LABELS) + 1, r), 'num_clients=501'),
    (lambda r: partitions.dirichlet(LABELS, 5, r, alpha=0.0), 'alpha=0.0'),
    (lambda r: partitions.shards(LABELS, 300, r, shards_per_client=2), 'shards_per_client=2'),
    (lambda r: partitions.single_class(LABELS, 5, r, examples_per_client=0), 'examples_per_client=0'),
    (lambda r: partitions.iid(LABELS.astype(float), 5, r), 'labels'),
])
def test_bad_input(call, match):
  with pytest.raises(ValueError, match=match):
    call(np.random.default_rng(0))
