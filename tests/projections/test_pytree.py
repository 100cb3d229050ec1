"""Pytree projections: global (raveled) and per-leaf, against the operators they wrap."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import projections as P
from projections import pytree

KEY = jax.random.PRNGKey(0)


def params(dtype=jnp.float32):
  """A small parameter tree: 3 leaves of sizes 12, 3, 5 in tree_flatten order."""
  rng = np.random.default_rng(0)
  return {
      'dense': {'kernel': jnp.asarray(rng.standard_normal((4, 3)), dtype),
                'bias': jnp.asarray(rng.standard_normal(3), dtype)},
      'out': jnp.asarray(rng.standard_normal(5), dtype),
  }


def tree_vdot(a, b) -> float:
  return sum(float(jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32)))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_ravel_round_trip():
  tree = params()
  flat, unravel = P.ravel(tree)
  assert flat.shape == (20,)
  # tree_flatten order: dense/bias (3), dense/kernel (12), out (5).
  np.testing.assert_array_equal(flat[:3], tree['dense']['bias'])
  back = unravel(flat)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, tree)


def test_global_projection_is_op_on_raveled_tree():
  tree = params()
  op = P.fastfood(20, 7)
  tp = P.global_projection(op, jax.eval_shape(lambda: tree))   # a ShapeDtypeStruct template
  assert (tp.D, tp.d, tp.name, tp.leaf_D, tp.leaf_d) == (20, 7, 'fastfood', (3, 12, 5), None)
  st = jax.jit(tp.init)(KEY)
  flat, unravel = P.ravel(tree)
  y = jax.jit(tp.project)(st, tree)
  np.testing.assert_array_equal(y, jax.jit(op.project)(st, flat))
  z = jnp.arange(7.0)
  lifted = jax.jit(tp.lift)(st, z)
  jax.tree_util.tree_map(np.testing.assert_array_equal, lifted,
                         unravel(jax.jit(op.lift)(st, z)))
  np.testing.assert_allclose(tree_vdot(lifted, tree), float(jnp.vdot(z, y)),
                             rtol=1e-5)


def test_global_projection_checks_sizes_and_structure():
  tree = params()
  with pytest.raises(ValueError, match='^op: D = 21 but the template has 20 parameters'):
    P.global_projection(P.fastfood(21, 7), tree)
  tp = P.global_projection(P.identity(20), tree)
  with pytest.raises(ValueError, match='^tree: .*structure'):
    tp.project(tp.init(KEY), {'out': tree['out']})
  bad = dict(tree, out=jnp.ones(6))
  with pytest.raises(ValueError, match=r'^tree: .*leaf 2 of shape \(5,\), got \(6,\)'):
    tp.project(tp.init(KEY), bad)


@pytest.mark.parametrize('name', ['fastfood', 'sparse', 'dense_gaussian'])
def test_per_leaf_matches_leafwise_operators(name):
  tree = params()
  factory = functools.partial(P.get, name)
  tp = P.per_leaf(factory, tree, d=9)
  assert tp.leaf_D == (3, 12, 5) and sum(tp.leaf_d) == tp.d == 9
  assert tp.name == f'per_leaf({name})'
  key = jax.random.PRNGKey(11)
  leaves = jax.tree_util.tree_leaves(tree)
  bounds = np.cumsum((0,) + tp.leaf_d)
  z = jnp.asarray(np.random.default_rng(1).standard_normal(9), jnp.float32)

  @jax.jit
  def whole(key, tree, z):
    st = tp.init(key)
    return st, tp.project(st, tree), tp.lift(st, z)

  st, y, lifted = whole(key, tree, z)
  lifted = jax.tree_util.tree_leaves(lifted)
  ops = [factory(D=Di, d=di) for Di, di in zip(tp.leaf_D, tp.leaf_d)]

  @jax.jit
  def leafwise(key, leaves, z):   # the reference, leaf by leaf, in one compilation
    out = []
    for i, (op, leaf) in enumerate(zip(ops, leaves)):
      sti = op.init(jax.random.fold_in(key, i))   # docs/paper.md §2: leaf i uses fold_in(key, i)
      out.append((sti, op.project(sti, leaf.reshape(-1)),
                  op.lift(sti, z[bounds[i]:bounds[i + 1]]).reshape(leaf.shape)))
    return out

  for i, (sti, yi, xi) in enumerate(leafwise(key, leaves, z)):
    for u, v in zip(jax.tree_util.tree_leaves(st[i]), jax.tree_util.tree_leaves(sti)):
      np.testing.assert_array_equal(u, v)
    np.testing.assert_allclose(y[bounds[i]:bounds[i + 1]], yi, atol=1e-6)
    np.testing.assert_allclose(lifted[i], xi, atol=1e-6)
  # Adjointness on trees: <lift(z), tree> = <z, project(tree)>.
  np.testing.assert_allclose(tree_vdot(jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(tree), lifted), tree), float(jnp.vdot(z, y)), rtol=1e-5)


def test_per_leaf_vmap_over_states_and_bfloat16_leaves():
  tree = params(jnp.bfloat16)
  tp = P.per_leaf(P.fastfood, tree, fraction=0.5)
  assert tp.leaf_d == (2, 6, 2)
  keys = jax.random.split(KEY, 3)
  init, project, lift = jax.jit(tp.init), jax.jit(tp.project), jax.jit(tp.lift)
  # The three states from the jitted init, stacked: vmapping init over keys compiles slowly (XLA:CPU
  # random bits for [3, L] shapes) and is the operators' own vmap (test_operators.py::
  # test_vmap_over_states_and_vectors_matches_loop[fastfood-*] vmaps op.init over keys).
  singles = [init(k) for k in keys]
  states = jax.tree.map(lambda *a: jnp.stack(a), *singles)

  @jax.jit
  def both(states):
    return (jax.vmap(tp.project, (0, None))(states, tree),
            jax.vmap(tp.lift, (0, None))(states, jnp.ones(10)))

  ys, lifted = both(states)
  assert ys.dtype == jnp.bfloat16 and ys.shape == (3, 10)
  assert lifted['dense']['kernel'].dtype == jnp.bfloat16
  assert lifted['dense']['kernel'].shape == (3, 4, 3)
  for i, st in enumerate(singles):
    np.testing.assert_allclose(np.asarray(ys[i], np.float32),
                               np.asarray(project(st, tree), np.float32), rtol=1e-2, atol=1e-2)
    np.testing.assert_array_equal(lifted['out'][i], lift(st, jnp.ones(10))['out'])


def test_per_leaf_identity_with_full_fraction_is_ravel():
  tree = params()
  tp = P.per_leaf(P.identity, tree, fraction=1.0)
  st = tp.init(KEY)
  np.testing.assert_array_equal(tp.project(st, tree), P.ravel(tree)[0])
  jax.tree_util.tree_map(np.testing.assert_array_equal, tp.lift(st, P.ravel(tree)[0]), tree)


def test_split_dims():
  assert P.split_dims([3, 12, 5], 3) == (1, 1, 1)
  assert P.split_dims([3, 12, 5], 20) == (3, 12, 5)
  assert P.split_dims([3, 12, 5], 9) == (2, 5, 2)   # spare 6 over room (2, 11, 4)
  sizes = [1, 1000, 7, 300, 1]
  for d in (5, 6, 77, 1000, 1309):
    dims = P.split_dims(sizes, d)
    assert sum(dims) == d and all(1 <= k <= s for k, s in zip(dims, sizes))
  with pytest.raises(ValueError, match='^d: .*3 <= d <= 20'):
    P.split_dims([3, 12, 5], 2)
  with pytest.raises(ValueError, match='^d: '):
    P.split_dims([3, 12, 5], 21)


def test_per_leaf_bad_arguments():
  tree = params()
  with pytest.raises(ValueError, match='^d, fraction, leaf_d: give exactly one'):
    P.per_leaf(P.fastfood, tree)
  with pytest.raises(ValueError, match='^d, fraction, leaf_d: give exactly one'):
    P.per_leaf(P.fastfood, tree, d=5, fraction=0.5)
  with pytest.raises(ValueError, match='^fraction: '):
    P.per_leaf(P.fastfood, tree, fraction=1.5)
  with pytest.raises(ValueError, match='^leaf_d: needs one entry per leaf'):
    P.per_leaf(P.fastfood, tree, leaf_d=(1, 2))
  with pytest.raises(ValueError, match='^d: '):
    P.per_leaf(P.fastfood, tree, leaf_d=(1, 13, 2))   # 13 > 12 parameters in leaf 1
  with pytest.raises(ValueError, match='^template: '):
    P.per_leaf(P.fastfood, {'w': jnp.ones(3, jnp.int32)}, d=1)
  tp = P.per_leaf(P.fastfood, tree, leaf_d=(1, 2, 3))
  with pytest.raises(ValueError, match=r'^z: .*needs shape \(6,\)'):
    tp.lift(jax.jit(tp.init)(KEY), jnp.ones(5))   # a jitted init: one compilation, not op by op


def test_keys_module_agrees_with_fold_in_convention():
  """The run's subspace key feeds per_leaf directly; leaf i gets fold_in(subspace_key, i)."""
  from fedjax_intrinsic import keys as K  # pylint: disable=g-import-not-at-top
  sk = K.subspace_key(K.run_key(0), 3)
  tp = P.per_leaf(P.sparse, params(), leaf_d=(1, 2, 3))
  st = jax.jit(tp.init)(sk)
  np.testing.assert_array_equal(st[2].cols,
                                jax.jit(P.sparse(5, 3).init)(jax.random.fold_in(sk, 2)).cols)
  assert pytree.TreeProjection is P.TreeProjection
