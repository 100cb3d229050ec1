"""`logreg` and `mlp`: dense models on the flattened input (plain matmuls, cheap under vmap).

logreg: flatten -> Dense(num_classes). On digits (8x8x1, 10 classes) D = 64*10 + 10 = 650.
mlp: flatten -> [Dense(h) -> relu] for h in hidden -> Dense(num_classes). The default hidden=(128,)
on digits is 64-128-10, D = 64*128 + 128 + 128*10 + 10 = 9,610.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_intrinsic import fields
from fedjax_intrinsic.models import base

LOGREG_OPTIONS = {}
MLP_OPTIONS = {      # the builder's options, declared once (config model.*)
    'hidden': fields.Ints((128,), lo=1, doc='hidden layer widths (() is logistic regression)'),
}


class MLP(nn.Module):
  """x: [B, ...] (any dtype, cast to f32) -> logits f32[B, num_classes]; hidden=() is logreg."""
  num_classes: int
  hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1).astype(jnp.float32)
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, name=f'hidden_{i}')(h))
    return nn.Dense(self.num_classes, name='logits')(h)


def build_logreg(*, input_shape: tuple, num_classes: int) -> base.Model:
  module = MLP(num_classes=num_classes, hidden=())
  return base.from_module('logreg', 'classification', module, input_shape, num_classes)


def build_mlp(*, input_shape: tuple, num_classes: int,
              hidden: Sequence[int] = (128,)) -> base.Model:
  fields.check(MLP_OPTIONS, locals(), 'model.')
  hidden = base.ints(hidden)
  module = MLP(num_classes=num_classes, hidden=hidden)
  return base.from_module('mlp', 'classification', module, input_shape, num_classes)
