"""Sparsification baselines local_topk, true_topk, random_k: identities, feedback, bytes, errors.

Logistic regression on digits (D = 650) unless stated. Exact identities: k = D without error
feedback is uncompressed SGD; error feedback keeps exactly what was not sent; the applied update of
true_topk is k-sparse. Bytes: values + int32 indices up (or D floats, or values + an 8-byte seed),
changed coordinates of θ down, checked against counts taken from the server states themselves.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import projections as P
from fedjax_intrinsic import algorithms, experiment, keys, simulation
from fedjax_intrinsic import config as config_lib
from fedjax_intrinsic import compressors
from fedjax_intrinsic.algorithms import base, servers
from fedjax_intrinsic.config import ConfigError
from fedjax_intrinsic.preflight import validate
from tests.algorithms.helpers import assert_close, flat, run
from tests.conftest import digits_config

D = 650          # logreg on 8x8 digits, 10 classes
SERVER_LR = 0.5  # digits_config's server rate


@functools.lru_cache(maxsize=None)
def _uncompressed_theta(rounds: int = 3) -> np.ndarray:
  exp, state, _, _ = run(digits_config('uncompressed', rounds=rounds))
  return flat(exp.algorithm.model_params(state))


@functools.lru_cache(maxsize=None)
def _logreg_experiment():
  """One Experiment whose data, model and θ0 the unit tests below share (built once)."""
  return experiment.Experiment(digits_config('local_topk', k=20))


def _build(method: str, **fields) -> base.FederatedAlgorithm:
  """`method` with `fields` on the shared logreg model, server SGD at SERVER_LR (no Experiment)."""
  exp = _logreg_experiment()
  mc = algorithms.default_config(method)
  mc.update(fields)
  ctx = base.BuildContext(model=exp.model, params0=exp.params0, run_key=exp.run_key,
                          server_optimizer=optax.sgd(SERVER_LR), client_lr=1.0, num_clients=100,
                          num_rounds=5)
  return algorithms.get(method, mc, ctx)


def _client_batch(client: int = 0):
  exp = _logreg_experiment()
  ids = exp.cohort(1)
  batches, _ = exp.round_inputs(1, ids)
  return jax.tree.map(lambda x: jnp.asarray(x[client]), batches), ids[client]


def _oracle_delta(batch) -> np.ndarray:
  """Δ with one step at client lr 1: the gradient of the client's masked mean loss at θ0, f32[D]."""
  exp = _logreg_experiment()
  step = jax.tree.map(lambda x: x[0], batch)
  grad = jax.jit(jax.grad(base.model_loss(exp.model)))(exp.params0, step)
  return flat(grad)


# ----------------------------------------------------------------------------- k = D identities


@pytest.mark.parametrize('method,fields', [
    ('local_topk', {'error_feedback': False}),
    ('true_topk', {'error_feedback': False}),
    ('random_k', {'error_feedback': False, 'scaling': 'none', 'index_encoding': 'int32'}),
])
def test_k_equals_D_is_uncompressed(method, fields):
  """k = D, no feedback, one local step at lr 1, server SGD: exactly uncompressed SGD (3 rounds)."""
  exp, state, _, lines = run(digits_config(method, k=D, **fields))
  np.testing.assert_allclose(flat(exp.algorithm.model_params(state)), _uncompressed_theta(),
                             rtol=0, atol=1e-6 * np.linalg.norm(_uncompressed_theta()))
  up = 4 * D if method == 'true_topk' else 8 * D    # values + int32 indices
  assert lines[0]['bytes_up'] == 6 * up
  assert lines[0]['bytes_down'] == 0             # round 1: everyone holds θ0
  assert lines[1]['bytes_down'] == 6 * 4 * D     # every coordinate changed: θ is the smaller


# ----------------------------------------------------------------------------- feedback identities


