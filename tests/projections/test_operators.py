"""Every operator against dense oracles, exact identities and its statistical contract.

Compilations dominate the run time, so each case's jitted functions are built once
(``jitted``) and eager (op-by-op) execution is used only where it is what is tested.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import projections as P
from projections import dense
from projections import hadamard

# Small sizes. D = 37 is not a power of two; fastfood(37, 33) has L = 64 < 2 d (d > L/2).
CASES = {
    'fastfood-37-33': ('fastfood', dict(D=37, d=33)),
    'fastfood-100-5': ('fastfood', dict(D=100, d=5)),
    'dense-37-33-ragged': ('dense_gaussian', dict(D=37, d=33, block_rows=8)),
    'sparse-37-33': ('sparse', dict(D=37, d=33)),
    'sparse-37-9-s3': ('sparse', dict(D=37, d=9, s=3)),
    'identity-37': ('identity', dict(D=37)),
}
IDS = list(CASES)
KEY = jax.random.PRNGKey(0)


def make(case):
  name, kw = CASES[case]
  return P.get(name, **kw)


class Jitted:
  """A case's operator with jitted init/project/lift and batched helpers, built once."""

  def __init__(self, op):
    self.op = op
    self.init = jax.jit(op.init)
    self.project = jax.jit(op.project)
    self.lift = jax.jit(op.lift)
    self.lift_many = jax.jit(jax.vmap(op.lift, (None, 0)))        # [n, d] -> [n, D]
    self.project_many = jax.jit(jax.vmap(op.project, (None, 0)))  # [n, D] -> [n, d]


@functools.cache
def jitted(case) -> Jitted:
  return Jitted(make(case))


def materialise(op, state, lift_many=None) -> np.ndarray:
  """A: f64[D, d], column j = lift(e_j)."""
  lift_many = lift_many or jax.vmap(op.lift, (None, 0))
  cols = lift_many(state, jnp.eye(op.d, dtype=jnp.float32))
  return np.asarray(cols, np.float64).T


def vectors(op, seed=1):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal(op.D), jnp.float32),
          jnp.asarray(rng.standard_normal(op.d), jnp.float32))


@pytest.mark.parametrize('case', IDS)
def test_project_is_transpose_of_materialised_lift(case):
  j = jitted(case)
  op, st = j.op, j.init(KEY)
  a = materialise(op, st, j.lift_many)
  assert a.shape == (op.D, op.d)
  rows = np.asarray(j.project_many(st, jnp.eye(op.D)), np.float64)
  np.testing.assert_allclose(rows, a, atol=1e-6)   # row i of A = project(e_i)
  x, z = vectors(op)
  np.testing.assert_allclose(j.project(st, x), a.T @ np.asarray(x, np.float64), atol=1e-5)
  np.testing.assert_allclose(j.lift(st, z), a @ np.asarray(z, np.float64), atol=1e-5)
  # Adjointness <A z, x> = <z, Aᵀ x> on random vectors.
  lhs = np.vdot(np.asarray(j.lift(st, z), np.float64), np.asarray(x, np.float64))
  rhs = np.vdot(np.asarray(z, np.float64), np.asarray(j.project(st, x), np.float64))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5, atol=1e-5)


def test_fastfood_equals_numpy_construction():
  for case in ('fastfood-37-33', 'fastfood-100-5'):
    j = jitted(case)
    D, d = j.op.D, j.op.d
    st = j.init(jax.random.PRNGKey(D))
    L = hadamard.next_power_of_two(max(D, d))
    perm, inv = np.asarray(st.perm), np.asarray(st.inv_perm)
    assert st.signs.shape == st.gauss.shape == perm.shape == (L,)
    np.testing.assert_array_equal(np.sort(perm), np.arange(L))
    np.testing.assert_array_equal(perm[inv], np.arange(L))
    assert set(np.unique(np.asarray(st.signs))) <= {-1.0, 1.0}
    g = np.asarray(st.gauss, np.float64)
    np.testing.assert_allclose(st.scale, 1 / np.sqrt(D * np.sum(g**2)), rtol=1e-6)
    h = hadamard.sylvester(L, np.float64)
    pi = np.zeros((L, L))
    pi[np.arange(L), perm] = 1.0    # (Π v)_i = v[perm[i]]
    m = h @ np.diag(g) @ pi @ h @ np.diag(np.asarray(st.signs, np.float64))
    want = float(st.scale) * m[:D, :d]
    np.testing.assert_allclose(materialise(j.op, st, j.lift_many), want, atol=2e-6)


def test_dense_equals_regenerated_blocks():
  j = jitted('dense-37-33-ragged')
  st = j.init(KEY)
  blocks = [jax.random.normal(jax.random.fold_in(KEY, b), (8, 33)) for b in range(5)]
  want = np.concatenate([np.asarray(b, np.float64) for b in blocks])[:37] / np.sqrt(37)
  np.testing.assert_allclose(materialise(j.op, st, j.lift_many), want, rtol=1e-6, atol=1e-7)


