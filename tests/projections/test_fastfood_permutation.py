"""The Feistel permutation behind Fastfood's Π: a keyed bijection of [0, 2^n), exactly inverted."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import projections as P

ff = importlib.import_module('projections.fastfood')   # the module; P.fastfood is the factory

KEY = jax.random.PRNGKey(0)


def round_keys(seed: int, rounds: int = ff.FEISTEL_ROUNDS) -> jax.Array:
  return jax.random.bits(jax.random.PRNGKey(seed), (rounds,), jnp.uint32)


def test_bijection_and_inverse_for_every_width():
  keys = round_keys(1)
  for n in range(1, 15):
    x = np.arange(2**n)
    p = np.asarray(ff.feistel_permutation(keys, x, n))
    assert p.dtype == np.int32
    np.testing.assert_array_equal(np.sort(p), x, err_msg=f'n={n}')   # all outputs distinct
    np.testing.assert_array_equal(np.asarray(ff.feistel_inverse(keys, p, n)), x,
                                  err_msg=f'n={n}')
    np.testing.assert_array_equal(np.asarray(ff.feistel_permutation(
        keys, ff.feistel_inverse(keys, x, n), n)), x, err_msg=f'n={n}')


def test_keys_change_the_permutation_and_it_mixes():
  n = 12
  x = np.arange(2**n)
  perms = [np.asarray(ff.feistel_permutation(round_keys(s), x, n)) for s in range(4)]
  for a in range(4):
    for b in range(a + 1, 4):
      assert np.mean(perms[a] == perms[b]) < 0.01   # a random pair agrees on ~1 / 2^n
  for p in perms:
    assert np.mean(p == x) < 0.01                   # ~1 fixed point expected
    # Not a near-identity shuffle: neighbours land far apart, like a uniform permutation.
    assert np.median(np.abs(np.diff(p))) > 2**n / 8
  # Both 1-bit permutations appear across keys (n = 1: swap or not).
  ones = {tuple(np.asarray(ff.feistel_permutation(round_keys(s), np.arange(2), 1)))
          for s in range(16)}
  assert ones == {(0, 1), (1, 0)}


def test_jit_equals_eager_and_same_key_same_result():
  keys, n = round_keys(2), 11
  x = jnp.arange(2**n)
  fwd = jax.jit(ff.feistel_permutation, static_argnums=2)
  inv = jax.jit(ff.feistel_inverse, static_argnums=2)
  np.testing.assert_array_equal(fwd(keys, x, n), ff.feistel_permutation(keys, x, n))
  np.testing.assert_array_equal(inv(keys, x, n), ff.feistel_inverse(keys, x, n))
  np.testing.assert_array_equal(fwd(round_keys(2), x, n), fwd(keys, x, n))


def test_fastfood_init_feistel_and_sort():
  for permutation in ('feistel', 'sort'):
    op = P.fastfood(100, 5, permutation=permutation)   # L = 128
    init = jax.jit(op.init)
    st = init(KEY)
    perm, inv = np.asarray(st.perm), np.asarray(st.inv_perm)
    np.testing.assert_array_equal(np.sort(perm), np.arange(128))
    np.testing.assert_array_equal(perm[inv], np.arange(128))
    np.testing.assert_array_equal(np.asarray(init(KEY).perm), perm)     # same key
    np.testing.assert_array_equal(np.asarray(op.init(KEY).perm), perm)  # jit == eager
    assert not np.array_equal(np.asarray(init(jax.random.PRNGKey(1)).perm), perm)
  # The default is Feistel, with the same signs and Gaussians as 'sort' (only Π differs).
  a, b = P.fastfood(100, 5).init(KEY), P.fastfood(100, 5, permutation='sort').init(KEY)
  np.testing.assert_array_equal(a.signs, b.signs)
  np.testing.assert_array_equal(a.gauss, b.gauss)
  keys = jax.random.bits(jax.random.split(KEY, 3)[1], (ff.FEISTEL_ROUNDS,), jnp.uint32)
  np.testing.assert_array_equal(a.perm, ff.feistel_permutation(keys, jnp.arange(128), 7))
  # Tiny sizes: L = 1 and L = 2.
  assert np.asarray(P.fastfood(1, 1).init(KEY).perm).tolist() == [0]
  assert sorted(np.asarray(P.fastfood(2, 1).init(KEY).perm).tolist()) == [0, 1]


def test_bad_arguments():
  with pytest.raises(ValueError, match=r"^permutation: must be one of \('feistel', 'sort'\)"):
    P.fastfood(10, 4, permutation='shuffle')
  with pytest.raises(ValueError, match='^n_bits: '):
    ff.feistel_permutation(round_keys(0), jnp.arange(4), 0)
  with pytest.raises(ValueError, match='^n_bits: '):
    ff.feistel_inverse(round_keys(0), jnp.arange(4), 32)
  with pytest.raises(ValueError, match='^keys: '):
    ff.feistel_permutation(jnp.zeros((2, 3), jnp.uint32), jnp.arange(4), 2)
  assert P.get('fastfood', D=16, d=4, permutation='sort').d == 4
