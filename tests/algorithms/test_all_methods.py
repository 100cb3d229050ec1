"""Contracts every registered method must meet, read from the registry at collection time.

For every name in `fedjax_intrinsic.algorithms.METHODS`, with a small budget on digits logreg (D = 650):
(a) every client-parallelism strategy (vmap, chunked_vmap with padding clients, map) == the loop
    oracle; (b) the cohort shortcut == the loop where the method allows it; (c) a client that syncs
    at any schedule of rounds and keeps only what it received rebuilds the server's θ, with the
    catch-up's bytes == `download_bytes` (`helpers.simulate_client_syncs`); (d) a full run
    in-process (`experiment.run` on configs/digits_cnn.py, as `run.py` does) writes bytes and
    compression ratios to metrics.jsonl.
A method added to the registry is tested here automatically. Its budget shrinks to fit D = 650 by
the generic SMALL_BUDGET (any method field of that name); a method that needs more adds an entry to
OVERRIDES (one line per method, its own fields only).
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_intrinsic import algorithms, experiment, keys, simulation
from fedjax_intrinsic import config as config_lib
from tests.algorithms.helpers import assert_close, every_schedule, simulate_client_syncs

# Budget fields, whichever method has them: small enough for logreg on digits (D = 650).
SMALL_BUDGET = {'d': 64, 'k': 32, 'rows': 3, 'cols': 64, 'rank': 2}
# method name -> extra method fields for this file's tests (add yours; leave the others' alone).
OVERRIDES = {}

STRATEGIES = ('chunked_vmap', 'map')   # vmap: the run itself; loop: the oracle


def small(method: str) -> dict:
  """The method's fields to set for a fast logreg test: SMALL_BUDGET where it has them, OVERRIDES."""
  fields = algorithms.default_config(method)
  out = {k: v for k, v in SMALL_BUDGET.items() if k in fields}
  out.update(OVERRIDES.get(method, {}))
  return out


def drive(exp, strategy: str, shortcut: bool = False):
  """Runs exp's config.rounds rounds with `strategy`, on exp's data, θ0 and cohorts.

  One Experiment serves every strategy (a fresh round function and client-state store each), so
  each strategy costs one compilation. chunked_vmap runs 4 clients a chunk, so the cohort is padded
  with masked clients of weight 0. Returns (final server state, [weighted train loss per round]).
  """
  alg = exp.algorithm
  round_fn = simulation.build_round(alg, strategy, clients_per_chunk=4, cohort_shortcut=shortcut)
  size = simulation.padded_cohort_size(exp.config.clients_per_round, strategy, 4)
  store = simulation.ClientStateStore(alg.init_client(exp.params0), exp.data.num_clients)
  state = exp.states[0]                    # the recorded run's initial server state
  losses = []
  for e in range(1, exp.config.rounds + 1):
    ids = exp.cohort(e)[:exp.config.clients_per_round]
    ids = np.concatenate([ids, -np.ones(size - len(ids), np.int32)])
    batches, weights = exp.round_inputs(e, ids)
    out = round_fn(state, store.gather(ids), batches, jnp.asarray(weights), jnp.asarray(ids),
                   keys.round_key(exp.run_key, e))
    store.scatter(ids, out.client_states)
    state = out.server_state
    losses.append(float(out.metrics['loss']))
  return state, losses


def check_catch_up(alg, params0, states, final, model_params):
  """Clients that sync at every possible schedule of rounds, keeping only what they received
  (`simulate_client_syncs`): at each sync the rebuilt θ == the server's (read with
  `model_params`, the jitted `alg.model_params`), the bytes == download_bytes."""
  states = list(states) + [final]
  memo = {'model_params': model_params}
  for schedule in every_schedule(len(states)):
    simulate_client_syncs(alg, params0, states, schedule, memo)