def test_sparse_equals_numpy_construction():
  j = jitted('sparse-37-9-s3')
  D, d, s = 37, 9, 3
  st = j.init(KEY)
  cols, signs = np.asarray(st.cols), np.asarray(st.signs)
  assert cols.shape == signs.shape == (D, s) and cols.min() >= 0 and cols.max() < d
  want = np.zeros((D, d))
  for i in range(D):
    for t in range(s):
      want[i, cols[i, t]] += np.sqrt(d / (D * s)) * signs[i, t]
  np.testing.assert_allclose(materialise(j.op, st, j.lift_many), want, atol=1e-7)


@pytest.mark.parametrize('case', [c for c in IDS if not c.startswith('identity')])
def test_expected_gram_is_identity(case):
  """E[AᵀA] = I_d over keys: every entry's mean within 5 standard errors of I.

  Standard errors come from the sample itself (n = 1000 keys). The test also bounds the
  largest deviation absolutely (0.08), so it has power against a wrong normaliser.
  """
  op = make(case)
  n = 1000

  @jax.jit
  def grams(keys):
    def gram(key):
      st = op.init(key)
      a = jax.vmap(op.lift, (None, 0))(st, jnp.eye(op.d)).T   # [D, d]
      return jnp.dot(a.T, a, precision=jax.lax.Precision.HIGHEST)
    # lax.map, one key at a time: it compiles in about half the time of a vmap over the 1000
    # keys (XLA:CPU's random bits for [1000, L] shapes); vmap over states: test_vmap_over_states.
    return jax.lax.map(gram, keys)

  gram = np.asarray(grams(jax.random.split(jax.random.PRNGKey(7), n)), np.float64)
  mean, se = gram.mean(0), gram.std(0, ddof=1) / np.sqrt(n)
  dev = np.abs(mean - np.eye(op.d))
  assert np.all(dev <= 5 * se + 1e-6), (dev.max(), (dev / (se + 1e-12)).max())
  assert dev.max() < 0.08


def test_fastfood_columns_unit_norm_when_D_is_L():
  op = P.fastfood(64, 20)
  columns = jax.jit(lambda keys: jax.lax.map(   # one key at a time: compiles faster than vmap
      lambda k: jax.vmap(op.lift, (None, 0))(op.init(k), jnp.eye(20)), keys))
  cols = np.asarray(columns(jax.random.split(KEY, 3)), np.float64)   # [3, d, D]
  np.testing.assert_allclose(np.sum(cols**2, axis=2), 1.0, rtol=1e-5)


def test_identity_is_identity():
  op = P.identity(5)
  x = jnp.arange(5.0)
  assert op.d == 5
  np.testing.assert_array_equal(op.project(op.init(KEY), x), x)
  np.testing.assert_array_equal(op.lift(op.init(KEY), x), x)


@pytest.mark.parametrize('case', IDS)
def test_same_key_same_subspace_other_key_other(case):
  j = jitted(case)
  x, z = vectors(j.op)
  k3, k4 = jax.random.PRNGKey(3), jax.random.PRNGKey(4)
  a = j.project(j.init(k3), x), j.lift(j.init(k3), z)
  b = j.project(j.init(k3), x), j.lift(j.init(k3), z)
  c = j.project(j.init(k4), x), j.lift(j.init(k4), z)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  if j.op.name != 'identity':
    for u, w in zip(a, c):
      assert not np.allclose(u, w)


@pytest.mark.parametrize('case', IDS)
def test_jit_matches_eager(case):
  j = jitted(case)
  op = j.op
  x, z = vectors(op)
  st = op.init(KEY)
  for u, v in zip(jax.tree_util.tree_leaves(st), jax.tree_util.tree_leaves(j.init(KEY))):
    np.testing.assert_array_equal(u, v)
  np.testing.assert_allclose(j.project(st, x), op.project(st, x), atol=1e-6)
  np.testing.assert_allclose(j.lift(st, z), op.lift(st, z), atol=1e-6)


@pytest.mark.parametrize('case', IDS)
def test_vmap_over_states_and_vectors_matches_loop(case):
  j = jitted(case)
  op = j.op
  keys = jax.random.split(jax.random.PRNGKey(5), 3)
  rng = np.random.default_rng(6)
  xs = jnp.asarray(rng.standard_normal((3, op.D)), jnp.float32)
  zs = jnp.asarray(rng.standard_normal((3, op.d)), jnp.float32)
  loop_p = np.stack([j.project(j.init(k), x) for k, x in zip(keys, xs)])
  loop_l = np.stack([j.lift(j.init(k), z) for k, z in zip(keys, zs)])
  loop_p0 = np.stack([j.project(j.init(k), xs[0]) for k in keys])

  @jax.jit
  def batched(keys, xs, zs):   # one compilation for all three vmaps
    states = jax.vmap(op.init)(keys)
    over_states = (jax.vmap(op.project, (0, None))(states, xs[0])
                   if op.name != 'identity' else None)  # the identity's state is empty
    return jax.vmap(op.project)(states, xs), jax.vmap(op.lift)(states, zs), over_states

  p, l, p0 = batched(keys, xs, zs)
  np.testing.assert_allclose(p, loop_p, atol=1e-5)
  np.testing.assert_allclose(l, loop_l, atol=1e-5)
  if op.name != 'identity':
    np.testing.assert_allclose(p0, loop_p0, atol=1e-5)


