"""The CPU kernels (projections/native.py) against independent numpy oracles, and the fallback.

Oracles: a float64 numpy Walsh-Hadamard transform written here (and the closed-form dense
matrix at small L), numpy integer (int64 / Python int) hashes for the count sketch, numpy
fancy indexing for Fastfood's tile/fold. Every primitive is checked under jit, vmap, JVP,
VJP and transpose. The fallback tests run a fresh interpreter where the kernels are
disabled or cannot be built (no compiler on PATH) and check the same results.
"""
import importlib
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import projections as P
from projections import hadamard
from projections import native
from projections import sketch as K

FF = importlib.import_module('projections.fastfood')   # the module; P.fastfood is the factory
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def np_fwht(x: np.ndarray) -> np.ndarray:
  """x @ H_L on the last axis in float64, by the index-bit recursion (not hadamard.py)."""
  x = np.array(x, np.float64)
  L = x.shape[-1]
  h = 1
  while h < L:
    y = x.reshape(x.shape[:-1] + (L // (2 * h), 2, h))
    x = np.concatenate([y[..., :1, :] + y[..., 1:, :], y[..., :1, :] - y[..., 1:, :]],
                       axis=-2).reshape(x.shape)
    h *= 2
  return x


def test_kernels_build_where_a_compiler_exists():
  if not any(shutil.which(c) for c in (os.environ.get('CXX'), 'g++', 'c++') if c):
    pytest.skip('no C++ compiler on this machine: the pure-JAX fallback is used')
  if os.environ.get('FEDJAX_INTRINSIC_NATIVE', '1') == '0':
    pytest.skip('disabled by FEDJAX_INTRINSIC_NATIVE=0')
  assert native.available(), native.status()
  assert hadamard.default_wht_method('cpu') == 'native'


@pytest.mark.parametrize('L', [1, 2, 4, 8, 16, 64, 1024, 4096, 2**13, 2**15, 2**17, 2**19])
def test_native_fwht_is_exact_on_integers(L):
  # Integer inputs keep every partial sum exact in float32 (|sum| <= 8 L < 2^24), so the
  # kernel's result must equal the float64 oracle bit for bit, whatever its blocking.
  x = np.random.default_rng(L).integers(-8, 9, size=(3, L)).astype(np.float32)
  got = np.asarray(jax.jit(lambda v: hadamard.fwht(v, 'native'))(x))
  np.testing.assert_array_equal(got, np_fwht(x))
  if L <= 64:
    np.testing.assert_array_equal(got, x.astype(np.float64) @ hadamard.sylvester(L, np.float64))


def test_native_fwht_gaussian_inputs_and_leading_axes():
  x = np.random.default_rng(0).standard_normal((2, 3, 2**14)).astype(np.float32)
  got = np.asarray(hadamard.fwht(x, 'native'))
  np.testing.assert_allclose(got, np_fwht(x), rtol=1e-5, atol=1e-5 * 2**7)


def test_native_fwht_autodiff_and_vmap_are_the_transform():
  L = 2**13
  x = jax.random.normal(jax.random.PRNGKey(0), (L,))
  t = jax.random.normal(jax.random.PRNGKey(1), (L,))
  f = lambda v: hadamard.fwht(v, 'native')
  want = np_fwht(np.asarray(t))
  tol = dict(rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(jax.jvp(f, (x,), (t,))[1], want, **tol)
  np.testing.assert_allclose(jax.vjp(f, x)[1](t)[0], want, **tol)  # H symmetric
  np.testing.assert_allclose(jax.linear_transpose(f, x)(t)[0], want, **tol)
  g = jax.grad(lambda v: jnp.sum(jnp.sin(0.01 * f(v))))(x)
  np.testing.assert_allclose(g, 0.01 * np_fwht(np.cos(0.01 * np_fwht(np.asarray(x)))),
                             rtol=1e-4, atol=1e-4)
  xb = jnp.stack([x, t], axis=1)   # batch on the last axis: moved in front
  np.testing.assert_allclose(jax.vmap(f, in_axes=1, out_axes=1)(xb),
                             np_fwht(np.asarray(xb).T).T, **tol)
  h = jax.jit(jax.hessian(lambda v: jnp.sum(f(v) ** 2)))(x[:8])   # second order
  np.testing.assert_allclose(h, 2 * 8 * np.eye(8), atol=1e-4)


@pytest.mark.parametrize('n, L', [(1, 8), (4, 64), (128, 2**19), (2**16, 2**16), (2**19, 2**19)])
def test_tile_gather_and_perm_fold_against_numpy(n, L):
  rng = np.random.default_rng(n)   # numpy inputs: no random-number programs to compile
  perm = jnp.asarray(rng.permutation(L), jnp.int32)
  inv = jnp.asarray(np.argsort(np.asarray(perm)), jnp.int32)
  u = jnp.asarray(rng.standard_normal((2, n)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((2, L)), jnp.float32)
  pm = np.asarray(perm) % n
  got = np.asarray(jax.jit(FF.tile_gather)(u, perm, inv))
  np.testing.assert_array_equal(got, np.asarray(u)[:, pm])
  fold = np.asarray(jax.jit(FF.perm_fold, static_argnums=3)(v, perm, inv, n))
  want = np.zeros((2, n))
  for b in range(2):
    np.add.at(want[b], pm, np.asarray(v[b], np.float64))
  np.testing.assert_allclose(fold, want, rtol=1e-5, atol=1e-4)
  # Each is the other's transpose, and vmap over the vectors is the batched call.
  t_gather = jax.linear_transpose(lambda a: FF.tile_gather(a, perm, inv), u)(v)[0]
  np.testing.assert_allclose(t_gather, want, rtol=1e-5, atol=1e-4)
  t_fold = jax.linear_transpose(lambda a: FF.perm_fold(a, perm, inv, n), v)(u)[0]
  np.testing.assert_array_equal(t_fold, np.asarray(u)[:, pm])
  np.testing.assert_array_equal(jax.vmap(FF.tile_gather, (0, None, None))(u, perm, inv), got)


@pytest.mark.parametrize('m, L, nvec, npre, npost', [(5, 8, 1, 1, 8), (3000, 2**12, 2, 2**12, 1),
                                                  (2**13, 2**13, 3, 1, 2**13),
                                                  (70000, 2**17, 2, 2**17, 2**17)])
def test_fwht_diag_against_numpy(m, L, nvec, npre, npost):
  # (pad_L(x) · pre) H_L · post, with the multiplications inside the transform's copies: against
  # the numpy float64 transform of the same products; its transpose is the same kernel with the
  # diagonals swapped, cut to m.
  rng = np.random.default_rng(m)
  x = jnp.asarray(rng.standard_normal((nvec, m)), jnp.float32)
  pre = jnp.asarray(rng.standard_normal(npre), jnp.float32)
  post = jnp.asarray(rng.standard_normal(npost), jnp.float32)
  got = jax.jit(lambda x: FF.fwht_diag(x, pre, post, L))(x)
  pad = np.zeros((nvec, L))
  pad[:, :m] = np.asarray(x, np.float64)
  want = np_fwht(pad * np.asarray(pre, np.float64)) * np.asarray(post, np.float64)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * np.sqrt(L))
  ct = jnp.asarray(rng.standard_normal((nvec, L)), jnp.float32)
  t = jax.linear_transpose(lambda a: FF.fwht_diag(a, pre, post, L), x)(ct)[0]
  want_t = (np_fwht(np.asarray(ct, np.float64) * np.asarray(post, np.float64))
            * np.asarray(pre, np.float64))[:, :m]
  np.testing.assert_allclose(t, want_t, rtol=1e-4, atol=1e-3 * np.sqrt(L))
  if native.available():   # the kernel, not the three steps apart, is what runs
    assert native.TARGET_FWHT_DIAG in jax.jit(
        lambda x: FF.fwht_diag(x, pre, post, L)).lower(x).as_text()


def test_large_fastfood_is_the_plain_composition_bitwise():
  # Above the fused kernels' L, project and lift use fwht_diag: the same bits as the operator
  # written out step by step (pad, scale, WHT, Gaussian, fold, WHT, signs; and back).
  D, d = 2**19 + 3, 1000
  op = P.fastfood(D, d)
  st = jax.jit(op.init)(jax.random.PRNGKey(3))
  L, n = st.perm.shape[0], 1024
  assert L > native.FASTFOOD_FUSED_MAX_L
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal(D), jnp.float32)
  z = jnp.asarray(rng.standard_normal(d), jnp.float32)

  def project(x):
    v = hadamard.fwht(jnp.pad(x, (0, L - D)) * st.scale) * st.gauss
    return hadamard.fwht(FF.perm_fold(v, st.perm, st.inv_perm, n))[:d] * st.signs[:d]

  def lift(z):
    u = hadamard.fwht(jnp.pad(z * st.signs[:d], (0, n - d)))
    return (hadamard.fwht(FF.tile_gather(u, st.perm, st.inv_perm) * st.gauss) * st.scale)[:D]

  np.testing.assert_array_equal(jax.jit(op.project)(st, x), jax.jit(project)(x))
  np.testing.assert_array_equal(jax.jit(op.lift)(st, z), jax.jit(lift)(z))


@pytest.mark.parametrize('D, d, C', [(9610, 1000, 100), (650, 32, 3), (100, 90, 1), (4096, 4096, 2),
                                     (5000, 3000, 2), (2**18 - 5, 40, 2), (1, 1, 4), (7, 3, 5)])
def test_fused_fastfood_kernels_are_the_composition_bitwise(D, d, C):
  # Fastfood's project / lift as one kernel (L <= native.FASTFOOD_FUSED_MAX_L) against the same
  # operator composed from the separate kernels (WHT, fold, gather: checked against numpy above;
  # the operator against its dense matrix in test_operators.py): the same bits, batched (C
  # vectors; at C = 100 the fold's two-thread summation order), under grad (each is the
  # other's transpose) and JVP, and the dense float64 adjoint identity <A z, x> = <z, Aᵀ x>.
  op = P.fastfood(D, d)
  st = jax.jit(op.init)(jax.random.PRNGKey(D + d))
  assert st.perm.shape[0] <= native.FASTFOOD_FUSED_MAX_L
  n = 1 << (d - 1).bit_length()
  params = {'D': D, 'd': d, 'n': n, 'wht_method': None}
  parts = (st.signs, st.perm, st.inv_perm, st.gauss, st.scale)
  rng = np.random.default_rng(d)
  x = jnp.asarray(rng.standard_normal((C, D)), jnp.float32)
  z = jnp.asarray(rng.standard_normal((C, d)), jnp.float32)
  y = jax.jit(jax.vmap(lambda v: op.project(st, v)))(x)
  w = jax.jit(jax.vmap(lambda v: op.lift(st, v)))(z)
  np.testing.assert_array_equal(y, jax.jit(lambda v: FF._project_xla(v, *parts, **params))(x))
  np.testing.assert_array_equal(w, jax.jit(lambda v: FF._lift_xla(v, *parts, **params))(z))
  grad_lift = jax.jit(jax.vmap(
      lambda v: jax.grad(lambda u: jnp.vdot(op.lift(st, u), v))(jnp.zeros(d))))(x)
  np.testing.assert_array_equal(grad_lift, y)
  jvp = jax.jit(lambda v: jax.jvp(lambda a: op.project(st, a), (x[0],), (v,))[1])(x[0])
  # (one vector: the fold's one-thread order, which a batch of C = 100 does not share)
  np.testing.assert_array_equal(jvp, jax.jit(op.project)(st, x[0]))
  lhs = np.sum(np.asarray(w, np.float64) * np.asarray(x, np.float64))
  rhs = np.sum(np.asarray(z, np.float64) * np.asarray(y, np.float64))
  assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs))
  if native.available():   # the kernel, not the composition, is what runs
    hlo = jax.jit(lambda v: op.project(st, v)).lower(x[0]).as_text()
    assert native.TARGET_FASTFOOD_PROJECT in hlo and native.TARGET_FOLD_PERM not in hlo


