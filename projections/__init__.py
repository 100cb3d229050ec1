"""Random projections and gradient compressors, with no federated knowledge.

Operators ``A: f[D, d]`` (never stored; ``E[AᵀA] = I_d``; see ``projections.base``)::

  op = projections.fastfood(D, d)     # or dense_gaussian, sparse, identity(D)
  op = projections.get('fastfood', D=D, d=d)   # by name; names in OPERATORS
  state = op.init(key)                # random state, O(D) memory
  y = op.project(state, x)            # x: f[D] -> f[d], y = Aᵀ x (what a client uploads)
  x = op.lift(state, z)               # z: f[d] -> f[D], x = A z (theta = theta0 + A z)

Pytrees: ``ravel``, ``global_projection`` (one operator over the raveled parameters, the
default) and ``per_leaf`` (one operator per leaf), in ``projections.pytree``.
Walsh-Hadamard transforms: ``projections.hadamard``. Count sketches and sparsifiers:
``count_sketch``, ``top_k``, ``random_k``, ``densify``.
"""
from projections.base import Projection
from projections.dense import dense_gaussian, DenseGaussianState
from projections.fastfood import fastfood, FastfoodState
from projections.hadamard import fwht, default_wht_method
from projections.identity import identity, IdentityState
from projections.pytree import ravel, global_projection, per_leaf, split_dims, TreeProjection
from projections.registry import get, OPERATORS
from projections.sketch import count_sketch, CountSketch, CountSketchState
from projections.sparse import sparse, SparseState
from projections.sparsify import top_k, random_k, densify
