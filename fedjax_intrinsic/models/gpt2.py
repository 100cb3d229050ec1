"""`gpt2`: GPT-2 causal language model (Radford et al. 2019), optionally from pretrained weights.

tokens int[B, T] (T <= seq_len = input_shape[0] <= n_positions) -> wte(tokens) + wpe[:T] ->
n_layer pre-LayerNorm blocks [x + attn(ln_1(x)); x + mlp(ln_2(x))] -> ln_f -> logits f32[B, T, V]
= h @ wte^T (tied embeddings, no output bias); V = vocab size = num_classes.
- attn: causal multi-head self-attention; c_attn: Dense(3 * n_embd) whose output splits into q, k, v
  (in that order, each [B, T, n_head, n_embd / n_head]); scores / sqrt(head dim); c_proj:
  Dense(n_embd).
- mlp: c_fc: Dense(4 * n_embd) -> GELU (tanh approximation) -> c_proj: Dense(n_embd).
- LayerNorm epsilon 1e-5. No dropout: `Model.apply` is deterministic (the interface passes no key).
Parameter names mirror Hugging Face's (`wte`, `wpe`, `h_{i}/{ln_1, attn/{c_attn, c_proj}, ln_2,
mlp/{c_fc, c_proj}}`, `ln_f`), so `checkpoint` maps `h_3/attn/c_attn/kernel` to
`[transformer.]h.3.attn.c_attn.weight` etc. without transposing (GPT-2's Conv1D stores [in, out]).
Ignored checkpoint tensors: the causal-mask buffers `attn.bias` / `attn.masked_bias` and
`lm_head.weight` (tied to wte).

Random init (no checkpoint) follows Hugging Face's: embeddings and Dense kernels N(0, 0.02^2), the
two residual projections (`attn/c_proj`, `mlp/c_proj`) N(0, (0.02 / sqrt(2 n_layer))^2), biases 0,
LayerNorm scale 1 and bias 0. With `checkpoint` (a model.safetensors / .npz path, see
hf_checkpoint.py) `init` returns the checkpoint's weights (its key is then unused); checkpoint=None
(default) is random init, '' an error (an unset path). The checkpoint is checked against the
configured sizes when the model is built.

Parameter count: wte V*E + wpe P*E + n_layer * (12 E^2 + 13 E) + 2E (ln_f), with E = n_embd,
P = n_positions. Each block: ln_1 2E, c_attn 3E^2 + 3E, c_proj E^2 + E, ln_2 2E, c_fc 4E^2 + 4E,
c_proj 4E^2 + E. GPT-2 small (V 50,257, P 1,024, E 768, 12 layers): 38,597,376 + 786,432 +
12 * 7,087,872 + 1,536 = 124,439,808.
"""
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_intrinsic import fields
from fedjax_intrinsic.models import base, hf_checkpoint

CHECKPOINT_URL = 'https://huggingface.co/openai-community/gpt2/resolve/main/model.safetensors'
OPTIONS = {      # the builder's options, declared once (config model.*)
    'n_layer': fields.Int(12, lo=1, doc='decoder blocks'),
    'n_head': fields.Int(12, lo=1, note='dividing n_embd', doc='attention heads'),
    'n_embd': fields.Int(768, lo=1, doc='residual width'),
    'n_positions': fields.Int(1024, lo=1, note='>= seq_len', doc='learned positions'),
    'checkpoint': hf_checkpoint.OPTION,
}
LN_EPS = 1e-5
INIT_STD = 0.02


def num_params(vocab_size: int, n_positions: int, n_embd: int, n_layer: int) -> int:
  """The closed form of the module docstring."""
  e = n_embd
  return vocab_size * e + n_positions * e + n_layer * (12 * e * e + 13 * e) + 2 * e


class Attention(nn.Module):
  """x: f32[B, T, E] -> f32[B, T, E], causal."""
  n_head: int
  proj_std: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, e = x.shape
    dh = e // self.n_head
    qkv = nn.Dense(3 * e, kernel_init=nn.initializers.normal(INIT_STD), name='c_attn')(x)
    q, k, v = (a.reshape(b, t, self.n_head, dh) for a in jnp.split(qkv, 3, axis=-1))
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(jnp.float32(dh))
    causal = jnp.tril(jnp.ones((t, t), bool))
    scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
    out = jnp.einsum('bhqk,bkhd->bqhd', jax.nn.softmax(scores, axis=-1), v).reshape(b, t, e)
    return nn.Dense(e, kernel_init=nn.initializers.normal(self.proj_std), name='c_proj')(out)


