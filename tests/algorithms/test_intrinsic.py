"""The three intrinsic methods: docs/paper.md §3 identities, catch-up rebuild, §4 byte formulas."""

import numpy as np
import pytest

from fedjax_intrinsic.config import ConfigError
from fedjax_intrinsic.preflight import validate
from tests.algorithms.helpers import assert_close, every_schedule, flat, run, simulate_client_syncs
from tests.conftest import digits_config

INTRINSIC = ('intrinsic_static', 'intrinsic_k_subspace', 'intrinsic_time_varying')
D_LOGREG = 650   # logistic regression on 8x8 digits, 10 classes


@pytest.fixture(scope='module')
def uncompressed_run():
  """The reference run of the identity-projection tests (the same config for each method)."""
  return run(digits_config('uncompressed'))


@pytest.fixture(scope='module')
def static_run():
  """intrinsic_static at d = 64, the reference of the two equivalence tests below."""
  return run(digits_config('intrinsic_static', d=64))


@pytest.mark.parametrize('method', INTRINSIC)
def test_identity_projection_equals_uncompressed(make_digits_config, method, uncompressed_run):
  """d = D with the identity operator: every intrinsic method is uncompressed SGD."""
  ref = uncompressed_run[1]
  exp, state, _, _ = run(make_digits_config(method, projection='identity', d=D_LOGREG))
  assert_close(exp.algorithm.model_params(state), ref.theta, rtol=1e-5)


def test_one_subspace_equals_static(make_digits_config, static_run):
  static = static_run
  k1 = run(make_digits_config('intrinsic_k_subspace', d=64, num_subspaces=1))
  assert_close(k1[0].algorithm.model_params(k1[1]), static[0].algorithm.model_params(static[1]))


def test_constant_time_varying_equals_static(make_digits_config, static_run):
  static = static_run
  tv = run(make_digits_config('intrinsic_time_varying', d=64, resample_every=0))
  assert_close(tv[0].algorithm.model_params(tv[1]), static[0].algorithm.model_params(static[1]))


def test_time_varying_leaves_the_subspace(make_digits_config):
  """With a fresh subspace per round θ − θ0 spans more than d directions; static stays in one."""
  exp, state, _, _ = run(make_digits_config('intrinsic_time_varying', d=8, rounds=3))
  moved = flat(exp.algorithm.model_params(state)) - flat(exp.params0)
  static_exp, static_state, _, _ = run(make_digits_config('intrinsic_static', d=8, rounds=3))
  assert np.linalg.norm(moved) > 0
  # Project the time-varying move on the static subspace: it must not lie inside it.
  import projections as P
  sub = P.get('fastfood', D=D_LOGREG, d=8)
  op_state = static_state.op_state
  basis = np.stack([np.asarray(sub.lift(op_state, np.eye(8, dtype=np.float32)[i])) for i in range(8)], 1)
  coef, *_ = np.linalg.lstsq(basis, moved, rcond=None)
  assert np.linalg.norm(basis @ coef - moved) > 0.1 * np.linalg.norm(moved)


@pytest.mark.parametrize('method,extra', [
    ('intrinsic_static', {'d': 32}),
    ('intrinsic_k_subspace', {'d': 32, 'num_subspaces': 3}),
    ('intrinsic_k_subspace', {'d': 200, 'num_subspaces': 4}),   # 4·200 >= D = 650: θ is sent
    ('intrinsic_time_varying', {'d': 32}),
    ('intrinsic_time_varying', {'d': 200}),                      # 4·200 >= D: θ is sent
])
@pytest.mark.parametrize('optimizer', ['sgd', 'momentum'])
def test_catch_up_rebuilds_server_theta(make_digits_config, method, extra, optimizer):
  """Clients syncing at one or two of rounds 1 … 6, or at all of them, keeping only what they
  received, rebuild θ at every sync and are charged its bytes (helpers.simulate_client_syncs)."""
  c = make_digits_config(method, rounds=5, **extra)
  c.server.optimizer = optimizer
  c.server.momentum = 0.9 if optimizer == 'momentum' else 0.0
  exp, final, states, _ = run(c)
  states = states + [final]
  memo = {}
  for schedule in every_schedule(len(states), max_syncs=2):
    simulate_client_syncs(exp.algorithm, exp.params0, states, schedule, memo)


