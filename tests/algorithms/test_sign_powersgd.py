"""`sign_sgd` and `powersgd`: dense oracles, exact identities, byte formulas, learning, bad input.

Engine contracts shared by every method (strategies == loop, catch-up rebuild) for the default
configs are in test_all_methods.py; here the non-default variants get theirs.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_intrinsic import experiment, keys
from fedjax_intrinsic.algorithms import base, powersgd, sign_sgd
from fedjax_intrinsic.config import ConfigError
from fedjax_intrinsic.preflight import validate
from tests.algorithms.helpers import assert_close, flat, run

D_LOGREG = 650   # logistic regression on 8x8 digits, 10 classes


def _client_batch(batches, c):
  return jax.tree.map(lambda x: x[c], batches)


def _gradients(exp, params, batches, num):
  """f32[num, D]: each client's gradient at `params` on its (single) local step, raveled."""
  grad = jax.jit(jax.grad(base.model_loss(exp.model)))
  return np.stack([flat(grad(params, jax.tree.map(lambda x: x[c, 0], batches)))
                   for c in range(num)])


def _unpack(packed, D):
  """uint8[⌈D/8⌉] -> bool[D], with numpy (independent of the jnp code under test)."""
  return np.unpackbits(np.asarray(packed))[:D].astype(bool)


# ----------------------------------------------------------------------------------------------
# sign_sgd


def test_pack_unpack_roundtrip():
  bits = jax.random.bernoulli(jax.random.PRNGKey(0), 0.5, (3, 13))
  packed = sign_sgd.pack_signs(bits)
  assert packed.shape == (3, 2) and packed.dtype == jnp.uint8
  np.testing.assert_array_equal(sign_sgd.unpack_signs(packed, 13), 2.0 * bits - 1.0)
  np.testing.assert_array_equal(np.packbits(np.asarray(bits), axis=-1), packed)


def test_majority_vote_matches_dense_oracle(make_digits_config):
  """Round 1 of scaled signSGD-MV: packed signs of Δ (a coin where Δ = 0), scale ‖Δ‖₁/D, and
  θ1 = θ0 − lr · (Σ_c w_c scale_c) · sign(Σ_c s_c), one client one vote."""
  c = make_digits_config('sign_sgd', clients_per_round=7, rounds=1, vote='majority',
                         error_feedback=False)
  exp = experiment.Experiment(c)
  alg = exp.algorithm
  state = exp.init_state()
  ids = exp.cohort(1)
  batches, weights = exp.round_inputs(1, ids)
  assert len(set(np.round(weights, 6))) > 1          # unequal weights: the vote must ignore them
  theta0 = flat(exp.params0)
  deltas = theta0[None] - (theta0[None] - _gradients(exp, exp.params0, batches, len(ids)))
  client = jax.jit(alg.client_update)
  rk = keys.round_key(exp.run_key, 1)
  signs, scales = [], []
  for i, cid in enumerate(ids):
    key = keys.client_key(rk, cid)
    payload, cstate, _ = client(alg.broadcast(state), (), _client_batch(batches, i), key)
    assert cstate == ()
    assert payload['signs'].dtype == jnp.uint8 and payload['signs'].shape == (82,)
    assert payload['scale'].dtype == jnp.float32 and payload['scale'].shape == ()
    s, delta = _unpack(payload['signs'], D_LOGREG), deltas[i]
    clear = np.abs(delta) > 1e-6 * np.abs(delta).max()
    np.testing.assert_array_equal(s[clear], delta[clear] > 0)
    zero = delta == 0
    assert zero.any()                                  # blank pixels: exactly zero gradient
    coin = np.asarray(jax.random.bernoulli(key, 0.5, (D_LOGREG,)))
    np.testing.assert_array_equal(s[zero], coin[zero])
    np.testing.assert_allclose(payload['scale'], np.abs(delta).mean(), rtol=1e-5)
    signs.append(2.0 * s - 1.0)
    scales.append(float(payload['scale']))
  gamma = float(np.dot(weights, scales))
  expected = theta0 - c.server.lr * gamma * np.sign(np.sum(signs, axis=0))
  new_state, line = exp.run_round(state, 1, ids)
  assert_close(expected, alg.model_params(new_state), rtol=1e-6)
  assert line['bytes_up'] == 7 * (82 + 4)


