"""The compressor layer: what a client does to its update before it travels (optax style).

A `Compressor` is a NamedTuple of pure functions with a typed per-client state:

    state = c.init()                                       # per client; () when stateless
    payload, state = c.encode(x, state, key, shared)       # client: x -> exactly what travels up
    x_hat = c.decode(payload, shared)                      # what one payload says, in x's space
    agg = c.aggregate(payloads, weights)                   # server: LINEAR weighted sum, client axis
    estimate = c.finalize(agg)                             # server: the aggregate -> the estimate

Contracts:
- `payload` is the pytree that travels up; its bytes are its arrays' bytes (`base.tree_bytes`).
- `aggregate(payloads[C, ...], weights f32[C])` is a sum over the leading client axis of terms
  linear in (payload, weight), so the engine may chunk it; anything non-linear (a majority vote,
  a sign) is in `finalize` or in the server.
- `key` is the client's key of the round (`keys.client_key`); `shared` is state every client
  derives from the seed and gets in the broadcast (the count sketch's hashes), else None.
- `support(payload) -> bool[D]`, where defined, is the set of coordinates a payload carries (a
  sparsifier's indices); the momentum wrapper masks them.
- `linear`: encode is linear in x, deterministic and stateless (the cohort shortcut is exact).

Pieces, composed with `chain(first, then, ...)` (each later piece encodes the floating leaves
of the earlier one's payload) and the wrappers `error_feedback` and `momentum`:
- `identity()`: x as it is (any pytree);
- quantisers, leafwise on floating arrays: `bf16()`, `int8()` (one float32 scale per array,
  unbiased stochastic rounding), `qsgd(levels)`; `quantizer(name)` by config name; `leafwise(fn)`
  makes a new one from one function of an array and a key;
- `sign(D, vote, scaled)`: 1 bit a coordinate packed 8 per byte (+ one float32 scale), vote or mean;
- sparsifiers on x: f32[D]: `top_k(D, k, method)`, `random_k(D, k, unbiased, by_seed)`;
- `count_sketch(sketcher)`: x: f32[D] -> f32[rows, cols] (`Sketcher`, hashes from the seed).
PowerSGD's low-rank P/Q (two exchanges) lives in algorithms/powersgd.py and shares the error
memory here (`ErrorFeedback`, `with_error`, `residual`); the intrinsic family's subspace is its
trainer (algorithms/intrinsic.py), whose Δz goes through a quantiser.
"""
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

import projections as P
from fedjax_intrinsic import keys
from fedjax_intrinsic.algorithms.base import weighted_sum
from projections import sketch as sketch_lib

QUANTIZE = ('none', 'bf16', 'int8')   # the config values of `method.quantize`


class Compressor(NamedTuple):
  """See the module docstring."""
  init: Callable[[], Any]
  encode: Callable[..., tuple]
  decode: Callable[..., Any]
  aggregate: Callable[[Any, jax.Array], Any]
  finalize: Callable[[Any], Any] = lambda agg: agg
  support: Optional[Callable[[Any], jax.Array]] = None
  linear: bool = False


def _stateless(fn):
  """encode from fn(x, key, shared) -> payload, for a piece with no state."""
  return lambda x, state, key, shared=None: (fn(x, key, shared), state)


def identity() -> Compressor:
  """x travels as it is (a pytree of arrays); aggregate Σ_c w_c x_c per leaf."""
  return Compressor(init=lambda: (), encode=_stateless(lambda x, key, shared: x),
                    decode=lambda p, shared=None: p, aggregate=weighted_sum, linear=True)


# ----------------------------------------------------------------------------- quantisers


class Int8(NamedTuple):
  """An int8-quantised array: x ≈ q · scale."""
  q: jax.Array          # int8[...]
  scale: jax.Array      # f32[] (a leading client axis once stacked)


def _floating(x) -> bool:
  return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)


