"""Walsh-Hadamard transforms against the closed form H_ij = (-1)^popcount(i & j)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from projections import hadamard


def closed_form(n: int) -> np.ndarray:
  """Sylvester's H_n entrywise, independent of the recursive construction."""
  i = np.arange(n)
  bits = np.vectorize(lambda v: bin(v).count('1'))(i[:, None] & i[None, :])
  return np.where(bits % 2, -1.0, 1.0)


@pytest.mark.parametrize('n', [1, 2, 4, 32, 256])
def test_sylvester_matches_closed_form(n):
  h = hadamard.sylvester(n)
  np.testing.assert_array_equal(h, closed_form(n))
  np.testing.assert_array_equal(h @ h.T, n * np.eye(n))


@pytest.mark.parametrize('L', [1, 2, 8, 128, 512, 4096])
@pytest.mark.parametrize('method', hadamard.METHODS)
def test_fwht_matches_dense_hadamard(L, method):
  x = np.random.default_rng(L).standard_normal((2, L)).astype(np.float32)
  want = x.astype(np.float64) @ hadamard.sylvester(L, np.float64)
  got = np.asarray(hadamard.fwht(x, method))
  assert got.dtype == np.float32 and got.shape == (2, L)
  # float32 sums of L terms of size O(1): error O(sqrt(L) * eps * |x|).
  np.testing.assert_allclose(got, want, atol=2e-6 * L ** 0.5 * 4, rtol=1e-5)


@pytest.mark.parametrize('L, block', [(128, 4), (4096, 8), (2048, 2)])
def test_kron_small_blocks_and_remainders(L, block):
  # 128 = 4·4·4·2 and 2048 = 8·8·8·4: factors with a remainder, more than two axes.
  assert np.prod(hadamard._factor_sizes(L, block)) == L
  x = np.random.default_rng(0).standard_normal(L).astype(np.float32)
  want = x.astype(np.float64) @ hadamard.sylvester(L, np.float64)
  got = np.asarray(jax.jit(lambda v: hadamard.fwht_kron(v, block))(x))
  np.testing.assert_allclose(got, want, atol=1e-5 * L ** 0.5, rtol=1e-5)


def test_vmap_and_jit_match_batched_call():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 64))
  for method in hadamard.METHODS:
    batched = hadamard.fwht(x, method)
    mapped = jax.jit(jax.vmap(jax.vmap(lambda v: hadamard.fwht(v, method))))(x)
    np.testing.assert_allclose(mapped, batched, rtol=1e-5, atol=1e-5)


def test_involution_and_low_precision_dtypes():
  x = jax.random.normal(jax.random.PRNGKey(1), (256,))
  np.testing.assert_allclose(hadamard.fwht(hadamard.fwht(x)) / 256, x, atol=1e-5)
  for dt in (jnp.bfloat16, jnp.float16):
    y = hadamard.fwht(x.astype(dt))
    assert y.dtype == dt
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(hadamard.fwht(x)),
                               atol=0.1 * 16, rtol=2e-2)


def test_default_method():
  assert hadamard.default_wht_method('cpu') in hadamard.METHODS
  assert hadamard.default_wht_method('tpu') == 'kron'
  assert hadamard.default_wht_method('gpu') == 'kron'
  x = jnp.arange(8.0)
  np.testing.assert_allclose(hadamard.fwht(x), np.arange(8.0) @ closed_form(8))


def test_next_power_of_two():
  assert [hadamard.next_power_of_two(n) for n in (1, 2, 3, 64, 65, 10**7)] == [
      1, 2, 4, 64, 128, 2**24]


def test_bad_inputs():
  with pytest.raises(ValueError, match='x.shape'):
    hadamard.fwht(jnp.ones(12))
  with pytest.raises(ValueError, match='method'):
    hadamard.fwht(jnp.ones(8), 'fft')
  with pytest.raises(ValueError, match='x: dtype'):
    hadamard.fwht(jnp.ones(8, jnp.int32))
  with pytest.raises(ValueError, match='x: must have at least one axis'):
    hadamard.fwht(jnp.float32(1.0))
  with pytest.raises(ValueError, match='block'):
    hadamard.fwht_kron(jnp.ones(8), block=6)
  with pytest.raises(ValueError, match='backend'):
    hadamard.default_wht_method(None)
  with pytest.raises(ValueError, match='x.shape'):
    jax.jit(hadamard.fwht)(jnp.ones(24))
