"""The optional CPU kernels of ``projections`` (``csrc/kernels.cc``), built at first use.

Contract:
- ``available()`` -> bool: True when the kernels are compiled, loaded and registered with
  XLA for the ``cpu`` platform (``jax.ffi.register_ffi_target``). The first call builds the
  shared library with the C++ compiler (``$CXX``, else ``g++``, else ``c++``; XLA's FFI
  headers come with jaxlib: ``jax.ffi.include_dir()``) into a cache directory, keyed by a
  hash of the source, the compile command, the jaxlib version and the CPU's flags; later
  processes load the cached library (no compiler needed). A failed build (no compiler, no
  headers, any error) logs one warning and returns False: every caller then uses its
  pure-JAX formulation, which gives the same results up to float rounding order.
- ``FEDJAX_INTRINSIC_NATIVE=0`` in the environment disables the kernels (``available()`` is
  False without trying to build). ``FEDJAX_INTRINSIC_CACHE`` sets the cache directory
  (default ``$XDG_CACHE_HOME/fedjax_intrinsic`` or ``~/.cache/fedjax_intrinsic``).
  ``FEDJAX_INTRINSIC_THREADS`` (read by the kernels, default 2) caps the threads per call.
- FFI targets (all float32, cpu only): ``TARGET_FWHT``, ``TARGET_GATHER_TILE``,
  ``TARGET_FOLD_PERM``, ``TARGET_FWHT_DIAG``, ``TARGET_FASTFOOD_PROJECT`` and
  ``TARGET_FASTFOOD_LIFT`` (L <= ``FASTFOOD_FUSED_MAX_L``), ``TARGET_SKETCH_HASHED``,
  ``TARGET_SKETCH_CACHED``;
  ``hadamard.py``, ``fastfood.py`` and ``sketch.py`` bind them through JAX primitives
  (``cpu_primitive``) whose lowering on other platforms (or without the kernels) is pure JAX.
- ``status()`` -> dict: what was tried (library path, command, error) for diagnostics.
"""
import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from typing import Callable

import jax
import jax.extend.core
from jax.interpreters import ad
from jax.interpreters import batching
from jax.interpreters import mlir
import jax.numpy as jnp

TARGET_FWHT = 'fedjax_fwht_f32'
TARGET_SKETCH_HASHED = 'fedjax_sketch_hashed_f32'
TARGET_SKETCH_CACHED = 'fedjax_sketch_cached_f32'
TARGET_GATHER_TILE = 'fedjax_gather_tile_f32'
TARGET_FOLD_PERM = 'fedjax_fold_perm_f32'
TARGET_FWHT_DIAG = 'fedjax_fwht_diag_f32'
TARGET_FASTFOOD_PROJECT = 'fedjax_fastfood_project_f32'
TARGET_FASTFOOD_LIFT = 'fedjax_fastfood_lift_f32'
# Fastfood's fused project / lift kernels carry one vector at a time through a scratch of L
# floats (in cache, one thread per vector: below the kernels' 2^19-element threading bar); for
# L above this the composition of the separate kernels is used.
FASTFOOD_FUSED_MAX_L = 1 << 18
_SYMBOLS = {TARGET_FWHT: 'FedjaxFwhtF32', TARGET_SKETCH_HASHED: 'FedjaxSketchHashedF32',
            TARGET_SKETCH_CACHED: 'FedjaxSketchCachedF32',
            TARGET_GATHER_TILE: 'FedjaxGatherTileF32', TARGET_FOLD_PERM: 'FedjaxFoldPermF32',
            TARGET_FWHT_DIAG: 'FedjaxFwhtDiagF32',
            TARGET_FASTFOOD_PROJECT: 'FedjaxFastfoodProjectF32',
            TARGET_FASTFOOD_LIFT: 'FedjaxFastfoodLiftF32'}
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc', 'kernels.cc')
_FLAG_SETS = (['-O3', '-march=native'], ['-O3'])  # the first that compiles is used
_COMMON_FLAGS = ['-std=c++17', '-shared', '-fPIC', '-pthread', '-fno-math-errno']

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {}


def _cache_dir() -> str:
  d = os.environ.get('FEDJAX_INTRINSIC_CACHE')
  if not d:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    d = os.path.join(base, 'fedjax_intrinsic')
  return d


def _cpu_flags() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith(('flags', 'Features')):
          return line
  except OSError:
    pass
  import platform
  return platform.machine() + platform.processor()


def _compiler() -> str | None:
  for c in (os.environ.get('CXX'), 'g++', 'c++'):
    if c and shutil.which(c):
      return c
  return None


def _build() -> str:
  """Path of the loaded-or-built shared library; raises on failure."""
  import jaxlib
  with open(SOURCE, 'rb') as f:
    src = f.read()
  cxx = _compiler()
  if cxx is None:
    raise RuntimeError('no C++ compiler found ($CXX, g++, c++)')
  include = jax.ffi.include_dir()
  errors = []
  for flags in _FLAG_SETS:
    cmd_key = ' '.join([cxx, *flags, *_COMMON_FLAGS])
    h = hashlib.sha256(b'\0'.join([src, cmd_key.encode(), jaxlib.__version__.encode(),
                                   _cpu_flags().encode()])).hexdigest()[:16]
    out = os.path.join(_cache_dir(), f'kernels_{h}.so')
    if os.path.exists(out):
      return out
    os.makedirs(_cache_dir(), exist_ok=True)
    with open(out + '.lock', 'w') as lock:
      try:  # one builder at a time (pytest workers); the others then find the library
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX)
      except (ImportError, OSError):
        pass
      if os.path.exists(out):
        return out
      err = _compile(cxx, flags, include, out)
    if err is None:
      return out
    errors.append(f'{cmd_key}: {err}')
  raise RuntimeError('; '.join(errors))