def _leafwise(tree, key, fn):
  """fn(leaf, key) on every floating leaf; leaf i > 0 of several gets keys.leaf_key(key, i)."""
  leaves, treedef = jax.tree.flatten(tree)
  floats = [i for i, x in enumerate(leaves) if _floating(x)]
  for j, i in enumerate(floats):
    leaves[i] = fn(leaves[i], key if j == 0 else keys.leaf_key(key, j))
  return jax.tree.unflatten(treedef, leaves)


def _scale_like(scale, q):
  """scale [..., ] broadcast against q [..., *shape] (a leading client axis allowed)."""
  return scale.reshape(scale.shape + (1,) * (q.ndim - scale.ndim))


def int8_encode(x: jax.Array, key: jax.Array) -> Int8:
  """x: f32[...] -> Int8 with scale = max|x| / 127 and unbiased stochastic rounding from `key`."""
  scale = jnp.maximum(jnp.max(jnp.abs(x)), 1e-30) / 127.0
  scaled = x / scale
  low = jnp.floor(scaled)
  up = jax.random.uniform(key, scaled.shape) < (scaled - low)
  return Int8(jnp.clip(low + up, -127, 127).astype(jnp.int8), scale.astype(jnp.float32))


def _decode_floats(tree):
  """Every quantised node back to float32 (Int8 -> q·scale, bf16 -> f32), the rest as it is."""
  def leaf(x):
    if isinstance(x, Int8):
      return x.q.astype(jnp.float32) * _scale_like(x.scale, x.q)
    return x.astype(jnp.float32) if _floating(x) else x
  return jax.tree.map(leaf, tree, is_leaf=lambda x: isinstance(x, Int8))


def leafwise(fn) -> Compressor:
  """A quantiser from fn(leaf f32[...], key) -> an array or `Int8` on every floating leaf of x;
  decode back to float32, aggregate Σ_c w_c decode(payload_c)."""
  return Compressor(
      init=lambda: (),
      encode=_stateless(lambda x, key, shared: _leafwise(x, key, fn)),
      decode=lambda p, shared=None: _decode_floats(p),
      aggregate=lambda payloads, w: weighted_sum(_decode_floats(payloads), w))


def bf16() -> Compressor:
  """Floating leaves as bfloat16 (2 bytes a value), deterministic."""
  return leafwise(lambda x, key: x.astype(jnp.bfloat16))


def int8() -> Compressor:
  """Floating leaves as int8 + one float32 scale each (`int8_encode`)."""
  return leafwise(int8_encode)


def qsgd(levels: int) -> Compressor:
  """QSGD (Alistarh et al. 2017): sign(x_i)·ξ_i ∈ {−s … s} (s = levels <= 127) as int8 and the
  scale ‖x‖₂ / s, with ξ_i rounded up or down at random so that decode is unbiased."""
  def fn(x, key):
    norm = jnp.linalg.norm(x)
    scaled = levels * jnp.abs(x) / jnp.maximum(norm, 1e-30)
    low = jnp.floor(scaled)
    level = low + (jax.random.uniform(key, x.shape) < scaled - low)
    return Int8((jnp.sign(x) * level).astype(jnp.int8), (norm / levels).astype(jnp.float32))
  return leafwise(fn)


def quantizer(name: str) -> Optional[Compressor]:
  """The piece for `method.quantize` (None for 'none')."""
  return {'none': None, 'bf16': bf16, 'int8': int8}[name]() if name != 'none' else None


# ----------------------------------------------------------------------------- sign


def pack_signs(bits: jax.Array) -> jax.Array:
  """bits: bool[..., D] (True = +1) -> uint8[..., ⌈D/8⌉] (`jnp.packbits` order)."""
  return jnp.packbits(bits, axis=-1)


def unpack_signs(packed: jax.Array, D: int) -> jax.Array:
  """uint8[..., ⌈D/8⌉] -> f32[..., D] of ±1."""
  bits = jnp.unpackbits(packed, axis=-1, count=D)
  return 2.0 * bits.astype(jnp.float32) - 1.0


def sign_bits(v: jax.Array, key: jax.Array) -> jax.Array:
  """bool[D]: v > 0, with a fair coin from `key` where v == 0."""
  coin = jax.random.bernoulli(key, 0.5, v.shape)
  return jnp.where(v == 0, coin, v > 0)