def test_local_topk_error_feedback_and_momentum_masking_exact():
  """a = e + (ρ v + Δ); sent = top-k(a); e' = a off the sent set, 0 on it; v' masked alike."""
  k, rho = 20, 0.5
  alg = _build('local_topk', k=k, error_feedback=True, local_momentum=rho)
  batch, _ = _client_batch()
  delta = _oracle_delta(batch)
  rng = np.random.default_rng(0)
  e0 = rng.normal(0, 0.05, D).astype(np.float32)
  v0 = rng.normal(0, 0.05, D).astype(np.float32)
  cstate = compressors.Momentum(compressors.ErrorFeedback((), jnp.asarray(e0)), jnp.asarray(v0))
  theta0 = servers.ravel(_logreg_experiment().params0)
  payload, new, _ = jax.jit(alg.client_update)(theta0, cstate, batch, jax.random.PRNGKey(0))
  values, idx = np.asarray(payload['values']), np.asarray(payload['indices'])
  assert values.shape == (k,) and idx.dtype == np.int32 and len(set(idx.tolist())) == k
  v_full = rho * v0 + delta
  a = e0 + v_full
  unsent = np.setdiff1d(np.arange(D), idx)
  np.testing.assert_allclose(values, a[idx], rtol=1e-5, atol=1e-7)
  assert np.min(np.abs(values)) >= np.max(np.abs(a[unsent])) - 1e-6        # the k largest
  err, vel = np.asarray(new.inner.error), np.asarray(new.velocity)
  assert np.all(err[idx] == 0) and np.all(vel[idx] == 0)                  # exactly zeroed
  np.testing.assert_allclose(err[unsent], a[unsent], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(vel[unsent], v_full[unsent], rtol=1e-5, atol=1e-7)
  # What was sent plus what is kept is everything there was to send.
  np.testing.assert_allclose(err + np.asarray(P.densify(payload['values'], payload['indices'], D)),
                             a, rtol=1e-5, atol=1e-7)


def test_random_k_error_feedback_exact_and_seed_regenerates_indices():
  k = 40
  batch, _ = _client_batch(1)
  delta = _oracle_delta(batch)
  e0 = np.random.default_rng(1).normal(0, 0.05, D).astype(np.float32)
  theta0 = servers.ravel(_logreg_experiment().params0)
  key = jax.random.PRNGKey(7)
  alg = _build('random_k', k=k, error_feedback=True, scaling='none', index_encoding='int32')
  payload, new, _ = jax.jit(alg.client_update)(
      theta0, compressors.ErrorFeedback((), jnp.asarray(e0)), batch, key)
  assert sorted(payload) == ['indices', 'values']
  w = jnp.asarray([0.25], jnp.float32)
  sent = np.asarray(jax.jit(alg.aggregate)(jax.tree.map(lambda x: x[None], payload), w)) / 0.25
  idx = np.asarray(payload['indices'])
  a = e0 + delta
  np.testing.assert_allclose(np.asarray(payload['values']), a[idx], rtol=1e-5, atol=1e-7)
  err = np.asarray(new.error)
  assert np.all(err[idx] == 0) and np.count_nonzero(sent) == k
  np.testing.assert_allclose(err + sent, a, rtol=1e-5, atol=1e-7)
  # index_encoding='seed': the client's key travels instead, and the server draws the same indices.
  by_seed = _build('random_k', k=k, error_feedback=True, scaling='none', index_encoding='seed')
  seed_payload = {'values': payload['values'][None], 'seed': key[None]}
  np.testing.assert_array_equal(np.asarray(jax.jit(by_seed.aggregate)(seed_payload, w)) / 0.25,
                                sent)


def test_random_k_unbiased_scaling():
  """scaling='unbiased': values are D/k times the coordinates; the mean over many keys is Δ."""
  k = 65
  alg = _build('random_k', k=k, error_feedback=False, scaling='unbiased', index_encoding='int32')
  batch, _ = _client_batch(2)
  delta = _oracle_delta(batch)
  theta0 = servers.ravel(_logreg_experiment().params0)
  keys_ = jax.random.split(jax.random.PRNGKey(3), 400)
  payloads = jax.jit(jax.vmap(lambda key: alg.client_update(theta0, (), batch, key)[0]))(keys_)
  np.testing.assert_allclose(np.asarray(payloads['values']),
                             (D / k) * delta[np.asarray(payloads['indices'])], rtol=1e-5, atol=1e-7)
  mean = np.asarray(jax.jit(alg.aggregate)(payloads, jnp.full((400,), 1 / 400, jnp.float32)))
  # Each coordinate is kept 40 times on average: the mean is within a few standard errors of Δ.
  assert np.linalg.norm(mean - delta) < 0.5 * np.linalg.norm(delta)


def test_true_topk_server_step_is_k_sparse_with_virtual_error_and_momentum():
  k, rho = 30, 0.9
  alg = _build('true_topk', k=k, error_feedback=True, momentum=rho)
  exp = _logreg_experiment()
  state = alg.init(exp.params0)
  rng = np.random.default_rng(2)
  e0 = rng.normal(0, 0.05, D).astype(np.float32)
  v0 = rng.normal(0, 0.05, D).astype(np.float32)
  g = rng.normal(0, 0.1, D).astype(np.float32)
  state = state._replace(extra=compressors.Momentum(compressors.ErrorFeedback((), jnp.asarray(e0)),
                                                   jnp.asarray(v0)))
  new = jax.jit(alg.server_update)(state, jnp.asarray(g))
  step = np.asarray(state.theta) - np.asarray(new.theta)
  changed = np.flatnonzero(step)
  assert len(changed) == k
  v_full = rho * v0 + g
  a = e0 + v_full
  assert set(changed.tolist()) == set(np.argsort(-np.abs(a))[:k].tolist())
  np.testing.assert_allclose(step[changed], SERVER_LR * a[changed], rtol=1e-4, atol=1e-7)
  err, vel = np.asarray(new.extra.inner.error), np.asarray(new.extra.velocity)
  assert np.all(err[changed] == 0) and np.all(vel[changed] == 0)
  np.testing.assert_allclose(err + step / SERVER_LR, a, rtol=1e-4, atol=1e-6)
  keep = np.setdiff1d(np.arange(D), changed)
  np.testing.assert_allclose(vel[keep], v_full[keep], rtol=1e-6, atol=1e-7)
  last = np.asarray(new.last_changed)
  assert set(np.flatnonzero(last).tolist()) == set(changed.tolist()) and np.all(last[changed] == 1)
  assert int(new.round) == 2


# ----------------------------------------------------------------------------- engine strategies


def _engine_rounds(exp, alg, strategy: str, rounds: int = 2, chunk: int = 4):
  """Runs `rounds` rounds of `alg` on exp's data with one strategy; returns (θ, client tables)."""
  round_fn = simulation.build_round(alg, strategy, chunk)
  store = simulation.ClientStateStore(alg.init_client(exp.params0), exp.data.num_clients)
  state = alg.init(exp.params0)
  size = simulation.padded_cohort_size(6, strategy, chunk)
  for e in range(1, rounds + 1):
    ids = exp.cohort(e)[:6]
    ids = np.concatenate([ids, -np.ones(size - 6, np.int32)]).astype(np.int32)
    batches, weights = exp.round_inputs(e, ids)
    out = round_fn(state, store.gather(ids), batches, jnp.asarray(weights), jnp.asarray(ids),
                   keys.round_key(exp.run_key, e))
    store.scatter(ids, out.client_states)
    state = out.server_state
  return np.asarray(state.theta), jax.tree.map(np.copy, store.state_dict())


def test_strategies_equal_loop_with_client_state():
  """vmap, chunked_vmap (6 clients padded to 8), map == loop: θ and every stored client state.

  (tests/algorithms/test_all_methods.py runs every strategy on each method's default config.)
  """
  exp = _logreg_experiment()
  alg = _build('local_topk', k=20, error_feedback=True, local_momentum=0.5)
  ref_theta, ref_tables = _engine_rounds(exp, alg, 'loop')
  assert any(np.any(t != 0) for t in jax.tree.leaves(ref_tables))   # the state is in use
  threshold = _build('local_topk', k=20, error_feedback=True, local_momentum=0.5,
                     topk_method='threshold')
  for strategy, method in (('vmap', alg), ('chunked_vmap', alg), ('map', alg),
                           ('vmap', threshold)):   # the threshold top-k selects the same set
    theta, tables = _engine_rounds(exp, method, strategy)
    assert_close(ref_theta, theta, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ref_tables), jax.tree.leaves(tables)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_true_topk_cohort_shortcut_equals_loop():
  exp = _logreg_experiment()
  alg = _build('true_topk', k=20, error_feedback=True, momentum=0.5)
  ref, _ = _engine_rounds(exp, alg, 'loop')
  round_fn = simulation.build_round(alg, 'vmap', 1, cohort_shortcut=True)
  state = alg.init(exp.params0)
  for e in (1, 2):
    ids = exp.cohort(e)[:6]
    batches, weights = exp.round_inputs(e, ids)
    state = round_fn(state, (), batches, jnp.asarray(weights), jnp.asarray(ids),
                     keys.round_key(exp.run_key, e)).server_state
  assert_close(ref, np.asarray(state.theta), rtol=1e-5)


# ----------------------------------------------------------------------------- bytes and catch-up


def _fresh_cohorts(C, E):
  return [np.arange(C * (e - 1), C * e, dtype=np.int32) for e in range(1, E + 1)]


@pytest.mark.parametrize('method,fields,up', [
    ('local_topk', {'k': 8}, 8 * 8),
    ('true_topk', {'k': 8, 'momentum': 0.5}, 4 * D),
    ('random_k', {'k': 8, 'index_encoding': 'int32', 'error_feedback': True, 'scaling': 'none'},
     8 * 8),
])
def test_bytes_and_catch_up(method, fields, up):
  """Fresh clients every round, then one returning client: bytes == counts from the states, and
  rebuild(catch_up(θ_e, h)) == θ_e for every held round h."""
  C, E = 4, 6
  cohorts = _fresh_cohorts(C, E)
  returning = cohorts[1][0]                                   # took part in round 2
  cohorts.append(np.array([returning] + list(range(C * E, C * E + C - 1)), np.int32))
  exp, final, states, lines = run(digits_config(method, rounds=E + 1, clients_per_round=C,
                                                **fields), cohorts)
  thetas = [np.asarray(s.theta) for s in states + [final]]    # thetas[r] = θ after round r
  changed_in = [None] + [thetas[r] != thetas[r - 1] for r in range(1, E + 2)]

  def floats_down(held, e):
    """Coordinates changed in rounds held … e−1, as values + indices, or θ when smaller."""
    n = int(np.sum(np.any(np.stack(changed_in[held:e] or [np.zeros(D, bool)]), axis=0)))
    return min(8 * n, 4 * D)

  for e, line in enumerate(lines, start=1):
    assert line['bytes_up'] == C * up
    if e <= E:
      assert line['bytes_down'] == C * floats_down(1, e), e
  assert lines[E]['bytes_down'] == floats_down(2, E + 1) + (C - 1) * floats_down(1, E + 1)
  if method == 'true_topk':      # server SGD applies k coordinates a round
    assert all(int(np.sum(changed_in[r])) == 8 for r in range(1, E + 2))
  assert floats_down(1, 3) < 4 * D                            # the sparse branch is exercised
  # Catch-up: what a client holding round h downloads rebuilds the server's θ.
  alg = exp.algorithm
  e_now = E + 2
  theta = alg.model_params(final)
  kinds = set()
  for h in range(1, e_now + 1):
    payload = alg.catch_up(final, h)
    kinds.add('theta' if 'theta' in payload else 'sparse')
    assert_close(theta, alg.rebuild((states + [final])[h - 1], payload, h, e_now), rtol=1e-6)
    nbytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(payload))
    assert nbytes == int(alg.download_bytes(final, np.array([h]))[0]) == floats_down(h, e_now)
  assert 'sparse' in kinds