def _compile(cxx: str, flags: list, include: str, out: str) -> str | None:
  """Compiles SOURCE into ``out`` (atomically); None on success, else the error."""
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(out))
  os.close(fd)
  cmd = [cxx, *flags, *_COMMON_FLAGS, '-I', include, SOURCE, '-o', tmp]
  _state['command'] = ' '.join(cmd)
  try:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  except (OSError, subprocess.SubprocessError) as e:
    os.unlink(tmp)
    return str(e)
  if r.returncode != 0:
    os.unlink(tmp)
    return f'exit {r.returncode}: {r.stderr.strip()[-2000:]}'
  os.replace(tmp, out)  # atomic: a reader never sees a partial library
  return None


def _load() -> bool:
  if os.environ.get('FEDJAX_INTRINSIC_NATIVE', '1').strip().lower() in ('0', 'false', 'no',
                                                                         'off'):
    _state['error'] = 'disabled by FEDJAX_INTRINSIC_NATIVE'
    return False
  try:
    path = _build()
    lib = ctypes.CDLL(path)
    for target, sym in _SYMBOLS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, sym)),
                                  platform='cpu')
  except Exception as e:  # pylint: disable=broad-except
    _state['error'] = f'{type(e).__name__}: {e}'
    _log.warning('projections.native: CPU kernels unavailable, using the pure-JAX '
                 'formulations (%s)', _state['error'])
    return False
  _state['library'] = path
  _state['lib'] = lib  # keep it loaded
  return True


def available() -> bool:
  """True when the CPU kernels are registered (builds them on the first call)."""
  with _lock:
    if 'ok' not in _state:
      _state['ok'] = _load()
    return _state['ok']


def status() -> dict:
  """What ``available()`` found: ok, library, command, error (strings; for diagnostics)."""
  available()
  return {k: v for k, v in _state.items() if k != 'lib'}


def _native_ok(avals) -> bool:
  """Every float operand is float32 and none is empty (what the kernels take)."""
  for a in avals:
    if a.size == 0:
      return False
    if jnp.issubdtype(a.dtype, jnp.floating) and a.dtype != jnp.float32:
      return False
  return True


def cpu_primitive(name: str, xla_fn: Callable, target: str, *,
                  transpose_fn: Callable | None = None,
                  attrs: Callable[[dict], dict] = lambda params: {},
                  cpu_fallback_fn: Callable | None = None):
  """A JAX primitive computed by the FFI ``target`` on CPU and by ``xla_fn`` elsewhere.

  Args:
    name: the primitive's name.
    xla_fn: ``xla_fn(*operands, **params) -> array``, the pure-JAX definition: its output
      shape and dtype are the primitive's, it is the lowering on every platform but CPU,
      and the batching rule's fallback. Operand 0 may carry any leading batch axes (the
      kernels loop over them); the other operands have fixed ranks.
    target: FFI target (``TARGET_*``), used on CPU when ``available()`` and every float
      operand is float32.
    transpose_fn: if given, the primitive is linear in operand 0 (the others are
      constants, such as indices): ``transpose_fn(ct, *operands[1:], **params)`` returns
      the cotangent of operand 0; JVP and transpose rules are defined from it.
    attrs: ``params -> FFI attributes`` (the params the kernel reads).
    cpu_fallback_fn: the CPU lowering when the kernel is not used (default ``xla_fn``).
  Returns:
    The primitive. Batching: a batch on operand 0 alone becomes its leading axis (one
    kernel call); a batch on any other operand uses ``jax.vmap(xla_fn)``.
  """
  p = jax.extend.core.Primitive(name)
  jitted = {}

  def impl(*args, **params):
    key = tuple(sorted(params.items()))
    if key not in jitted:
      jitted[key] = jax.jit(functools.partial(p.bind, **params))
    return jitted[key](*args)

  def abstract(*avals, **params):
    out = jax.eval_shape(functools.partial(xla_fn, **params),
                         *[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals])
    return jax.core.ShapedArray(out.shape, out.dtype)

  def batch(args, dims, **params):
    if all(d is None for d in dims[1:]):
      return p.bind(jnp.moveaxis(args[0], dims[0], 0), *args[1:], **params), 0
    return jax.vmap(functools.partial(xla_fn, **params), in_axes=dims)(*args), 0

  p.def_impl(impl)
  p.def_abstract_eval(abstract)
  batching.primitive_batchers[p] = batch

  if transpose_fn is not None:
    def jvp(primals, tangents, **params):
      out = p.bind(*primals, **params)
      if type(tangents[0]) is ad.Zero:
        return out, ad.Zero.from_primal_value(out)
      return out, p.bind(ad.instantiate_zeros(tangents[0]), *primals[1:], **params)

    def transpose(ct, *args, **params):
      rest = [None] * (len(args) - 1)
      if type(ct) is ad.Zero:
        return [ad.Zero(args[0].aval)] + rest
      return [transpose_fn(ct, *args[1:], **params)] + rest

    ad.primitive_jvps[p] = jvp
    ad.primitive_transposes[p] = transpose

  lower_xla = mlir.lower_fun(xla_fn, multiple_results=False)
  lower_fallback = mlir.lower_fun(cpu_fallback_fn or xla_fn, multiple_results=False)
  lower_ffi = jax.ffi.ffi_lowering(target)

  def lower_cpu(ctx, *args, **params):
    if _native_ok(ctx.avals_in) and available():
      return lower_ffi(ctx, *args, **attrs(params))
    return lower_fallback(ctx, *args, **params)

  mlir.register_lowering(p, lower_xla)
  mlir.register_lowering(p, lower_cpu, platform='cpu')
  return p