@pytest.mark.parametrize('case', IDS)
def test_bfloat16(case):
  j = jitted(case)
  st = j.init(KEY)
  x, z = vectors(j.op)
  both = jax.jit(lambda st, x, z: (j.op.project(st, x), j.op.lift(st, z)))   # one compilation
  got_both = both(st, x.astype(jnp.bfloat16), z.astype(jnp.bfloat16))
  for fn, v, got in ((j.project, x, got_both[0]), (j.lift, z, got_both[1])):
    want = fn(st, v.astype(jnp.bfloat16).astype(jnp.float32))
    assert got.dtype == jnp.bfloat16
    # Internal compute is float32: only the output rounding (2^-8 relative) remains.
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2**-7, atol=1e-6)


def test_registry():
  assert P.OPERATORS == ('dense_gaussian', 'fastfood', 'identity', 'sparse')
  for name in P.OPERATORS:
    op = P.get(name, D=16, d=16)
    assert op.name == name and (op.D, op.d) == (16, 16)
  assert P.get('sparse', D=16, d=4, s=2).d == 4
  with pytest.raises(ValueError, match='name: unknown projection .*dense_gaussian, fastfood'):
    P.get('gaussian', D=16, d=4)
  with pytest.raises(ValueError, match='s: not an option'):
    P.get('fastfood', D=16, d=4, s=2)


@pytest.mark.parametrize('factory', [P.fastfood, P.dense_gaussian, P.sparse])
def test_bad_sizes(factory):
  with pytest.raises(ValueError, match=r'^d: must be an integer with 1 <= d <= 10'):
    factory(10, 0)
  with pytest.raises(ValueError, match=r'^d: .*<= 10.*got 11'):
    factory(10, 11)
  with pytest.raises(ValueError, match=r'^D: must be an integer with 1 <= D'):
    factory(0, 1)
  with pytest.raises(ValueError, match=r'^d: '):
    factory(10, 2.0)


def test_bad_options():
  with pytest.raises(ValueError, match='^d: .*identity'):
    P.identity(10, 5)
  with pytest.raises(ValueError, match='^s: '):
    P.sparse(10, 4, s=5)
  with pytest.raises(ValueError, match='^block_rows: '):
    P.dense_gaussian(10, 4, block_rows=0)
  with pytest.raises(ValueError, match='^wht_method: '):
    P.fastfood(10, 4, wht_method='fft')


@pytest.mark.parametrize('case', IDS)
def test_bad_vectors_raise_under_jit(case):
  j = jitted(case)
  op, st = j.op, j.init(KEY)
  with pytest.raises(ValueError, match=rf'^x: .*needs shape \({op.D},\), got \({op.D - 1},\)'):
    j.project(st, jnp.ones(op.D - 1))
  with pytest.raises(ValueError, match=r'^x: .*needs a floating dtype.*int32'):
    j.project(st, jnp.ones(op.D, jnp.int32))
  with pytest.raises(ValueError, match=r'^z: .*needs shape'):
    j.lift(st, jnp.ones((2, op.d)))
  with pytest.raises(ValueError, match=r'^z: .*needs shape'):
    j.lift(st, jnp.ones(op.d + 1))


def test_dense_memory_is_blockwise_not_dense():
  """D = 10^7, d = 10^3: XLA's compiled temp memory is O(block·d + D), not D·d (40 GB).

  Compiles lift and project for abstract inputs and reads memory_analysis(); nothing runs.
  """
  mem = dense.compiled_memory(10**7, 10**3)
  bound = 2 * mem['vector_bytes'] + 16 * mem['block_bytes']   # 2 vectors + a few blocks
  for k in ('lift_temp', 'project_temp'):
    assert mem[k] <= bound, mem
    assert mem[k] < mem['dense_bytes'] / 500, mem


def test_typed_keys_give_the_same_subspace_as_raw_keys():
  # The dense state stores the key itself; new-style typed keys must work and agree.
  op = P.dense_gaussian(12, 4, block_rows=5)
  z = jnp.arange(4.0)
  raw = jax.jit(op.lift)(op.init(jax.random.PRNGKey(9)), z)
  typed = jax.jit(op.lift)(op.init(jax.random.key(9)), z)
  np.testing.assert_array_equal(raw, typed)