def test_seed_encoded_upload_bytes():
  """random_k with index_encoding='seed' uploads k float32 values and the 8-byte client key."""
  exp = experiment.Experiment(digits_config('random_k', k=40, index_encoding='seed'))
  exp.init_state()
  assert exp.upload_per_client == 4 * 40 + 8


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize('method,fields,threshold', [
    # Measured (seed 0, 20 rounds, 10 clients, server SGD 0.5): uncompressed 0.77, local_topk 0.71
    # (upload x16), true_topk 0.72 (download x3.4), random_k 0.58 (D/k-scaled, upload x5).
    ('local_topk', {'k': 20, 'error_feedback': True}, 0.55),
    ('true_topk', {'k': 20, 'error_feedback': True}, 0.55),
    ('random_k', {'k': 65, 'index_encoding': 'int32', 'scaling': 'unbiased'}, 0.40),
])
def test_learns_on_digits(method, fields, threshold):
  c = digits_config(method, rounds=20, clients_per_round=10, **fields)
  exp, state, _, lines = run(c)
  accuracy = exp.evaluate(exp.algorithm.model_params(state))['test_accuracy']
  assert accuracy > threshold, accuracy
  assert lines[-1]['overall_compression'] > 1.2
  # Control: what the server would serve without applying anything (server lr 0 keeps θ0).
  assert exp.evaluate(exp.params0)['test_accuracy'] < 0.3


