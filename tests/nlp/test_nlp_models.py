"""GPT-2 and BERT: pretrained weights from tiny Hugging Face-layout checkpoints give the same logits
as an independent float64 numpy forward pass written from the Hugging Face tensor names; exact
masking identities; full-size parameter counts from jax.eval_shape (nothing allocated)."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from fedjax_intrinsic import models
from fedjax_intrinsic.models import bert, gpt2, hf_checkpoint
from tests.nlp.helpers import random_tensors

KEY = jax.random.PRNGKey(0)
# Tiny sizes: 2 layers, 32 dims, 4 heads.
L, E, H, V, P, T = 2, 32, 4, 50, 16, 8


def _ln(x, w, b, eps):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def _softmax(s):
  s = s - s.max(-1, keepdims=True)
  return np.exp(s) / np.exp(s).sum(-1, keepdims=True)


def _heads(x):   # [B, T, E] -> [B, H, T, E / H]
  b, t, e = x.shape
  return x.reshape(b, t, H, e // H).transpose(0, 2, 1, 3)


def _merge(x):   # [B, H, T, dh] -> [B, T, H * dh]
  b, h, t, d = x.shape
  return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


# ----------------------------------------------------------------------------- GPT-2


def gpt2_tensors(prefix='transformer.'):
  shapes = {'wte.weight': (V, E), 'wpe.weight': (P, E), 'ln_f.weight': (E,), 'ln_f.bias': (E,)}
  for i in range(L):
    p = f'h.{i}.'
    shapes.update({p + 'ln_1.weight': (E,), p + 'ln_1.bias': (E,), p + 'ln_2.weight': (E,),
                   p + 'ln_2.bias': (E,), p + 'attn.c_attn.weight': (E, 3 * E),
                   p + 'attn.c_attn.bias': (3 * E,), p + 'attn.c_proj.weight': (E, E),
                   p + 'attn.c_proj.bias': (E,), p + 'mlp.c_fc.weight': (E, 4 * E),
                   p + 'mlp.c_fc.bias': (4 * E,), p + 'mlp.c_proj.weight': (4 * E, E),
                   p + 'mlp.c_proj.bias': (E,)})
  t = random_tensors(shapes, seed=1)
  for k in t:
    if k.endswith('ln_1.weight') or k.endswith('ln_2.weight') or k == 'ln_f.weight':
      t[k] += 1.0
  return {prefix + k: v for k, v in t.items()}


def gpt2_reference(t, tokens):
  """float64 GPT-2 forward from Hugging Face names (Conv1D weights are [in, out])."""
  t = {k.removeprefix('transformer.'): v.astype(np.float64) for k, v in t.items()}
  n = tokens.shape[1]
  h = t['wte.weight'][tokens] + t['wpe.weight'][:n]
  causal = np.tril(np.ones((n, n), bool))
  gelu = lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
  for i in range(L):
    g = lambda name: t[f'h.{i}.{name}']
    a = _ln(h, g('ln_1.weight'), g('ln_1.bias'), 1e-5)
    q, k, v = np.split(a @ g('attn.c_attn.weight') + g('attn.c_attn.bias'), 3, axis=-1)
    s = _heads(q) @ _heads(k).transpose(0, 1, 3, 2) / math.sqrt(E // H)
    o = _merge(_softmax(np.where(causal, s, -np.inf)) @ _heads(v))
    h = h + o @ g('attn.c_proj.weight') + g('attn.c_proj.bias')
    m = _ln(h, g('ln_2.weight'), g('ln_2.bias'), 1e-5)
    m = gelu(m @ g('mlp.c_fc.weight') + g('mlp.c_fc.bias'))
    h = h + m @ g('mlp.c_proj.weight') + g('mlp.c_proj.bias')
  return _ln(h, t['ln_f.weight'], t['ln_f.bias'], 1e-5) @ t['wte.weight'].T


def tiny_gpt2(checkpoint=None):
  return models.get('gpt2', input_shape=(T,), num_classes=V, n_layer=L, n_head=H, n_embd=E,
                    n_positions=P, checkpoint=checkpoint)


def test_gpt2_checkpoint_logits_match_numpy_reference(tmp_path):
  tensors = gpt2_tensors()
  extra = {'transformer.h.0.attn.bias': np.tril(np.ones((1, 1, P, P), np.float32)),
           'lm_head.weight': tensors['transformer.wte.weight']}        # ignored, as in HF files
  path = str(tmp_path / 'model.safetensors')
  hf_checkpoint.write_safetensors(path, {**tensors, **extra})
  model = tiny_gpt2(str(tmp_path))
  params = jax.jit(model.init)(KEY)                                    # init through pure_callback
  np.testing.assert_array_equal(params['h_1']['mlp']['c_fc']['kernel'],
                                tensors['transformer.h.1.mlp.c_fc.weight'])   # no transpose
  np.testing.assert_array_equal(params['wte']['embedding'], tensors['transformer.wte.weight'])
  tokens = np.random.default_rng(0).integers(0, V, (3, T))
  logits = jax.jit(model.apply)(params, tokens)
  assert logits.shape == (3, T, V) and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, gpt2_reference(tensors, tokens), rtol=1e-4, atol=1e-4)
  os.remove(path)                                  # eval_shape reads no data: the file may be gone
  assert models.num_params(jax.eval_shape(model.init, KEY)) == gpt2.num_params(V, P, E, L)


def test_gpt2_random_init_and_padding_targets():
  model = tiny_gpt2()
  params = jax.jit(model.init)(KEY)
  assert models.num_params(params) == gpt2.num_params(V, P, E, L)
  np.testing.assert_array_equal(params['ln_f']['scale'], np.ones(E))
  proj = np.concatenate([np.ravel(params[f'h_{i}'][m]['c_proj']['kernel'])
                         for i in range(L) for m in ('attn', 'mlp')])
  fc = np.ravel(params['h_0']['mlp']['c_fc']['kernel'])
  assert abs(proj.std() / (0.02 / math.sqrt(2 * L)) - 1) < 0.1 and abs(fc.std() / 0.02 - 1) < 0.1
  # Causal + negative targets: the loss over the first 5 targets of a sequence equals the loss of
  # the same sequence with its last 3 targets set to -1 (whatever its last tokens are).
  rng = np.random.default_rng(1)
  x = rng.integers(0, V, (2, T))
  y = rng.integers(0, V, (2, T))
  masked = y.copy()
  masked[:, 5:] = -1
  other_x = x.copy()
  other_x[:, 5:] = rng.integers(0, V, (2, T - 5))
  metrics = jax.jit(model.example_metrics)
  a = metrics(params, {'x': x, 'y': masked})
  b = metrics(params, {'x': other_x, 'y': masked})
  logits = np.asarray(jax.jit(model.apply)(params, x), np.float64)[:, :5]
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expect = -np.take_along_axis(logp, y[:, :5, None], -1)[..., 0].mean(-1)
  np.testing.assert_allclose(a['loss'], expect, rtol=1e-5)
  np.testing.assert_allclose(b['loss'], a['loss'], rtol=1e-5)
  np.testing.assert_array_equal(a['tokens'], [5, 5])


# ----------------------------------------------------------------------------- BERT

I, TV, C, PAD = 64, 2, 3, 0


def bert_tensors():
  """HF BertForSequenceClassification names with the old gamma/beta LayerNorm names."""
  shapes = {'embeddings.word_embeddings.weight': (V, E), 'embeddings.position_embeddings.weight':
            (P, E), 'embeddings.token_type_embeddings.weight': (TV, E),
            'embeddings.LayerNorm.gamma': (E,), 'embeddings.LayerNorm.beta': (E,),
            'pooler.dense.weight': (E, E), 'pooler.dense.bias': (E,)}
  for i in range(L):
    p = f'encoder.layer.{i}.'
    for n in ('query', 'key', 'value'):
      shapes.update({p + f'attention.self.{n}.weight': (E, E),
                     p + f'attention.self.{n}.bias': (E,)})
    shapes.update({p + 'attention.output.dense.weight': (E, E),
                   p + 'attention.output.dense.bias': (E,), p + 'attention.output.LayerNorm.gamma':
                   (E,), p + 'attention.output.LayerNorm.beta': (E,),
                   p + 'intermediate.dense.weight': (I, E), p + 'intermediate.dense.bias': (I,),
                   p + 'output.dense.weight': (E, I), p + 'output.dense.bias': (E,),
                   p + 'output.LayerNorm.gamma': (E,), p + 'output.LayerNorm.beta': (E,)})
  t = random_tensors(shapes, seed=2)
  for k in t:
    if k.endswith('gamma'):
      t[k] += 1.0
  return {'bert.' + k: v for k, v in t.items()}


def bert_reference(t, tokens, head):
  """float64 BERT classifier forward from Hugging Face names (Linear weights are [out, in])."""
  t = {k.removeprefix('bert.'): v.astype(np.float64) for k, v in t.items()}
  lin = lambda x, name: x @ t[name + '.weight'].T + t[name + '.bias']
  ln = lambda x, name: _ln(x, t[name + '.gamma'], t[name + '.beta'], 1e-12)
  n = tokens.shape[1]
  x = (t['embeddings.word_embeddings.weight'][tokens]
       + t['embeddings.position_embeddings.weight'][:n]
       + t['embeddings.token_type_embeddings.weight'][0])
  x = ln(x, 'embeddings.LayerNorm')
  keep = (tokens != PAD)[:, None, None, :]
  for i in range(L):
    p = f'encoder.layer.{i}.'
    q, k, v = (_heads(lin(x, p + f'attention.self.{m}')) for m in ('query', 'key', 'value'))
    s = np.where(keep, q @ k.transpose(0, 1, 3, 2) / math.sqrt(E // H), -3.4e38)
    a = ln(x + lin(_merge(_softmax(s) @ v), p + 'attention.output.dense'),
           p + 'attention.output.LayerNorm')
    inner = lin(a, p + 'intermediate.dense')
    inner = 0.5 * inner * (1 + erf(inner / math.sqrt(2)))
    x = ln(a + lin(inner, p + 'output.dense'), p + 'output.LayerNorm')
  pooled = np.tanh(lin(x[:, 0], 'pooler.dense'))
  return pooled @ np.asarray(head['kernel'], np.float64) + np.asarray(head['bias'], np.float64)


def tiny_bert(checkpoint=None, seq_len=T):
  return models.get('bert_classifier', input_shape=(seq_len,), num_classes=C, num_layers=L,
                    num_heads=H, hidden=E, intermediate=I, vocab_size=V, max_position=P,
                    type_vocab_size=TV, pad_id=PAD, checkpoint=checkpoint)


def test_bert_checkpoint_logits_match_numpy_reference(tmp_path):
  tensors = bert_tensors()
  extra = {'bert.embeddings.position_ids': np.arange(P, dtype=np.int64)[None],
           'cls.predictions.bias': np.zeros(V, np.float32),
           'classifier.weight': np.ones((7, E), np.float32)}                 # ignored: fresh head
  np.savez(tmp_path / 'model.npz', **tensors, **extra)
  model = tiny_bert(str(tmp_path / 'model.npz'))
  init = jax.jit(model.init)
  params = init(KEY)
  np.testing.assert_array_equal(params['encoder']['layer_1']['intermediate']['dense']['kernel'],
                                tensors['bert.encoder.layer.1.intermediate.dense.weight'].T)
  random_head = jax.jit(tiny_bert().init)(KEY)['classifier']
  for k in ('kernel', 'bias'):      # the head is fresh, from the key, as a random init makes it
    np.testing.assert_allclose(params['classifier'][k], random_head[k], rtol=1e-6, atol=1e-9)
  other = init(jax.random.PRNGKey(1))
  assert np.abs(other['classifier']['kernel'] - params['classifier']['kernel']).min() > 0
  np.testing.assert_array_equal(other['pooler']['dense']['bias'], params['pooler']['dense']['bias'])
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, V, (4, T))
  tokens[1, 5:] = PAD                                  # trailing padding
  tokens[2, :] = PAD                                   # a padding-only row (a masked batch slot)
  logits = jax.jit(model.apply)(params, tokens)
  assert logits.shape == (4, C) and np.all(np.isfinite(logits))
  np.testing.assert_allclose(logits, bert_reference(tensors, tokens, params['classifier']),
                             rtol=1e-4, atol=1e-4)
  # Padding keys get no attention: row 1 gives the same logits at seq_len 5 without the padding.
  short = tiny_bert(str(tmp_path / 'model.npz'), seq_len=5)
  np.testing.assert_allclose(jax.jit(short.apply)(params, tokens[1:2, :5]), logits[1:2], rtol=1e-5,
                             atol=1e-5)


def test_checkpoint_mismatches_are_clear_errors(tmp_path):
  tensors = gpt2_tensors(prefix='')
  cases = [
      ({k: v for k, v in tensors.items() if k != 'h.1.ln_2.bias'}, {},
       "lacks tensor 'h.1.ln_2.bias'"),
      (tensors, {'n_embd': 16, 'n_head': 2}, "tensor 'h.0.attn.c_attn.bias' has shape"),
      ({**tensors, 'h.2.ln_1.weight': np.ones(E, np.float32)}, {},
       "holds tensor 'h.2.ln_1.weight'"),
  ]
  for i, (content, sizes, message) in enumerate(cases):
    path = str(tmp_path / f'{i}.safetensors')
    hf_checkpoint.write_safetensors(path, content)
    options = {**dict(n_layer=L, n_head=H, n_embd=E, n_positions=P), **sizes}
    with pytest.raises(ValueError, match='model.checkpoint=.*' + message) as info:
      models.get('gpt2', input_shape=(T,), num_classes=V, checkpoint=path, **options)
    assert '\n' not in str(info.value)
  with pytest.raises(ValueError, match=r"model.checkpoint='' is invalid.*openai-community/gpt2/"
                                       r"resolve/main/model.safetensors"):
    tiny_gpt2('')
  with pytest.raises(ValueError, match=r"bert-base-uncased/resolve/main/model.safetensors"):
    tiny_bert('')
  (tmp_path / 'pytorch_model.bin').write_bytes(b'\x80\x02')
  with pytest.raises(ValueError, match='pickled PyTorch checkpoint'):
    tiny_bert(str(tmp_path / 'pytorch_model.bin'))
  with pytest.raises(ValueError, match='seq_len <= n_positions=16'):
    models.get('gpt2', input_shape=(P + 1,), num_classes=V, n_positions=P)
  with pytest.raises(ValueError, match='n_head=5 is invalid'):
    models.get('gpt2', input_shape=(T,), num_classes=V, n_head=5)
  with pytest.raises(ValueError, match='pad_id=50 is invalid'):
    models.get('bert_classifier', input_shape=(T,), num_classes=2, vocab_size=50, pad_id=50)


def test_full_size_parameter_counts():
  """GPT-2 small: wte 50,257 x 768 + wpe 1,024 x 768 + 12 blocks x (12 x 768^2 + 13 x 768) + ln_f
  2 x 768 = 124,439,808. BERT-base + 2-class head: embeddings (30,522 + 512 + 2) x 768 + 2 x 768,
  12 layers x (4 x 768^2 + 2 x 768 x 3,072 + 9 x 768 + 3,072), pooler 768^2 + 768, head 768 x 2 + 2
  = 109,483,778."""
  g = models.get('gpt2', input_shape=(1024,), num_classes=50257)
  assert models.num_params(jax.eval_shape(g.init, KEY)) == 124_439_808
  assert gpt2.num_params(50257, 1024, 768, 12) == 124_439_808
  b = models.get('bert_classifier', input_shape=(128,), num_classes=2)
  assert models.num_params(jax.eval_shape(b.init, KEY)) == 109_483_778
  assert bert.num_params(30522, 512, 2, 768, 3072, 12, 2) == 109_483_778
