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

How it is computed: one WHT of length L per call, plus one of length ``n`` = the next power
of two >= d. With Sylvester ordering, an index ``i < n`` satisfies
``H_L[i, m] = H_n[i, m mod n]``, so
- in ``lift``, ``H (B z)`` (nonzero on the first d entries only) is ``H_n (B z)[:n]`` tiled
  L/n times, and ``Π`` of it reads ``u[perm[i] mod n]`` from that length-n vector
  (``tile_gather``);
- in ``project``, ``(H w)[:n] = H_n fold(w)`` with ``fold(w)[j] = Σ_{m mod n = j} w[m]``,
  and ``fold(Πᵀ v)[j] = Σ_{k: perm[k] mod n = j} v[k]`` (``perm_fold``: on CPU a scatter-add
  by ``perm`` into n buckets, elsewhere a gather by ``inv_perm`` and a sum).
These are identities of the same operator (not approximations): results match the
literal product above up to float summation order. ``tile_gather`` and ``perm_fold`` are
primitives (``projections.native.cpu_primitive``), each the other's transpose, computed by
the C++ kernels on CPU and by gathers elsewhere; no D x d matrix ever exists.
For L <= ``native.FASTFOOD_FUSED_MAX_L`` (and the native WHT), ``project`` and ``lift`` are
one primitive each (``fused_project_p`` / ``fused_lift_p``, each the other's transpose): on CPU
one kernel carries each vector of a batch through all the steps in a cache-resident scratch,
bitwise the composition (``_project_xla`` / ``_lift_xla``) of the separate kernels on the same
batch; elsewhere it is that composition. In the composition the two diagonals next to the
length-L WHT go through ``fwht_diag`` (on CPU one kernel that multiplies inside the
transform's copies, bitwise the three steps apart).

State (``FastfoodState``): ``signs: f32[L]``, ``perm, inv_perm: int32[L]``,
``gauss: f32[L]``, ``scale: f32[]``; 16·L bytes. ``init`` draws all of it once per subspace
(the time-varying intrinsic method: once per round), never per call.

The permutation Π (option ``permutation``):
- ``'feistel'`` (default): ``perm[i] = F(i)`` for a keyed pseudorandom bijection F of
  ``[0, L = 2^n)``, an alternating unbalanced Feistel network of ``FEISTEL_ROUNDS = 6``
  rounds on the n-bit index (round functions murmur3 ``fmix32`` of the round input XOR a
  per-round u32 key drawn from the Π key; 32-bit integer arithmetic, any n >= 1), and
  ``inv_perm[k] = F⁻¹(k)`` from the same rounds in reverse. Both arrays are computed
  elementwise (no sort, no scatter). Π is a bijection for every key but is drawn from the
  keyed family, not exactly uniformly from all L! permutations; everything above that
  makes ``E[AᵀA] = I_d`` holds for any fixed Π (conditioning on Π), so the normalisation is
  unchanged. The indices are stored rather than recomputed in ``lift``/``project``
  (recomputing them in every call is slower: ``benchmarks/README.md``).
- ``'sort'``: an exactly uniform ``jax.random.permutation`` (a sort of L random keys) and
  its inverse by scatter.
The signs and Gaussians are the same draws under both options; only Π differs.

``init`` costs O(L) with 'feistel' (the Gaussian and sign draws plus two elementwise index
maps) and O(L log L) with 'sort' (impractical for one fresh subspace per round at large L);
measured figures: ``benchmarks/README.md``.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from projections import base
from projections import hadamard
from projections import native

PERMUTATIONS = ('feistel', 'sort')
FEISTEL_ROUNDS = 6


class FastfoodState(NamedTuple):
  """The random draws of one Fastfood subspace (L = padded length)."""
  signs: jax.Array     # f32[L], the ±1 diagonal B
  perm: jax.Array      # int32[L], Π: (Π v)_i = v[perm[i]]
  inv_perm: jax.Array  # int32[L], Πᵀ: (Πᵀ w)_k = w[inv_perm[k]]
  gauss: jax.Array     # f32[L], the N(0, 1) diagonal G
  scale: jax.Array     # f32[], s = 1 / sqrt(D · ||G||²)


def _fmix32(h: jax.Array) -> jax.Array:
  """murmur3's 32-bit finaliser, a bijective avalanche mix. h: u32[...] -> u32[...]."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _round_widths(n_bits: int, rounds: int) -> list[int]:
  """Width of the low (input) part of each round: alternating n//2, n - n//2."""
  a = n_bits // 2
  return [a if r % 2 == 0 else n_bits - a for r in range(rounds)]


def _check_feistel(keys: jax.Array, n_bits: int) -> int:
  n_bits = base.check_int(n_bits, 'n_bits', 1, 31, where=' for a Feistel permutation')
  if keys.ndim != 1 or keys.shape[0] < 1:
    raise ValueError(f'keys: a Feistel permutation needs shape (rounds,) with rounds >= 1, '
                     f'got {keys.shape}')
  return n_bits


def feistel_permutation(keys: jax.Array, x: jax.Array, n_bits: int) -> jax.Array:
  """A keyed bijection of ``[0, 2^n_bits)``, elementwise (alternating unbalanced Feistel).

  Round r splits ``x`` into ``high`` (``n_bits - w_r`` bits) and ``low`` (``w_r`` bits) and
  outputs ``(low << (n_bits - w_r)) | (high ^ F_r(low) mod 2^(n_bits - w_r))`` with
  ``F_r(low) = fmix32(low ^ keys[r])``; ``w_r`` alternates between ``n_bits // 2`` and
  ``n_bits - n_bits // 2``, so every round rewrites the part the previous one passed through.
  Each round is invertible, hence so is the map. 32-bit integer arithmetic only.

  Args:
    keys: u32[R], one key per round (R >= 1).
    x: int[...] with values in ``[0, 2^n_bits)``.
    n_bits: 1 <= n_bits <= 31.
  Returns:
    int32[...], the images of ``x``.
  """
  n_bits = _check_feistel(keys, n_bits)
  keys = keys.astype(jnp.uint32)
  x = jnp.asarray(x).astype(jnp.uint32)
  for r, w_lo in enumerate(_round_widths(n_bits, keys.shape[0])):
    w_hi = n_bits - w_lo
    low = x & jnp.uint32((1 << w_lo) - 1)
    high = x >> w_lo
    f = _fmix32(low ^ keys[r]) & jnp.uint32((1 << w_hi) - 1)
    x = (low << w_hi) | (high ^ f)
  return x.astype(jnp.int32)


def feistel_inverse(keys: jax.Array, y: jax.Array, n_bits: int) -> jax.Array:
  """The inverse of ``feistel_permutation(keys, ., n_bits)``, elementwise (rounds reversed).

  Args:
    keys: u32[R], the same round keys.
    y: int[...] with values in ``[0, 2^n_bits)``.
    n_bits: 1 <= n_bits <= 31.
  Returns:
    int32[...] ``x`` with ``feistel_permutation(keys, x, n_bits) == y``.
  """
  n_bits = _check_feistel(keys, n_bits)
  keys = keys.astype(jnp.uint32)
  y = jnp.asarray(y).astype(jnp.uint32)
  widths = _round_widths(n_bits, keys.shape[0])
  for r in reversed(range(len(widths))):
    w_lo = widths[r]
    w_hi = n_bits - w_lo
    low = y >> w_hi
    f = _fmix32(low ^ keys[r]) & jnp.uint32((1 << w_hi) - 1)
    high = (y & jnp.uint32((1 << w_hi) - 1)) ^ f
    y = (high << w_lo) | low
  return y.astype(jnp.int32)


def _tile_gather_xla(u: jax.Array, perm: jax.Array, inv_perm: jax.Array, n: int) -> jax.Array:
  """``out[..., i] = u[..., perm[i] mod n]``: u f[..., n] (n a power of two), perm i32[L]."""
  del inv_perm
  return u[..., perm & (n - 1)]


def _perm_fold_xla(v: jax.Array, perm: jax.Array, inv_perm: jax.Array, n: int) -> jax.Array:
  """``out[..., j] = Σ_{k: perm[k] mod n = j} v[..., k]``: v f[..., L] -> f[..., n]."""
  del perm
  w = v[..., inv_perm]  # w[m] = v[inv_perm[m]]: as m runs over [0, L), so does k = inv_perm[m]
  return w.reshape(v.shape[:-1] + (v.shape[-1] // n, n)).sum(axis=-2)


def tile_gather(u: jax.Array, perm: jax.Array, inv_perm: jax.Array) -> jax.Array:
  """``u[..., perm[i] mod n]`` for i < L: u f[..., n] (n a power of two <= L) -> f[..., L].

  Linear in u; its transpose is ``perm_fold(., perm, inv_perm, n)``. ``inv_perm`` (the
  inverse permutation of ``perm``) is read only by ``perm_fold``'s pure-JAX lowering.
  """
  return tile_gather_p.bind(u, perm, inv_perm, n=u.shape[-1])


def perm_fold(v: jax.Array, perm: jax.Array, inv_perm: jax.Array, n: int) -> jax.Array:
  """``Σ_{k: perm[k] mod n = j} v[..., k]`` for j < n: v f[..., L] -> f[..., n].

  Linear in v; its transpose is ``tile_gather(., perm, inv_perm)``. n: a power of two <= L.
  """
  return perm_fold_p.bind(v, perm, inv_perm, n=n)


tile_gather_p = native.cpu_primitive(
    'fedjax_tile_gather', _tile_gather_xla, native.TARGET_GATHER_TILE,
    transpose_fn=lambda ct, perm, inv_perm, n: perm_fold(ct, perm, inv_perm, n))
perm_fold_p = native.cpu_primitive(
    'fedjax_perm_fold', _perm_fold_xla, native.TARGET_FOLD_PERM,
    transpose_fn=lambda ct, perm, inv_perm, n: tile_gather(ct, perm, inv_perm))


def _native_wht(wht_method: str | None) -> bool:
  """Whether `wht_method` lets the kernels that compute the WHT natively run (None: the
  backend's default, native on CPU)."""
  return wht_method in (None, 'native')


def _fwht_diag_xla(x, pre, post, *, L, m, wht_method):
  """``(pad_L(x) · pre) H_L · post``: x f[..., m], pre / post f[L] or f[1] -> f[..., L]."""
  del m
  v = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, L - x.shape[-1])]) * pre
  return hadamard.fwht(v, wht_method) * post


def _fwht_diag_t(ct, pre, post, *, L, m, wht_method):
  """The transpose: ``((ct · post) H_L · pre)[..., :m]`` (H is symmetric)."""
  return fwht_diag_p.bind(ct, post, pre, L=L, m=L, wht_method=wht_method)[..., :m]


# A WHT between two diagonals, on CPU one kernel that does the multiplications inside the
# transform's own copies (bitwise the three steps apart), elsewhere those steps.
fwht_diag_p = native.cpu_primitive(
    'fedjax_fwht_diag', _fwht_diag_xla, native.TARGET_FWHT_DIAG, transpose_fn=_fwht_diag_t,
    attrs=lambda params: {'L': params['L']})


def fwht_diag(x, pre, post, L: int, wht_method: str | None = None) -> jax.Array:
  """``(pad_L(x) · pre) H_L · post`` over the last axis: x f[..., m] (m <= L), pre and post
  f[L] or f[1] (a scalar, as shape (1,)), all in one float dtype -> f[..., L]. With a WHT method
  other than the native one, the three steps apart."""
  params = {'L': L, 'm': x.shape[-1], 'wht_method': wht_method}
  if _native_wht(wht_method):
    return fwht_diag_p.bind(x, pre, post, **params)
  return _fwht_diag_xla(x, pre, post, **params)


def _project_xla(x, signs, perm, inv_perm, gauss, scale, *, D, d, n, wht_method):
  """``Aᵀ x`` as the composition: x f[..., D] -> f[..., d] (operands in the compute dtype)."""
  del D
  v = fwht_diag(x, scale[None], gauss, perm.shape[0], wht_method)             # G H s x
  u = hadamard.fwht(perm_fold(v, perm, inv_perm, n), wht_method)             # (H Πᵀ v)[:n]
  return u[..., :d] * signs[:d]


def _lift_xla(z, signs, perm, inv_perm, gauss, scale, *, D, d, n, wht_method):
  """``A z`` as the composition: z f[..., d] -> f[..., D] (operands in the compute dtype)."""
  u = hadamard.fwht(jnp.pad(z * signs[:d], [(0, 0)] * (z.ndim - 1) + [(0, n - d)]),
                    wht_method)                                               # (H B z)[:n]
  v = fwht_diag(tile_gather(u, perm, inv_perm), gauss, scale[None], perm.shape[0],
                wht_method)                                                   # s H G Π H B z
  return v[..., :D]


# The whole project / lift as one primitive each (each the other's transpose): on CPU, for L <=
# native.FASTFOOD_FUSED_MAX_L, one kernel that carries each vector through in a cache-resident
# scratch, bitwise the composition above; elsewhere the composition itself.
_FUSED_ATTRS = lambda params: {'n': params['n']}
fused_project_p = native.cpu_primitive(
    'fedjax_fastfood_project', _project_xla, native.TARGET_FASTFOOD_PROJECT,
    transpose_fn=lambda ct, *state, **params: fused_lift_p.bind(ct, *state, **params),
    attrs=_FUSED_ATTRS)
fused_lift_p = native.cpu_primitive(
    'fedjax_fastfood_lift', _lift_xla, native.TARGET_FASTFOOD_LIFT,
    transpose_fn=lambda ct, *state, **params: fused_project_p.bind(ct, *state, **params),
    attrs=_FUSED_ATTRS)


def fastfood(D: int, d: int, wht_method: str | None = None,
             permutation: str = 'feistel') -> base.Projection:
  """A Fastfood operator ``A: f[D, d]`` with ``E[AᵀA] = I_d``.

  Args:
    D: ambient dimension, >= 1.
    d: subspace dimension, 1 <= d <= D.
    wht_method: ``projections.hadamard`` method ('native', 'kron', 'butterfly') or None
      for the backend default, chosen when the function is traced.
    permutation: how ``init`` draws Π: 'feistel' (default; a keyed 6-round Feistel bijection
      of ``[0, L)`` evaluated elementwise, O(L) and cheap) or 'sort' (an exactly uniform
      permutation from ``jax.random.permutation``, a sort of L keys: slow for large L).
  Returns:
    A ``Projection``; its state is a ``FastfoodState`` of O(L) memory, L the next power of
    two >= D.
  """
  D, d = base.check_sizes('fastfood', D, d)
  if wht_method is not None and wht_method not in hadamard.METHODS:
    raise ValueError(f'wht_method: must be one of {hadamard.METHODS} or None, '
                     f'got {wht_method!r}')
  if permutation not in PERMUTATIONS:
    raise ValueError(f'permutation: must be one of {PERMUTATIONS}, got {permutation!r}')
  L = hadamard.next_power_of_two(max(D, d))
  n = hadamard.next_power_of_two(d)  # the block the first / last WHT works on
  where = f'fastfood(D={D}, d={d})'

  def init(key: jax.Array) -> FastfoodState:
    k_sign, k_perm, k_gauss = jax.random.split(key, 3)
    signs = jax.random.rademacher(k_sign, (L,), jnp.float32)
    if permutation == 'sort':
      perm = jax.random.permutation(k_perm, L).astype(jnp.int32)
      inv_perm = jnp.zeros((L,), jnp.int32).at[perm].set(
          jnp.arange(L, dtype=jnp.int32), unique_indices=True)
    elif L == 1:    # D = d = 1: the only permutation of [0, 1)
      perm = inv_perm = jnp.zeros((1,), jnp.int32)
    else:
      n_bits = L.bit_length() - 1
      round_keys = jax.random.bits(k_perm, (FEISTEL_ROUNDS,), jnp.uint32)
      idx = jnp.arange(L, dtype=jnp.int32)
      perm = feistel_permutation(round_keys, idx, n_bits)
      inv_perm = feistel_inverse(round_keys, idx, n_bits)
    gauss = jax.random.normal(k_gauss, (L,), jnp.float32)
    scale = jax.lax.rsqrt(jnp.float32(D) * jnp.sum(jnp.square(gauss)))
    return FastfoodState(signs, perm, inv_perm, gauss, scale)

  params = {'D': D, 'd': d, 'n': n, 'wht_method': wht_method}
  fused = L <= native.FASTFOOD_FUSED_MAX_L and _native_wht(wht_method)

  def operands(state, dt):
    return (state.signs.astype(dt), state.perm, state.inv_perm, state.gauss.astype(dt),
            state.scale.astype(dt))

  def lift(state: FastfoodState, z: jax.Array) -> jax.Array:
    """``x = A z``. z: f[d] -> f[D]."""
    z = base.check_vector(z, d, 'z', where + '.lift')
    dt = base.compute_dtype(z.dtype)
    args = (z.astype(dt),) + operands(state, dt)
    x = fused_lift_p.bind(*args, **params) if fused else _lift_xla(*args, **params)
    return x.astype(z.dtype)

  def project(state: FastfoodState, x: jax.Array) -> jax.Array:
    """``y = Aᵀ x``. x: f[D] -> f[d]."""
    x = base.check_vector(x, D, 'x', where + '.project')
    dt = base.compute_dtype(x.dtype)
    args = (x.astype(dt),) + operands(state, dt)
    y = fused_project_p.bind(*args, **params) if fused else _project_xla(*args, **params)
    return y.astype(x.dtype)

  return base.Projection(D=D, d=d, init=init, project=project, lift=lift, name='fastfood')