def test_error_feedback_identities(make_digits_config):
  """EF-SignSGD (vote=mean): e ← v − (‖v‖₁/D)·sign(v) with v = Δ + e, ⟨e, sign v⟩ = 0, the server
  steps by the weighted mean of the scaled signs, and a returning client feeds its error back."""
  c = make_digits_config('sign_sgd', vote='mean', error_feedback=True, clients_per_round=5)
  exp = experiment.Experiment(c)
  alg = exp.algorithm
  state = exp.init_state()
  cohorts = [np.arange(5, dtype=np.int32), np.array([0, 1, 5, 6, 7], np.int32)]
  client = jax.jit(alg.client_update)
  errors = {}
  for e, ids in enumerate(cohorts, start=1):
    batches, weights = exp.round_inputs(e, ids)
    theta = np.asarray(state.theta)
    deltas = theta[None] - (theta[None] - _gradients(exp, alg.model_params(state), batches, 5))
    rk = keys.round_key(exp.run_key, e)
    step = np.zeros_like(theta)
    for i, cid in enumerate(ids):
      cstate = jax.tree.map(lambda x: x[i], exp.clients.gather(ids))
      np.testing.assert_allclose(cstate.error, errors.get(cid, 0.0), atol=1e-7)
      payload, new, _ = client(alg.broadcast(state), cstate, _client_batch(batches, i),
                               keys.client_key(rk, cid))
      v = deltas[i] + errors.get(cid, 0.0)
      s = 2.0 * _unpack(payload['signs'], D_LOGREG) - 1.0
      np.testing.assert_allclose(payload['scale'], np.abs(v).mean(), rtol=1e-5)
      np.testing.assert_allclose(np.asarray(new.error) + float(payload['scale']) * s, v,
                                 atol=1e-6 * np.abs(v).max())
      assert abs(np.dot(np.asarray(new.error), s)) <= 1e-5 * np.abs(v).sum()
      errors[cid] = np.asarray(new.error)
      step += weights[i] * float(payload['scale']) * s
    state, _ = exp.run_round(state, e, ids)
    assert_close(theta - c.server.lr * step, state.theta, rtol=1e-6)
    for cid in ids:                                # the engine stored the same error memory
      np.testing.assert_allclose(exp.clients.tables.error[cid], errors[cid], atol=1e-7)
  assert np.abs(errors[0]).max() > 0


# ----------------------------------------------------------------------------------------------
# powersgd


def test_layout_and_matrix_view():
  params = {'conv': jnp.zeros((3, 3, 8, 16)), 'dense': jnp.zeros((64, 10)), 'b': jnp.zeros(10),
            'tiny': jnp.zeros((2, 2))}
  lay = powersgd.layout(params, rank=2)               # leaves in order: b, conv, dense, tiny
  assert lay.compressed == (1, 2) and lay.dense == (0, 3)
  assert lay.shapes == ((72, 16), (64, 10))
  assert powersgd.matrix_shape((3, 3, 8, 16)) == (72, 16)
  with pytest.raises(ValueError, match='method.rank=10'):
    powersgd.layout({'dense': jnp.zeros((64, 10)), 'b': jnp.zeros(10)}, rank=10)


def _powersgd_oracle_round(theta, q, errors, grads, weights, ids, lr, kernel_shape, memory):
  """One PowerSGD round in float64 numpy on logreg (leaves: bias [10], kernel [64, 10]). memory:
  'averaged' (Vogels et al.'s released code, epfml/powersgd: memory = M − P̂ Q̂ᵀ with the mean Q̂)
  or 'local' (M − P̂ Q_cᵀ with the client's own Q_c)."""
  n, m = kernel_shape
  mats, biases = {}, []
  for i, cid in enumerate(ids):
    bias, kernel = grads[i][:m], grads[i][m:].reshape(n, m)
    mats[cid] = kernel + errors.get(cid, 0.0)
    biases.append(bias)
  p_hat = np.linalg.qr(sum(w * mats[cid] @ q for w, cid in zip(weights, ids)))[0]
  qs = {cid: mats[cid].T @ p_hat for cid in ids}
  q_hat = sum(w * qs[cid] for w, cid in zip(weights, ids))
  for cid in ids:
    errors[cid] = mats[cid] - p_hat @ (q_hat if memory == 'averaged' else qs[cid]).T
  update = np.concatenate([np.dot(weights, biases), (p_hat @ q_hat.T).ravel()])
  return theta - lr * update, q_hat, p_hat


