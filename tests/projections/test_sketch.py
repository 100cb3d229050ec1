"""Count sketch: exact hashing arithmetic, dense oracle, linearity, recovery, invariances."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from projections import sketch as K

P = K.PRIME
D, ROWS, COLS = 3001, 5, 64  # A small sketch shared by several tests (D not a power of 2).


def _np_hashes(state, D, cols):
  """Dense int64 oracle of the hash families: buckets i64[rows, D], signs i64[rows, D]."""
  bc = np.asarray(state.bucket_coeffs, np.int64)
  sc = np.asarray(state.sign_coeffs, np.int64)
  i = np.arange(D, dtype=np.int64)[None, :]
  buckets = ((bc[:, :1] * i + bc[:, 1:]) % P) % cols
  g = sc[:, :1] * np.ones_like(i)
  for j in range(1, 4):
    g = (g * i + sc[:, j:j + 1]) % P
  return buckets, 1 - 2 * (g % 2)


def _np_sketch(state, x, cols):
  buckets, signs = _np_hashes(state, x.shape[0], cols)
  table = np.zeros((buckets.shape[0], cols))
  for r in range(buckets.shape[0]):
    np.add.at(table[r], buckets[r], signs[r] * x.astype(np.float64))
  return table


@pytest.fixture(scope='module')
def small():
  cs = K.count_sketch(D, ROWS, COLS)
  return cs, cs.init(jax.random.key(0)), jax.jit(cs.sketch), jax.jit(cs.estimate)


def test_mulmod_addmod_match_int64():
  rng = np.random.default_rng(0)
  edge = np.array([0, 1, 2, 2**15, 2**16 - 1, 2**16, 2**30, P - 2, P - 1], np.int64)
  a = np.concatenate([np.repeat(edge, edge.size), rng.integers(0, P, 20000)])
  b = np.concatenate([np.tile(edge, edge.size), rng.integers(0, P, 20000)])
  ua, ub = jnp.asarray(a, jnp.uint32), jnp.asarray(b, jnp.uint32)
  np.testing.assert_array_equal(np.asarray(K.mulmod(ua, ub), np.int64), a * b % P)
  np.testing.assert_array_equal(np.asarray(K.addmod(ua, ub), np.int64), (a + b) % P)


@pytest.mark.parametrize('rows', [1, 3, 5, 9, 17])
def test_median_rows_matches_numpy(rows):
  v = np.random.default_rng(rows).integers(-4, 5, (rows, 200)).astype(np.float32)
  np.testing.assert_array_equal(K.median_rows(jnp.asarray(v)), np.median(v, axis=0))


def test_init_state_is_coefficients_not_a_table(small):
  cs, st, _, _ = small
  assert st.bucket_coeffs.shape == (ROWS, 2) and st.sign_coeffs.shape == (ROWS, 4)
  assert st.bucket_coeffs.dtype == jnp.uint32 and st.signed_buckets is None
  assert int(jnp.max(st.bucket_coeffs)) < P and int(jnp.max(st.sign_coeffs)) < P


def test_sketch_estimate_match_dense_oracle(small):
  cs, st, sk, est = small
  x = np.random.default_rng(1).standard_normal(D).astype(np.float32)
  table = sk(st, x)
  np.testing.assert_allclose(table, _np_sketch(st, x, COLS), rtol=1e-5, atol=1e-4)
  buckets, signs = _np_hashes(st, D, COLS)
  t = np.asarray(table, np.float64)
  want = np.median(signs * t[np.arange(ROWS)[:, None], buckets], axis=0)
  np.testing.assert_allclose(est(st, table), want, rtol=1e-6, atol=1e-6)


def test_linearity(small):
  cs, st, sk, _ = small
  rng = np.random.default_rng(2)
  x, y = rng.standard_normal((2, D)).astype(np.float32)
  a, b = 1.5, -0.25
  np.testing.assert_allclose(sk(st, a * x + b * y), a * sk(st, x) + b * sk(st, y),
                             rtol=1e-5, atol=1e-4)


def test_exact_recovery_of_sparse_vector():
  D, rows, cols, k = 20000, 5, 2**14, 10
  # A coordinate's median is exact unless ceil(rows/2) = 3 of its 5 buckets hold another
  # of the k nonzeros: P(fail) <= D C(5, 3) (k / cols)^3 = 4.5e-5 for a random key.
  fail = D * math.comb(rows, 3) * (k / cols)**3
  assert fail < 1e-4
  cs = K.count_sketch(D, rows, cols)
  st = cs.init(jax.random.key(3))
  rng = np.random.default_rng(3)
  x = np.zeros(D, np.float32)
  x[rng.choice(D, k, replace=False)] = rng.standard_normal(k) * 10
  table = jax.jit(cs.sketch)(st, x)
  np.testing.assert_array_equal(jax.jit(cs.estimate)(st, table), x)
  vals, idx = jax.jit(cs.unsketch_topk, static_argnums=2)(st, table, k)
  order = np.argsort(-np.abs(x))[:k]
  np.testing.assert_array_equal(np.sort(idx), np.sort(order))
  np.testing.assert_array_equal(vals, x[idx])
  np.testing.assert_allclose(cs.l2_estimate(table), np.linalg.norm(x), rtol=1e-6)


def test_heavy_hitters_under_noise_and_l2_estimate():
  D, rows, cols = 2**16, 5, 2**10
  rng = np.random.default_rng(4)
  x = (0.01 * rng.standard_normal(D)).astype(np.float32)
  heavy = rng.choice(D, 5, replace=False)
  x[heavy] = np.array([10., -8., 6., -5., 4.], np.float32)
  cs = K.count_sketch(D, rows, cols)
  st = cs.init(jax.random.key(4))
  table = jax.jit(cs.sketch)(st, x)
  # A bucket holds ~D/cols = 64 noise terms: std 0.08, far below the smallest hitter (4).
  vals, idx = jax.jit(cs.unsketch_topk, static_argnums=(2, 3))(st, table, 5, 'threshold')
  assert set(np.asarray(idx).tolist()) == set(heavy.tolist())
  np.testing.assert_allclose(vals, x[idx], atol=0.5)
  # Each row's squared norm has relative std ~sqrt(2 / cols) = 4.4%; the norm half that.
  l2 = float(cs.l2_estimate(table))
  assert abs(l2 / np.linalg.norm(x) - 1) < 0.1, l2
  y = rng.standard_normal(D).astype(np.float32)
  l2 = float(cs.l2_estimate(jax.jit(cs.sketch)(st, y)))
  assert abs(l2 / np.linalg.norm(y) - 1) < 0.1, l2


def test_hash_sanity_uniform_buckets_balanced_signs_independent_rows():
  D, rows, cols = 2**16, 3, 64
  cs = K.count_sketch(D, rows, cols)
  st = cs.init(jax.random.key(5))
  i = jnp.arange(D, dtype=jnp.uint32)
  buckets = np.asarray(K.bucket_hash(st.bucket_coeffs[:, None, :], i[None], cols))
  signs = 1 - 2 * np.asarray(K.sign_bit(st.sign_coeffs[:, None, :], i[None]), np.int64)
  for r in range(rows):
    load = np.bincount(buckets[r], minlength=cols)
    # Pairwise independence makes the load chi-square-like; p < 1e-6 would flag a bad hash.
    assert stats.chisquare(load).pvalue > 1e-6, load
    assert abs(signs[r].mean()) < 6 / math.sqrt(D)
    # Signs of neighbouring coordinates uncorrelated (a linear hash mod 2 would fail).
    assert abs(np.mean(signs[r, 1:] * signs[r, :-1])) < 6 / math.sqrt(D)
  same = np.mean(buckets[0] == buckets[1])
  assert abs(same - 1 / cols) < 6 * math.sqrt(1 / cols / D)
  assert abs(np.mean(signs[0] * signs[1])) < 6 / math.sqrt(D)


def test_determinism_jit_and_cache(small):
  cs, st, sk, est = small
  x = np.random.default_rng(6).standard_normal(D).astype(np.float32)
  again = cs.init(jax.random.key(0))
  np.testing.assert_array_equal(sk(again, x), sk(st, x))
  other = cs.init(jax.random.key(1))
  assert not np.allclose(sk(other, x), sk(st, x))
  table = cs.sketch(st, x)  # Not jitted.
  np.testing.assert_array_equal(table, sk(st, x))
  np.testing.assert_array_equal(cs.estimate(st, table), est(st, table))
  cached = K.count_sketch(D, ROWS, COLS, cache_buckets=True)
  stc = cached.init(jax.random.key(0))
  assert stc.signed_buckets.shape == (ROWS, D) and stc.signed_buckets.dtype == jnp.int32
  np.testing.assert_array_equal(jax.jit(cached.sketch)(stc, x), table)
  np.testing.assert_array_equal(jax.jit(cached.estimate)(stc, table), est(st, table))


def test_vmap_over_vectors_and_states(small):
  cs, st, sk, est = small
  xs = np.random.default_rng(7).standard_normal((3, D)).astype(np.float32)
  tables = jax.jit(jax.vmap(cs.sketch, in_axes=(None, 0)))(st, xs)
  for x, t in zip(xs, tables):
    np.testing.assert_allclose(t, sk(st, x), rtol=1e-6, atol=1e-5)
  ests = jax.jit(jax.vmap(cs.estimate, in_axes=(None, 0)))(st, tables)
  for t, e in zip(tables, ests):
    np.testing.assert_allclose(e, est(st, t), rtol=1e-6, atol=1e-6)
  states = jax.vmap(cs.init)(jax.random.split(jax.random.key(8), 2))
  per_state = jax.jit(jax.vmap(cs.sketch, in_axes=(0, None)))(states, xs[0])
  for j in range(2):
    one = jax.tree.map(lambda a: a[j], states)
    np.testing.assert_allclose(per_state[j], sk(one, xs[0]), rtol=1e-6, atol=1e-5)


def test_bfloat16(small):
  cs, st, sk, est = small
  x = jnp.asarray(np.random.default_rng(9).standard_normal(D), jnp.bfloat16)
  table = sk(st, x)
  assert table.dtype == jnp.bfloat16
  # Sums accumulate in float32, then round once.
  np.testing.assert_array_equal(table, sk(st, x.astype(jnp.float32)).astype(jnp.bfloat16))
  e = est(st, table)
  assert e.dtype == jnp.bfloat16
  np.testing.assert_array_equal(e, est(st, table.astype(jnp.float32)).astype(jnp.bfloat16))
  assert cs.l2_estimate(table).dtype == jnp.bfloat16


@pytest.mark.parametrize('args, match', [
    ((0, 5, 8), 'D'), ((10, 4, 8), 'rows'), ((10, 0, 8), 'rows'), ((10, 3, 0), 'cols'),
    ((10, 3.0, 8), 'rows'), ((P, 3, 8), 'D'), ((True, 3, 8), 'D'),
])
def test_bad_sizes(args, match):
  with pytest.raises(ValueError, match=match):
    K.count_sketch(*args)


def test_bad_inputs(small):
  cs, st, _, _ = small
  with pytest.raises(ValueError, match='x: .*shape'):
    cs.sketch(st, jnp.zeros(D + 1))
  with pytest.raises(ValueError, match='x: .*floating'):
    cs.sketch(st, jnp.zeros(D, jnp.int32))
  with pytest.raises(ValueError, match='table: .*shape'):
    cs.estimate(st, jnp.zeros((ROWS, COLS + 1)))
  with pytest.raises(ValueError, match='table: .*floating'):
    cs.l2_estimate(jnp.zeros((ROWS, COLS), jnp.int32))
  for k in (0, D + 1):
    with pytest.raises(ValueError, match='k: '):
      cs.unsketch_topk(st, jnp.zeros((ROWS, COLS)), k)