class MLP(nn.Module):
  """x: f32[B, T, E] -> f32[B, T, E]."""
  proj_std: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    e = x.shape[-1]
    h = nn.Dense(4 * e, kernel_init=nn.initializers.normal(INIT_STD), name='c_fc')(x)
    h = nn.gelu(h, approximate=True)
    return nn.Dense(e, kernel_init=nn.initializers.normal(self.proj_std), name='c_proj')(h)


class Block(nn.Module):
  """Pre-LayerNorm block. x: f32[B, T, E] -> f32[B, T, E]."""
  n_head: int
  proj_std: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + Attention(self.n_head, self.proj_std, name='attn')(
        nn.LayerNorm(epsilon=LN_EPS, name='ln_1')(x))
    return x + MLP(self.proj_std, name='mlp')(nn.LayerNorm(epsilon=LN_EPS, name='ln_2')(x))


class GPT2(nn.Module):
  """tokens: int[B, T] (T <= n_positions) -> logits f32[B, T, vocab_size]."""
  vocab_size: int
  n_positions: int = 1024
  n_embd: int = 768
  n_layer: int = 12
  n_head: int = 12

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    t = tokens.shape[1]
    if t > self.n_positions:
      raise ValueError(f'tokens length T={t} is invalid; allowed: T <= n_positions='
                       f'{self.n_positions}')
    init = nn.initializers.normal(INIT_STD)
    wte = nn.Embed(self.vocab_size, self.n_embd, embedding_init=init, name='wte')
    wpe = nn.Embed(self.n_positions, self.n_embd, embedding_init=init, name='wpe')
    x = wte(tokens.astype(jnp.int32)) + wpe.embedding[:t]
    proj_std = INIT_STD / math.sqrt(2 * self.n_layer)
    for i in range(self.n_layer):
      x = Block(self.n_head, proj_std, name=f'h_{i}')(x)
    x = nn.LayerNorm(epsilon=LN_EPS, name='ln_f')(x)
    return wte.attend(x)


def hf_name(path: tuple, available: set) -> tuple[str, bool]:
  """flax path -> (Hugging Face tensor name, transpose=False), with or without `transformer.`."""
  parts = [p.replace('h_', 'h.', 1) if p.startswith('h_') else p for p in path[:-1]]
  leaf = {'kernel': 'weight', 'embedding': 'weight', 'scale': 'weight', 'bias': 'bias'}[path[-1]]
  name = '.'.join(parts + [leaf])
  return hf_checkpoint.prefixed(name, ('', 'transformer.'), available), False


def hf_ignore(name: str) -> bool:
  """Checkpoint tensors GPT-2 does not use: causal-mask buffers and the tied lm_head."""
  return name.endswith(('.attn.bias', '.attn.masked_bias')) or name == 'lm_head.weight'


def build(*, input_shape: tuple, num_classes: int, n_layer: int = 12, n_head: int = 12,
          n_embd: int = 768, n_positions: int = 1024,
          checkpoint: Optional[str] = None) -> base.Model:
  """GPT-2 for token windows of input_shape = (seq_len,) and a vocabulary of num_classes."""
  if len(input_shape) != 1:
    raise ValueError(f'input_shape={tuple(input_shape)} is invalid for gpt2; allowed: (seq_len,)')
  fields.check(OPTIONS, locals(), 'model.')
  if n_embd % n_head:
    raise ValueError(f'n_head={n_head} is invalid: it must divide n_embd={n_embd}')
  if input_shape[0] > n_positions:
    raise ValueError(f'input_shape={tuple(input_shape)} is invalid for gpt2; allowed: seq_len <= '
                     f'n_positions={n_positions}')
  module = GPT2(vocab_size=num_classes, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                n_head=n_head)
  model = base.from_module('gpt2', 'language_model', module, input_shape, num_classes,
                           input_dtype=jnp.int32)
  if checkpoint is None:
    return model
  hf_checkpoint.resolve(checkpoint, 'model.checkpoint', CHECKPOINT_URL)   # cheap checks first
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  lay = hf_checkpoint.layout(checkpoint, shapes, hf_name, hf_ignore,
                              arg='model.checkpoint', source=CHECKPOINT_URL)

  def init(key: jax.Array) -> base.Params:
    del key  # every parameter comes from the checkpoint
    return hf_checkpoint.load_params_callback(lay)

  return model._replace(init=init)