def test_k_subspace_client_that_got_theta_is_charged_what_it_lacks(make_digits_config):
  """K = 4, d = 200 on D = 650. A client fresh at round 5 downloads θ (4 subspaces updated: 800 >=
  650 floats); it then holds θ and no z, so at round 7 it needs θ again (650 floats), not the 2 z_k
  changed in rounds 5-6 (400 floats) it could not apply."""
  c = make_digits_config('intrinsic_k_subspace', d=200, num_subspaces=4, rounds=7,
                         clients_per_round=2)
  x = 99
  cohorts = [np.array([2 * e, 2 * e + 1], np.int32) for e in range(1, 5)]
  cohorts += [np.array([x, 50], np.int32), np.array([51, 52], np.int32), np.array([x, 53], np.int32)]
  exp, final, states, lines = run(c, cohorts)
  assert lines[4]['bytes_down'] == 2 * 4 * 650                 # round 5: θ to both fresh clients
  assert lines[6]['bytes_down'] == 4 * 650 + 4 * 650            # round 7: θ to x and to fresh 53
  assert exp.ledger.held_round[x] == 1                         # after θ again: like a fresh client
  states = states + [final]
  assert simulate_client_syncs(exp.algorithm, exp.params0, states, [5, 7, 8]) == [1, 1, 1]


def _fresh_cohorts(C, E):
  return [np.arange(C * (e - 1), C * e, dtype=np.int32) for e in range(1, E + 1)]


@pytest.mark.parametrize('method,d,K,stateless', [
    ('intrinsic_static', 64, None, True),
    ('intrinsic_k_subspace', 64, 3, True),
    ('intrinsic_k_subspace', 300, 4, True),       # min(d·min(e−1, K), D) hits D
    ('intrinsic_time_varying', 64, None, True),
    ('intrinsic_time_varying', 200, None, False),  # stateful server: replays from θ0; hits D
])
def test_bytes_match_paper_formulas(make_digits_config, method, d, K, stateless):
  """docs/paper.md §4 with fresh participants every round, plus one returning client."""
  C, E = 4, 6
  extra = {'num_subspaces': K} if K else {}
  c = make_digits_config(method, d=d, rounds=E + 1, clients_per_round=C, **extra)
  if not stateless:
    c.server.optimizer, c.server.momentum = 'momentum', 0.9
  cohorts = _fresh_cohorts(C, E)
  returning = cohorts[1][0]                        # took part in round 2
  cohorts.append(np.array([returning] + list(range(C * E, C * E + C - 1)), np.int32))
  exp, _, _, lines = run(c, cohorts)
  D = D_LOGREG
  for e, line in enumerate(lines[:E], start=1):
    assert line['bytes_up'] == C * d * 4
    if method == 'intrinsic_static':
      floats = d
    elif method == 'intrinsic_k_subspace':
      floats = min(d * min(e - 1, K), D)
    else:
      floats = min(d * (e - 1), D)
    assert line['bytes_down'] == C * floats * 4, (e, line['bytes_down'], C * floats * 4)
  # Round E+1: one client returning from round 2, C-1 fresh ones.
  e = E + 1
  if method == 'intrinsic_static':
    back, fresh = d, d
  elif method == 'intrinsic_k_subspace':
    back, fresh = min(d * min(e - 2, K), D), min(d * min(e - 1, K), D)
  else:
    replay = (e - 2) if stateless else (e - 1)
    back, fresh = min(d * replay, D), min(d * (e - 1), D)
  assert lines[E]['bytes_down'] == (back + (C - 1) * fresh) * 4


@pytest.fixture(scope='module')
def float32_payload_run():
  return run(digits_config('intrinsic_static', d=64, clients_per_round=5))


@pytest.mark.parametrize('payload_dtype,per_client', [('bfloat16', 2 * 64), ('int8', 64 + 4)])
def test_quantised_payload_bytes_and_learning_signal(make_digits_config, payload_dtype, per_client,
                                                     float32_payload_run):
  c = make_digits_config('intrinsic_static', d=64, payload_dtype=payload_dtype, clients_per_round=5)
  exp, state, _, lines = run(c)
  assert lines[0]['bytes_up'] == 5 * per_client
  ref = float32_payload_run
  # Quantisation perturbs, but the update stays close to the float32 one.
  assert_close(ref[1].z, state.z, rtol=0.1)


@pytest.mark.parametrize('field,value,match', [
    ('d', 0, 'method.d'), ('projection', 'nope', 'method.projection'),
    ('payload_dtype', 'float8', 'method.payload_dtype')])
def test_bad_fields_rejected(make_digits_config, field, value, match):
  c = make_digits_config('intrinsic_static')
  c.method[field] = value
  with pytest.raises(ConfigError, match=match):
    validate(c)


def test_d_above_D_rejected_before_compilation(make_digits_config):
  from fedjax_intrinsic import experiment
  with pytest.raises(ConfigError, match='method.d'):
    experiment.Experiment(make_digits_config('intrinsic_static', d=D_LOGREG + 1))


def test_k_below_one_rejected(make_digits_config):
  c = make_digits_config('intrinsic_k_subspace', num_subspaces=0)
  with pytest.raises(ConfigError, match='method.num_subspaces'):
    validate(c)
