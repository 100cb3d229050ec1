"""Models: shapes, parameter counts, no BatchNorm, determinism, conv implementations, causality."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_intrinsic import models
from fedjax_intrinsic.models import base, cnn, resnet, transformer

KEY = jax.random.PRNGKey(0)
DIGITS = dict(input_shape=(8, 8, 1), num_classes=10)


def _images(n, shape=(8, 8, 1), seed=0):
  return np.random.default_rng(seed).normal(size=(n,) + shape).astype(np.float32)


@pytest.mark.parametrize('name, kwargs, options, expected', [
    ('logreg', DIGITS, {}, 650),
    ('mlp', DIGITS, {}, 64 * 128 + 128 + 128 * 10 + 10),
    ('mlp', DIGITS, {'hidden': [32, 16]}, 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10),
    ('cnn', DIGITS, {}, 53_098),
    ('cnn', DIGITS, {'norm': 'none'}, 53_002),
    ('cnn', dict(input_shape=(28, 28, 1), num_classes=10), {'dense': ()},
     9 * 32 + 64 + 9 * 32 * 64 + 128 + 7 * 7 * 64 * 10 + 10),
    ('resnet9', dict(input_shape=(32, 32, 3), num_classes=10), {}, 6_573_120),
    ('resnet9', dict(input_shape=(32, 32, 3), num_classes=10), {'norm': 'none'}, 6_568_640),
    ('transformer_lm', dict(input_shape=(128,), num_classes=256), {}, 124_672),
    ('transformer_lm', dict(input_shape=(128,), num_classes=256), {'tie_embeddings': False},
     124_672 + 64 * 256 + 256),
])
def test_parameter_counts(name, kwargs, options, expected):
  model = models.get(name, **kwargs, **options)
  params = jax.eval_shape(model.init, KEY)
  assert models.num_params(params) == expected
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def test_resnet9_is_fetchsgd_size():
  model = models.get('resnet9', input_shape=(32, 32, 3), num_classes=10)
  d = models.num_params(jax.eval_shape(model.init, KEY))
  assert 6_400_000 <= d <= 6_700_000
  logits = jax.eval_shape(model.apply, jax.eval_shape(model.init, KEY),
                          jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.bfloat16))
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32


def test_resnet9_small_forward_and_logit_scale():
  # One real forward on the smallest input it accepts (8x8): finite logits = 0.125 x the last Dense.
  module = resnet.ResNet9(num_classes=10, num_groups=8)
  x = _images(2, (8, 8, 3))
  # Random params of init's shapes drawn in numpy: compiling resnet9's own init takes seconds.
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(module.init, KEY, x)
  variables = jax.tree.map(
      lambda s: rng.normal(size=s.shape).astype(np.float32) / np.sqrt(np.prod(s.shape[:-1]) or 1),
      shapes)
  logits, state = jax.jit(lambda v: module.apply(
      v, x, capture_intermediates=lambda m, _: m.name == 'logits'))(variables)
  assert set(variables) == {'params'}
  assert logits.shape == (2, 10) and np.all(np.isfinite(logits)) and np.std(logits) > 0
  dense_out = state['intermediates']['logits']['__call__'][0]
  np.testing.assert_allclose(logits, 0.125 * dense_out, rtol=1e-6)


def _inputs(model, n=3):
  if model.task == 'language_model':
    return np.random.default_rng(0).integers(0, model.num_classes, (n,) + model.input_shape)
  return _images(n, model.input_shape)


@pytest.mark.parametrize('which', ['mlp', 'small_cnn', 'lm'])
def test_forward_shape_and_determinism_by_key(which, request):
  c = request.getfixturevalue(which)
  p_same, p_other = c.init(KEY), c.init(jax.random.PRNGKey(1))
  jax.tree.map(np.testing.assert_array_equal, c.params, p_same)
  # Zero biases and unit LayerNorm scales do not depend on the key; every random leaf must.
  random_leaves = [(a, b) for a, b in zip(jax.tree.leaves(c.params), jax.tree.leaves(p_other))
                   if np.std(a) > 0]
  assert random_leaves and all(not np.array_equal(a, b) for a, b in random_leaves)
  x = _inputs(c.model)
  out = c.apply(c.params, x)
  if c.model.task == 'language_model':
    assert out.shape == (3,) + c.model.input_shape + (c.model.num_classes,)
  else:
    assert out.shape == (3, c.model.num_classes)
  assert out.dtype == jnp.float32 and np.all(np.isfinite(out))


def test_no_batchnorm_anywhere():
  # Every family's flax module creates only the 'params' collection (no batch statistics).
  modules = [
      (transformer.TransformerLM(vocab_size=7, seq_len=4, d_model=8, num_heads=2, d_ff=8),
       jax.ShapeDtypeStruct((1, 4), jnp.int32)),
      (cnn.CNN(num_classes=3, num_groups=2), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)),
      (resnet.ResNet9(num_classes=3), jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)),
  ]
  for module, x in modules:
    variables = jax.eval_shape(module.init, KEY, x)
    assert set(variables) == {'params'}, type(module).__name__
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(variables)]
    assert not [p for p in paths if 'batch' in p.lower() or 'mean' in p or 'var' in p]
  for name in models.MODELS:
    shape = (6,) if name in ('transformer_lm', 'gpt2', 'bert_classifier', 'llama', 'minilm_l6',
                             'minilm_l6_scratch') else (8, 8, 3)
    params = jax.eval_shape(models.get(name, input_shape=shape, num_classes=10).init, KEY)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    assert not [p for p in paths if 'batch' in p.lower()]


def test_module_with_batchnorm_is_rejected():
  class WithBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(nn.BatchNorm(use_running_average=False)(x.reshape(x.shape[0], -1)))

  model = base.from_module('bn', 'classification', WithBatchNorm(), (4,), 2)
  with pytest.raises(ValueError, match="only 'params'"):
    jax.eval_shape(model.init, KEY)


@pytest.mark.parametrize('shape', [(8, 8, 3), (7, 5, 2)])
def test_conv_impls_agree_and_vmap(shape):
  conv_lax = cnn.Conv(6, impl='lax')
  conv_patch = cnn.Conv(6, impl='patches')
  x = jnp.asarray(_images(2, shape))
  keys = jax.random.split(KEY, 3)
  params = jax.jit(jax.vmap(lambda k: conv_lax.init(k, x)))(keys)  # kernels [3, 3, 3, C, 6]
  params = jax.tree.map(lambda a: a + 0.1, params)         # nonzero bias too
  run = lambda conv: jax.vmap(lambda p: conv.apply(p, x))(params)
  y_lax, y_patch = jax.jit(lambda: (run(conv_lax), run(conv_patch)))()
  assert y_lax.shape == (3, 2) + shape[:2] + (6,)
  np.testing.assert_allclose(y_patch, y_lax, rtol=1e-5, atol=1e-5)
  # And against a direct numpy sum over the 3x3 window of the zero-padded input.
  k, b = np.asarray(params['params']['kernel'][0]), np.asarray(params['params']['bias'][0])
  xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = b + sum(np.einsum('bhwc,co->bhwo', xp[:, i:i + shape[0], j:j + shape[1]], k[i, j])
                 for i in range(3) for j in range(3))
  np.testing.assert_allclose(y_patch[0], want, rtol=1e-5, atol=1e-5)


def test_cnn_conv_impls_give_the_same_model(small_cnn):
  kw = dict(**DIGITS, features=(4, 8), dense=(16,), num_groups=2)
  m_lax = models.get('cnn', conv_impl='lax', **kw)
  m_patch = models.get('cnn', conv_impl='patches', **kw)
  assert (jax.tree.structure(jax.eval_shape(m_lax.init, KEY))
          == jax.tree.structure(jax.eval_shape(m_patch.init, KEY)))
  x = _images(4)
  both = jax.jit(lambda p: (m_lax.apply(p, x), m_patch.apply(p, x)))
  y_lax, y_patch = both(small_cnn.params)
  np.testing.assert_allclose(y_patch, y_lax, rtol=1e-5, atol=1e-5)


def test_max_pool_matches_flax():
  x = jnp.asarray(_images(2, (7, 6, 3)))
  np.testing.assert_array_equal(cnn.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2), 'VALID'))


def test_bfloat16_inputs(mlp, small_cnn):
  for c in (mlp, small_cnn):
    x_bf16 = jnp.asarray(_images(3, c.model.input_shape), jnp.bfloat16)
    out = c.apply(c.params, x_bf16)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, c.apply(c.params, np.asarray(x_bf16, np.float32)), rtol=1e-5,
                               atol=1e-5)


def test_vmap_over_client_params_matches_loop(mlp, lm):
  for c in (mlp, lm):
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[c.init(k) for k in jax.random.split(KEY, 3)])
    x = _inputs(c.model, 3)
    got = jax.jit(jax.vmap(c.model.apply, in_axes=(0, None)))(stacked, x)
    for i in range(3):
      p = jax.tree.map(lambda a: a[i], stacked)
      np.testing.assert_allclose(got[i], c.apply(p, x), rtol=1e-5, atol=1e-5)


def test_transformer_is_causal(lm):
  tokens = _inputs(lm.model, 3)
  changed = tokens.copy()
  changed[:, 4] = (changed[:, 4] + 1) % lm.model.num_classes
  a, b = lm.apply(lm.params, tokens), lm.apply(lm.params, changed)
  np.testing.assert_allclose(a[:, :4], b[:, :4], rtol=1e-6, atol=1e-6)
  assert np.all(np.abs(a[:, 4:] - b[:, 4:]).max(axis=-1) > 1e-4)
  # A shorter sequence gives the same logits as the prefix of a longer one.
  np.testing.assert_allclose(lm.apply(lm.params, tokens[:, :3]), a[:, :3], rtol=1e-5, atol=1e-6)


def test_transformer_tied_output_embedding(lm):
  # Tied: logits = LN_final(h) @ E^T with E the token embedding, and no separate output layer.
  assert 'logits' not in lm.params
  module = transformer.TransformerLM(vocab_size=11, seq_len=6, d_model=16, num_heads=2, d_ff=32)
  tokens = _inputs(lm.model, 2)
  logits, state = jax.jit(lambda p: module.apply(
      {'params': p}, tokens, capture_intermediates=lambda m, _: m.name == 'ln_final'))(lm.params)
  h = state['intermediates']['ln_final']['__call__'][0]
  emb = lm.params['token_embedding']['embedding']
  np.testing.assert_allclose(logits, np.einsum('btd,vd->btv', h, emb), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(lm.apply(lm.params, tokens), logits, rtol=1e-6, atol=1e-6)
  untied = models.get('transformer_lm', input_shape=(4,), num_classes=9, d_model=8, num_heads=2,
                      d_ff=8, tie_embeddings=False)
  assert jax.eval_shape(untied.init, KEY)['logits']['kernel'].shape == (8, 9)


@pytest.mark.parametrize('call, match', [
    (lambda: models.get('vgg', **DIGITS), "name='vgg'.*logreg, mlp, cnn, resnet9, transformer_lm"),
    (lambda: models.get('mlp', **DIGITS, width=3), "option 'width'.*hidden"),
    (lambda: models.get('logreg', **DIGITS, hidden=(3,)), "option 'hidden'.*none"),
    (lambda: models.get('mlp', **DIGITS, hidden=(0,)), 'hidden'),
    (lambda: models.get('mlp', input_shape=(8, 0), num_classes=10), 'input_shape'),
    (lambda: models.get('mlp', input_shape=(64,), num_classes=0), 'num_classes=0'),
    (lambda: models.get('cnn', input_shape=(64,), num_classes=10), 'input_shape=\\(64,\\)'),
    (lambda: models.get('cnn', **DIGITS, features=(32, 64, 64, 64)), 'features'),
    (lambda: models.get('cnn', **DIGITS, num_groups=5), 'num_groups=5'),
    (lambda: models.get('cnn', **DIGITS, norm='batch'), "^model.norm='batch'.*group, none$"),
    (lambda: models.get('resnet9', **DIGITS, conv_impl='fft'), "conv_impl='fft'"),
    (lambda: models.get('resnet9', input_shape=(4, 4, 3), num_classes=10), 'H, W >= 8'),
    (lambda: models.get('transformer_lm', input_shape=(8,), num_classes=5, num_heads=3),
     'num_heads=3'),
    (lambda: models.get('transformer_lm', input_shape=(8, 2), num_classes=5), 'seq_len'),
])
def test_bad_arguments_raise(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_options_lists_defaults():
  assert models.options('mlp') == {'hidden': (128,)}
  assert models.options('logreg') == {}
  assert set(models.MODELS) == {'logreg', 'mlp', 'cnn', 'resnet9', 'transformer_lm', 'gpt2',
                                'bert_classifier', 'llama', 'minilm_l6', 'minilm_l6_scratch'}
  assert models.options('minilm_l6') == {'checkpoint': ''}
  assert models.options('minilm_l6_scratch') == {}
