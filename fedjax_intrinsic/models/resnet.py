"""`resnet9`: FetchSGD's ResNet-9 for CIFAR-10 (the DAWNBench ResNet-9 of D. Page), GroupNorm for
BatchNorm (docs/paper.md §2).

Each conv_block is conv 3x3 (no bias) -> GroupNorm(num_groups) -> relu:
  prep    conv_block(64)
  layer1  conv_block(128) -> 2x2 max pool -> + residual(conv_block(128) -> conv_block(128))
  layer2  conv_block(256) -> 2x2 max pool
  layer3  conv_block(512) -> 2x2 max pool -> + residual(conv_block(512) -> conv_block(512))
  global max pool (FetchSGD's MaxPool2d(4) on the 4x4 map of a 32x32 input) -> Dense(num_classes,
  no bias) -> x 0.125 (logit_scale).
Parameters on 32x32x3 / 10 classes: 6,568,640 conv/dense weights + 4,480 GroupNorm scales and biases
= 6,573,120 (norm='none' drops the norm parameters: 6,568,640).
conv_impl: see cnn.py ('auto' = im2col matmuls on CPU, which vmap over clients well).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_intrinsic import fields
from fedjax_intrinsic.models import base
from fedjax_intrinsic.models import cnn

CHANNELS = (64, 128, 256, 512)
OPTIONS = {      # the builder's options, declared once (config model.*)
    'num_groups': fields.Int(32, lo=1, note='dividing 64, 128, 256 and 512 (norm group)',
                             doc='GroupNorm groups'),
    'norm': cnn.NORM,
    'logit_scale': fields.Number(0.125, lo=0, lo_open=True, doc='the logits\' multiplier'),
    'conv_impl': cnn.CONV_IMPL,
}


class ResNet9(nn.Module):
  """x: [B, H, W, C] (any dtype, cast to f32; H, W >= 8) -> logits f32[B, num_classes]."""
  num_classes: int
  num_groups: int = 32
  norm: str = 'group'
  logit_scale: float = 0.125
  conv_impl: str = 'auto'

  def _block(self, x: jax.Array, features: int, name: str) -> jax.Array:
    x = cnn.Conv(features, use_bias=False, impl=self.conv_impl, name=f'{name}_conv')(x)
    if self.norm == 'group':
      x = cnn.GroupNorm(num_groups=self.num_groups, name=f'{name}_norm')(x)
    return nn.relu(x)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    prep, c1, c2, c3 = CHANNELS
    x = self._block(x.astype(jnp.float32), prep, 'prep')
    x = cnn.max_pool_2x2(self._block(x, c1, 'layer1'))
    x = x + self._block(self._block(x, c1, 'layer1_res1'), c1, 'layer1_res2')
    x = cnn.max_pool_2x2(self._block(x, c2, 'layer2'))
    x = cnn.max_pool_2x2(self._block(x, c3, 'layer3'))
    x = x + self._block(self._block(x, c3, 'layer3_res1'), c3, 'layer3_res2')
    x = x.max(axis=(1, 2))
    return nn.Dense(self.num_classes, use_bias=False, name='logits')(x) * self.logit_scale


def build(*, input_shape: tuple, num_classes: int, num_groups: int = 32, norm: str = 'group',
          logit_scale: float = 0.125, conv_impl: str = 'auto') -> base.Model:
  if len(input_shape) != 3 or min(input_shape[:2]) < 8:
    raise ValueError(f'input_shape={tuple(input_shape)} is invalid for resnet9; allowed: (H, W, C) '
                     'with H, W >= 8')
  fields.check(OPTIONS, locals(), 'model.')
  conv_impl = cnn.resolve_conv_impl(conv_impl)
  cnn.check_groups(norm, num_groups, CHANNELS)
  module = ResNet9(num_classes=num_classes, num_groups=num_groups, norm=norm,
                   logit_scale=float(logit_scale), conv_impl=conv_impl)
  return base.from_module('resnet9', 'classification', module, input_shape, num_classes)
