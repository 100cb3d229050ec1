"""`powersgd`: rank-r PowerSGD (Vogels et al. 2019) with local error feedback, two exchanges a round.

Every leaf of θ with ndim >= 2 is viewed as a matrix M: f32[n, m] with n = the product of all but the
last axis (fan-in: Dense kernels [in, out] as they are, conv kernels [kh, kw, c_in, c_out] as
[kh·kw·c_in, c_out]) and m = the last axis. It is compressed when r·(n + m) < n·m (so r < min(n, m));
other leaves (biases, norm scales, and matrices too small to gain) travel uncompressed. One power
iteration per round, warm-started from the previous round's Q (Vogels' Algorithm 1):
  client c: M_c = Δ_c + e_c (Δ: the pseudo-gradient of docs/paper.md §2; e: its error memory),
            P_c = M_c Q                                                      -> up (first exchange)
  server:   P̂ = orthonormalise(Σ_c w_c P_c) (reduced QR)                    -> down (the request)
  client c: Q_c = M_cᵀ P̂                                                    -> up (second exchange)
  server:   Q̂ = Σ_c w_c Q_c; the step is the optimiser applied to P̂ Q̂ᵀ = Σ_c w_c P̂ P̂ᵀ M_c (and to
            the weighted mean of the uncompressed leaves); Q ← Q̂ for the next round.
  client c: e_c ← M_c − P̂ Q_cᵀ with its own Q_c (`method.error_memory='local'`, the default): the
            part of M_c outside P̂'s span, so ‖e_c‖ <= ‖M_c‖; or e_c ← M_c − P̂ Q̂ᵀ ('averaged'), as
            in Vogels et al.'s released code (epfml/powersgd: every worker's memory is its gradient
            minus the decompressed all-reduced P Qᵀ), for which Q̂ goes down to every participant
            at the end of the round (the engine's `notice`). Both keep the same weighted mean
            Σ_c w_c e_c (the round's weights sum to one) and agree when every client takes part
            every round with the same data, the setting of the reference. Why 'local' is the
            default: with sampled, non-IID clients the averaged memory also keeps P̂ (Q_c − Q̂)ᵀ,
            the client's deviation from the cohort's mean, which is not contractive and comes back
            whenever the client returns; on configs/digits_cnn.py it does not learn (README,
            methods table), the local memory does.
Without error feedback (`method.error_feedback=False`) e stays 0 and the client, keeping no state,
recomputes Δ_c in its second step (same start, batches and key, so the same Δ_c).
The initial Q of compressed leaf i (tree_flatten order) is f32[m, r] standard normal from
fold_in(keys.compressor_key(run_key), i), which every client derives itself.

Up:   first exchange P_c: f32[n, r] per compressed leaf plus every uncompressed leaf; second exchange
      Q_c: f32[m, r] per compressed leaf: 4·(Σ r(n + m) + Σ |uncompressed|) bytes. With
      `method.quantize` every one of these arrays travels as bf16, or int8 + one float32 scale
      (the first exchange rounded with the client's key, the second with `keys.chain_key(key, 2)`);
      the local error memory then uses the Q_c the server decodes.
Down: the round's broadcast: θ (D float32: P̂ Q̂ᵀ moves every coordinate of every compressed matrix)
      and the warm-start Q (f32[m, r] per compressed leaf, server state that clients cannot derive);
      then the request P̂ (f32[n, r] per compressed leaf, counted by the engine as the request),
      and with error_memory='averaged' (and error feedback), Q̂ at the end of the round (f32[m, r] per
      compressed leaf): 4·(D + Σ r(m + n)) bytes per participant per round, + 4·Σ r·m.
State: server θ: f32[D] and the server optimiser's state (`servers.dense`), and Q in
       `extra['q']`. Client state: the error memory e: f32[n, m] per compressed leaf with error
       feedback (`compressors.ErrorFeedback`, the rule `compressors.with_error` / `residual`),
       else none. Two exchanges and client state: no cohort shortcut.
"""
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_intrinsic import compressors, keys
from fedjax_intrinsic.algorithms import base, options, servers
from fedjax_intrinsic.fields import Bool, Choice, ConfigError, Int

ERROR_MEMORIES = ('local', 'averaged')


class Layout(NamedTuple):
  """Which leaves (tree_flatten order) are compressed, and their matrix shapes."""
  compressed: tuple    # leaf indices
  dense: tuple         # leaf indices
  shapes: tuple        # (n, m) per compressed leaf
  rank: int


FIELDS = {
    'rank': Int(2, lo=1, note='below the smaller side of the model\'s matrices',
                doc='rank r of P and Q (whether it compresses a leaf: checked from the shapes)'),
    'error_feedback': Bool(True, doc='the client keeps its error memory e'),
    'error_memory': Choice('local', ERROR_MEMORIES,
                           doc='e ← M − P̂ Q_cᵀ with the client\'s own Q_c, or M − P̂ Q̂ᵀ with the '
                               'mean (the released code\'s)'),
    **options.QUANTIZE,
}


def validate(config) -> None:
  """No cohort shortcut (the rank and the flags: their declarations)."""
  m = config.method
  if config.simulation.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid for method.name={m.name!r} '
                      '(two exchanges and client state); allowed: False')
  options.validate(config, error_feedback=False)


def matrix_shape(shape: tuple) -> tuple[int, int]:
  """The matrix view (n, m) of a leaf of shape `shape` (ndim >= 2): all axes but the last, the last."""
  return int(math.prod(shape[:-1])), int(shape[-1])


