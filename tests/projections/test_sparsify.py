"""Sparsifiers: top-k (exact and threshold) against numpy, random-k, densify, compaction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from projections import sparsify as S

_top_k = jax.jit(S.top_k, static_argnums=(1, 2))


def _oracle_topk(x, k):
  """Indices of the k largest |x|, ties to the lower index (stable sort)."""
  return np.argsort(-np.abs(np.asarray(x, np.float32)), kind='stable')[:k]


def _cases():
  rng = np.random.default_rng(0)
  ties = rng.integers(-3, 4, 5000).astype(np.float32)
  few = rng.choice([0., 1., -1., 2.], 70001, p=[0.9, 0.05, 0.04, 0.01]).astype(np.float32)
  # Sampled positions (multiples of the stride 2) all zero: the sample's bracket is wrong
  # and the search falls back to bisection over the whole key range.
  misleading = np.zeros(2**15 + 6, np.float32)
  misleading[1::2] = rng.standard_normal(misleading[1::2].size)
  return [
      ('gauss', rng.standard_normal(100003).astype(np.float32), 1000),
      ('gauss_k1', rng.standard_normal(333).astype(np.float32), 1),
      ('gauss_kD', rng.standard_normal(77).astype(np.float32), 77),
      ('gauss_kD-1', rng.standard_normal(77).astype(np.float32), 76),
      ('ties', ties, 1234),
      ('all_equal', np.full(999, -2.5, np.float32), 100),
      ('zeros', np.zeros(4096, np.float32), 10),
      ('tied_threshold_beyond_capacity', few, 4000),
      ('misleading_sample', misleading, 50),
      ('bf16', jnp.asarray(rng.standard_normal(40000), jnp.bfloat16), 500),
  ]


@pytest.mark.parametrize('name, x, k', _cases(), ids=[c[0] for c in _cases()])
def test_threshold_matches_exact_and_oracle(name, x, k):
  # Both methods in one compiled program (one compilation a case instead of two).
  both = jax.jit(lambda x: (S.top_k(x, k, 'exact'), S.top_k(x, k, 'threshold')))
  (ve, ie), (vt, it) = both(x)
  want = _oracle_topk(x, k)
  xn = np.asarray(jnp.asarray(x, jnp.float32))
  # Exact: lax.top_k order (descending magnitude, ties by index) is the stable oracle's.
  np.testing.assert_array_equal(ie, want)
  np.testing.assert_array_equal(np.asarray(ve, np.float32), xn[want])
  # Threshold: the same k indices (ties broken by index too) in ascending order.
  assert it.shape == (k,) and it.dtype == jnp.int32 and vt.dtype == x.dtype
  np.testing.assert_array_equal(it, np.sort(want))
  np.testing.assert_array_equal(np.asarray(vt, np.float32), xn[np.asarray(it)])


def test_threshold_vmap_equals_loop():
  xs = np.random.default_rng(1).standard_normal((3, 5000)).astype(np.float32)
  xs[1, ::3] = 7.0  # Many ties at the top for one row.
  vals, idx = jax.jit(jax.vmap(lambda x: S.top_k(x, 100, 'threshold')))(xs)
  for x, v, i in zip(xs, vals, idx):
    v1, i1 = _top_k(x, 100, 'threshold')
    np.testing.assert_array_equal(i, i1)
    np.testing.assert_array_equal(v, v1)


def test_compact_matches_flatnonzero():
  rng = np.random.default_rng(2)
  mask = rng.random(1000) < 0.1  # n not a multiple of 32
  nz = np.flatnonzero(mask)
  f = jax.jit(S.compact, static_argnums=(1, 2))
  got = np.asarray(f(mask, nz.size + 7, 1000))
  np.testing.assert_array_equal(got, np.concatenate([nz, np.full(7, 1000)]))  # padded
  np.testing.assert_array_equal(f(mask, 30, 1000), nz[:30])  # the first ones when truncated
  packed = S.pack(jnp.ones(64, bool))
  np.testing.assert_array_equal(S.select(packed, jnp.array([0, 31, 32, 63, 64]), -1),
                                [0, 31, 32, 63, -1])


def test_count_ge():
  u = jnp.asarray(np.random.default_rng(3).integers(0, 2**31, 999), jnp.uint32)
  ts = (jnp.uint32(0), jnp.uint32(2**30), jnp.uint32(2**31))
  got = S.count_ge(u, ts)
  assert [int(c) for c in got] == [999, int(np.sum(np.asarray(u) >= 2**30)), 0]


def test_random_k_distinct_deterministic_unbiased():
  D, k = 1000, 37
  x = np.random.default_rng(4).standard_normal(D).astype(np.float32)
  rk = jax.jit(S.random_k, static_argnums=2, static_argnames='unbiased')
  v, i = rk(jax.random.key(0), x, k)
  i = np.asarray(i)
  assert i.shape == (k,) and i.min() >= 0 and i.max() < D
  assert np.all(np.diff(i) > 0)  # distinct, ascending
  np.testing.assert_array_equal(v, x[i])
  v2, i2 = rk(jax.random.key(0), x, k)
  np.testing.assert_array_equal(i2, i)
  _, i3 = rk(jax.random.key(1), x, k)
  assert set(np.asarray(i3).tolist()) != set(i.tolist())
  vu, iu = rk(jax.random.key(0), x, k, unbiased=True)
  np.testing.assert_array_equal(iu, i)
  np.testing.assert_allclose(vu, x[i] * D / k, rtol=1e-6)


@pytest.mark.parametrize('D,k', [(20, 5), (650, 32), (5000, 4999), (2**19, 300)])
def test_random_k_methods_select_the_same_indices(D, k):
  """'exact' (lax.top_k of the keys, sorted) and 'threshold' (counting passes) pick the same k of
  D for every key; 'auto' is one of them ('exact' up to 2^18, 'threshold' above). The oracle:
  numpy's stable argsort of the same 31-bit keys (the k largest, ties to the lower index)."""
  x = jnp.zeros(D)

  @jax.jit
  def picks(keys):   # the three methods and the oracle's keys in one compiled program
    pick = lambda method: jax.vmap(lambda key: S.random_k(key, x, k, method=method)[1])(keys)
    bits = jax.vmap(lambda key: jax.random.bits(key, (D,), jnp.uint32) >> 1)(keys)
    return tuple(pick(m) for m in ('exact', 'threshold', 'auto')) + (bits,)

  exact, threshold, auto, bits = (np.asarray(a)
                                  for a in picks(jax.random.split(jax.random.key(9), 8)))
  np.testing.assert_array_equal(exact, threshold)
  np.testing.assert_array_equal(auto, exact)
  for row, keys in zip(exact, np.asarray(bits)):
    oracle = np.sort(np.argsort(-keys.astype(np.int64), kind='stable')[:k])
    np.testing.assert_array_equal(row, oracle)


