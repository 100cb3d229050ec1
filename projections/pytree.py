"""Projections of parameter pytrees: one global operator, or one operator per leaf.

``ravel(tree) -> (flat: f[D], unravel)`` flattens a pytree (``jax.flatten_util``).

Both modes return a ``TreeProjection``, the ``Projection`` interface with trees on the
parameter side:

  ``tp.init(key) -> state``; ``tp.project(state, tree) -> f[d]``;
  ``tp.lift(state, z: f[d]) -> tree`` (leaves in the template's shapes and dtypes).

- ``global_projection(op, template)``: the default elsewhere. One operator ``op`` over the
  raveled tree (``op.D`` must equal the tree's size; leaves in ``tree_flatten`` order).
  The state is ``op``'s state.
- ``per_leaf(factory, template, d=... | fraction=... | leaf_d=...)``: leaf i (in
  ``tree_flatten`` order) gets its own ``factory(D=D_i, d=d_i)`` with key
  ``fold_in(subspace_key, i)`` (docs/paper.md §2); ``project`` concatenates the leaves'
  ``f[d_i]`` into ``f[d]`` (``d = Σ d_i``, leaf 0 first) and ``lift`` splits ``z`` the same
  way. The state is a tuple of the leaves' states. Choose the split with exactly one of:
    ``d``: a total, split in proportion to leaf sizes with every leaf getting at least one
      dimension (``split_dims``);
    ``fraction``: ``d_i = clip(round(fraction · D_i), 1, D_i)``;
    ``leaf_d``: the d_i themselves, one per leaf.

``template`` is a pytree of arrays or ``jax.ShapeDtypeStruct``; only shapes, dtypes and
the structure are used. The returned functions are pure, and work under ``jit`` and
``vmap`` like the operators they wrap.
"""
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import flatten_util

from projections import base


def ravel(tree) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
  """``(flat: f[D], unravel)`` with ``unravel(flat)`` rebuilding ``tree``'s structure."""
  return flatten_util.ravel_pytree(tree)


class TreeProjection(NamedTuple):
  """A projection whose parameter side is a pytree shaped like a template.

  Attributes:
    D: total number of parameters.
    d: total subspace dimension (what travels).
    init: ``init(key) -> state``.
    project: ``project(state, tree) -> f[d]``.
    lift: ``lift(state, z: f[d]) -> tree``.
    name: e.g. 'fastfood' (global) or 'per_leaf(fastfood)'.
    leaf_D: each leaf's size, in ``tree_flatten`` order.
    leaf_d: each leaf's subspace size (per-leaf mode), or None (global mode).
  """
  D: int
  d: int
  init: Callable[[jax.Array], Any]
  project: Callable[[Any, Any], jax.Array]
  lift: Callable[[Any, jax.Array], Any]
  name: str
  leaf_D: tuple[int, ...]
  leaf_d: tuple[int, ...] | None


class _Layout(NamedTuple):
  treedef: Any
  shapes: tuple[tuple[int, ...], ...]
  dtypes: tuple[Any, ...]
  sizes: tuple[int, ...]


def _layout(template) -> _Layout:
  leaves, treedef = jax.tree_util.tree_flatten(template)
  if not leaves:
    raise ValueError('template: the parameter pytree has no leaves')
  shapes = tuple(tuple(np.shape(l)) for l in leaves)
  dtypes = tuple(jnp.dtype(l.dtype if hasattr(l, 'dtype') else jnp.result_type(l))
                 for l in leaves)
  for i, dt in enumerate(dtypes):
    if not jnp.issubdtype(dt, jnp.floating):
      raise ValueError(f'template: leaf {i} has dtype {dt.name}; leaves must be floating')
  sizes = tuple(int(np.prod(s, dtype=np.int64)) for s in shapes)
  return _Layout(treedef, shapes, dtypes, sizes)


def _leaves(layout: _Layout, tree, where: str) -> list[jax.Array]:
  """The leaves of ``tree``, checked against the template's structure and shapes."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  if treedef != layout.treedef:
    raise ValueError(f'tree: {where} expects structure {layout.treedef}, got {treedef}')
  for i, (leaf, shape) in enumerate(zip(leaves, layout.shapes)):
    if tuple(np.shape(leaf)) != shape:
      raise ValueError(f'tree: {where} expects leaf {i} of shape {shape}, '
                       f'got {tuple(np.shape(leaf))}')
  return [jnp.asarray(l) for l in leaves]


def _unflatten(layout: _Layout, pieces: Sequence[jax.Array]):
  leaves = [p.reshape(s).astype(dt) for p, s, dt in zip(pieces, layout.shapes, layout.dtypes)]
  return jax.tree_util.tree_unflatten(layout.treedef, leaves)


def _offsets(sizes: Sequence[int]) -> list[int]:
  return [int(o) for o in np.cumsum((0,) + tuple(sizes))]


def global_projection(op: base.Projection, template) -> TreeProjection:
  """One operator over the raveled tree: ``project(state, tree) = op.project(state, ravel)``.

  Args:
    op: a ``Projection`` with ``op.D`` equal to the template's number of parameters.
    template: the parameter pytree (arrays or ``jax.ShapeDtypeStruct``).
  """
  layout = _layout(template)
  D = sum(layout.sizes)
  if op.D != D:
    raise ValueError(f'op: D = {op.D} but the template has {D} parameters')
  bounds = _offsets(layout.sizes)
  where = f'global_projection({op.name})'

  def project(state, tree) -> jax.Array:
    """tree -> ``Aᵀ ravel(tree)``: f[d] in the leaves' promoted dtype."""
    leaves = _leaves(layout, tree, where + '.project')
    flat = jnp.concatenate([l.reshape(-1) for l in leaves]) if len(leaves) > 1 else (
        leaves[0].reshape(-1))
    return op.project(state, flat)

  def lift(state, z: jax.Array):
    """z: f[d] -> tree of ``A z`` in the template's shapes and dtypes."""
    x = op.lift(state, z)
    return _unflatten(layout, [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])])

  return TreeProjection(D=D, d=op.d, init=op.init, project=project, lift=lift,
                        name=op.name, leaf_D=layout.sizes, leaf_d=None)


