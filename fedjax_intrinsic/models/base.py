"""The `Model` type every family builds: losses, metrics, the training objective, evaluation.

A `Model` is a NamedTuple of pure functions over a float32 params pytree (flax `'params'` collection
only: no BatchNorm, no mutable state, docs/paper.md §2), so it can be jitted, differentiated and vmapped
over per-client weights.

Batches are dicts of arrays with a leading example axis B:
- classification: `batch['x']: [B, *input_shape]` (any float or integer dtype; cast to f32 inside),
  `batch['y']: int[B]` class ids in [0, num_classes).
- language model: `batch['x']: int[B, T]` token ids in [0, vocab), `batch['y']: int[B, T]` the next
  tokens; a NEGATIVE target marks a padding position, counted in no loss, accuracy or token count.
- optional `batch['mask']: f32[B]` (1 real, 0 padding) or `batch['weight']: f32[B]` (explicit
  example weights, used as they are by `weighted_loss`).
"""
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_intrinsic import fields

Params = Any

TASKS = ('classification', 'language_model')


class Model(NamedTuple):
  """A model as pure functions of a float32 params pytree.

  name: the registry name. task: 'classification' | 'language_model'.
  init(key) -> params (shapes from `input_shape`; the same key always gives the same params).
  apply(params, x): x: [B, *input_shape] -> logits f32[B, num_classes] (classification) or
    f32[B, T, vocab] (language model, T <= input_shape[0]).
  example_loss(params, batch) -> f32[B]: cross-entropy per example (LM: mean over the sequence's
    valid target tokens; 0 for a sequence without any).
  example_metrics(params, batch) -> {'loss': f32[B], 'correct': f32[B]} (classification, correct in
    {0, 1}); LM adds 'tokens': f32[B] (valid targets per sequence) and 'correct' is the sequence's
    token accuracy.
  input_shape, input_dtype, num_classes: what `init` built the params for (num_classes is the vocab
    size of a language model).
  """
  name: str
  task: str
  init: Callable[[jax.Array], Params]
  apply: Callable[[Params, jax.Array], jax.Array]
  example_loss: Callable[[Params, dict], jax.Array]
  example_metrics: Callable[[Params, dict], dict]
  input_shape: tuple = ()
  input_dtype: Any = jnp.float32
  num_classes: int = 0


# ----------------------------------------------------------------------------- validation helpers


def check_positive_int(name: str, value: Any) -> int:
  if not fields.is_int(value, 1):
    raise ValueError(f'{name}={value!r} is invalid; allowed: a positive integer')
  return int(value)


def check_int_tuple(name: str, value: Any, allow_empty: bool = True) -> tuple[int, ...]:
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    value = (value,)
  if not isinstance(value, Sequence) or isinstance(value, str) or (not value and not allow_empty):
    raise ValueError(f'{name}={value!r} is invalid; allowed: a '
                     f'{"" if allow_empty else "non-empty "}sequence of positive integers')
  try:
    return tuple(check_positive_int(name, v) for v in value)
  except ValueError:
    raise ValueError(
        f'{name}={value!r} is invalid; allowed: a sequence of positive integers') from None


def ints(value) -> tuple[int, ...]:
  """A declared `fields.Ints` option's value as a tuple of ints (a bare integer: one item)."""
  return (int(value),) if fields.is_int(value) else tuple(int(v) for v in value)


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
  if value not in allowed:
    raise ValueError(f'{name}={value!r} is invalid; allowed: {", ".join(map(repr, allowed))}')
  return value


# ----------------------------------------------------------------------------- building a Model


def classification_stats(logits: jax.Array, y: jax.Array) -> dict:
  """logits: f32[B, K], y: int[B] -> {'loss': f32[B], 'correct': f32[B]}."""
  logits = logits.astype(jnp.float32)
  y = y.astype(jnp.int32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
  return {'loss': loss, 'correct': correct}


def language_model_stats(logits: jax.Array, y: jax.Array) -> dict:
  """logits: f32[B, T, V], y: int[B, T] (negative = padding) -> per-sequence stats, each f32[B].

  'loss': mean cross-entropy over valid targets, 'correct': token accuracy over them, 'tokens':
  their count. A sequence without valid targets has loss 0, correct 0 and tokens 0.
  """
  logits = logits.astype(jnp.float32)
  y = y.astype(jnp.int32)
  valid = y >= 0
  safe_y = jnp.where(valid, y, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe_y)
  hit = (jnp.argmax(logits, axis=-1) == safe_y)
  tokens = valid.sum(axis=-1).astype(jnp.float32)
  denom = jnp.maximum(tokens, 1.0)
  loss = jnp.where(valid, ce, 0.0).sum(axis=-1) / denom
  correct = jnp.where(valid, hit, False).sum(axis=-1).astype(jnp.float32) / denom
  return {'loss': loss, 'correct': correct, 'tokens': tokens}


def from_module(name: str, task: str, module: nn.Module, input_shape: Sequence[int],
                num_classes: int, input_dtype: Any = jnp.float32) -> Model:
  """Wraps a flax module whose only variable collection is 'params' into a `Model`.

  module(x): x: [B, *input_shape] -> logits. Raises ValueError if the module creates any other
  collection (batch statistics, caches): a model's whole state must be its params θ.
  """
  check_choice('task', task, TASKS)
  input_shape = tuple(int(s) for s in input_shape)

  def init(key: jax.Array) -> Params:
    variables = module.init(key, jnp.zeros((1,) + input_shape, input_dtype))
    extra = sorted(set(variables) - {'params'})
    if extra:
      raise ValueError(f'model {name!r} creates variable collections {extra}; allowed: only '
                       "'params' (no BatchNorm or other mutable state)")
    return variables['params']

  def apply(params: Params, x: jax.Array) -> jax.Array:
    return module.apply({'params': params}, x)

  stats = classification_stats if task == 'classification' else language_model_stats

  def example_metrics(params: Params, batch: dict) -> dict:
    return stats(apply(params, batch['x']), batch['y'])

  def example_loss(params: Params, batch: dict) -> jax.Array:
    return example_metrics(params, batch)['loss']

  return Model(name=name, task=task, init=init, apply=apply, example_loss=example_loss,
               example_metrics=example_metrics, input_shape=input_shape, input_dtype=input_dtype,
               num_classes=int(num_classes))


# ----------------------------------------------------------------------------- objective, counting


def num_params(params: Params) -> int:
  """D: the number of scalars in a params pytree."""
  return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params)))