def layout(params: Any, rank: int) -> Layout:
  """Splits θ's leaves into compressed matrices and uncompressed leaves; ValueError if none compress."""
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
  return Layout(tuple(compressed), tuple(dense), tuple(shapes), rank)


def orthonormalise(p: jax.Array) -> jax.Array:
  """f32[n, r] -> an orthonormal basis f32[n, r] of its column span (reduced QR)."""
  return jnp.linalg.qr(p, mode='reduced')[0]


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  rank = method_config.rank
  ef = method_config.error_feedback
  averaged = ef and method_config.get('error_memory', 'local') == 'averaged'
  if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
    raise ValueError(f'method.rank={rank!r} is invalid; allowed: a positive integer')
  lay = layout(ctx.params0, rank)
  leaves0, treedef = jax.tree.flatten(ctx.params0)
  leaf_shapes = [np.shape(x) for x in leaves0]
  flat = servers.flat_setup(ctx.params0)
  loss = base.model_loss(ctx.model)
  server = servers.dense(ctx.server_optimizer, flat)
  hp = jax.lax.Precision.HIGHEST
  q_key = keys.compressor_key(ctx.run_key)
  quantiser = compressors.quantizer(method_config.get('quantize', 'none'))
  aggregate = base.weighted_sum if quantiser is None else quantiser.aggregate

  def send(payload, key):
    """(what travels, what the server reads of it): the payload, or quantised and decoded."""
    if quantiser is None:
      return payload, payload
    sent = quantiser.encode(payload, (), key)[0]
    return sent, quantiser.decode(sent)

  def init(params0):
    q = tuple(jax.random.normal(jax.random.fold_in(q_key, i), (m, rank), jnp.float32)
              for i, (n, m) in zip(lay.compressed, lay.shapes))
    return server.init(params0, {'q': q})

  def init_client(params0):
    if not ef:
      return ()
    return compressors.ErrorFeedback((), tuple(jnp.zeros(s, jnp.float32) for s in lay.shapes))

  def matrices(bc, cstate, batches):
    """(M_c per compressed leaf f32[n, m], uncompressed leaves of Δ_c, metrics)."""
    start = flat.unravel(bc.theta)
    end, metrics = base.local_sgd(loss, start, batches, ctx.client_lr)
    delta = jax.tree.leaves(base.tree_sub(start, end))
    mats = tuple(delta[i].reshape(s) for i, s in zip(lay.compressed, lay.shapes))
    if ef:
      mats = compressors.with_error(mats, cstate.error)
    return mats, tuple(delta[i] for i in lay.dense), metrics

  def client_update(bc, cstate, batches, key):
    mats, dense, metrics = matrices(bc, cstate, batches)
    payload = {'p': tuple(jnp.matmul(mat, q, precision=hp) for mat, q in zip(mats, bc.shared)),
               'dense': dense}
    payload = send(payload, key)[0]
    if ef:   # carry M_c to the second exchange in the error slot (no extra state)
      cstate = compressors.ErrorFeedback((), mats)
    return payload, cstate, metrics

  def query(state, agg):
    """The request every participant downloads: P̂, f32[n, r] per compressed leaf."""
    del state
    return tuple(orthonormalise(p) for p in agg['p'])

  def remember(mats, p_hats, qs):
    """The error memory e ← M − P̂ Qᵀ per compressed leaf."""
    return compressors.ErrorFeedback((), compressors.residual(
        mats, tuple(jnp.matmul(p_hat, q.T, precision=hp) for p_hat, q in zip(p_hats, qs))))

  def respond(bc, request, cstate, batches, key):
    if ef:
      mats = cstate.error
    else:
      mats = matrices(bc, cstate, batches)[0]
    qs = tuple(jnp.matmul(mat.T, p_hat, precision=hp) for mat, p_hat in zip(mats, request))
    qs, received = send(qs, keys.chain_key(key, 2))
    if ef and not averaged:   # the memory keeps what the server did not receive of M_c
      cstate = remember(mats, request, received)
    return qs, cstate

  def finish(bc, request, q_hat, cstate):
    """error_memory='averaged': e_c ← M_c − P̂ Q̂ᵀ, with Q̂ (the notice) the round's mean Q."""
    del bc
    return remember(cstate.error, request, q_hat)

  def server_update(state, agg, second):
    p_hats = query(state, agg)
    leaves = [None] * len(leaf_shapes)
    for i, p_hat, q_hat in zip(lay.compressed, p_hats, second):
      leaves[i] = jnp.matmul(p_hat, q_hat.T, precision=hp).reshape(leaf_shapes[i])
    for i, x in zip(lay.dense, agg['dense']):
      leaves[i] = x
    return server.step(state, jax.tree.unflatten(treedef, leaves), {'q': tuple(second)})

  def download_bytes(state, held_rounds):
    nbytes = base.tree_bytes(ctx.params0) + 4 * sum(m * rank for n, m in lay.shapes)
    return np.full(np.shape(held_rounds), nbytes, np.int64)

  return base.FederatedAlgorithm(
      name='powersgd',
      init=init,
      init_client=init_client,
      broadcast=lambda state: base.Broadcast(state.theta, state.extra['q']),
      client_update=client_update,
      aggregate=aggregate,
      server_update=server_update,
      model_params=server.model_params,
      download_bytes=download_bytes,
      catch_up=lambda state, held_round: {'theta': state.theta, 'q': state.extra['q']},
      rebuild=server.rebuild,
      cohort_shortcut=False,
      query=query,
      respond=respond,
      aggregate2=aggregate,
      notice=(lambda state: state.extra['q']) if averaged else None,
      finish=finish if averaged else None,
  )