def sign(D: int, vote: str, scaled: bool) -> Compressor:
  """x: f32[D] -> {'signs': uint8[⌈D/8⌉], 'scale': f32[] (‖x‖₁ / D, when scaled)}.

  vote='mean': aggregate Σ_c w_c scale_c · sign_c, the estimate itself. vote='majority': one
  client one vote (weight > 0), aggregate {'vote': Σ_c sign_c, 'scale': Σ_c w_c scale_c}, and the
  estimate scale · sign(vote) (a tie is 0); without `scaled` the scale is 1.
  """
  hp = jax.lax.Precision.HIGHEST

  def encode(x, key, shared):
    payload = {'signs': pack_signs(sign_bits(x, key))}
    if scaled:
      payload['scale'] = jnp.mean(jnp.abs(x)).astype(jnp.float32)
    return payload

  def decode(p, shared=None):
    signs = unpack_signs(p['signs'], D)
    return p['scale'] * signs if scaled else signs

  def aggregate(payloads, weights):
    signs = unpack_signs(payloads['signs'], D)             # f32[C, D]
    w = weights.astype(jnp.float32)
    if vote == 'majority':
      voter = (w > 0).astype(jnp.float32)                  # one client one vote; padding: none
      out = {'vote': jnp.einsum('c,cd->d', voter, signs, precision=hp)}   # exact small integers
      if scaled:
        out['scale'] = jnp.dot(w, payloads['scale'], precision=hp)
      return out
    coef = w * payloads['scale'] if scaled else w
    return {'mean': jnp.einsum('c,cd->d', coef, signs, precision=hp)}

  def finalize(agg):
    if vote == 'majority':
      g = jnp.sign(agg['vote'])
      return agg['scale'] * g if scaled else g
    return agg['mean']

  return Compressor(init=lambda: (), encode=_stateless(encode), decode=decode,
                    aggregate=aggregate, finalize=finalize)


# ----------------------------------------------------------------------------- sparsifiers


def sent_mask(indices: jax.Array, D: int) -> jax.Array:
  """bool[D], True at the sent coordinates `indices: i32[k]`."""
  return jnp.zeros((D,), jnp.bool_).at[indices].set(True)


def sparse_sum(values: jax.Array, indices: jax.Array, weights: jax.Array, D: int) -> jax.Array:
  """Σ_c w_c · densify(values[c], indices[c]): f32[D]. values: f[C, k], indices: i32[C, k]."""
  w = weights.astype(jnp.float32)[:, None]
  scaled = (values.astype(jnp.float32) * w).reshape(-1)
  return jax.ops.segment_sum(scaled, indices.reshape(-1), num_segments=D)


def top_k(D: int, k: int, method: str = 'exact') -> Compressor:
  """x: f32[D] -> {'values': f32[k], 'indices': i32[k]}, the k largest |x| (`projections.top_k`)."""
  return Compressor(
      init=lambda: (),
      encode=_stateless(lambda x, key, shared: dict(zip(('values', 'indices'),
                                                         P.top_k(x, k, method)))),
      decode=lambda p, shared=None: P.densify(p['values'], p['indices'], D),
      aggregate=lambda ps, w: sparse_sum(ps['values'], ps['indices'], w, D),
      support=lambda p: sent_mask(p['indices'], D))