def example_weights(batch: dict) -> jax.Array:
  """w: f32[B]: batch['weight'] if present, else mask / max(sum(mask), 1), else the uniform 1/B."""
  if 'weight' in batch:
    return jnp.asarray(batch['weight'], jnp.float32)
  if 'mask' in batch:
    mask = jnp.asarray(batch['mask'], jnp.float32)
    return mask / jnp.maximum(mask.sum(), 1.0)
  b = jnp.shape(batch['y'])[0]
  return jnp.full((b,), 1.0 / b, jnp.float32)


def weighted_loss(model: Model, params: Params, batch: dict) -> jax.Array:
  """The training objective: sum_i w_i * loss_i (w from `example_weights`), a f32 scalar.

  An example with w_i = 0 (padding) contributes exactly zero to the loss and to its gradient: its
  x and y are replaced by zeros before the forward pass (so garbage in a padded slot, NaN/inf or an
  out-of-range label, never enters the computation) and its loss is selected away with jnp.where.
  Every model here is finite at a zero input (the norm layers have an epsilon).
  """
  w = example_weights(batch)
  keep = w != 0

  def zero_padding(a):
    a = jnp.asarray(a)
    return jnp.where(keep.reshape(keep.shape + (1,) * (a.ndim - 1)), a, jnp.zeros((), a.dtype))

  clean = dict(batch, x=zero_padding(batch['x']), y=zero_padding(batch['y']))
  loss = model.example_loss(params, clean)
  return jnp.sum(jnp.where(keep, w * loss, 0.0))


# ----------------------------------------------------------------------------- evaluation


def make_evaluator(model: Model, batch_size: int) -> Callable[[Params, dict], dict]:
  """Returns evaluate(params, split) -> dict of floats, with one jitted step per batch shape.

  split: {'x': [N, *input_shape], 'y': [N] or [N, T], optional 'mask': [N]} (numpy or jax arrays).
  The split is cut into batches of `batch_size`; the last, ragged one is zero-padded and masked.
  classification -> {'loss', 'accuracy'} (means over examples); language model -> {'loss',
  'perplexity', 'accuracy'} (means over valid target tokens; perplexity = exp(loss)). Sums are
  accumulated per batch on device and added in float64 on the host.
  """
  batch_size = check_positive_int('batch_size', batch_size)
  is_lm = model.task == 'language_model'

  def step(params: Params, batch: dict) -> jax.Array:
    """-> f32[3]: (sum of weighted loss, sum of weighted correct, total weight) of one batch."""
    m = model.example_metrics(params, batch)
    mask = batch['mask']
    w = mask * m['tokens'] if is_lm else mask
    loss = jnp.sum(jnp.where(w != 0, w * m['loss'], 0.0))
    correct = jnp.sum(jnp.where(w != 0, w * m['correct'], 0.0))
    return jnp.stack([loss, correct, jnp.sum(w)])

  step = jax.jit(step)

  def evaluate(params: Params, split: dict) -> dict:
    for field in ('x', 'y'):
      if field not in split:
        raise ValueError(f'split is missing field {field!r}; required: x, y (mask optional)')
    sizes = {k: len(split[k]) for k in ('x', 'y', 'mask') if k in split}
    n = sizes['x']
    if n == 0 or len(set(sizes.values())) > 1:
      sizes = ', '.join(f'{k}={v}' for k, v in sizes.items())
      raise ValueError(f'split sizes {sizes} are invalid; allowed: equal and >= 1')
    mask = (np.asarray(split['mask'], np.float32) if 'mask' in split else np.ones((n,), np.float32))
    sums = []
    for start in range(0, n, batch_size):
      stop = min(start + batch_size, n)
      batch = {'x': np.asarray(split['x'][start:stop]), 'y': np.asarray(split['y'][start:stop]),
               'mask': mask[start:stop]}
      if stop - start < batch_size:
        pad = batch_size - (stop - start)
        batch = {k: np.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1)) for k, v in batch.items()}
      sums.append(step(params, batch))
    sums = np.stack([np.asarray(s) for s in sums]).astype(np.float64)
    loss, correct, total = sums.sum(axis=0)
    if total > 0:
      out = {'loss': float(loss / total), 'accuracy': float(correct / total)}
    else:  # every example masked (or, for a language model, no valid target token)
      out = {'loss': float('nan'), 'accuracy': float('nan')}
    if is_lm:
      out['perplexity'] = float(np.exp(out['loss']))
    return out

  return evaluate


def evaluate(model: Model, params: Params, data_split: dict, batch_size: int) -> dict:
  """One-off evaluation of `params` on a whole split (see `make_evaluator`).

  This builds (and compiles) a fresh evaluator on every call: for evaluation every round, build one
  with make_evaluator(model, batch_size) and reuse it.
  """
  return make_evaluator(model, batch_size)(params, data_split)
