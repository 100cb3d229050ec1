"""The round engine: every client-parallelism strategy and the cohort shortcut equal the loop oracle."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_intrinsic import experiment, keys, simulation


def _run_rounds(config, rounds=2):
  """Runs `rounds` rounds through Experiment's pieces; returns the final server state's θ."""
  exp = experiment.Experiment(config)
  state = exp.algorithm.init(exp.params0)
  for e in range(1, rounds + 1):
    ids = exp.cohort(e)
    batches, weights = exp.round_inputs(e, ids)
    out = exp.round_fn(state, exp.clients.gather(ids), batches, jnp.asarray(weights),
                       jnp.asarray(ids), keys.round_key(exp.run_key, e))
    exp.clients.scatter(ids, out.client_states)
    state = out.server_state
  flat = jnp.concatenate([x.ravel() for x in jax.tree.leaves(exp.algorithm.model_params(state))])
  return np.asarray(flat), float(out.metrics['loss'])


def _close(a, b, rtol=1e-5):
  scale = max(np.linalg.norm(a), 1e-12)
  assert np.linalg.norm(a - b) <= rtol * scale, np.linalg.norm(a - b) / scale


@pytest.mark.parametrize('method,steps', [('uncompressed', 1), ('fedavg', 3)])
def test_strategies_equal_loop(make_digits_config, method, steps):
  results = {}
  for strategy in ('loop', 'vmap', 'chunked_vmap', 'map'):
    c = make_digits_config(method, clients_per_round=6)
    if method == 'fedavg':
      c.client.update({'lr': 0.1, 'batch_size': 5, 'local_steps': steps})
    c.simulation.client_parallelism = strategy
    c.simulation.clients_per_chunk = 4     # 6 clients -> padded to 8: exercises padding clients
    results[strategy] = _run_rounds(c)
  for strategy in ('vmap', 'chunked_vmap', 'map'):
    _close(results[strategy][0], results['loop'][0])
    assert abs(results[strategy][1] - results['loop'][1]) < 1e-5


def test_cohort_shortcut_equals_loop(make_digits_config):
  c = make_digits_config('uncompressed', model='mlp', clients_per_round=7)
  c.simulation.client_parallelism = 'loop'
  loop = _run_rounds(c)
  c.simulation.client_parallelism = 'vmap'
  c.simulation.cohort_shortcut = True
  shortcut = _run_rounds(c)
  _close(shortcut[0], loop[0])
  assert abs(shortcut[1] - loop[1]) < 1e-5


def test_fedavg_one_step_lr_one_equals_uncompressed(make_digits_config):
  """docs/paper.md §2: FedAvg with one local step on the whole data at client_lr 1 = uncompressed SGD."""
  u = make_digits_config('uncompressed', model='mlp')
  f = make_digits_config('fedavg', model='mlp')
  f.client.update({'lr': 1.0, 'batch_size': 0, 'local_steps': 1})
  _close(_run_rounds(f, 3)[0], _run_rounds(u, 3)[0], rtol=1e-5)


def test_padding_clients_change_nothing(make_digits_config):
  """A cohort padded with masked clients (id -1, weight 0) gives the same round."""
  c = make_digits_config('fedavg', clients_per_round=5)
  c.client.update({'lr': 0.1, 'batch_size': 5, 'local_steps': 2})
  exp = experiment.Experiment(c)
  state = exp.algorithm.init(exp.params0)
  ids = exp.cohort(1)
  padded = np.concatenate([ids, -np.ones(3, np.int32)])
  outs = []
  for cohort in (ids, padded):
    batches, weights = exp.round_inputs(1, cohort)
    out = exp.round_fn(state, exp.clients.gather(cohort), batches, jnp.asarray(weights),
                       jnp.asarray(cohort), keys.round_key(exp.run_key, 1))
    outs.append(np.asarray(out.server_state.theta))
  _close(outs[1], outs[0], rtol=1e-6)


def test_aggregation_weights():
  w = simulation.aggregation_weights(np.array([10., 30., 0.]), np.array([3, 5, -1]), 'examples')
  np.testing.assert_allclose(w, [0.25, 0.75, 0.0])
  w = simulation.aggregation_weights(np.array([10., 30., 7.]), np.array([3, 5, -1]), 'uniform')
  np.testing.assert_allclose(w, [0.5, 0.5, 0.0])


def test_client_state_store_roundtrip():
  store = simulation.ClientStateStore({'e': np.zeros(3, np.float32)}, num_clients=5)
  ids = np.array([4, 1, -1])
  states = {'e': np.arange(9, dtype=np.float32).reshape(3, 3)}
  store.scatter(ids, states)
  got = store.gather(np.array([1, 4, 0, -1]))['e']
  np.testing.assert_array_equal(got, [[3, 4, 5], [0, 1, 2], [0, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize('method', ['uncompressed', 'powersgd'])
def test_prefetching_the_next_round_changes_nothing(make_digits_config, method):
  """run_round builds round e+1's cohort and inputs while round e runs; the same rounds run on
  explicitly given cohorts (nothing prefetched) give identical states and lines. powersgd keeps
  per-client error feedback, so the client-state store's order is checked too."""
  c = make_digits_config(method, rounds=4)
  a, b = experiment.Experiment(c), experiment.Experiment(c)
  sa, sb = a.init_state(), b.init_state()
  for e in range(1, 5):
    sa, la = a.run_round(sa, e)
    assert list(a._prefetched) == ([e + 1] if e < 4 else [])
    sb, lb = b.run_round(sb, e, b.cohort(e))
    assert b._prefetched == {}
    assert la == lb
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for x, y in zip(jax.tree.leaves(a.clients.state_dict()), jax.tree.leaves(b.clients.state_dict())):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