def _np_hashes(state, D, cols):
  """int64 numpy hashes (a i + b < 2^62: no overflow): buckets, signs i64[rows, D]."""
  p = K.PRIME
  bc = np.asarray(state.bucket_coeffs, np.int64)
  sc = np.asarray(state.sign_coeffs, np.int64)
  i = np.arange(D, dtype=np.int64)[None, :]
  buckets = ((bc[:, :1] * i + bc[:, 1:]) % p) % cols
  g = sc[:, :1] * np.ones_like(i)
  for j in range(1, 4):
    g = (g * i + sc[:, j:j + 1]) % p
  return buckets, 1 - 2 * (g % 2)


def _py_sketch(state, x, cols):
  """Dense oracle: the table from the numpy hashes, in float64."""
  buckets, signs = _np_hashes(state, x.shape[0], cols)
  table = np.zeros((buckets.shape[0], cols))
  for r in range(buckets.shape[0]):
    np.add.at(table[r], buckets[r], signs[r] * np.asarray(x, np.float64))
  return table


@pytest.mark.parametrize('D, rows, cols', [(1000, 5, 37), (2**19 + 1, 3, 500), (5, 1, 1),
                                           (2**19, 1, 2**20 + 3)])
@pytest.mark.parametrize('cached', [False, True])
def test_sketch_kernel_against_python_int_oracle(D, rows, cols, cached):
  # D >= 2^19 splits the coordinates over two threads (each walks its hashes from its own
  # start); cols > D exercises the bucket walk's wrap-around mod p.
  cs = P.count_sketch(D, rows, cols, cache_buckets=cached)
  x = np.random.default_rng(0).standard_normal(D).astype(np.float32)
  ct = np.random.default_rng(1).standard_normal((rows, cols)).astype(np.float32)

  @jax.jit
  def everything(key, x, ct):   # one compilation a case: init, sketch, vmap, and the VJP
    st = cs.init(key)
    batched = jax.vmap(cs.sketch, (None, 0))(st, jnp.stack([x, -2 * x]))
    g = jax.grad(lambda v: jnp.vdot(cs.sketch(st, v), ct))(x)
    return st, cs.sketch(st, x), batched[1], g

  st, table, neg, g = everything(jax.random.PRNGKey(D), x, ct)
  want = _py_sketch(st, x, cols)
  scale = np.sqrt(D / cols) + 1
  np.testing.assert_allclose(table, want, atol=1e-5 * scale)
  np.testing.assert_allclose(neg, -2 * want, atol=2e-5 * scale)
  # <S x, ct> = <x, Sᵀ ct>: the gradient is Sᵀ ct = Σ_r s_r(i) ct[r, h_r(i)].
  buckets, signs = _np_hashes(st, D, cols)
  ctn = np.asarray(ct, np.float64)
  want_g = sum(signs[r] * ctn[r, buckets[r]] for r in range(rows))
  np.testing.assert_allclose(g, want_g, atol=1e-5)


