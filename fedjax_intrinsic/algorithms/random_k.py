"""`random_k`: every client sends k coordinates of its update chosen uniformly at random.

Client (on the raveled Δ: f32[D], `topk_common`): with `method.error_type='local'`, a ← e + Δ, it
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
Down: the coordinates of θ changed since the client's last sync as f32 values + i32 indices, or θ
      (4·D bytes) when smaller (`sparse_sync`).
State: server θ: f32[D], optimiser state, last_changed: i32[D]. Client state: the error f32[D] per
       client with error feedback (host-side, `simulation.ClientStateStore`), else none.
The message depends on each client's own random draw: no cohort shortcut.
"""
import jax
import jax.numpy as jnp

import projections as P
from fedjax_intrinsic.algorithms import base, topk_common as tc

ERROR_TYPES = ('local', 'none')
SCALINGS = ('none', 'unbiased')
INDEX_ENCODINGS = ('int32', 'seed')
ServerState = tc.ServerState
ClientState = tc.ClientState


def default_config() -> dict:
  """Random-k with the unbiased D/k scaling and no error feedback (the random mask of Konečný et
  al. 2016, who rescale so that the mean update is unbiased); k = 5,000, about a tenth of the digits
  CNN's D = 53,098 (README, methods table has its accuracy there)."""
  return {'k': 5000, 'error_type': 'none', 'scaling': 'unbiased', 'index_encoding': 'seed'}


def validate(config) -> None:
  from fedjax_intrinsic.config import ConfigError
  m = config.method
  tc.check_positive_int(m.k, 'method.k')
  tc.check_choice(m.error_type, 'method.error_type', ERROR_TYPES)
  tc.check_choice(m.scaling, 'method.scaling', SCALINGS)
  tc.check_choice(m.index_encoding, 'method.index_encoding', INDEX_ENCODINGS)
  if m.error_type == 'local' and m.scaling == 'unbiased':
    raise ConfigError("method.scaling='unbiased' is invalid with method.error_type='local' (error "
                      "feedback needs the contractive, unscaled compressor); allowed: scaling=none "
                      "or error_type=none")
  tc.check_no_cohort_shortcut(config)


def _raw_key(key: jax.Array) -> jax.Array:
  """u32[2] key data whether `key` is a raw or a typed PRNG key."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  return key


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  flat = tc.flat_setup(ctx)
  D, k = flat.D, method_config.k
  tc.check_k(k, D)
  tc.check_feedback_needs_loss(k, D, method_config.error_type)
  feedback = method_config.error_type == 'local'
  unbiased = method_config.scaling == 'unbiased'
  by_seed = method_config.index_encoding == 'seed'
  opt = ctx.server_optimizer
  sync = tc.sync(flat, ctx.num_rounds)

  def indices_of(seed):
    """i32[k]: the coordinates a client with key `seed: u32[2]` sends (the same draw as its own)."""
    return P.random_k(seed, jnp.zeros((D,), jnp.float32), k)[1]

  def client_update(bc, cstate, batches, key):
    seed = _raw_key(key)
    delta, metrics = tc.client_delta(ctx, flat, bc, batches)
    values, indices, new = tc.compress_with_feedback(
        delta, cstate, 0.0, feedback, lambda a: P.random_k(seed, a, k, unbiased=unbiased))
    payload = {'values': values}
    if by_seed:
      payload['seed'] = seed
    else:
      payload['indices'] = indices
    return payload, new if feedback else cstate, metrics

  def aggregate(payloads, weights):
    if by_seed:
      indices = jax.vmap(indices_of)(payloads['seed'])
    else:
      indices = payloads['indices']
    return tc.sparse_sum(payloads['values'], indices, weights, D)

  def server_update(state, agg, second=None):
    del second
    return tc.apply_update(opt, state, agg)

  return base.FederatedAlgorithm(
      name='random_k',
      init=lambda params0: tc.init_server(opt, tc.ravel(params0)),
      init_client=lambda params0: tc.init_client_state(D, 0.0, feedback),
      broadcast=lambda state: state.theta,
      client_update=client_update,
      aggregate=aggregate,
      server_update=server_update,
      model_params=lambda state: flat.unravel(state.theta),
      download_bytes=sync.download_bytes,
      catch_up=sync.catch_up,
      rebuild=sync.rebuild,
      keep=sync.keep,
      cohort_shortcut=False,
  )
