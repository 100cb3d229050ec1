"""Fastfood projection (Le, Sarlós & Smola 2013), as used for intrinsic dimension (Li et al. 2018).

With ``L = 2^ceil(log2 max(D, d))`` (one L-block: L >= max(D, d) always), the operator is

  ``A = s · [I_D 0] · H G Π H B · [I_d; 0]``            (A: f[D, d])

with ``H`` the L x L Walsh-Hadamard matrix (entries ±1, ``projections.hadamard``), ``B`` a
random ±1 diagonal, ``Π`` a uniformly random permutation (``(Π v)_i = v[perm[i]]``), ``G`` a
diagonal of i.i.d. N(0, 1) and the scalar ``s = 1 / sqrt(D · ||g||²)``.

Normaliser. Column j of the full L x L product ``M = H G Π H B`` is ``H (g ⊙ u)`` with
``u = Π H B e_j`` a ±1 vector, so ``(M e_j)_i = Σ_m H_im g_m u_m``. Conditioned on ``||g||``
the direction of g is uniform, so ``E[g_m g_n | ||g||] = δ_mn ||g||² / L`` and
``E[(M e_j)_i (M e_k)_i | ||g||] = (||g||² / L) Σ_m u_m u'_m = ||g||² δ_jk`` for every row i
(distinct columns of ``H B`` are orthogonal). Summing the D kept rows gives
``E[(AᵀA)_jk] = s² D ||g||² δ_jk = δ_jk``: ``E[AᵀA] = I_d`` exactly, even conditioned on
``B``, ``Π`` and ``||g||``. When ``D = L`` every column has norm exactly 1 (``||M e_j||² =
L ||g||²``). This is Li et al.'s normaliser ``sqrt(L ||g||²)`` with the cut to D rows
(``sqrt(D / L)``) folded in.

``lift``: z -> zero-pad to L -> ·B -> H -> Π (gather ``perm``) -> ·G -> H -> ·s -> first D.
``project`` is the exact adjoint, each step transposed in reverse order:
x -> zero-pad to L -> ·s -> H -> ·G -> Πᵀ (gather ``inv_perm``) -> H -> ·B -> first d.
Cost per call: two WHTs of length L plus a gather; no D x d matrix ever exists.

State (``FastfoodState``): ``signs: f32[L]``, ``perm, inv_perm: int32[L]``,
``gauss: f32[L]``, ``scale: f32[]``; 16·L bytes. ``init`` draws all of it once per subspace;
its cost is dominated by ``jax.random.permutation`` (a sort of L random keys): measured on
this project's 2-core CPU host, about 0.5 s for L = 2^20 and 3.5 s for L = 2^22 (jit, after
compilation); cheap enough for one fresh subspace per round, never done per call.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from projections import base
from projections import hadamard


class FastfoodState(NamedTuple):
  """The random draws of one Fastfood subspace (L = padded length)."""
  signs: jax.Array     # f32[L], the ±1 diagonal B
  perm: jax.Array      # int32[L], Π: (Π v)_i = v[perm[i]]
  inv_perm: jax.Array  # int32[L], Πᵀ: (Πᵀ w)_k = w[inv_perm[k]]
  gauss: jax.Array     # f32[L], the N(0, 1) diagonal G
  scale: jax.Array     # f32[], s = 1 / sqrt(D · ||G||²)


def fastfood(D: int, d: int, wht_method: str | None = None) -> base.Projection:
  """A Fastfood operator ``A: f[D, d]`` with ``E[AᵀA] = I_d``.

  Args:
    D: ambient dimension, >= 1.
    d: subspace dimension, 1 <= d <= D.
    wht_method: ``projections.hadamard`` method ('kron', 'butterfly') or None for the
      backend default, chosen when the function is traced.
  Returns:
    A ``Projection``; its state is a ``FastfoodState`` of O(L) memory, L the next power of
    two >= D.
  """
  D, d = base.check_sizes('fastfood', D, d)
  if wht_method is not None and wht_method not in hadamard.METHODS:
    raise ValueError(f'wht_method: must be one of {hadamard.METHODS} or None, '
                     f'got {wht_method!r}')
  L = hadamard.next_power_of_two(max(D, d))
  where = f'fastfood(D={D}, d={d})'

  def wht(v):
    return hadamard.fwht(v, wht_method)

  def init(key: jax.Array) -> FastfoodState:
    k_sign, k_perm, k_gauss = jax.random.split(key, 3)
    signs = jax.random.rademacher(k_sign, (L,), jnp.float32)
    perm = jax.random.permutation(k_perm, L).astype(jnp.int32)
    inv_perm = jnp.zeros((L,), jnp.int32).at[perm].set(
        jnp.arange(L, dtype=jnp.int32), unique_indices=True)
    gauss = jax.random.normal(k_gauss, (L,), jnp.float32)
    scale = jax.lax.rsqrt(jnp.float32(D) * jnp.sum(jnp.square(gauss)))
    return FastfoodState(signs, perm, inv_perm, gauss, scale)

  def lift(state: FastfoodState, z: jax.Array) -> jax.Array:
    """``x = A z``. z: f[d] -> f[D]."""
    z = base.check_vector(z, d, 'z', where + '.lift')
    dt = base.compute_dtype(z.dtype)
    v = jnp.pad(z.astype(dt), (0, L - d))
    v = wht(v * state.signs.astype(dt))
    v = v[state.perm] * state.gauss.astype(dt)
    v = wht(v) * state.scale.astype(dt)
    return v[:D].astype(z.dtype)

  def project(state: FastfoodState, x: jax.Array) -> jax.Array:
    """``y = Aᵀ x``. x: f[D] -> f[d]."""
    x = base.check_vector(x, D, 'x', where + '.project')
    dt = base.compute_dtype(x.dtype)
    v = jnp.pad(x.astype(dt), (0, L - D)) * state.scale.astype(dt)
    v = wht(v) * state.gauss.astype(dt)
    v = wht(v[state.inv_perm]) * state.signs.astype(dt)
    return v[:d].astype(x.dtype)

  return base.Projection(D=D, d=d, init=init, project=project, lift=lift, name='fastfood')