def test_zero_server_lr_control_learns_nothing():
  control = digits_config('local_topk', k=20, rounds=3, clients_per_round=10)
  control.server.lr = 0.0
  exp, state, _, lines = run(control)
  np.testing.assert_array_equal(flat(exp.algorithm.model_params(state)), flat(exp.params0))
  assert lines[-1]['bytes_up'] > 0
  assert exp.evaluate(exp.algorithm.model_params(state))['test_accuracy'] < 0.3


# ----------------------------------------------------------------------------- client memory


def test_client_state_memory_is_checked(monkeypatch):
  """Clients × D floats of error feedback: refused with the size when it cannot fit."""
  alg = _build('local_topk', k=20, error_feedback=True, local_momentum=0.5)
  per_client = simulation.ClientStateStore.bytes_needed(alg.init_client(None), 1)
  assert per_client == 2 * 4 * D
  with pytest.raises(ConfigError, match=r"method.name='local_topk'.*GiB for data.num_clients"):
    config_lib.check_client_memory('local_topk', per_client, 10**9)
  assert simulation.ClientStateStore.bytes_needed(_build('true_topk').init_client(None), 1) == 0
  # The experiment runs the check before compiling anything.
  tiny = functools.partial(config_lib.check_client_memory, memory_fraction=1e-9)
  monkeypatch.setattr(config_lib, 'check_client_memory', tiny)
  with pytest.raises(ConfigError, match='per client'):
    experiment.Experiment(digits_config('local_topk', k=20, error_feedback=True))
  exp = experiment.Experiment(digits_config('local_topk', k=20, error_feedback=False))   # stateless
  assert exp.algorithm.init_client(exp.params0) == ()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize('method,field,value,match', [
    ('local_topk', 'k', 0, 'method.k=0'),
    ('true_topk', 'k', -3, 'method.k=-3'),
    ('random_k', 'k', True, 'method.k=True'),
    ('random_k', 'k', None, 'method.k=None'),
    ('local_topk', 'error_feedback', 'local', 'method.error_feedback'),
    ('true_topk', 'error_feedback', 'virtual', 'method.error_feedback'),
    ('random_k', 'error_type', 'local', 'method.error_type was renamed'),
    ('local_topk', 'topk_method', 'sort', 'method.topk_method'),
    ('local_topk', 'local_momentum', 1.0, 'method.local_momentum'),
    ('true_topk', 'momentum', -0.1, 'method.momentum'),
    ('random_k', 'scaling', 'dk', 'method.scaling'),
    ('random_k', 'index_encoding', 'int16', 'method.index_encoding'),
])
def test_bad_fields_rejected(method, field, value, match):
  c = digits_config(method, k=20)
  with c.method.ignore_type():
    c.method[field] = value
  with pytest.raises(ConfigError, match=match):
    validate(c)