def test_sketch_vmap_over_states_uses_the_xla_formula():
  cs = P.count_sketch(500, 3, 16)
  x = np.random.default_rng(1).standard_normal(500).astype(np.float32)

  # Two states from one jitted init, stacked (compiles faster than vmapping init over the keys).
  init = jax.jit(cs.init)
  states = jax.tree.map(lambda *a: jnp.stack(a),
                        *[init(k) for k in jax.random.split(jax.random.PRNGKey(0), 2)])
  got = jax.jit(jax.vmap(cs.sketch, (0, None)))(states, x)
  for b in range(2):
    st = jax.tree_util.tree_map(lambda a: a[b], states)
    np.testing.assert_allclose(got[b], _py_sketch(st, x, 16), atol=1e-5)


FALLBACK_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np, jax, jax.numpy as jnp
    import projections as P
    from projections import hadamard, native
    x = np.random.default_rng(0).integers(-8, 9, size=(2, 2**13)).astype(np.float32)
    op = P.fastfood(300, 17)
    st = jax.jit(op.init)(jax.random.PRNGKey(0))
    cs = P.count_sketch(1000, 3, 37)
    cst = jax.jit(cs.init)(jax.random.PRNGKey(1))
    v = np.random.default_rng(2).standard_normal(300).astype(np.float32)
    out = dict(available=native.available(), method=hadamard.default_wht_method('cpu'),
               status=native.status().get('error', ''),
               fwht=np.asarray(jax.jit(lambda v: hadamard.fwht(v, 'native'))(x)).tolist(),
               project=np.asarray(jax.jit(op.project)(st, v)).tolist(),
               lift=np.asarray(jax.jit(op.lift)(st, v[:17])).tolist(),
               sketch=np.asarray(jax.jit(cs.sketch)(cst, np.arange(1000.0, dtype=np.float32))).tolist())
    print('RESULT' + json.dumps(out))