def raw_key(key: jax.Array) -> jax.Array:
  """u32[2] key data whether `key` is a raw or a typed PRNG key."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  return key


def random_k(D: int, k: int, unbiased: bool, by_seed: bool) -> Compressor:
  """x: f32[D] -> k coordinates drawn from the client's key (`projections.random_k`, values × D/k
  when `unbiased`): {'values': f32[k], 'indices': i32[k]}, or with `by_seed` {'values', 'seed':
  u32[2]} (the server regenerates the indices from the seed in `aggregate`)."""
  def indices_of(p):
    if not by_seed:
      return p['indices']
    return P.random_k(p['seed'], jnp.zeros((D,), jnp.float32), k)[1]

  def encode(x, key, shared):
    seed = raw_key(key)
    values, indices = P.random_k(seed, x, k, unbiased=unbiased)
    return {'values': values, 'seed': seed} if by_seed else {'values': values, 'indices': indices}

  def aggregate(payloads, weights):
    indices = jax.vmap(indices_of)(payloads) if by_seed else payloads['indices']
    return sparse_sum(payloads['values'], indices, weights, D)

  return Compressor(init=lambda: (), encode=_stateless(encode),
                    decode=lambda p, shared=None: P.densify(p['values'], indices_of(p), D),
                    aggregate=aggregate, support=lambda p: sent_mask(indices_of(p), D))


# ----------------------------------------------------------------------------- count sketch

_THRESHOLD_TOPK_ABOVE = 2**18   # D above which top-k uses counting passes instead of a sort
_CACHE_MAX = 2**25              # rows·D up to which the sketch state caches its buckets (128 MiB)


class Sketcher(NamedTuple):
  """A run's count sketch of f32[D] and its unsketching top-k. Its random state (`init_state()`,
  from `keys.sketch_key(run_key)`) is derived data: the server state carries it and the broadcast
  hands it to the clients, who would derive it from the seed; it is never counted as traffic.
  With rows·D <= 2^25 the state caches the signed buckets i32[rows, D] (computed once), else it
  holds the 6·rows hash coefficients and every call rehashes arange(D)."""
  D: int
  k: int
  cs: P.CountSketch
  key: jax.Array

  def init_state(self) -> Any:
    return self.cs.init(self.key)

  def sketch(self, state, x: jax.Array) -> jax.Array:
    """x: f32[D] -> f32[rows, cols]."""
    return self.cs.sketch(state, x)

  def estimate(self, state, table: jax.Array) -> jax.Array:
    """table: f32[rows, cols] -> f32[D], the median estimate."""
    return self.cs.estimate(state, table)

  def top_k(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The k largest |x| of x: f32[D]: (values f32[k], indices i32[k]); ties to the lower index."""
    return P.top_k(x, self.k, method='threshold' if self.D > _THRESHOLD_TOPK_ABOVE else 'exact')

  def densify(self, values: jax.Array, indices: jax.Array) -> jax.Array:
    return P.densify(values, indices, self.D)

  def buckets_of(self, state, indices: jax.Array, values: jax.Array) -> jax.Array:
    """bool[rows, cols]: the buckets that the coordinates indices: i32[k] with values[j] != 0 hash to,
    in every row (the support of S(densify(values, indices)) barring exact cancellations)."""
    rows, cols = self.cs.rows, self.cs.cols
    b = sketch_lib.bucket_hash(state.bucket_coeffs[:, None, :],
                               indices.astype(jnp.uint32)[None, :], cols)     # i32[rows, k]
    r = jnp.broadcast_to(jnp.arange(rows)[:, None], b.shape)
    hit = jnp.broadcast_to((values != 0).astype(jnp.int32)[None, :], b.shape)
    return jnp.zeros((rows, cols), jnp.int32).at[r, b].max(hit) > 0


def sketcher(D: int, rows: int, cols: int, k: int, run_key: jax.Array) -> Sketcher:
  cs = P.count_sketch(D, rows, cols, cache_buckets=rows * D <= _CACHE_MAX)
  return Sketcher(D, k, cs, keys.sketch_key(run_key))


def count_sketch(sk: Sketcher) -> Compressor:
  """x: f32[D] -> S(x): f32[rows, cols] with the hashes `shared` (the broadcast's sketch state);
  linear, so the aggregate is the sketch of the weighted sum and the cohort shortcut is exact."""
  return Compressor(init=lambda: (),
                    encode=_stateless(lambda x, key, shared: sk.sketch(shared, x)),
                    decode=lambda p, shared=None: sk.estimate(shared, p),
                    aggregate=weighted_sum, linear=True)


# ----------------------------------------------------------------------------- composition


