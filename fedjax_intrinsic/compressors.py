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
- `low_rank(params0, rank, q_key, quantiser)`: PowerSGD's P/Q of θ's matrix leaves over two
  exchanges (`LowRank`: P = M Q up, P̂ down, Q = Mᵀ P̂ up; its error memory is
  `error_feedback(..., keep_all=True, part=...)`, the residual M − P̂ Qᵀ once P̂ is known).
- `upload(quantiser)`: the compressor of a second exchange's response (identity, or the quantiser),
  with `transmit(c, payload, key)` -> (what travels, what the server reads of it); PowerSGD's Q_c,
  Sketched SGD's v_c[H] and FetchSGD's exact Δ[idx] (always exact) go through it.
The intrinsic family's `Subspace` (`subspace(...)`: A: f[D, d] and its random state from the seed)
is the coordinates its client trains in (`recipe.in_subspace`), not an encoder of a θ-space x (with
several local steps, training in the subspace is not a projection of the θ-space update); its
Δz: f32[d] goes through identity or a quantiser, and the server kinds lift it (servers.py).
"""
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

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


def upload(quantiser: Optional[Compressor] = None) -> Compressor:
  """The compressor of a further upload within a round (a second exchange's response): identity,
  or `quantiser` (stateless: `quantizer(name)`); encode with the key the method gives it (this
  project's second exchanges: `keys.chain_key(key, 2)`), aggregate Σ_c w_c decode(payload_c)."""
  return identity() if quantiser is None else quantiser


def transmit(c: Compressor, payload, key) -> tuple:
  """(what travels, what the server reads of it) of `payload` through the stateless `c`."""
  sent = c.encode(payload, (), key)[0]
  return sent, c.decode(sent)


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
    return P.top_k(x, self.k, method='auto')   # counting passes above D = 2^18, else a sort

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


# ----------------------------------------------------------------------------- low rank


class MatrixLayout(NamedTuple):
  """Which leaves of θ (tree_flatten order) are compressed as matrices, and their shapes."""
  compressed: tuple    # leaf indices
  dense: tuple         # leaf indices
  shapes: tuple        # (n, m) per compressed leaf
  rank: int


def matrix_shape(shape: tuple) -> tuple[int, int]:
  """The matrix view (n, m) of a leaf of shape `shape` (ndim >= 2): all axes but the last, the last."""
  return int(math.prod(shape[:-1])), int(shape[-1])


def matrix_layout(params: Any, rank: int) -> MatrixLayout:
  """Leaves with ndim >= 2 and r·(n + m) < n·m are compressed, the rest travel as they are;
  ValueError if none compress (`params` may hold arrays or ShapeDtypeStructs)."""
  compressed, dense, shapes = [], [], []
  for i, leaf in enumerate(jax.tree.leaves(params)):
    if np.ndim(leaf) >= 2:
      n, m = matrix_shape(np.shape(leaf))
      if rank * (n + m) < n * m:
        compressed.append(i)
        shapes.append((n, m))
        continue
    dense.append(i)
  if not compressed:
    sides = [min(matrix_shape(np.shape(x))) for x in jax.tree.leaves(params) if np.ndim(x) >= 2]
    raise ValueError(f'method.rank={rank} compresses no leaf of this model (r·(n + m) >= n·m for '
                     f'every matrix); allowed: a rank below {max(sides, default=1)} such that '
                     'r·(n + m) < n·m for some matrix')
  return MatrixLayout(tuple(compressed), tuple(dense), tuple(shapes), rank)


def orthonormalise(p: jax.Array) -> jax.Array:
  """f32[n, r] -> an orthonormal basis f32[n, r] of its column span (reduced QR)."""
  return jnp.linalg.qr(p, mode='reduced')[0]


class LowRank(NamedTuple):
  """PowerSGD's rank-r P/Q (Vogels et al. 2019) of a θ-shaped pytree x, two exchanges.

  Leaf i of `layout.compressed` is viewed as M_i: f32[n, m] (`matrix_shape`); the other leaves
  travel as they are. With Q: f32[m, r] per compressed leaf (the server's warm start, broadcast):
    first exchange (`compressor()`, shared = Q): x -> {'p': M Q per compressed leaf f32[n, r],
                                                      'dense': the other leaves}, summed linearly;
    request(agg) -> P̂ = orthonormalise(Σ_c w_c P_c) per compressed leaf      (down, the request)
    second(M, P̂, key) -> Q_c = Mᵀ P̂: f32[m, r] per compressed leaf            (up), summed linearly
    estimate(agg, P̂, Q̂) -> the θ-shaped P̂ Q̂ᵀ with the other leaves' weighted mean; Q̂ is the next Q.
  Both exchanges travel through `up` (`upload(quantiser)`: with a quantiser every array quantised),
  the first with the client's key, the second with `keys.chain_key(key, 2)` (the low-rank step
  draws no randomness).
  Error memory: `error_feedback(compressor(), zeros, keep_all=True, part=part())` carries
  a = e + M to the second exchange; `residual(a, P̂, Q)` is then the new memory a − P̂ Qᵀ.
  The first payload alone is not an estimate of x (that needs P̂ and Q̂): `decode` gives its float
  values.
  """
  layout: MatrixLayout
  treedef: Any
  leaf_shapes: tuple
  q_key: jax.Array
  up: Compressor

  def init_q(self) -> tuple:
    """The first Q: f32[m, r] standard normal from fold_in(q_key, i) for compressed leaf i."""
    return tuple(jax.random.normal(jax.random.fold_in(self.q_key, i), (m, self.layout.rank),
                                   jnp.float32)
                 for i, (n, m) in zip(self.layout.compressed, self.layout.shapes))

  def zeros(self) -> tuple:
    """A fresh error memory: f32[n, m] per compressed leaf."""
    return tuple(jnp.zeros(s, jnp.float32) for s in self.layout.shapes)

  def matrices(self, x) -> tuple:
    """M: f32[n, m] per compressed leaf of x."""
    leaves = jax.tree.leaves(x)
    return tuple(leaves[i].reshape(s) for i, s in zip(self.layout.compressed, self.layout.shapes))

  def with_matrices(self, x, mats):
    """x with its compressed leaves replaced by `mats` (reshaped back)."""
    leaves = list(jax.tree.leaves(x))
    for i, mat in zip(self.layout.compressed, mats):
      leaves[i] = mat.reshape(self.leaf_shapes[i])
    return jax.tree.unflatten(self.treedef, leaves)

  def part(self) -> tuple:
    """(get, put) of the compressed matrices, for `error_feedback`."""
    return self.matrices, self.with_matrices

  def send(self, payload, key) -> tuple:
    """(what travels, what the server reads of it): the payload, or quantised and decoded."""
    return transmit(self.up, payload, key)

  def aggregate(self, payloads, weights):
    """Σ_c w_c payload_c (decoded), either exchange."""
    return self.up.aggregate(payloads, weights)

  def compressor(self) -> Compressor:
    """The first exchange (see the class docstring)."""
    hp = jax.lax.Precision.HIGHEST

    def encode(x, key, shared):
      leaves = jax.tree.leaves(x)
      payload = {'p': tuple(jnp.matmul(mat, q, precision=hp)
                            for mat, q in zip(self.matrices(x), shared)),
                 'dense': tuple(leaves[i] for i in self.layout.dense)}
      return self.send(payload, key)[0]

    return Compressor(init=lambda: (), encode=_stateless(encode),
                      decode=lambda p, shared=None: _decode_floats(p), aggregate=self.aggregate)

  def request(self, agg) -> tuple:
    """P̂: f32[n, r] per compressed leaf, from the first aggregate."""
    return tuple(orthonormalise(p) for p in agg['p'])

  def second(self, mats, p_hats, key) -> tuple:
    """(Q_c = Mᵀ P̂ as it travels, as the server reads it): f32[m, r] per compressed leaf."""
    hp = jax.lax.Precision.HIGHEST
    return self.send(tuple(jnp.matmul(mat.T, p_hat, precision=hp)
                           for mat, p_hat in zip(mats, p_hats)), key)

  def product(self, p_hats, qs) -> tuple:
    """P̂ Qᵀ: f32[n, m] per compressed leaf."""
    hp = jax.lax.Precision.HIGHEST
    return tuple(jnp.matmul(p_hat, q.T, precision=hp) for p_hat, q in zip(p_hats, qs))

  def residual(self, mats, p_hats, qs) -> tuple:
    """The new error memory M − P̂ Qᵀ per compressed leaf."""
    return residual(mats, self.product(p_hats, qs))

  def estimate(self, agg, p_hats, q_hat):
    """The θ-shaped estimate: P̂ Q̂ᵀ at the compressed leaves, the weighted mean elsewhere."""
    leaves = [None] * len(self.leaf_shapes)
    for i, mat in zip(self.layout.compressed, self.product(p_hats, q_hat)):
      leaves[i] = mat.reshape(self.leaf_shapes[i])
    for i, x in zip(self.layout.dense, agg['dense']):
      leaves[i] = x
    return jax.tree.unflatten(self.treedef, leaves)


def low_rank(params0, rank: int, q_key: jax.Array,
             quantiser: Optional[Compressor] = None) -> LowRank:
  """The `LowRank` piece for θ shaped like params0 (ValueError if rank compresses no leaf)."""
  leaves, treedef = jax.tree.flatten(params0)
  return LowRank(matrix_layout(params0, rank), treedef, tuple(np.shape(x) for x in leaves), q_key,
                 upload(quantiser))


# ----------------------------------------------------------------------------- subspace


class Subspace(NamedTuple):
  """The intrinsic family's random subspaces of θ_flat: f32[D] (docs/paper.md §3).

  `op` is a `projections` operator A: f[D, d] (lift: z f[d] -> A z f[D]); `state(t)` is the random
  state of subspace t, from `keys.subspace_key(run_key, t)` (jittable): every client derives it
  from the seed, so no seed or matrix travels. It is a trainer's coordinates, not an encoder of
  a θ-space x: a client trains u ∈ R^d in the broadcast subspace (`recipe.in_subspace`) and
  sends Δz: f32[d], through identity or a quantiser; the server kinds lift it (servers.py).
  """
  D: int
  d: int
  op: P.Projection
  unravel: Any
  run_key: jax.Array

  def state(self, t):
    return self.op.init(keys.subspace_key(self.run_key, t))

  def lift(self, state, z: jax.Array) -> jax.Array:
    """A z: f32[D] for z: f32[d]."""
    return self.op.lift(state, z)


def subspace(params0, d: int, projection: str, per_leaf: bool, run_key: jax.Array) -> Subspace:
  """One operator over all of θ_flat (per_leaf False), or one per parameter leaf (leaf i keyed by
  fold_in(subspace key, i), d split over the leaves in proportion to their sizes: A block
  diagonal in tree_flatten order, z the leaves' coordinates concatenated). ValueError when d does
  not fit D."""
  flat0, unravel = ravel_pytree(params0)
  D = int(flat0.shape[0])
  if projection == 'identity':
    if d != D:
      raise ValueError(f'method.d={d} is invalid for method.projection=identity; '
                       f'allowed: d = D = {D}')
    op = P.identity(D)
  else:
    if d > D:
      raise ValueError(f'method.d={d} is invalid; allowed: 1 <= d <= D = {D} '
                       '(the number of model parameters)')
    if per_leaf:
      op = _flat_per_leaf(projection, d, params0, unravel)
    else:
      op = P.get(projection, D=D, d=d)
  return Subspace(D, op.d, op, unravel, run_key)


def _flat_per_leaf(projection: str, d: int, params0, unravel) -> P.Projection:
  """`projections.per_leaf` as an operator on θ_flat: f[D] <-> f[d] (block diagonal A)."""
  if d < len(jax.tree.leaves(params0)):
    raise ValueError(f'method.d={d} is invalid with method.per_leaf=True; allowed: '
                     f'd >= the number of parameter leaves ({len(jax.tree.leaves(params0))})')
  tp = P.per_leaf(lambda D, d: P.get(projection, D=D, d=d), params0, d=d)
  return P.Projection(D=tp.D, d=tp.d, init=tp.init,
                      project=lambda state, x: tp.project(state, unravel(x)),
                      lift=lambda state, z: ravel_pytree(tp.lift(state, z))[0], name=tp.name)


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


def error_feedback(inner: Compressor, zeros: Callable[[], Any], keep_all: bool = False,
                   part: Optional[tuple] = None) -> Compressor:
  """Error feedback (Seide et al. 2014; Karimireddy et al. 2019): a = e + x is encoded and
  e ← a − decode(payload), exactly what was not sent (`keep_all`: e ← a, for a method whose
  server says later what was applied: the client then zeroes it, `zero_at`, or subtracts it,
  `LowRank.residual`). zeros() -> the initial error, shaped like x, or like `part`.
  part = (get, put): the memory covers get(x) only (the part `inner` loses; the rest of x travels
  exact): a = e + get(x), `inner` encodes put(x, a), e ← a − get(decode(payload)) (or a)."""
  get, put = part or (lambda x: x, lambda x, a: a)

  def encode(x, state, key, shared=None):
    a = with_error(get(x), state.error)
    payload, s = inner.encode(put(x, a), state.inner, key, shared)
    error = a if keep_all else residual(a, get(inner.decode(payload, shared)))
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