def split_dims(sizes: Sequence[int], d: int) -> tuple[int, ...]:
  """Splits a total ``d`` over leaves of the given sizes, each getting 1 <= d_i <= D_i.

  Every leaf gets one dimension; the other ``d − n`` are shared in proportion to
  ``D_i − 1`` by the largest-remainder method (ties to the earlier leaf). Needs
  ``n <= d <= Σ D_i``; the result sums to ``d``.
  """
  sizes = [base.check_int(s, 'sizes[i]', 1) for s in sizes]
  n, total = len(sizes), sum(sizes)
  d = base.check_int(d, 'd', n, total, where=f' (one per leaf, at most the {total} '
                     f'parameters, over {n} leaves)')
  spare = d - n
  room = [s - 1 for s in sizes]
  room_total = sum(room)
  if spare == 0 or room_total == 0:
    return tuple([1] * n)
  quotas = [spare * r / room_total for r in room]
  extra = [int(np.floor(q)) for q in quotas]
  left = spare - sum(extra)
  order = sorted(range(n), key=lambda i: (-(quotas[i] - extra[i]), i))
  for i in order[:left]:
    extra[i] += 1
  return tuple(1 + e for e in extra)


def per_leaf(factory: Callable[..., base.Projection], template, *, d: int | None = None,
             fraction: float | None = None,
             leaf_d: Sequence[int] | None = None) -> TreeProjection:
  """One operator per leaf, leaf i keyed by ``fold_in(key, i)`` (``tree_flatten`` order).

  Args:
    factory: ``factory(D=..., d=...) -> Projection``, e.g. ``projections.fastfood`` or
      ``functools.partial(projections.get, 'sparse', s=2)``.
    template: the parameter pytree (arrays or ``jax.ShapeDtypeStruct``).
    d: total subspace size, split by ``split_dims``; or
    fraction: in (0, 1], ``d_i = clip(round(fraction · D_i), 1, D_i)``; or
    leaf_d: one ``d_i`` per leaf. Exactly one of the three.
  Returns:
    A ``TreeProjection``; its state is a tuple of the leaves' states.
  """
  layout = _layout(template)
  n = len(layout.sizes)
  given = [k for k, v in (('d', d), ('fraction', fraction), ('leaf_d', leaf_d)) if v is not None]
  if len(given) != 1:
    raise ValueError(f'd, fraction, leaf_d: give exactly one of them, got {given or "none"}')
  if d is not None:
    dims = split_dims(layout.sizes, d)
  elif fraction is not None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
        0 < fraction <= 1):
      raise ValueError(f'fraction: must be a number in (0, 1], got {fraction!r}')
    dims = tuple(int(min(max(round(fraction * s), 1), s)) for s in layout.sizes)
  else:
    dims = tuple(leaf_d)
    if len(dims) != n:
      raise ValueError(f'leaf_d: needs one entry per leaf ({n}), got {len(dims)}')
  ops = tuple(factory(D=s, d=k) for s, k in zip(layout.sizes, dims))
  dims = tuple(op.d for op in ops)
  bounds = _offsets(dims)
  name = f'per_leaf({ops[0].name})'

  def init(key: jax.Array) -> tuple:
    return tuple(op.init(jax.random.fold_in(key, i)) for i, op in enumerate(ops))

  def project(state: tuple, tree) -> jax.Array:
    """tree -> concat_i ``A_iᵀ leaf_i``: f[d]."""
    leaves = _leaves(layout, tree, name + '.project')
    parts = [op.project(st, l.reshape(-1)) for op, st, l in zip(ops, state, leaves)]
    return jnp.concatenate(parts) if n > 1 else parts[0]

  def lift(state: tuple, z: jax.Array):
    """z: f[d] -> tree with leaf i = ``A_i z[bounds_i]`` in the template's shape/dtype."""
    z = base.check_vector(z, bounds[-1], 'z', name + '.lift')
    parts = [op.lift(st, z[a:b]) for op, st, a, b in zip(ops, state, bounds[:-1], bounds[1:])]
    return _unflatten(layout, parts)

  return TreeProjection(D=sum(layout.sizes), d=bounds[-1], init=init, project=project,
                        lift=lift, name=name, leaf_D=layout.sizes, leaf_d=dims)
