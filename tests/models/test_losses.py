"""Losses, metrics, the masked training objective and batched evaluation, against numpy oracles."""
import jax
import numpy as np
import pytest
from scipy.special import log_softmax

from fedjax_intrinsic import models

KEY = jax.random.PRNGKey(0)


def _digits_like(n, seed=0):
  rng = np.random.default_rng(seed)
  return {'x': rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
          'y': rng.integers(0, 10, n).astype(np.int32)}


def _np_classification(c, data):
  """Per-example cross-entropy and correctness from the logits, in float64 numpy."""
  logits = np.asarray(c.apply(c.params, data['x']), np.float64)
  logp = log_softmax(logits, axis=-1)
  loss = -logp[np.arange(len(data['y'])), data['y']]
  return loss, (logits.argmax(-1) == data['y']).astype(np.float64)


def _np_language_model(c, data):
  """Per-token cross-entropy, hits, validity [N, T] in float64 numpy (negative targets invalid)."""
  logp = log_softmax(np.asarray(c.apply(c.params, data['x']), np.float64), axis=-1)
  y = data['y']
  valid = y >= 0
  safe = np.where(valid, y, 0)
  ce = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
  hit = logp.argmax(-1) == safe
  return ce, hit, valid


def test_classification_example_metrics(mlp):
  data = _digits_like(7)
  loss, correct = _np_classification(mlp, data)
  m = mlp.metrics(mlp.params, data)
  np.testing.assert_allclose(m['loss'], loss, rtol=1e-5)
  np.testing.assert_array_equal(m['correct'], correct)
  np.testing.assert_allclose(jax.jit(mlp.model.example_loss)(mlp.params, data), loss, rtol=1e-5)


def test_language_model_example_metrics(lm):
  rng = np.random.default_rng(1)
  data = {'x': rng.integers(0, 11, (3, 6)), 'y': rng.integers(0, 11, (3, 6))}
  data['y'][0, 4:] = -1   # a padded tail
  data['y'][2, :] = -1    # a sequence with no valid target at all
  ce, hit, valid = _np_language_model(lm, data)
  m = lm.metrics(lm.params, data)
  tokens = valid.sum(-1)
  np.testing.assert_array_equal(m['tokens'], tokens)
  want_loss = np.where(tokens > 0, (ce * valid).sum(-1) / np.maximum(tokens, 1), 0.0)
  np.testing.assert_allclose(m['loss'], want_loss, rtol=1e-5)
  np.testing.assert_allclose(m['correct'], (hit & valid).sum(-1) / np.maximum(tokens, 1), rtol=1e-6)
  assert m['loss'][2] == 0 and m['tokens'][2] == 0


def _loss_and_grad(c):
  return jax.jit(jax.value_and_grad(lambda p, b: models.weighted_loss(c.model, p, b)))


@pytest.mark.parametrize('garbage', ['zeros', 'nan', 'huge'])
def test_weighted_loss_masks_padding_in_loss_and_gradient(mlp, garbage):
  real = _digits_like(5)
  pad = {'zeros': 0.0, 'nan': np.nan, 'huge': 1e30}[garbage]
  padded = {'x': np.concatenate([real['x'], np.full((3, 8, 8, 1), pad, np.float32)]),
            'y': np.concatenate([real['y'], np.array([0, 99, -7], np.int32)]),  # out of range
            'mask': np.array([1] * 5 + [0] * 3, np.float32)}
  # The unpadded oracle: the plain mean over the 5 real examples (no mask, no weight).
  want_loss, want_grad = _loss_and_grad(mlp)(mlp.params, real)
  loss, grad = _loss_and_grad(mlp)(mlp.params, padded)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  np.testing.assert_allclose(want_loss, _np_classification(mlp, real)[0].mean(), rtol=1e-5)
  for g, w in zip(jax.tree.leaves(grad), jax.tree.leaves(want_grad)):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_weighted_loss_all_masked_is_zero(mlp):
  batch = dict(_digits_like(4), mask=np.zeros(4, np.float32))
  loss, grad = _loss_and_grad(mlp)(mlp.params, batch)
  assert loss == 0
  assert all(np.all(g == 0) for g in jax.tree.leaves(grad))


