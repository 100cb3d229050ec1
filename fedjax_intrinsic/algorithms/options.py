"""The compressor options a method's config composes: `method.quantize` and `method.error_feedback`.

- `method.quantize` ∈ {none, bf16, int8} (`compressors.QUANTIZE`): the float values of the payload
  travel as float32 (none: the method as published), bfloat16, or int8 with one float32 scale per
  array (unbiased stochastic rounding from the client's key, `compressors.int8`). Integer leaves
  (indices, seeds) are untouched; bytes follow from the real payload. For the intrinsic methods
  it is the same choice as their `method.payload_dtype` (float32 / bfloat16 / int8).
- `method.error_feedback` (bool, where the method has no error memory of its own): the client
  keeps e ← (x + e) − decode(payload), what the quantiser left out (`compressors.error_feedback`),
  an f32 copy of x per client on the host. Without a quantiser there is nothing to feed back.
  `true_topk`, whose `method.error_feedback` is its server-side error, takes this field as
  `method.client_error_feedback` (`field=` below).
Refused at validation (one line naming the field): an unknown value, error feedback without a
quantiser, and a quantiser with `simulation.cohort_shortcut=True` (rounding is not linear).
"""
import jax
import jax.numpy as jnp

from fedjax_intrinsic import compressors
from fedjax_intrinsic.fields import Bool, Choice, ConfigError

# The fields a method's FIELDS takes from here: QUANTIZE where its payload carries float values,
# ERROR_FEEDBACK too where it has no error memory of its own.
QUANTIZE = {'quantize': Choice('none', compressors.QUANTIZE,
                               doc='the payload\'s float values as float32 (none), bfloat16, or '
                                   'int8 + one float32 scale per array')}
ERROR_FEEDBACK = {'error_feedback': Bool(False, doc='the client keeps what the quantiser left out '
                                                    'and adds it next round (needs quantize)')}


def validate(config, error_feedback: bool = True, field: str = 'error_feedback') -> None:
  """The rules between these fields and others (each field itself: its declaration).
  error_feedback: the method has ERROR_FEEDBACK, as the method field named `field`."""
  m = config.method
  if error_feedback and m[field] and m.quantize == 'none':
    raise ConfigError(f'method.{field}=True is invalid with method.quantize=none for '
                      f'method.name={m.name!r} (the payload is exact: nothing to feed back); '
                      f'allowed: {field}=False, or quantize=bf16/int8')
  if m.quantize != 'none' and config.simulation.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid with method.quantize='
                      f'{m.quantize} (rounding is not linear in the gradient); allowed: False')


def quantized(compressor: compressors.Compressor, method_config) -> compressors.Compressor:
  """`compressor`, then the configured quantiser on its payload's float values."""
  q = compressors.quantizer(method_config.get('quantize', 'none'))
  return compressor if q is None else compressors.chain(compressor, q)


def dense(method_config, like, field: str = 'error_feedback') -> compressors.Compressor:
  """The compressor of a method that sends x (shaped like `like`: θ's pytree, or f32[D]) whole:
  identity, or the configured quantiser, with error feedback when `method_config[field]`."""
  q = compressors.quantizer(method_config.get('quantize', 'none'))
  c = compressors.identity() if q is None else q
  if method_config.get(field, False):
    zeros = lambda: jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), like)
    c = compressors.error_feedback(c, zeros)
  return c
