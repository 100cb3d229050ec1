"""FetchSGD's server step against a numpy port of the authors' released one.

The oracle is a line-by-line numpy port of CommEfficient's `fed_aggregator._server_helper_sketched`
with virtual (server-side) momentum and error, and csvec's `CSVec.unSketch(k)`:

    V ← ρ V + S̄;   E ← E + V
    vals ← median over rows of sign_r(i) · E[r, h_r(i)]        (csvec `_findAllValues`)
    HH ← the k coordinates of largest vals²                      (csvec `_findHHK`: sort, last k;
                                                                 ties here to the lower index)
    u ← vals on HH, 0 elsewhere;  nz ← the nonzero buckets of S(u)
    E[nz] ← 0;  V[nz] ← 0;   θ ← θ − lr · u

run in float64 on hand-made mean sketches (a few heavy coordinates on Gaussian noise, with many
bucket collisions: 3 × 40 buckets for D = 650), and compared with `fetchsgd`'s default
(masking='buckets') server_update for 12 rounds: θ, V and E. The hashes are the run's (both sides
read the same bucket and sign arrays; the hash family itself is tested in tests/projections).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from fedjax_intrinsic import algorithms, keys, models
from fedjax_intrinsic.algorithms import base, fetchsgd

ROWS, COLS, K, LR, STEPS = 3, 40, 8, 0.5, 12


def _hashes(sk, state):
  """(buckets int[rows, D], signs ±1.0[rows, D]) from the sketch state's cached signed buckets."""
  sb = np.asarray(state.signed_buckets)
  neg = sb < 0
  return np.where(neg, -1 - sb, sb), np.where(neg, -1.0, 1.0)


def _np_sketch(buckets, signs, x):
  table = np.zeros((buckets.shape[0], COLS))
  for r in range(buckets.shape[0]):
    np.add.at(table[r], buckets[r], signs[r] * x)
  return table


def _reference_step(theta, V, E, sketched_grad, buckets, signs, rho):
  """One server step of FetchSGD's released code (virtual momentum and error), in numpy."""
  V = rho * V + sketched_grad
  E = E + V
  vals = np.median(np.stack([E[r, buckets[r]] * signs[r] for r in range(buckets.shape[0])]), axis=0)
  hh = np.argsort(-(vals ** 2), kind='stable')[:K]   # ties (frequent: estimates are table
  # entries) to the lower index; csvec's torch.sort leaves their order unspecified
  update = np.zeros_like(theta)
  update[hh] = vals[hh]
  nz = _np_sketch(buckets, signs, update) != 0
  E = np.where(nz, 0.0, E)
  V = np.where(nz, 0.0, V)
  return theta - LR * update, V, E


@pytest.mark.parametrize('rho', [0.9, 0.0])
def test_buckets_masking_matches_released_server_step(rho):
  model = models.get('logreg', input_shape=(8, 8, 1), num_classes=10)
  run_key = keys.run_key(0)
  params0 = model.init(keys.init_key(run_key))
  cfg = algorithms.default_config('fetchsgd')
  assert cfg.masking == 'buckets'                              # the default under test
  cfg.update({'rows': ROWS, 'cols': COLS, 'k': K, 'rho': rho})
  ctx = base.BuildContext(model, params0, run_key, optax.sgd(LR), 1.0, 100, STEPS)
  alg = algorithms.get('fetchsgd', cfg, ctx)
  sk = fetchsgd.sketcher(cfg, ctx)
  state = alg.init(params0)
  buckets, signs = _hashes(sk, state.extra['sketch_state'])
  D = buckets.shape[1]
  update = jax.jit(alg.server_update)
  sketch = jax.jit(lambda x: sk.sketch(state.extra['sketch_state'], x))

  theta = np.asarray(ravel_pytree(params0)[0], np.float64)
  V = np.zeros((ROWS, COLS))
  E = np.zeros((ROWS, COLS))
  rng = np.random.default_rng(0)
  heavy = rng.choice(D, 20, replace=False)
  zeroed = 0
  for step in range(STEPS):
    g = 0.05 * rng.standard_normal(D)
    g[heavy] += rng.choice([-1.0, 1.0], 20) * rng.uniform(0.5, 2.0, 20)   # hand-made heavy hitters
    table = np.asarray(sketch(jnp.asarray(g, jnp.float32)), np.float64)
    theta, V, E = _reference_step(theta, V, E, table, buckets, signs, rho)
    state = update(state, jnp.asarray(table, jnp.float32), None)
    np.testing.assert_allclose(np.asarray(state.theta), theta, rtol=1e-5, atol=1e-5,
                               err_msg=f'θ, step {step}')
    np.testing.assert_allclose(np.asarray(state.extra['error']), E, rtol=1e-4, atol=1e-5,
                               err_msg=f'E, step {step}')
    np.testing.assert_allclose(np.asarray(state.extra['momentum']), V, rtol=1e-4, atol=1e-5,
                               err_msg=f'V, step {step}')
    zeroed += int(np.sum(E == 0))
  assert zeroed > 0                                             # the masking did act


def test_error_sketch_decays_with_buckets_and_grows_with_subtract():
  """The divergence mechanism: one gradient, then 30 rounds of zeros. With bucket zeroing the error
  sketch's norm falls below that of the gradient's sketch; subtracting the sketch of the applied
  update over-subtracts where applied coordinates collide, and the norm ends above it."""
  model = models.get('logreg', input_shape=(8, 8, 1), num_classes=10)
  run_key = keys.run_key(0)
  params0 = model.init(keys.init_key(run_key))
  norms = {}
  for masking in ('buckets', 'subtract'):
    cfg = algorithms.default_config('fetchsgd')
    cfg.update({'rows': 5, 'cols': 100, 'k': 50, 'masking': masking})
    ctx = base.BuildContext(model, params0, run_key, optax.sgd(1.0), 1.0, 100, 60)
    alg = algorithms.get('fetchsgd', cfg, ctx)
    sk = fetchsgd.sketcher(cfg, ctx)
    state = alg.init(params0)
    update = jax.jit(alg.server_update)
    g = jax.random.normal(jax.random.PRNGKey(3), (sk.D,))
    first = sk.sketch(state.extra['sketch_state'], g)
    state = update(state, first, None)
    zero = jnp.zeros((5, 100), jnp.float32)
    for _ in range(30):
      state = update(state, zero, None)
    norms[masking] = float(jnp.linalg.norm(state.extra['error']))
    norms['first'] = float(jnp.linalg.norm(first))
  assert norms['buckets'] < 0.5 * norms['first'] and norms['subtract'] > norms['first'], norms