@pytest.mark.parametrize('memory', ['averaged', 'local'])
def test_powersgd_matches_dense_oracle(make_digits_config, memory):
  """Two rounds (the second warm-started from Q̂ and feeding back the errors of returning clients)
  against a float64 numpy PowerSGD; with the local memory the error is orthogonal to P̂'s span, with
  the averaged one the cohort's weighted mean error is."""
  c = make_digits_config('powersgd', rank=2, clients_per_round=5, error_memory=memory)
  exp = experiment.Experiment(c)
  alg = exp.algorithm
  state = exp.init_state()
  (q0,) = state.extra['q']
  q = np.asarray(q0, np.float64)
  theta = flat(exp.params0).astype(np.float64)
  errors = {}
  for e, ids in enumerate([np.arange(5, dtype=np.int32), np.array([0, 2, 5, 6, 7], np.int32)], 1):
    batches, weights = exp.round_inputs(e, ids)
    grads = _gradients(exp, alg.model_params(state), batches, 5).astype(np.float64)
    theta, q, p_hat = _powersgd_oracle_round(theta, q, errors, grads, weights.astype(np.float64),
                                             ids, c.server.lr, (64, 10), memory)
    state, line = exp.run_round(state, e, ids)
    assert_close(theta, alg.model_params(state), rtol=1e-5)
    stored = {cid: exp.clients.tables.error[0][cid] for cid in ids}
    for cid in ids:
      np.testing.assert_allclose(stored[cid], errors[cid], atol=1e-5 * np.abs(errors[cid]).max())
      if memory == 'local':
        assert np.abs(p_hat.T @ stored[cid]).max() <= 1e-5 * np.abs(stored[cid]).max()
    if memory == 'averaged':
      mean = sum(w * stored[cid] for w, cid in zip(weights, ids))
      assert np.abs(p_hat.T @ mean).max() <= 1e-5 * np.abs(mean).max()
      assert np.abs(p_hat.T @ stored[ids[0]]).max() > 1e-3 * np.abs(stored[ids[0]]).max()
  assert line['bytes_up'] == 5 * 4 * (2 * (64 + 10) + 10)
  assert line['bytes_down'] == 5 * 4 * (D_LOGREG + 2 * (64 + 10) + (2 * 10 if memory == 'averaged'
                                                                    else 0))


def _fresh_cohorts(C, E):
  return [np.arange(C * (e - 1), C * e, dtype=np.int32) for e in range(1, E + 1)]


@pytest.mark.parametrize('method,model,fields', [
    ('sign_sgd', 'logreg', {}),
    ('sign_sgd', 'logreg', {'scaled': False, 'error_feedback': False, 'vote': 'majority'}),
    ('powersgd', 'logreg', {'rank': 1}),
    ('powersgd', 'mlp', {'rank': 2}),
    ('powersgd', 'mlp', {'rank': 2, 'error_memory': 'averaged'}),
])
def test_bytes_match_formulas(make_digits_config, method, model, fields):
  """Fresh participants every round, then one client returning from round 2 (dense download)."""
  C, E = 3, 3
  c = make_digits_config(method, model=model, rounds=E + 1, clients_per_round=C, **fields)
  cohorts = _fresh_cohorts(C, E)
  cohorts.append(np.array([cohorts[1][0]] + list(range(C * E, C * E + C - 1)), np.int32))
  exp, _, _, lines = run(c, cohorts)
  D = exp.num_params
  if method == 'sign_sgd':
    up, down = math.ceil(D / 8) + (4 if fields.get('scaled', True) else 0), 4 * D
  else:
    r = fields['rank']
    mats = [(64, 10)] if model == 'logreg' else [(64, 128), (128, 10)]
    vectors = 10 if model == 'logreg' else 128 + 10
    up = 4 * (sum(r * (n + m) for n, m in mats) + vectors)          # P and vectors, then Q
    # θ and Q, then the request P̂ (then with error_memory='averaged' the mean Q̂: r·m more)
    down = 4 * (D + sum(r * (m + n) for n, m in mats)
                + (sum(r * m for n, m in mats) if fields.get('error_memory') == 'averaged' else 0))
  for line in lines:
    assert line['bytes_up'] == C * up
    assert line['bytes_down'] == C * down


