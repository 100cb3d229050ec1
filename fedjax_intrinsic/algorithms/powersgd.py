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
       `extra['q']` (f32[m, r] per compressed leaf). Client state: the error memory e: f32[n, m]
       per compressed leaf with error feedback (`compressors.ErrorFeedback`; between the two
       exchanges it holds M_c), else none. Two exchanges and client state: no cohort shortcut.
Recipe: trainer `recipe.tree_delta`, compressor `compressors.low_rank` (+ quantiser), wrapped in
`compressors.error_feedback` (keep_all: M_c travels to the second exchange in the memory) with
error feedback, server `servers.dense` downloading θ and Q; the second exchange below.
"""
from fedjax_intrinsic import compressors, keys
from fedjax_intrinsic.algorithms import base, options, recipe, servers
from fedjax_intrinsic.fields import Bool, Choice, ConfigError, Int

ERROR_MEMORIES = ('local', 'averaged')
Layout = compressors.MatrixLayout              # the matrix view of θ's leaves (preflight, tests)
layout = compressors.matrix_layout
matrix_shape = compressors.matrix_shape
orthonormalise = compressors.orthonormalise


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


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  rank = method_config.rank
  ef = method_config.error_feedback
  averaged = ef and method_config.get('error_memory', 'local') == 'averaged'
  if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
    raise ValueError(f'method.rank={rank!r} is invalid; allowed: a positive integer')
  lr = compressors.low_rank(ctx.params0, rank, keys.compressor_key(ctx.run_key),
                            compressors.quantizer(method_config.get('quantize', 'none')))
  flat = servers.flat_setup(ctx.params0)
  trainer = recipe.tree_delta(ctx, flat)
  server = servers.dense(ctx.server_optimizer, flat, downloads=('q',))
  compressor = lr.compressor()
  if ef:   # carries M_c = Δ_c + e_c to the second exchange in the memory (no extra state)
    compressor = compressors.error_feedback(compressor, lr.zeros, keep_all=True, part=lr.part())

  def respond(bc, request, cstate, batches, key):
    """Q_c = M_cᵀ P̂ up; M_c from the memory, or Δ_c again (same start, batches and key)."""
    mats = cstate.error if ef else lr.matrices(trainer(bc.theta, batches)[0])
    qs, received = lr.second(mats, request, keys.chain_key(key, 2))
    if ef and not averaged:   # the memory keeps what the server did not receive of M_c
      cstate = compressors.ErrorFeedback((), lr.residual(mats, request, received))
    return qs, cstate

  def finish(bc, request, q_hat, cstate):
    """error_memory='averaged': e_c ← M_c − P̂ Q̂ᵀ, with Q̂ (the notice) the round's mean Q."""
    del bc
    return compressors.ErrorFeedback((), lr.residual(cstate.error, request, q_hat))

  def server_update(state, agg, second):
    estimate = lr.estimate(agg, lr.request(agg), second)
    return server.step(state, estimate, {'q': tuple(second)})

  return recipe.assemble(
      'powersgd', trainer, compressor, server, extra=lambda: {'q': lr.init_q()},
      shared=lambda state: state.extra['q'], server_update=server_update,
      query=lambda state, agg: lr.request(agg), respond=respond, aggregate2=lr.aggregate,
      notice=(lambda state: state.extra['q']) if averaged else None,
      finish=finish if averaged else None)