def test_random_k_uniform_over_keys():
  D, k, n = 20, 5, 4000
  keys = jax.random.split(jax.random.key(5), n)
  _, idx = jax.jit(jax.vmap(lambda key: S.random_k(key, jnp.zeros(D), k)))(keys)
  idx = np.asarray(idx)
  assert all(len(set(row)) == k for row in idx.tolist())
  counts = np.bincount(idx.ravel(), minlength=D)  # each index n k / D = 1000 times
  assert stats.chisquare(counts).pvalue > 1e-6, counts
  together = np.mean([(0 in row) and (1 in row) for row in idx.tolist()])
  assert abs(together - k * (k - 1) / (D * (D - 1))) < 0.02  # 0.0526 without replacement


def test_densify_duplicates_add_and_round_trip():
  got = S.densify(jnp.array([1., 2., 3., 4.]), jnp.array([2, 0, 2, 7]), 5)
  np.testing.assert_array_equal(got, [2., 0., 4., 0., 0.])  # 7 is out of range: dropped
  np.testing.assert_array_equal(
      S.densify(jnp.array([1., 2.]), jnp.array([-1, 1]), 3), [0., 2., 0.])
  x = np.random.default_rng(6).standard_normal(300).astype(np.float32)
  v, i = _top_k(x, 30, 'threshold')
  dense = np.asarray(jax.jit(S.densify, static_argnums=2)(v, i, 300))
  keep = np.zeros(300, bool)
  keep[_oracle_topk(x, 30)] = True
  np.testing.assert_array_equal(dense, np.where(keep, x, 0))
  assert S.densify(jnp.ones(2, jnp.bfloat16), jnp.array([0, 1]), 4).dtype == jnp.bfloat16


def test_bad_inputs():
  x = jnp.zeros(10)
  for k in (0, 11, 2.0):
    with pytest.raises(ValueError, match='k: '):
      S.top_k(x, k)
    with pytest.raises(ValueError, match='k: '):
      S.random_k(jax.random.key(0), x, k)
  with pytest.raises(ValueError, match='method: .*threshold'):
    S.random_k(jax.random.key(0), x, 3, method='approx')
  with pytest.raises(ValueError, match='method: .*exact'):
    S.top_k(x, 3, method='approx')
  with pytest.raises(ValueError, match='x: .*dtype'):
    S.top_k(jnp.zeros(10, jnp.int32), 3)
  with pytest.raises(ValueError, match='x: .*vector'):
    S.top_k(jnp.zeros((2, 5)), 3)
  with pytest.raises(ValueError, match='indices: .*shape'):
    S.densify(jnp.ones(3), jnp.array([0, 1]), 5)
  with pytest.raises(ValueError, match='indices: .*integer'):
    S.densify(jnp.ones(2), jnp.array([0., 1.]), 5)
  with pytest.raises(ValueError, match='D: '):
    S.densify(jnp.ones(2), jnp.array([0, 1]), 0)