# sign_sgd's default config (vote='mean', error_feedback=True, scaled=True) is not repeated here:
# tests/algorithms/test_all_methods.py::test_every_method[sign_sgd] checks chunked_vmap (with
# padding clients) and map == loop on θ and the losses for it, on the same logreg model.
@pytest.mark.parametrize('method,fields', [
    ('sign_sgd', {'scaled': False, 'error_feedback': False, 'vote': 'majority'}),
    ('powersgd', {'error_feedback': False}),
    ('powersgd', {'error_memory': 'averaged'}),
])
def test_variants_strategies_equal_loop(make_digits_config, method, fields):
  results = {}
  for strategy in ('loop', 'chunked_vmap', 'map'):
    c = make_digits_config(method, rounds=2, clients_per_round=6, **fields)
    c.simulation.client_parallelism = strategy
    c.simulation.clients_per_chunk = 4          # 6 clients padded to 8
    exp, state, _, lines = run(c)
    results[strategy] = (exp.algorithm.model_params(state), [l['train_loss'] for l in lines])
  for strategy in ('chunked_vmap', 'map'):
    assert_close(results['loop'][0], results[strategy][0], rtol=1e-5)
    np.testing.assert_allclose(results['loop'][1], results[strategy][1], rtol=1e-5)


def test_powersgd_without_error_feedback_is_stateless(make_digits_config):
  exp = experiment.Experiment(make_digits_config('powersgd', error_feedback=False))
  assert exp.algorithm.init_client(exp.params0) == ()
  assert not exp.algorithm.cohort_shortcut


# ----------------------------------------------------------------------------------------------
# Learning, with a zero-server-rate control. Digits logreg, IID partition, 10 clients a round,
# 20 rounds, server SGD at 0.5. Measured (seeds 0, 1, 2): signSGD-MV 0.81-0.86 (upload x30,
# overall x1.9), EF-SignSGD 0.77-0.85, PowerSGD rank 2 0.64-0.74 (upload x4.1, overall x1.4);
# uncompressed 0.87-0.90. On the default non-IID shards sign methods learn far more slowly (signSGD-MV
# 0.08-0.11 after 20 rounds on logreg), a known weakness of sign compression on heterogeneous clients.


@pytest.mark.parametrize('method,fields,threshold', [
    ('sign_sgd', {'vote': 'majority', 'error_feedback': False}, 0.7),
    ('sign_sgd', {}, 0.65),        # EF-SignSGD, the default
    ('powersgd', {}, 0.55),
])
def test_learns_on_digits(make_digits_config, method, fields, threshold):
  c = make_digits_config(method, rounds=20, clients_per_round=10, **fields)
  c.data.partition = 'iid'
  c.server.lr = 0.5
  exp, state, _, lines = run(c)
  # The control, server lr 0.0: server SGD at rate 0 keeps θ0 round after round, so θ0 itself.
  accuracy = {0.5: exp.evaluate(exp.algorithm.model_params(state))['test_accuracy'],
              0.0: exp.evaluate(exp.params0)['test_accuracy']}
  assert accuracy[0.5] >= threshold, accuracy
  assert accuracy[0.0] < 0.2, accuracy
  assert lines[-1]['upload_compression'] > (30 if method == 'sign_sgd' else 4)


# ----------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize('method,field,value,match', [
    ('sign_sgd', 'vote', 'median', 'method.vote'),
    ('sign_sgd', 'scaled', 1, 'method.scaled'),
    ('sign_sgd', 'error_feedback', 'yes', 'method.error_feedback'),
    ('powersgd', 'rank', 0, 'method.rank'),
    ('powersgd', 'rank', 2.5, 'method.rank'),
    ('powersgd', 'error_feedback', None, 'method.error_feedback'),
    ('powersgd', 'error_memory', 'global', 'method.error_memory'),
])
def test_bad_fields_rejected(make_digits_config, method, field, value, match):
  c = make_digits_config(method)
  with c.method.ignore_type():                   # as a config file could set it
    c.method[field] = value
  with pytest.raises(ConfigError, match=match):
    validate(c)


def test_error_feedback_needs_a_scale(make_digits_config):
  with pytest.raises(ConfigError, match='method.error_feedback=True .* method.scaled=False'):
    validate(make_digits_config('sign_sgd', scaled=False, error_feedback=True))


@pytest.mark.parametrize('method', ['sign_sgd', 'powersgd'])
def test_cohort_shortcut_rejected(make_digits_config, method):
  c = make_digits_config(method)
  c.simulation.cohort_shortcut = True
  with pytest.raises(ConfigError, match='simulation.cohort_shortcut'):
    validate(c)


def test_rank_compressing_nothing_rejected_before_compilation(make_digits_config):
  with pytest.raises(ConfigError, match='method.rank=10'):
    experiment.Experiment(make_digits_config('powersgd', rank=10))
