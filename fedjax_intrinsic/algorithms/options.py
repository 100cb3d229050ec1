"""The compressor options a method's config composes: `method.quantize` and `method.error_feedback`.

- `method.quantize` ∈ {none, bf16, int8} (`compressors.QUANTIZE`): the float values of the payload
  travel as float32 (none: the method as published), bfloat16, or int8 with one float32 scale per
  array (unbiased stochastic rounding from the client's key, `compressors.int8`). Integer leaves
  (indices, seeds) are untouched; bytes follow from the real payload. For the intrinsic methods
  it is the same choice as their `method.payload_dtype` (float32 / bfloat16 / int8).
- `method.error_feedback` (bool, where the method has no error memory of its own): the client
  keeps e ← (x + e) − decode(payload), what the quantiser left out (`compressors.error_feedback`),
  an f32 copy of x per client on the host. Without a quantiser there is nothing to feed back.
Refused at validation (one line naming the field): an unknown value, error feedback without a
quantiser, and a quantiser with `simulation.cohort_shortcut=True` (rounding is not linear).
"""
import jax
import jax.numpy as jnp

from fedjax_intrinsic import compressors


def defaults(error_feedback: bool = True) -> dict:
  """The option fields and their defaults (today's behaviour: nothing added)."""
  return {'quantize': 'none', **({'error_feedback': False} if error_feedback else {})}


def validate(config, error_feedback: bool = True) -> None:
  from fedjax_intrinsic.config import ConfigError
  m = config.method
  if m.quantize not in compressors.QUANTIZE:
    raise ConfigError(f'method.quantize={m.quantize!r} is invalid; allowed: '
                      f'{", ".join(compressors.QUANTIZE)}')
  if error_feedback:
    if not isinstance(m.error_feedback, bool):
      raise ConfigError(f'method.error_feedback={m.error_feedback!r} is invalid; allowed: True, '
                        'False')
    if m.error_feedback and m.quantize == 'none':
      raise ConfigError(f'method.error_feedback=True is invalid with method.quantize=none for '
                        f'method.name={m.name!r} (the payload is exact: nothing to feed back); '
                        'allowed: error_feedback=False, or quantize=bf16/int8')
  if m.quantize != 'none' and config.simulation.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid with method.quantize='
                      f'{m.quantize} (rounding is not linear in the gradient); allowed: False')


def quantized(compressor: compressors.Compressor, method_config) -> compressors.Compressor:
  """`compressor`, then the configured quantiser on its payload's float values."""
  q = compressors.quantizer(method_config.get('quantize', 'none'))
  return compressor if q is None else compressors.chain(compressor, q)


def dense(method_config, like) -> compressors.Compressor:
  """The compressor of a method that sends x (shaped like `like`: θ's pytree, or f32[D]) whole:
  identity, or the configured quantiser, with error feedback when configured."""
  q = compressors.quantizer(method_config.get('quantize', 'none'))
  c = compressors.identity() if q is None else q
  if method_config.get('error_feedback', False):
    zeros = lambda: jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), like)
    c = compressors.error_feedback(c, zeros)
  return c
