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
State: server θ: f32[D] and the server optimiser's state (`servers.dense`). Client state: the
       error memory e: f32[D] with `error_feedback` (`compressors.ErrorFeedback`), else none. The message is non-linear (a sign), so the cohort
       shortcut does not apply.
Recipe: trainer `recipe.raveled_delta`, compressor error_feedback(sign) (`compressors.sign`),
server `servers.dense`.
"""
import jax.numpy as jnp

from fedjax_intrinsic import compressors
from fedjax_intrinsic.algorithms import base, recipe, servers
from fedjax_intrinsic.fields import Bool, Choice, ConfigError

VOTES = ('majority', 'mean')
pack_signs, unpack_signs, sign_bits = (compressors.pack_signs, compressors.unpack_signs,
                                       compressors.sign_bits)


# EF-SignSGD by default (the module docstring says why).
FIELDS = {
    'vote': Choice('mean', VOTES, doc='the server steps along the sign of the vote (majority), or '
                                      'takes the weighted mean of the scaled signs'),
    'scaled': Bool(True, doc='each client also sends its scale ‖v‖₁ / D'),
    'error_feedback': Bool(True, doc='the client keeps what its scaled sign left out (needs '
                                     'scaled)'),
}


def validate(config) -> None:
  """Error feedback only where there is a magnitude to feed back; no cohort shortcut."""
  m = config.method
  if m.error_feedback and not m.scaled:
    raise ConfigError('method.error_feedback=True is invalid with method.scaled=False (an unscaled '
                      'sign has no magnitude, so there is no error to feed back); allowed: '
                      'error_feedback=False, or scaled=True')
  if config.simulation.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid for method.name='
                      f'{m.name!r} (a sign is not linear in the gradient); allowed: False')


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  vote, scaled, ef = method_config.vote, method_config.scaled, method_config.error_feedback
  if vote not in VOTES:
    raise ValueError(f'method.vote={vote!r} is invalid; allowed: {", ".join(VOTES)}')
  if ef and not scaled:
    raise ValueError('method.error_feedback=True is invalid with method.scaled=False; allowed: '
                     'error_feedback=False, or scaled=True')
  flat = servers.flat_setup(ctx.params0)
  compressor = compressors.sign(flat.D, vote, scaled)
  if ef:
    compressor = compressors.error_feedback(compressor,
                                            lambda: jnp.zeros((flat.D,), jnp.float32))
  return recipe.assemble('sign_sgd', recipe.raveled_delta(ctx, flat), compressor,
                         servers.dense(ctx.server_optimizer, flat))