def test_weighted_loss_explicit_weights_and_default(mlp):
  data = _digits_like(6)
  loss, _ = _np_classification(mlp, data)
  objective = jax.jit(lambda b: models.weighted_loss(mlp.model, mlp.params, b))
  w = np.array([0.5, 0.0, 0.1, 0.2, 0.0, 0.2], np.float32)
  # 'weight' is used as given (not renormalised) and takes precedence over 'mask'.
  np.testing.assert_allclose(objective(dict(data, weight=w, mask=np.ones(6, np.float32))),
                             (w * loss).sum(), rtol=1e-5)
  np.testing.assert_allclose(objective(dict(data, weight=3 * w)), 3 * (w * loss).sum(), rtol=1e-5)
  # Neither: the plain mean.
  np.testing.assert_allclose(objective(data), loss.mean(), rtol=1e-5)
  # The mask: mean over the kept examples.
  mask = np.array([1, 1, 0, 1, 0, 0], np.float32)
  np.testing.assert_allclose(objective(dict(data, mask=mask)), loss[mask > 0].mean(), rtol=1e-5)
  np.testing.assert_allclose(models.example_weights(dict(data, mask=mask)), mask / 3)


def test_weighted_loss_language_model_padding(lm):
  rng = np.random.default_rng(2)
  real = {'x': rng.integers(0, 11, (3, 6)), 'y': rng.integers(0, 11, (3, 6))}
  real['y'][1, 3:] = -1
  padded = {'x': np.concatenate([real['x'][:2], np.zeros((1, 6), np.int64), real['x'][2:]]),
            'y': np.concatenate([real['y'][:2], np.full((1, 6), 5), real['y'][2:]]),
            'mask': np.array([1, 1, 0, 1], np.float32)}
  real['mask'] = np.ones(3, np.float32)
  ce, _, valid = _np_language_model(lm, real)
  want = np.mean((ce * valid).sum(-1) / valid.sum(-1))  # mean over sequences of per-sequence means
  want_loss, want_grad = _loss_and_grad(lm)(lm.params, real)
  loss, grad = _loss_and_grad(lm)(lm.params, padded)
  np.testing.assert_allclose(want_loss, want, rtol=1e-5)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7), grad, want_grad)


def test_evaluate_classification_ragged_last_batch(mlp):
  split = _digits_like(23, seed=3)
  loss, correct = _np_classification(mlp, split)
  evaluate = models.make_evaluator(mlp.model, batch_size=8)  # batches of 8, 8, 7 (+1 padded)
  got = evaluate(mlp.params, split)
  assert set(got) == {'loss', 'accuracy'}
  np.testing.assert_allclose(got['loss'], loss.mean(), rtol=1e-5)
  np.testing.assert_allclose(got['accuracy'], correct.mean(), rtol=1e-6)
  # The same evaluator on another split size (one padded batch), and a split with its own mask.
  got5 = evaluate(mlp.params, {k: v[:5] for k, v in split.items()})
  np.testing.assert_allclose(got5['loss'], loss[:5].mean(), rtol=1e-5)
  mask = (np.arange(23) % 3 != 0).astype(np.float32)
  got_m = evaluate(mlp.params, dict(split, mask=mask))
  np.testing.assert_allclose(got_m['loss'], loss[mask > 0].mean(), rtol=1e-5)
  np.testing.assert_allclose(got_m['accuracy'], correct[mask > 0].mean(), rtol=1e-6)


def test_evaluate_language_model_token_weighted(lm):
  rng = np.random.default_rng(4)
  split = {'x': rng.integers(0, 11, (5, 6)), 'y': rng.integers(0, 11, (5, 6))}
  split['y'][2, 2:] = -1
  split['y'][4, :] = -1
  ce, hit, valid = _np_language_model(lm, split)
  got = models.evaluate(lm.model, lm.params, split, batch_size=2)  # 2, 2, 1 (+1 padded)
  assert set(got) == {'loss', 'perplexity', 'accuracy'}
  want = ce[valid].mean()
  np.testing.assert_allclose(got['loss'], want, rtol=1e-5)
  np.testing.assert_allclose(got['perplexity'], np.exp(want), rtol=1e-5)
  np.testing.assert_allclose(got['accuracy'], hit[valid].mean(), rtol=1e-6)


def test_evaluate_bad_input(mlp):
  evaluate = models.make_evaluator(mlp.model, 4)
  with pytest.raises(ValueError, match="'y'"):
    evaluate(mlp.params, {'x': np.zeros((3, 8, 8, 1))})
  with pytest.raises(ValueError, match='x=0'):
    evaluate(mlp.params, {'x': np.zeros((0, 8, 8, 1)), 'y': np.zeros((0,), np.int32)})
  with pytest.raises(ValueError, match='batch_size=0'):
    models.make_evaluator(mlp.model, 0)
