"""The three intrinsic methods: docs/paper.md §3 identities, catch-up rebuild, §4 byte formulas."""

import jax
import jax.numpy as jnp
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
  """intrinsic_static at d = 64, the reference of the two equivalence tests, the time-varying
  subspace test and the quantised payload test below."""
  return run(digits_config('intrinsic_static', d=64))


@pytest.mark.parametrize('method', INTRINSIC)
def test_identity_projection_equals_uncompressed(make_digits_config, method, uncompressed_run):
  """d = D with the identity operator: every intrinsic method is uncompressed SGD."""
  ref = uncompressed_run[1]
  exp, state, _, _ = run(make_digits_config(method, projection='identity', d=D_LOGREG))
  assert_close(exp.algorithm.model_params(state), ref.theta, rtol=1e-5)


def theta_of(run_result):
  """θ of a `run` result's final state, by the jitted model_params (jittable, base.py)."""
  exp, state = run_result[0], run_result[1]
  return jax.jit(exp.algorithm.model_params)(state)


def test_one_subspace_equals_static(make_digits_config, static_run):
  k1 = run(make_digits_config('intrinsic_k_subspace', d=64, num_subspaces=1))
  assert_close(theta_of(k1), theta_of(static_run))


def test_constant_time_varying_equals_static(make_digits_config, static_run):
  tv = run(make_digits_config('intrinsic_time_varying', d=64, resample_every=0))
  assert_close(theta_of(tv), theta_of(static_run))


def test_time_varying_leaves_the_subspace(make_digits_config, static_run):
  """With a fresh subspace per round θ − θ0 spans more than d directions; static stays in one.
  (d = 64, 3 rounds: up to 192 directions; static_run's subspace, d = 64, is the reference.)"""
  exp, state, _, _ = run(make_digits_config('intrinsic_time_varying', d=64, rounds=3))
  moved = flat(exp.algorithm.model_params(state)) - flat(exp.params0)
  assert np.linalg.norm(moved) > 0
  # Project the time-varying move on the static subspace: it must not lie inside it.
  import projections as P
  sub = P.get('fastfood', D=D_LOGREG, d=64)
  op_state = static_run[1].op_state
  basis = np.asarray(jax.jit(jax.vmap(sub.lift, in_axes=(None, 0), out_axes=1))(
      op_state, jnp.eye(64, dtype=jnp.float32)))                       # A: [D, 64]
  coef, *_ = np.linalg.lstsq(basis, moved, rcond=None)
  assert np.linalg.norm(basis @ coef - moved) > 0.1 * np.linalg.norm(moved)


def _fresh_cohorts(C, E):
  return [np.arange(C * (e - 1), C * e, dtype=np.int32) for e in range(1, E + 1)]


# The runs of test_bytes_and_catch_up: (method, method fields, server optimiser).
RUNS = [
    ('intrinsic_static', {'d': 64}, 'sgd'),
    # intrinsic_static under momentum is not run: servers.subspace's catch-up (z) and rebuild never
    # read the optimiser state, so the sgd case covers their path; momentum in z-space
    # (servers.anchored_step) is run by the k_subspace momentum cases.
    ('intrinsic_k_subspace', {'d': 64, 'num_subspaces': 3}, 'sgd'),
    ('intrinsic_k_subspace', {'d': 64, 'num_subspaces': 3}, 'momentum'),
    ('intrinsic_k_subspace', {'d': 200, 'num_subspaces': 4}, 'sgd'),    # 4·200 >= D: θ is sent
    # (K = 4, d = 200 under momentum is not run: θ is θ0 + Σ A_k z_k whatever the optimiser, so
    # its θ-sending path is the sgd case's, and momentum's z_k (only the active one steps) is
    # checked by the K = 3 momentum case.)
    ('intrinsic_time_varying', {'d': 64}, 'sgd'),                       # stateless: replay from h
    ('intrinsic_time_varying', {'d': 64}, 'momentum'),                  # stateful: from θ0
    ('intrinsic_time_varying', {'d': 200}, 'sgd'),                      # 4·200 >= D: θ is sent
    ('intrinsic_time_varying', {'d': 200}, 'momentum'),
]


@pytest.mark.parametrize('method,extra,optimizer', RUNS)
def test_bytes_and_catch_up(make_digits_config, method, extra, optimizer):
  """One run of E + 1 = 7 rounds, C = 4 clients: fresh participants in rounds 1 … 6, then in round 7
  a client returning from round 2, one returning from round 5 and two fresh ones.

  (a) docs/paper.md §4: every round's download bytes are the formula's, for each client's held
  round (a k-subspace client that received θ holds no z: it is charged like a fresh client, θ
  again, not the z_k it could not apply; the ledger records it as holding round 1).
  (b) Clients syncing at one or two of rounds 1 … 8 (8: after the last), or at all of them, keeping
  only what they received, rebuild θ at every sync and are charged its bytes
  (helpers.simulate_client_syncs).
  """
  C, E, D = 4, 6, D_LOGREG
  d, K = extra['d'], extra.get('num_subspaces')
  stateless = optimizer == 'sgd'
  c = make_digits_config(method, rounds=E + 1, clients_per_round=C, **extra)
  c.server.optimizer = optimizer
  c.server.momentum = 0.0 if stateless else 0.9
  cohorts = _fresh_cohorts(C, E)
  back2, back5 = cohorts[1][0], cohorts[4][0]        # took part in round 2, in round 5
  cohorts.append(np.array([back2, back5] + list(range(C * E, C * E + C - 2)), np.int32))
  exp, final, states, lines = run(c, cohorts)

  def floats(e, h):
    """What a client holding round h downloads at round e (h = 1: a fresh client)."""
    if method == 'intrinsic_static':
      return d
    if method == 'intrinsic_k_subspace':
      return min(d * min(e - h, K), D)
    return min(d * ((e - h) if stateless else (e - 1)), D)

  for e, line in enumerate(lines[:E], start=1):
    assert line['bytes_up'] == C * d * 4
    assert line['bytes_down'] == C * floats(e, 1) * 4, (e, line['bytes_down'], C * floats(e, 1) * 4)
  e = E + 1
  got_theta = method == 'intrinsic_k_subspace' and floats(5, 1) == D   # θ in round 5
  held5 = 1 if got_theta else 5
  assert lines[E]['bytes_down'] == (floats(e, 2) + floats(e, held5) + (C - 2) * floats(e, 1)) * 4
  states = states + [final]
  if got_theta:
    # K = 4, d = 200: fresh at round 5 it got θ (4 subspaces updated: 800 >= 650 floats); at round
    # 7 it needs θ again (650 floats), not the 2 z_k of rounds 5-6 (400 floats).
    assert floats(e, held5) == D
    assert exp.ledger.held_round[back5] == 1                 # after θ again: like a fresh client
    assert simulate_client_syncs(exp.algorithm, exp.params0, states, [5, 7, 8]) == [1, 1, 1]
  memo = {}
  for schedule in every_schedule(len(states), max_syncs=2):
    simulate_client_syncs(exp.algorithm, exp.params0, states, schedule, memo)


@pytest.mark.parametrize('payload_dtype,per_client', [('bfloat16', 2 * 64), ('int8', 64 + 4)])
def test_quantised_payload_bytes_and_learning_signal(make_digits_config, payload_dtype, per_client,
                                                     static_run):
  """The float32 reference is static_run (the same config: d = 64, 6 clients, 3 rounds)."""
  c = make_digits_config('intrinsic_static', d=64, payload_dtype=payload_dtype)
  exp, state, _, lines = run(c)
  assert lines[0]['bytes_up'] == 6 * per_client
  ref = static_run
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
