"""`cnn`: a small convolutional classifier for 8x8 / 28x28 / 32x32 images, and the conv layers it
shares with `resnet9`.

Architecture (defaults): for f in features=(32, 64): conv 3x3 'SAME' (f channels) -> GroupNorm
(num_groups=8; norm='none' drops it and gives the conv a bias instead) -> relu -> 2x2 max pool; then
flatten -> [Dense(h) -> relu] for h in dense=(128,) -> Dense(num_classes).
Parameters on digits (8x8x1 -> 2x2x64 after the two pools, 10 classes):
  norm='group': 288 + 64 + 18,432 + 128 + 32,896 + 1,290 = 53,098;
  norm='none':  320 + 18,496 + 32,896 + 1,290 = 53,002.

conv_impl chooses how a conv is computed; all give the same function of the same params
(kernel f32[k, k, C_in, C_out]):
- 'lax': lax.conv_general_dilated. Under vmap over per-client kernels XLA turns it into a grouped
  convolution (feature_group_count = clients), which XLA:CPU may run slowly.
- 'patches': im2col by k*k shifted slices of the zero-padded input and one einsum with the kernel:
  under vmap it is a batched matmul.
- 'auto' (default): 'patches' when JAX's default backend is the CPU, else 'lax' (resolved at build).
The figures behind 'auto': benchmarks/README.md ("Measured choices in the code").
"""
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_intrinsic import fields
from fedjax_intrinsic.models import base

CONV_IMPLS = ('auto', 'lax', 'patches')
NORMS = ('group', 'none')
CONV_IMPL = fields.Choice('auto', CONV_IMPLS, doc='how a conv is computed (auto: patches on the '
                                                  'CPU, else lax; the same function)')
NORM = fields.Choice('group', NORMS, doc='GroupNorm after each conv, or none (a conv bias)')
OPTIONS = {      # the builder's options, declared once (config model.*)
    'features': fields.Ints((32, 64), lo=1, nonempty=True,
                            doc='channels of each 3x3 conv, each followed by a 2x2 max pool'),
    'dense': fields.Ints((128,), lo=1, doc='hidden dense widths after the convs'),
    'norm': NORM,
    'num_groups': fields.Int(8, lo=1, note='dividing every channel count (norm group)',
                             doc='GroupNorm groups'),
    'conv_impl': CONV_IMPL,
}


class Conv(nn.Module):
  """Stride-1 'SAME' conv. x: f32[B, H, W, C_in] -> f32[B, H, W, features].

  Params: 'kernel' f32[k, k, C_in, features] (LeCun normal, as flax nn.Conv), 'bias' f32[features]
  when use_bias.
  """
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, c_in = self.kernel_size, x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, c_in, self.features))
    if resolve_conv_impl(self.impl) == 'lax':
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    else:
      lo = (k - 1) // 2
      h, w = x.shape[1], x.shape[2]
      xp = jnp.pad(x, ((0, 0), (lo, k - 1 - lo), (lo, k - 1 - lo), (0, 0)))
      patches = jnp.stack([xp[:, i:i + h, j:j + w, :] for i in range(k) for j in range(k)],
                          axis=3)  # [B, H, W, k*k, C_in]
      y = jnp.einsum('bhwpc,pco->bhwo', patches, kernel.reshape(k * k, c_in, self.features))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros_init(), (self.features,))
    return y


def resolve_conv_impl(conv_impl: str) -> str:
  """'auto' -> 'patches' on the CPU backend, 'lax' elsewhere; other values are checked and kept."""
  if not CONV_IMPL.ok(conv_impl):
    fields.fail('model.conv_impl', conv_impl, CONV_IMPL.describe('conv_impl'))
  if conv_impl == 'auto':
    return 'patches' if jax.default_backend() == 'cpu' else 'lax'
  return conv_impl


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """x: [B, H, W, C] -> [B, H // 2, W // 2, C] (an odd last row/column is dropped, as 'VALID')."""
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def check_groups(norm: str, num_groups: int, channels: Sequence[int]) -> None:
  """num_groups divides every channel count (with norm group; each option on its own: OPTIONS)."""
  if norm == 'group':
    bad = [c for c in channels if c % num_groups]
    if bad:
      raise ValueError(f'num_groups={num_groups} is invalid: it must divide every channel count '
                       f'{tuple(channels)}')


