"""`random_k`: every client sends k coordinates of its update chosen uniformly at random.

Client (on the raveled Δ: f32[D], `topk_common`): with `method.error_feedback=True`, a ← e + Δ, it
sends a at k indices drawn from its own key (`keys.client_key(round_key, client_id)`, given by the
engine; `projections.random_k`: every k-subset equally likely) and e keeps a with the sent
coordinates zeroed (exactly what was not sent). `method.scaling='unbiased'` multiplies the values by
D/k, so E[densify(sent)] = Δ; error feedback needs the unscaled (contractive) compressor, so that
pair is refused.
Up, by `method.index_encoding`:
  'int32': {'values': f32[k], 'indices': i32[k]}: 8·k bytes;
  'seed':  {'values': f32[k], 'seed': u32[2]}: 4·k + 8 bytes. The indices are a pure function of
           the client's key; the server regenerates them in `aggregate`. The server could derive
           that key itself from the round and the client id (keys.py), but the engine's
           `aggregate` sees only payloads, so the key travels and its 8 bytes are counted.
With `method.quantize` (bf16 / int8 + one float32 scale) the values travel quantised.
Down: the coordinates of θ changed since the client's last sync as f32 values + i32 indices, or θ
      (4·D bytes) when smaller (`sparse_sync`).
State: server θ: f32[D], optimiser state, last_changed: i32[D] (`servers.sparse_sync`). Client
       state: the error f32[D] per client with error feedback (`compressors.ErrorFeedback`) (host-side, `simulation.ClientStateStore`), else none.
The message depends on each client's own random draw: no cohort shortcut.
Recipe: trainer `recipe.flat_delta`, compressor error_feedback(random_k (+ quantiser)), server
`servers.sparse_sync`.
"""
from fedjax_intrinsic import compressors
from fedjax_intrinsic.algorithms import base, options, recipe, servers, topk_common as tc
from fedjax_intrinsic.fields import Bool, Choice, ConfigError, Int

SCALINGS = ('none', 'unbiased')
INDEX_ENCODINGS = ('int32', 'seed')


# Random-k with the unbiased D/k scaling and no error feedback (the random mask of Konečný et al.
# 2016, who rescale so that the mean update is unbiased); k = 5,000, about a tenth of the digits
# CNN's D = 53,098 (README, methods table has its accuracy there).
FIELDS = {
    'k': Int(5000, lo=1, note=tc.D_NOTE, doc='coordinates sent per client'),
    'error_feedback': Bool(False, doc='the client keeps what was not sent (and what the quantiser '
                                      'left out) and adds it next round: an f32[D] memory per '
                                      'client (needs scaling=none)'),
    'scaling': Choice('unbiased', SCALINGS, doc='unbiased: the values times D/k'),
    'index_encoding': Choice('seed', INDEX_ENCODINGS,
                             doc='the indices travel as int32, or as the 8-byte key they derive '
                                 'from'),
    **options.QUANTIZE,
}


def validate(config) -> None:
  m = config.method
  if m.error_feedback and m.scaling == 'unbiased':
    raise ConfigError("method.scaling='unbiased' is invalid with method.error_feedback=True (error "
                      "feedback needs the contractive, unscaled compressor); allowed: scaling=none "
                      "or error_feedback=False")
  tc.check_no_cohort_shortcut(config)
  options.validate(config, error_feedback=False)


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  flat, D, k, _ = tc.sizes(method_config, ctx.params0)
  sparsifier = options.quantized(
      compressors.random_k(D, k, unbiased=method_config.scaling == 'unbiased',
                           by_seed=method_config.index_encoding == 'seed'), method_config)
  compressor = compressors.feedback_and_momentum(sparsifier, D, 0.0,
                                                 method_config.error_feedback)
  return recipe.assemble('random_k', recipe.flat_delta(ctx, flat), compressor,
                         servers.sparse_sync(ctx.server_optimizer, flat, ctx.num_rounds))
