"""Fields, checks and payload shared by the three intrinsic methods (docs/paper.md §3).

θ is raveled to one vector θ_flat: f32[D]. A subspace is a `projections` operator A: f[D, d] whose
random state is made from `keys.subspace_key(run_key, t)`; every client derives it from the run's
seed, so no seed or matrix ever travels (`compressors.Subspace`). `method.per_leaf=False` (the
default, Li et al. 2018's standard choice): one operator over all of θ_flat
(`projections.global_projection`); `method.per_leaf=True`: one operator per parameter leaf
(`projections.per_leaf`, leaf i keyed by fold_in(subspace key, i), d split over the leaves in
proportion to their sizes), so A is block diagonal in tree_flatten order; z is the leaves'
coordinates concatenated.

Client (`recipe.in_subspace`): u ∈ R^d from 0, `client.local_steps` SGD steps at `client.lr` on
the loss L(θ_base + A u), A the broadcast subspace; it uploads Δz = −u_end: f32[d] (= Aᵀ∇L with one
step at lr 1).

Weight decay (`server.weight_decay`, one meaning for the three methods): it pulls θ toward θ0, not
toward 0. The server optimiser's `params` argument (what optax's add_decayed_weights / adamw decay)
is the displacement from θ0 in the method's own coordinates (`servers.anchored_step`): z
(θ − θ0 = A z) for intrinsic_static, the active z_k for intrinsic_k_subspace (each subspace's
coordinates decay in the rounds that step it), θ − θ0 for intrinsic_time_varying. With server SGD
at rate η and decay λ a round then maps θ − θ0 to (1 − ηλ)(θ − θ0) − η·(the lifted step) in all
three (k-subspace: the active subspace's part).

Payload encodings of Δz (`method.payload_dtype`, or the same choice as `method.quantize` ∈ {none,
bf16, int8}, the name every method shares; setting both is refused): 'float32' (4·d bytes),
'bfloat16' (2·d bytes), 'int8' (d bytes + one float32 scale: stochastic rounding of Δz / scale with
scale = max|Δz| / 127, unbiased, drawn from the client's key; `compressors.int8`). Only float32 is
linear, so only it allows the cohort shortcut.
Recipe of the three: trainer `recipe.in_subspace`, compressor identity or a quantiser
(`compressor`), and a subspace server kind (`servers.subspace`, `servers.k_subspace`,
`servers.theta_replay`).
"""
from fedjax_intrinsic import compressors
from fedjax_intrinsic.algorithms import base, options
from fedjax_intrinsic.fields import Bool, Choice, ConfigError, Int

PAYLOAD_DTYPES = ('float32', 'bfloat16', 'int8')
_AS_QUANTIZE = dict(zip(PAYLOAD_DTYPES, compressors.QUANTIZE))   # float32 -> none, ...
OPERATORS = ('dense_gaussian', 'fastfood', 'sparse', 'identity')


# Fields every intrinsic method has (its module may add more).
FIELDS = {
    'd': Int(1000, lo=1, note='<= D (the number of model parameters)',
             doc='dimension of the subspace: Δz has d coordinates'),
    'projection': Choice('fastfood', OPERATORS, doc='the random operator A: f[D, d] (identity: d = D)'),
    'payload_dtype': Choice('float32', PAYLOAD_DTYPES,
                            doc='how Δz travels (the same choice as method.quantize)'),
    'per_leaf': Bool(False, doc='one operator per parameter leaf (A block diagonal), d split over '
                                'the leaves by size'),
    **options.QUANTIZE,
}


def validate(config) -> None:
  """The rules between the shared fields (each field itself: FIELDS; d <= D when D is known)."""
  m = config.method
  if m.per_leaf and m.projection == 'identity':
    raise ConfigError('method.per_leaf=True is invalid with method.projection=identity (d = D '
                      'leaves nothing to split); allowed: per_leaf=False, or another projection')
  options.validate(config, error_feedback=False)
  if m.quantize != 'none' and m.payload_dtype != 'float32':
    raise ConfigError(f'method.quantize={m.quantize} is invalid with method.payload_dtype='
                      f'{m.payload_dtype} (the same choice twice); allowed: quantize=none, or '
                      'payload_dtype=float32')
  if config.simulation.cohort_shortcut and (config.client.local_steps != 1 or
                                            m.payload_dtype != 'float32'):
    raise ConfigError('simulation.cohort_shortcut=True is invalid with client.local_steps='
                      f'{config.client.local_steps}, method.payload_dtype={m.payload_dtype!r}; '
                      'allowed: local_steps=1 and payload_dtype=float32')


def subspaces(method_config, ctx: base.BuildContext) -> compressors.Subspace:
  """The run's subspaces (`compressors.subspace`) from `method.d`, `method.projection` and
  `method.per_leaf`; ValueError when d does not fit D (known only here)."""
  return compressors.subspace(ctx.params0, method_config.d, method_config.projection,
                              method_config.get('per_leaf', False), ctx.run_key)


def quantize_of(method_config) -> str:
  """The payload's encoding as a `method.quantize` value (none / bf16 / int8)."""
  q = method_config.get('quantize', 'none')
  return q if q != 'none' else _AS_QUANTIZE[method_config.payload_dtype]


def compressor(method_config) -> compressors.Compressor:
  """Δz: f32[d] -> the payload: itself (float32), or bf16 / int8 + scale (`compressors`)."""
  return compressors.quantizer(quantize_of(method_config)) or compressors.identity()
