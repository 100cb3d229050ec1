"""`transformer_lm`: a small causal (GPT-style) transformer language model.

tokens int[B, T] (T <= seq_len = input_shape[0]) -> token embedding + learned positional embedding
(first T rows) -> num_layers pre-LayerNorm blocks [x + attn(LN(x)); x + mlp(LN(x))] -> final
LayerNorm -> logits f32[B, T, vocab_size] (vocab_size = num_classes).
- attn: causal multi-head self-attention, one fused q/k/v Dense(3 * d_model) and an output
  Dense(d_model); position t attends to positions <= t only.
- mlp: Dense(d_ff) -> GELU (tanh approximation, as GPT-2) -> Dense(d_model).
- tie_embeddings=True (default, as GPT-2): logits = h @ token_embedding^T, no output bias;
  False: a separate Dense(vocab_size) output layer with bias.
Embeddings are initialised N(0, 0.02^2); Dense layers use flax defaults (LeCun normal, zero bias).
Every matmul is a plain einsum/Dense, so vmap over per-client params gives batched matmuls.
Token ids must lie in [0, vocab_size) (pad inputs with 0; mark padded TARGETS with a negative id).
Default size (2 layers, d_model 64, 4 heads, d_ff 256): D = 99,968 + 128 + (vocab + seq_len) * 64,
e.g. 124,672 for a byte vocabulary (256) and seq_len 128.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_intrinsic import fields
from fedjax_intrinsic.models import base

OPTIONS = {      # the builder's options, declared once (config model.*)
    'num_layers': fields.Int(2, lo=1, doc='decoder blocks'),
    'd_model': fields.Int(64, lo=1, doc='residual width'),
    'num_heads': fields.Int(4, lo=1, note='dividing d_model', doc='attention heads'),
    'd_ff': fields.Int(256, lo=1, doc='feed-forward width'),
    'tie_embeddings': fields.Bool(True, doc='the output layer is the token embedding'),
}


class CausalSelfAttention(nn.Module):
  """x: f32[B, T, d_model] -> f32[B, T, d_model]."""
  num_heads: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, d = x.shape
    dh = d // self.num_heads
    qkv = nn.Dense(3 * d, name='qkv')(x).reshape(b, t, 3, self.num_heads, dh)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each [B, T, H, dh]
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(jnp.float32(dh))
    causal = jnp.tril(jnp.ones((t, t), bool))
    scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
    attn = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum('bhqk,bkhd->bqhd', attn, v).reshape(b, t, d)
    return nn.Dense(d, name='out')(out)


class Block(nn.Module):
  """Pre-LayerNorm transformer block. x: f32[B, T, d_model] -> f32[B, T, d_model]."""
  num_heads: int
  d_ff: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    x = x + CausalSelfAttention(self.num_heads, name='attn')(nn.LayerNorm(name='ln_attn')(x))
    h = nn.Dense(self.d_ff, name='mlp_in')(nn.LayerNorm(name='ln_mlp')(x))
    return x + nn.Dense(d, name='mlp_out')(nn.gelu(h, approximate=True))


class TransformerLM(nn.Module):
  """tokens: int[B, T] (T <= seq_len; any dtype, cast to int32) -> logits f32[B, T, vocab_size]."""
  vocab_size: int
  seq_len: int
  num_layers: int = 2
  d_model: int = 64
  num_heads: int = 4
  d_ff: int = 256
  tie_embeddings: bool = True

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    t = tokens.shape[1]
    if t > self.seq_len:
      raise ValueError(f'tokens length T={t} is invalid; allowed: T <= seq_len={self.seq_len}')
    embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=nn.initializers.normal(0.02),
                     name='token_embedding')
    pos = self.param('position_embedding', nn.initializers.normal(0.02),
                     (self.seq_len, self.d_model))
    x = embed(tokens.astype(jnp.int32)) + pos[:t]
    for i in range(self.num_layers):
      x = Block(self.num_heads, self.d_ff, name=f'block_{i}')(x)
    x = nn.LayerNorm(name='ln_final')(x)
    if self.tie_embeddings:
      return embed.attend(x)
    return nn.Dense(self.vocab_size, name='logits')(x)


def build(*, input_shape: tuple, num_classes: int, num_layers: int = 2, d_model: int = 64,
          num_heads: int = 4, d_ff: int = 256, tie_embeddings: bool = True) -> base.Model:
  if len(input_shape) != 1:
    raise ValueError(f'input_shape={tuple(input_shape)} is invalid for transformer_lm; allowed: '
                     '(seq_len,)')
  fields.check(OPTIONS, locals(), 'model.')
  if d_model % num_heads:
    raise ValueError(f'num_heads={num_heads} is invalid: it must divide d_model={d_model}')
  module = TransformerLM(vocab_size=num_classes, seq_len=input_shape[0], num_layers=num_layers,
                         d_model=d_model, num_heads=num_heads, d_ff=d_ff,
                         tie_embeddings=bool(tie_embeddings))
  return base.from_module('transformer_lm', 'language_model', module, input_shape, num_classes,
                          input_dtype=jnp.int32)