class GroupNorm(nn.Module):
  """flax's nn.GroupNorm (same params 'scale', 'bias' f32[C]; epsilon 1e-6; var = E[x^2] - E[x]^2,
  clipped at 0) over x: f32[B, ..., C], computed with per-channel sums first.

  Same function, different reductions: per-channel sums first, then the groups' (why:
  benchmarks/README.md, "Measured choices in the code").
  """
  num_groups: int
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    g, k = self.num_groups, c // self.num_groups
    scale = self.param('scale', nn.initializers.ones_init(), (c,))
    bias = self.param('bias', nn.initializers.zeros_init(), (c,))
    axes = tuple(range(1, x.ndim - 1))
    n = k * math.prod(x.shape[a] for a in axes)
    s1 = jnp.sum(x, axis=axes).reshape(-1, g, k).sum(-1)        # [B, G]
    s2 = jnp.sum(x * x, axis=axes).reshape(-1, g, k).sum(-1)    # [B, G]
    mean = s1 / n
    inv = jax.lax.rsqrt(jnp.maximum(s2 / n - mean * mean, 0.0) + self.epsilon)
    a = jnp.repeat(inv, k, axis=-1) * scale                      # [B, C]
    b = bias - jnp.repeat(mean * inv, k, axis=-1) * scale
    shape = (x.shape[0],) + (1,) * len(axes) + (c,)
    return x * a.reshape(shape) + b.reshape(shape)


def conv_norm_relu(x: jax.Array, features: int, norm: str, num_groups: int, impl: str,
                   name: str) -> jax.Array:
  """Conv 3x3 -> GroupNorm (or none, and then the conv has a bias) -> relu, in a compact module."""
  x = Conv(features, use_bias=norm == 'none', impl=impl, name=f'{name}_conv')(x)
  if norm == 'group':
    x = GroupNorm(num_groups=num_groups, name=f'{name}_norm')(x)
  return nn.relu(x)


class CNN(nn.Module):
  """x: [B, H, W, C] (any dtype, cast to f32) -> logits f32[B, num_classes]."""
  num_classes: int
  features: Sequence[int] = (32, 64)
  dense: Sequence[int] = (128,)
  norm: str = 'group'
  num_groups: int = 8
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    for i, f in enumerate(self.features):
      x = conv_norm_relu(x, f, self.norm, self.num_groups, self.conv_impl, name=f'block{i}')
      x = max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.dense):
      x = nn.relu(nn.Dense(width, name=f'dense_{i}')(x))
    return nn.Dense(self.num_classes, name='logits')(x)


def build(*, input_shape: tuple, num_classes: int, features: Sequence[int] = (32, 64),
          dense: Sequence[int] = (128,), norm: str = 'group', num_groups: int = 8,
          conv_impl: str = 'auto') -> base.Model:
  if len(input_shape) != 3:
    raise ValueError(f'input_shape={tuple(input_shape)} is invalid for cnn; allowed: (H, W, C)')
  fields.check(OPTIONS, locals(), 'model.')
  features, dense = base.ints(features), base.ints(dense)
  conv_impl = resolve_conv_impl(conv_impl)
  check_groups(norm, num_groups, features)
  side = min(input_shape[:2]) // 2 ** len(features)
  if side < 1:
    raise ValueError(f'features={features} is invalid for input_shape={tuple(input_shape)}: '
                     f'{len(features)} 2x2 pools need a side of at least {2 ** len(features)}')
  module = CNN(num_classes=num_classes, features=features, dense=dense, norm=norm,
               num_groups=num_groups, conv_impl=conv_impl)
  return base.from_module('cnn', 'classification', module, input_shape, num_classes)