''')


@pytest.fixture(scope='module')
def fallback_jax_cache(tmp_path_factory):
  """A JAX compilation cache the fallback interpreters share: both compile the same pure-JAX
  programs (no kernel calls), so the second reads them back instead of compiling them again."""
  return str(tmp_path_factory.mktemp('fallback-jax-cache'))


def _run_fallback(env_extra, tmp_path, jax_cache):
  env = dict(os.environ, FEDJAX_INTRINSIC_CACHE=str(tmp_path / 'cache'), JAX_PLATFORMS='cpu',
             PYTHONPATH=REPO, JAX_COMPILATION_CACHE_DIR=jax_cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', **env_extra)
  r = subprocess.run([sys.executable, '-c', FALLBACK_SCRIPT], capture_output=True, text=True,
                     env=env, cwd=REPO, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  import json
  line = [ln for ln in r.stdout.splitlines() if ln.startswith('RESULT')][0]
  return json.loads(line[len('RESULT'):]), r.stderr


@pytest.fixture(scope='module')
def in_process():
  """The same computations in this process (kernels used where available)."""
  x = np.random.default_rng(0).integers(-8, 9, size=(2, 2**13)).astype(np.float32)
  op = P.fastfood(300, 17)
  st = jax.jit(op.init)(jax.random.PRNGKey(0))
  cs = P.count_sketch(1000, 3, 37)
  cst = jax.jit(cs.init)(jax.random.PRNGKey(1))
  v = np.random.default_rng(2).standard_normal(300).astype(np.float32)
  return dict(fwht=np_fwht(x), project=np.asarray(jax.jit(op.project)(st, v)),
              lift=np.asarray(jax.jit(op.lift)(st, v[:17])),
              sketch=_py_sketch(cst, np.arange(1000.0), 37))


def _check_same(got, want):
  np.testing.assert_array_equal(np.asarray(got['fwht']), want['fwht'])
  np.testing.assert_allclose(got['project'], want['project'], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got['lift'], want['lift'], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got['sketch'], want['sketch'], rtol=1e-6, atol=1e-2)


def test_fallback_when_disabled(tmp_path, in_process, fallback_jax_cache):
  got, _ = _run_fallback({'FEDJAX_INTRINSIC_NATIVE': '0'}, tmp_path, fallback_jax_cache)
  assert not got['available'] and got['method'] == 'butterfly'
  assert not (tmp_path / 'cache').exists()   # nothing was built
  _check_same(got, in_process)


def test_fallback_without_a_compiler(tmp_path, in_process, fallback_jax_cache):
  empty = tmp_path / 'bin'
  empty.mkdir()
  got, stderr = _run_fallback({'PATH': str(empty), 'CXX': ''}, tmp_path, fallback_jax_cache)
  assert not got['available'] and 'no C++ compiler' in got['status']
  assert 'CPU kernels unavailable' in stderr   # one warning says why
  _check_same(got, in_process)


def test_sketch_kernel_hash_walk_over_many_keys():
  # The kernel's forward-difference walk starts from differences taken mod p; a wrong
  # start shows up only for some keys (a regression: one key in a few hundred failed).
  D, cols = 3001, 64
  cs = P.count_sketch(D, 5, cols)
  init, sk = jax.jit(cs.init), jax.jit(cs.sketch)
  x = np.random.default_rng(1).standard_normal(D).astype(np.float32)
  for k in range(200):
    st = init(jax.random.PRNGKey(k))
    np.testing.assert_allclose(sk(st, x), _py_sketch(st, x, cols), atol=1e-4, err_msg=str(k))