def chain(first: Compressor, *then: Compressor) -> Compressor:
  """`first`, then each piece of `then` on the floating leaves of the payload so far (quantisers
  after a sparsifier or a sketch: {'values': int8 + scale, 'indices': i32}). Later pieces get
  `keys.chain_key(key, i)`; states are a tuple, one per piece. The aggregate decodes the later
  pieces per client and sums with `first`'s aggregate, so it stays linear."""
  if not then:
    return first
  pieces = (first,) + tuple(then)

  def encode(x, state, key, shared=None):
    out = []
    for i, (piece, s) in enumerate(zip(pieces, state)):
      x, s = piece.encode(x, s, key if i == 0 else keys.chain_key(key, i), shared)
      out.append(s)
    return x, tuple(out)

  def undo_later(p, shared=None):
    for piece in reversed(pieces[1:]):
      p = piece.decode(p, shared)
    return p

  return Compressor(
      init=lambda: tuple(p.init() for p in pieces),
      encode=encode,
      decode=lambda p, shared=None: first.decode(undo_later(p, shared), shared),
      aggregate=lambda ps, w: first.aggregate(undo_later(ps), w),
      finalize=first.finalize,
      support=None if first.support is None else lambda p: first.support(undo_later(p)),
      linear=False)


class ErrorFeedback(NamedTuple):
  """A client's error memory: what its past messages left out (and the inner piece's state)."""
  inner: Any
  error: Any            # shaped like the compressor's input


class Momentum(NamedTuple):
  """A client's local momentum (and the inner piece's state)."""
  inner: Any
  velocity: Any         # shaped like the compressor's input


def with_error(x, error):
  """a = e + x, leafwise: the input with the error memory added."""
  return jax.tree.map(jnp.add, error, x)


def residual(a, sent):
  """e = a − what was sent (decoded), leafwise: the new error memory."""
  return jax.tree.map(jnp.subtract, a, sent)


def zero_at(x: jax.Array, indices: jax.Array) -> jax.Array:
  """x: f32[D] with the coordinates `indices` set to 0."""
  return x.at[indices].set(0.0)


def error_feedback(inner: Compressor, zeros: Callable[[], Any], keep_all: bool = False
                   ) -> Compressor:
  """Error feedback (Seide et al. 2014; Karimireddy et al. 2019): a = e + x is encoded and
  e ← a − decode(payload), exactly what was not sent (`keep_all`: e ← a, for a method whose
  server says later what was applied, which the client then zeroes: `zero_at`).
  zeros() -> the initial error, shaped like x."""
  def encode(x, state, key, shared=None):
    a = with_error(x, state.error)
    payload, s = inner.encode(a, state.inner, key, shared)
    error = a if keep_all else residual(a, inner.decode(payload, shared))
    return payload, ErrorFeedback(s, error)

  return inner._replace(init=lambda: ErrorFeedback(inner.init(), zeros()), encode=encode,
                        linear=False)


def momentum(inner: Compressor, rho: float, zeros: Callable[[], Any], masked: bool = True
             ) -> Compressor:
  """Local momentum v ← ρ v + x, then `inner` encodes v; with `masked` (momentum factor masking,
  FetchSGD / Lin et al. 2018) v is zeroed where the payload was sent (`inner.support`)."""
  def encode(x, state, key, shared=None):
    v = rho * state.velocity + x
    payload, s = inner.encode(v, state.inner, key, shared)
    if masked:
      v = jnp.where(inner.support(payload), 0.0, v)
    return payload, Momentum(s, v)

  return inner._replace(init=lambda: Momentum(inner.init(), zeros()), encode=encode,
                        linear=False)


def feedback_and_momentum(inner: Compressor, D: int, rho: float, feedback: bool) -> Compressor:
  """FetchSGD's worker rule on f32[D]: momentum (ρ > 0), then error feedback, then `inner`, the
  sent coordinates masked in both (the sparse methods' client and true top-k's server)."""
  zeros = lambda: jnp.zeros((D,), jnp.float32)
  c = error_feedback(inner, zeros) if feedback else inner
  return momentum(c, rho, zeros) if rho > 0 else c

