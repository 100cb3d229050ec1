"""Intrinsic methods' options: per-leaf projections (`method.per_leaf`) and weight decay toward θ0.

Per-leaf: the operator the methods use is checked against the global mode's identities, with dense
matrices: A (lifted unit vectors) is block diagonal and each block is the leaf's own operator built
independently with key fold_in(subspace key, i); project is its exact adjoint; one round of
intrinsic_static is θ0 − lr · A Aᵀ ḡ (ḡ the weighted mean client gradient), as in the global mode.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import projections as P
from fedjax_intrinsic import algorithms, config as config_lib, experiment, keys, preflight
from fedjax_intrinsic.algorithms import base, intrinsic
from tests.algorithms.helpers import assert_close, flat, run

INTRINSIC = ('intrinsic_static', 'intrinsic_k_subspace', 'intrinsic_time_varying')


def _dense_traced(op, state):
  """A: f32[D, d], column j = lift(e_j) (traceable: one program with what else a test computes)."""
  return jax.vmap(lambda z: op.lift(state, z), out_axes=1)(jnp.eye(op.d, dtype=jnp.float32))


def _dense(op, state):
  """A: f64[D, d], column j = lift(e_j)."""
  return np.asarray(jax.jit(_dense_traced, static_argnums=0)(op, state), np.float64)


@pytest.mark.parametrize('projection', ['fastfood', 'dense_gaussian', 'sparse'])
def test_per_leaf_operator_is_block_diagonal_of_leaf_operators(make_digits_config, projection):
  c = make_digits_config('intrinsic_static', model='mlp', d=40, projection=projection,
                         per_leaf=True)
  exp = experiment.Experiment(c)
  sub = exp.algorithm and intrinsic.subspaces(c.method, base.BuildContext(
      exp.model, exp.params0, exp.run_key, None, 1.0, 100, 1))
  leaves = jax.tree.leaves(exp.params0)
  sizes = [int(np.size(x)) for x in leaves]
  dims = P.split_dims(tuple(sizes), 40)
  leaf_ops = [P.get(projection, D=n, d=k) for n, k in zip(sizes, dims)]

  @jax.jit
  def dense_and_adjoint(run_key):
    """The method's A, each leaf's own operator's A (built independently, keyed fold_in(subspace
    key, i)), and both sides of ⟨A z, x⟩ = ⟨z, project(x)⟩: one program, not one per piece."""
    state = sub.state(0)
    blocks = [_dense_traced(op, op.init(jax.random.fold_in(keys.subspace_key(run_key, 0), i)))
              for i, op in enumerate(leaf_ops)]
    x = jax.random.normal(jax.random.PRNGKey(0), (sub.D,))
    z = jax.random.normal(jax.random.PRNGKey(1), (sub.d,))
    return (_dense_traced(sub.op, state), blocks, jnp.vdot(sub.op.lift(state, z), x),
            jnp.vdot(z, sub.op.project(state, x)))

  A, blocks, lhs, rhs = jax.tree.map(lambda a: np.asarray(a, np.float64),
                                     dense_and_adjoint(exp.run_key))
  assert A.shape == (sum(sizes), 40) and sum(dims) == 40
  r0 = c0 = 0
  for i, (n, k) in enumerate(zip(sizes, dims)):
    np.testing.assert_allclose(A[r0:r0 + n, c0:c0 + k], blocks[i], rtol=1e-5, atol=1e-6)
    A[r0:r0 + n, c0:c0 + k] = 0
    r0, c0 = r0 + n, c0 + k
  assert not A.any()                                         # nothing off the diagonal blocks
  assert abs(lhs - rhs) <= 1e-4 * abs(lhs)                    # project is lift's adjoint


def test_per_leaf_static_round_matches_dense_oracle(make_digits_config):
  """On logistic regression (two leaves: A has two blocks; the MLP's four-block A is checked
  above), with test_per_leaf_runs_and_catches_up[intrinsic_static]'s config, so that its programs
  are the same (the compilation cache serves them); round 1 only."""
  c = make_digits_config('intrinsic_static', model='logreg', d=64, per_leaf=True)
  exp = experiment.Experiment(c)
  state = exp.init_state()
  A = _dense(intrinsic.subspaces(c.method, base.BuildContext(
      exp.model, exp.params0, exp.run_key, None, 1.0, 100, 1)).op, state.op_state)
  ids = exp.cohort(1)
  batches, w = exp.round_inputs(1, ids)
  grad = jax.jit(jax.grad(base.model_loss(exp.model)))
  g = sum(wi * flat(grad(exp.params0, jax.tree.map(lambda a: a[i, 0], batches)))
          for i, wi in enumerate(w))
  expected = flat(exp.params0) - c.server.lr * A @ (A.T @ g)
  new_state, line = exp.run_round(state, 1, ids)
  assert_close(expected, jax.jit(exp.algorithm.model_params)(new_state), rtol=1e-5)
  assert line['bytes_up'] == 6 * 4 * 64


@pytest.mark.parametrize('method', INTRINSIC)
def test_per_leaf_runs_and_catches_up(make_digits_config, method):
  """Every intrinsic method runs with per_leaf=True (θ moves, losses finite) and its catch-up
  rebuilds the server's θ (the download identities hold per leaf as globally). On logistic
  regression: two leaves of different sizes and ranks (kernel [64, 10], bias [10]) take the per-leaf
  path as the MLP's four do (whose operator the two tests above check), at a fraction of the
  compilation."""
  exp, final, states, lines = run(make_digits_config(method, model='logreg', d=64, per_leaf=True))
  alg = exp.algorithm
  theta = jax.jit(alg.model_params)(final)      # jittable (base.py): one program, not op by op
  assert all(np.isfinite(l['train_loss']) for l in lines)
  assert np.linalg.norm(flat(theta) - flat(exp.params0)) > 0
  e = len(states) + 1
  payload = alg.catch_up(final, 1)
  assert_close(theta, alg.rebuild(exp.init_state(), payload, 1, e), rtol=1e-5)


def test_per_leaf_bad_values_rejected(make_digits_config):
  c = make_digits_config('intrinsic_static')
  with c.ignore_type():
    c.method.per_leaf = 'yes'
  with pytest.raises(config_lib.ConfigError, match='method.per_leaf'):
    preflight.validate(c)
  c = make_digits_config('intrinsic_static', projection='identity', d=650, per_leaf=True)
  with pytest.raises(config_lib.ConfigError, match='method.per_leaf=True is invalid'):
    preflight.validate(c)


@pytest.mark.parametrize('method', INTRINSIC)
def test_weight_decay_pulls_toward_theta0(method, make_digits_config):
  """server SGD at η with weight decay λ and a zero aggregate: θ − θ0 → (1 − ηλ)(θ − θ0), the same
  in the three methods (decay toward θ0, intrinsic.py)."""
  eta, lam = 0.5, 0.2
  c = make_digits_config(method, d=32, num_subspaces=1) if method == 'intrinsic_k_subspace' else \
      make_digits_config(method, d=32)
  c.server.weight_decay = lam
  c.server.lr = eta
  exp = experiment.Experiment(c)
  alg = exp.algorithm
  model_params = jax.jit(alg.model_params)       # jittable (base.py): one program, not op by op
  state = exp.init_state()
  theta0 = flat(exp.params0)
  state, _ = exp.run_round(state, 1)                          # some displacement from θ0
  moved = flat(model_params(state)) - theta0
  assert np.linalg.norm(moved) > 0
  zero = jnp.zeros((32,), jnp.float32)
  after = jax.jit(alg.server_update)(state, zero, None)
  np.testing.assert_allclose(flat(model_params(after)) - theta0, (1 - eta * lam) * moved,
                             rtol=1e-4, atol=1e-6 * np.abs(moved).max())


@pytest.mark.parametrize('steps', [1, 3])
def test_client_local_steps_match_a_dense_oracle(make_digits_config, steps):
  # The intrinsic client (recipe.in_subspace): u from 0, `steps` SGD steps on L(θ + A u), upload
  # Δz = −u_end. Oracle: the same steps written with the dense matrix A (its lifted unit vectors)
  # in float64, u ← u − lr · Aᵀ ∇_θ L(θ + A u), with ∇_θ L from jax.grad of the plain model loss.
  # The client takes its first step without lifting u = 0, so this also pins that shortcut.
  from fedjax_intrinsic.algorithms import recipe
  c = make_digits_config('intrinsic_static', model='logreg', d=24, projection='fastfood')
  exp = experiment.Experiment(c)
  ctx = base.BuildContext(exp.model, exp.params0, exp.run_key, None, 0.5, 100, 1)
  sub = intrinsic.subspaces(c.method, ctx)
  state = sub.state(0)
  theta, unravel = ravel_pytree(exp.params0)
  theta = theta + 0.1 * jax.random.normal(jax.random.key(7), theta.shape)   # off θ0
  rng = np.random.default_rng(0)
  batches = {'x': jnp.asarray(rng.normal(size=(steps, 6, 8, 8, 1)), jnp.float32),
             'y': jnp.asarray(rng.integers(0, 10, size=(steps, 6)), jnp.int32),
             'mask': jnp.ones((steps, 6), jnp.float32)}
  dz, metrics = jax.jit(recipe.in_subspace(ctx, sub))(theta, batches, state)
  A = _dense(sub.op, state)
  grad = jax.jit(jax.grad(lambda th, b: base.model_loss(exp.model)(unravel(th), b)))
  u = np.zeros(sub.d)
  for s in range(steps):
    batch = {k: v[s] for k, v in batches.items()}
    point = jnp.asarray(np.asarray(theta, np.float64) + A @ u, jnp.float32)
    u = u - 0.5 * A.T @ np.asarray(grad(point, batch), np.float64)
  np.testing.assert_allclose(np.asarray(dz, np.float64), -u, rtol=1e-4, atol=1e-6)
  loss0 = base.model_loss(exp.model)(unravel(theta), {k: v[0] for k, v in batches.items()})
  np.testing.assert_allclose(float(metrics['loss']), float(loss0), rtol=1e-6)
  # Control: the first step alone is not what three steps give.
  if steps == 3:
    one_step = 0.5 * A.T @ np.asarray(grad(theta, {k: v[0] for k, v in batches.items()}),
                                      np.float64)
    assert np.max(np.abs(np.asarray(dz, np.float64) - one_step)) > 1e-3 * np.max(np.abs(one_step))