class RecordingExperiment(experiment.Experiment):
  """An Experiment that records itself, the server state before each round and after the last."""
  made = []

  def __init__(self, config):
    super().__init__(config)
    self.states = []
    RecordingExperiment.made.append(self)

  def run_round(self, state, round_num, client_ids=None):
    self.states.append(state)
    self.final, line = super().run_round(state, round_num, client_ids)
    return self.final, line


@pytest.mark.parametrize('method', algorithms.METHODS)
def test_every_method(method, tmp_path, monkeypatch):
  """(d) then (a)-(c) on the same Experiment: one compilation per strategy."""
  from configs import digits_cnn
  # (d) `run.py --config=configs/digits_cnn.py:method=<m>,model=logreg,rounds=2`, in-process
  # (vmap, 10 clients a round), recording its server states. Without the config's client-cost
  # timing (time_client_cost: method-independent code, tested by tests/simulation/
  # test_experiment.py::test_client_cost_timing_fields; the jitted client_update it times, the
  # method's own, is the one the loop oracle below compiles): 3 compilations less per method.
  c = digits_cnn.get_config(f'method={method},model=logreg,rounds=2')
  c.time_client_cost = False
  c.method.update(small(method))
  monkeypatch.setattr(RecordingExperiment, 'made', [])
  monkeypatch.setattr(experiment, 'Experiment', RecordingExperiment)
  summary = experiment.run(c, str(tmp_path))
  assert summary['status'] == 'finished' and summary['rounds_run'] == 2
  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  assert [line['round'] for line in lines] == [1, 2]
  dense = 4 * 650 * c.clients_per_round
  for line in lines:
    assert np.isfinite(line['train_loss'])
    assert line['bytes_up'] > 0 and line['bytes_down'] >= 0   # sparse sync: 0 in round 1
    for key in ('upload_compression', 'download_compression', 'overall_compression'):
      if key == 'download_compression' and line['cum_bytes_down'] == 0:
        assert line[key] is None      # an infinite ratio, written as strict JSON's null
      else:
        assert line[key] > 0
  last = lines[-1]
  assert last['cum_bytes_total'] == sum(line['bytes_total'] for line in lines)
  assert last['upload_compression'] == pytest.approx(2 * dense / last['cum_bytes_up'])
  assert last['download_compression'] == pytest.approx(2 * dense / last['cum_bytes_down'])
  assert 0 <= last['test_accuracy'] <= 1

  (exp,) = RecordingExperiment.made
  alg = exp.algorithm
  model_params = jax.jit(alg.model_params)   # jittable (base.py): one program, not op by op
  theta = model_params(exp.final)
  # (c) catch-up rebuild from the client's own kept state == server θ, and its bytes.
  check_catch_up(alg, exp.params0, exp.states, exp.final, model_params)
  # (a) every other strategy == the loop oracle == the run's vmap (with padding clients for
  # chunked_vmap: 10 clients in chunks of 4).
  loop_final, loop_losses = drive(exp, 'loop')
  assert_close(model_params(loop_final), theta, rtol=1e-5)
  np.testing.assert_allclose(loop_losses, [line['train_loss'] for line in lines], rtol=1e-5)
  for strategy in STRATEGIES:
    final, losses = drive(exp, strategy)
    assert_close(model_params(loop_final), model_params(final), rtol=1e-5)
    np.testing.assert_allclose(losses, loop_losses, rtol=1e-5, err_msg=strategy)
  # (b) the cohort shortcut, where the method allows it; the configs of the pretrained models
  # turn it on for config.COHORT_SHORTCUT_METHODS, which must be exactly those methods.
  assert alg.cohort_shortcut == (method in config_lib.COHORT_SHORTCUT_METHODS)
  if alg.cohort_shortcut:
    final, losses = drive(exp, 'vmap', shortcut=True)
    assert_close(model_params(loop_final), model_params(final), rtol=1e-5)
    np.testing.assert_allclose(losses, loop_losses, rtol=1e-5)
