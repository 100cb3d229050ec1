"""Fast Walsh-Hadamard transform (unnormalised, Sylvester order), three implementations.

``fwht(x)`` returns ``x @ H_L`` along the last axis, with ``H_L`` the L x L Sylvester
Hadamard matrix (entries ±1, ``H_1 = [1]``, ``H_2m = [[H_m, H_m], [H_m, -H_m]]``), so
``H_L`` is symmetric and ``H_L @ H_L = L * I``. ``x: f[..., L]`` with ``L`` a power of two;
leading axes are a batch (``vmap`` works too). Output dtype = input dtype; bfloat16 and
float16 inputs are computed in float32. Every method is pure, jittable, vmappable and
differentiable (the transform is linear and self-adjoint: its VJP and its transpose are the
transform itself).

Methods:
- ``'native'``: the JAX primitive ``fwht_p``. On the CPU backend it lowers to the
  cache-blocked C++ kernel of ``projections.native`` (float32; float64 and a machine where
  the kernel cannot be built use ``'butterfly'``); on every other platform it lowers to
  ``'kron'``. Its JVP and transpose rules bind ``fwht_p`` again; its batching rule folds
  the batch into the leading axes.
- ``'kron'``: ``H_L = H_{2^a1} ⊗ H_{2^a2} ⊗ ...`` with factors of at most ``block``
  (default 128) entries. The vector is reshaped to ``[..., 2^a1, 2^a2, ...]`` and each axis
  is multiplied by a small dense Sylvester matrix (einsum at HIGHEST precision), so the
  work lands on matrix units (the FedJAX approach, TPU-friendly): ``L * sum(2^ai)`` MACs.
- ``'butterfly'``: ``log2 L`` passes of reshape-add-sub, ``L log2 L`` adds.

``default_wht_method(backend)`` picks one per backend; ``benchmarks/projections.py``
measures all three (figures in ``benchmarks/README.md``).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from projections import native

METHODS = ('native', 'butterfly', 'kron')


def default_wht_method(backend: str) -> str:
  """The WHT method used when ``fwht(..., method=None)``, by JAX backend name.

  Args:
    backend: e.g. ``jax.default_backend()``: 'cpu', 'gpu', 'cuda', 'rocm', 'tpu'.
  Returns:
    One of ``METHODS``. CPU: 'native' when ``projections.native.available()`` (it builds
    the kernel on the first call), else 'butterfly'. Accelerators with matrix units (GPU,
    TPU and any other backend): 'kron'.
  """
  if not isinstance(backend, str):
    raise ValueError(f'backend: expected a backend name string such as "cpu", got {backend!r}')
  if backend.lower() != 'cpu':
    return 'kron'
  return 'native' if native.available() else 'butterfly'


def sylvester(n: int, dtype=np.float32) -> np.ndarray:
  """The n x n Sylvester Hadamard matrix (numpy, entries ±1); n a power of two."""
  _check_power_of_two(n, 'n')
  h = np.ones((1, 1), dtype)
  while h.shape[0] < n:
    h = np.block([[h, h], [h, -h]])
  return h


def _check_power_of_two(n, name: str) -> int:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 or n & (n - 1):
    raise ValueError(f'{name}: must be a power of two >= 1 (1, 2, 4, ...), got {n!r}')
  return int(n)


def _compute_dtype(dtype):
  """float32 for 16-bit floats, the dtype itself for float32/float64."""
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'x: dtype must be floating (float16, bfloat16, float32, float64), '
                     f'got {jnp.dtype(dtype).name}')
  return jnp.promote_types(dtype, jnp.float32)


def fwht_butterfly(x: jax.Array) -> jax.Array:
  """``x @ H_L`` on the last axis by log2(L) add/sub passes. x: f[..., L]."""
  L = _check_power_of_two(x.shape[-1], 'x.shape[-1]')
  batch = x.shape[:-1]
  h = 1
  while h < L:
    # Index bit of weight h: x[..., hi, bit, lo] with lo of size h.
    y = x.reshape(batch + (L // (2 * h), 2, h))
    a, b = y[..., 0, :], y[..., 1, :]
    x = jnp.stack([a + b, a - b], axis=-2).reshape(batch + (L,))
    h *= 2
  return x


def _factor_sizes(L: int, block: int) -> list[int]:
  """Powers of two, each <= block, whose product is L (largest first)."""
  sizes = []
  while L > 1:
    m = min(L, block)
    sizes.append(m)
    L //= m
  return sizes


def fwht_kron(x: jax.Array, block: int = 128) -> jax.Array:
  """``x @ H_L`` on the last axis via Kronecker factors of size <= block. x: f[..., L]."""
  L = _check_power_of_two(x.shape[-1], 'x.shape[-1]')
  block = _check_power_of_two(block, 'block')
  if block < 2:
    raise ValueError(f'block: must be a power of two >= 2, got {block}')
  batch = x.shape[:-1]
  outer = 1  # product of the factor sizes already handled (more significant index bits)
  for m in _factor_sizes(L, block):
    h = jnp.asarray(sylvester(m), x.dtype)
    inner = L // (outer * m)
    y = x.reshape(batch + (outer, m, inner))
    y = jnp.einsum('...omi,mn->...oni', y, h, precision=jax.lax.Precision.HIGHEST)
    x = y.reshape(batch + (L,))
    outer *= m
  return x


def fwht(x: jax.Array, method: str | None = None) -> jax.Array:
  """Unnormalised Walsh-Hadamard transform ``x @ H_L`` over the last axis.

  Args:
    x: f[..., L], L a power of two; leading axes are a batch.
    method: 'native', 'kron', 'butterfly' or None for ``default_wht_method(jax.default_backend())``.
  Returns:
    f[..., L] in x's dtype.
  """
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError(f'x: must have at least one axis (f[..., L]), got shape {x.shape}')
  compute = _compute_dtype(x.dtype)
  if method is None:
    method = default_wht_method(jax.default_backend())
  if method not in METHODS:
    raise ValueError(f'method: must be one of {METHODS} or None, got {method!r}')
  _check_power_of_two(x.shape[-1], 'x.shape[-1]')
  return _fwht_jit(x, method, compute)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _fwht_jit(x: jax.Array, method: str, compute) -> jax.Array:
  """Jitted so that eager callers do not dispatch log2(L) passes one by one."""
  y = x.astype(compute)
  if method == 'native':
    y = fwht_p.bind(y)
  else:
    y = fwht_kron(y) if method == 'kron' else fwht_butterfly(y)
  return y.astype(x.dtype)


def next_power_of_two(n: int) -> int:
  """Smallest power of two >= n (n >= 1)."""
  return 1 << (int(n) - 1).bit_length()


# The 'native' primitive ---------------------------------------------------------------

# CPU: the C++ kernel (float32), else the butterfly; every other platform: kron. Linear and
# self-adjoint, so its transpose (and VJP) is itself.
fwht_p = native.cpu_primitive(
    'fedjax_fwht', fwht_kron, native.TARGET_FWHT,
    transpose_fn=lambda ct: fwht_p.bind(ct), cpu_fallback_fn=fwht_butterfly)