def test_bad_combinations_rejected():
  c = digits_config('random_k', k=20, error_feedback=True, scaling='unbiased')
  with pytest.raises(ConfigError, match="method.scaling='unbiased' is invalid with"):
    validate(c)
  c = digits_config('local_topk', k=20, local_momentum=0.9)
  c.server.optimizer, c.server.momentum = 'momentum', 0.9
  with pytest.raises(ConfigError, match='momentum in two places'):
    validate(c)
  c = digits_config('true_topk', k=20, momentum=0.9)
  c.server.optimizer = 'nesterov'
  with pytest.raises(ConfigError, match='method.momentum=0.9 is invalid with server.optimizer'):
    validate(c)
  for method in ('local_topk', 'random_k'):
    c = digits_config(method, k=20)
    c.simulation.cohort_shortcut = True
    with pytest.raises(ConfigError, match='simulation.cohort_shortcut=True is invalid'):
      validate(c)
  c = digits_config('true_topk', k=20)
  c.simulation.cohort_shortcut = True
  validate(c)                                     # one local step: allowed
  c.client.local_steps = 3
  with pytest.raises(ConfigError, match='client.local_steps=3'):
    validate(c)


@pytest.mark.parametrize('method,fields,match', [
    ('local_topk', {'k': D + 1}, rf'method.k={D + 1} is invalid; allowed: 1 <= k <= D = {D}'),
    ('true_topk', {'k': D + 1}, 'method.k'),
    ('random_k', {'k': D + 1}, 'method.k'),
    ('local_topk', {'k': D, 'error_feedback': True}, 'nothing to feed back'),
    ('true_topk', {'k': D, 'error_feedback': True}, 'nothing to feed back'),
    ('random_k', {'k': D, 'error_feedback': True, 'scaling': 'none'}, 'nothing to feed back'),
    ('local_topk', {'k': D, 'error_feedback': False, 'local_momentum': 0.9}, 'momentum factor'),
    ('true_topk', {'k': D, 'error_feedback': False, 'momentum': 0.9}, 'momentum factor'),
])
def test_build_time_errors(method, fields, match):
  """D is known only at build time: ValueError from build, one line naming the field."""
  with pytest.raises(ValueError, match=match):
    _build(method, **fields)


def test_k_above_D_is_a_config_error_before_compilation():
  with pytest.raises(ConfigError, match='method.k=651'):
    experiment.Experiment(digits_config('local_topk', k=D + 1))
