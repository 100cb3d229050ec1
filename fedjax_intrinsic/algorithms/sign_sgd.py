"""`sign_sgd`: 1-bit sign compression, by majority vote or by mean, with optional error feedback.

Two published methods and their ablations, selected by `method.vote`, `method.scaled` and
`method.error_feedback`:
- signSGD with majority vote (Bernstein et al. 2019), `vote='majority'`: every client
  sends sign(Δ); the server steps along the sign of the vote, one client one vote (the engine's
  weights only exclude padding clients, weight 0): g = γ · sign(Σ_c s_c), a tie (an even split) is 0.
  With `scaled=True` (the default) γ = Σ_c w_c ‖v_c‖₁ / D, the weighted mean scale the clients
  send, so the step follows the size of the gradients and the server rate means the same as for
  `uncompressed`; with `scaled=False` γ = 1 (Bernstein's rule: the server rate is the step).
- EF-SignSGD (Karimireddy et al. 2019), `vote='mean', scaled=True, error_feedback=True` (the
  default: the variant that converges without momentum or large cohorts, which signSGD-MV needs and
  the one-step digits protocol does not give it; README, methods table): client c
  compresses v_c = Δ_c + e_c to (‖v_c‖₁ / D) · sign(v_c), keeps e_c ← v_c − that, and the server
  takes the weighted mean g = Σ_c w_c (‖v_c‖₁ / D) · sign(v_c).
Δ is the client's pseudo-gradient (docs/paper.md §2: `client.local_steps` SGD steps at `client.lr`; the
gradient with one step at rate 1) over the raveled θ: f32[D]. The server feeds g to its optimiser.
sign(0) is a fair coin from the client's key (a coordinate with exactly zero pseudo-gradient, e.g. a
pixel that is blank in all the client's images, votes ±1 at random, so it is unbiased), since one bit
cannot say 0.

Up:   the signs packed 8 per byte, uint8[⌈D/8⌉] (bit set = +1, `jnp.packbits` order), plus one
      float32 scale ‖v‖₁ / D when `scaled`: ⌈D/8⌉ + 4 bytes.
Down: θ, D float32, to every participant: the server's step moves every coordinate (each coordinate
      of a sign vector is ±1, or 0 only on a tied vote), so the changed coordinates since a client's
      last sync are all of θ. (A client present in the previous round could instead replay the voted
      signs, under 2 bits a coordinate a round; in the cross-device setting of docs/paper.md §4 few clients
      return that soon, so the harness charges θ.)
State: server θ: f32[D] and the server optimiser's state (θ-space). Client state: the error memory
       e: f32[D] with `error_feedback`, else none. The message is non-linear (a sign), so the cohort
       shortcut does not apply.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from fedjax_intrinsic.algorithms import base

VOTES = ('majority', 'mean')


class ServerState(NamedTuple):
  round: jax.Array     # i32[]: the round about to run (1-based)
  params: jax.Array    # f32[D]: θ raveled
  opt_state: Any       # the server optimiser's state, θ-space


class ErrorFeedback(NamedTuple):
  error: jax.Array     # f32[D]: what the client's past messages left out


def default_config() -> dict:
  return {'vote': 'mean', 'scaled': True, 'error_feedback': True}


def validate(config) -> None:
  """Vote rule, flags, and error feedback only where there is a magnitude to feed back."""
  from fedjax_intrinsic.config import ConfigError
  m = config.method
  if m.vote not in VOTES:
    raise ConfigError(f'method.vote={m.vote!r} is invalid; allowed: {", ".join(VOTES)}')
  for field in ('scaled', 'error_feedback'):
    if not isinstance(m[field], bool):
      raise ConfigError(f'method.{field}={m[field]!r} is invalid; allowed: True, False')
  if m.error_feedback and not m.scaled:
    raise ConfigError('method.error_feedback=True is invalid with method.scaled=False (an unscaled '
                      'sign has no magnitude, so there is no error to feed back); allowed: '
                      'error_feedback=False, or scaled=True')
  if config.simulation.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid for method.name='
                      f'{m.name!r} (a sign is not linear in the gradient); allowed: False')


def pack_signs(bits: jax.Array) -> jax.Array:
  """bits: bool[..., D] (True = +1) -> uint8[..., ⌈D/8⌉]."""
  return jnp.packbits(bits, axis=-1)


def unpack_signs(packed: jax.Array, D: int) -> jax.Array:
  """uint8[..., ⌈D/8⌉] -> f32[..., D] of ±1."""
  bits = jnp.unpackbits(packed, axis=-1, count=D)
  return 2.0 * bits.astype(jnp.float32) - 1.0


def sign_bits(v: jax.Array, key: jax.Array) -> jax.Array:
  """bool[D]: v > 0, with a fair coin from `key` where v == 0."""
  coin = jax.random.bernoulli(key, 0.5, v.shape)
  return jnp.where(v == 0, coin, v > 0)


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  vote = method_config.vote
  scaled = method_config.scaled
  ef = method_config.error_feedback
  if vote not in VOTES:
    raise ValueError(f'method.vote={vote!r} is invalid; allowed: {", ".join(VOTES)}')
  if ef and not scaled:
    raise ValueError('method.error_feedback=True is invalid with method.scaled=False; allowed: '
                     'error_feedback=False, or scaled=True')
  theta0, unravel = ravel_pytree(ctx.params0)
  D = int(theta0.shape[0])
  loss = base.model_loss(ctx.model)
  opt = ctx.server_optimizer
  hp = jax.lax.Precision.HIGHEST

  def init(params0):
    flat = ravel_pytree(params0)[0]
    return ServerState(jnp.ones((), jnp.int32), flat, opt.init(flat))

  def init_client(params0):
    return ErrorFeedback(jnp.zeros((D,), jnp.float32)) if ef else ()

  def client_update(theta, cstate, batches, key):
    start = unravel(theta)
    end, metrics = base.local_sgd(loss, start, batches, ctx.client_lr)
    v = theta - ravel_pytree(end)[0]                       # Δ: f32[D]
    if ef:
      v = v + cstate.error
    bits = sign_bits(v, key)
    payload = {'signs': pack_signs(bits)}
    if scaled:
      scale = jnp.mean(jnp.abs(v))                         # ‖v‖₁ / D
      payload['scale'] = scale.astype(jnp.float32)
    if ef:
      cstate = ErrorFeedback(v - scale * (2.0 * bits.astype(jnp.float32) - 1.0))
    return payload, cstate, metrics

  def aggregate(payloads, weights):
    """A sum over the client axis: the vote count (+ weighted scale) or the weighted mean."""
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

  def server_update(state, agg, second=None):
    del second
    if vote == 'majority':
      g = jnp.sign(agg['vote'])
      if scaled:
        g = agg['scale'] * g
    else:
      g = agg['mean']
    params, opt_state = base.server_step(opt, state.params, state.opt_state, g)
    return ServerState(state.round + 1, params, opt_state)

  return base.FederatedAlgorithm(
      name='sign_sgd',
      init=init,
      init_client=init_client,
      broadcast=lambda state: state.params,
      client_update=client_update,
      aggregate=aggregate,
      server_update=server_update,
      model_params=lambda state: unravel(state.params),
      download_bytes=base.dense_download_bytes(ctx.params0),
      catch_up=lambda state, held_round: {'theta': state.params},
      rebuild=lambda held_state, payload, held_round, round_now: unravel(payload['theta']),
      cohort_shortcut=False,
  )
