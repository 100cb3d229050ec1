"""benchmarks.fedjax_peer: the task export both sides train on, timing summaries, the report.

FedJAX itself is needed only by ``test_worker_in_fedjax_venv``, which runs when FedJAX's venv exists
(``python -m benchmarks.fedjax_peer`` creates it) and is skipped otherwise.
"""
import os

import numpy as np
import pytest

from benchmarks import common
from benchmarks import fedjax_peer as fp
from benchmarks import fedjax_peer_worker as worker
from fedjax_intrinsic import experiment


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """A 3-round, 4-client task file, and our Experiment built from the same config."""
  config = fp.digits_config(4, 3)
  path = str(tmp_path_factory.mktemp('task') / 'task.npz')
  info = fp.export_task(config, path)
  return config, info, worker.read_task(path), experiment.Experiment(config)


def test_config_is_the_digits_fedavg_protocol():
  c = fp.digits_config(100, 200)
  assert (c.method.name, c.model.name, c.data.name) == ('fedavg', 'mlp', 'digits')
  assert (c.clients_per_round, c.rounds, c.data.num_clients) == (100, 200, 100)
  assert (c.client.lr, c.client.batch_size, c.client.local_epochs, c.client.local_steps) == \
      (0.1, 5, 1, 0)
  assert (c.server.optimizer, c.server.lr) == ('sgd', 1.0)
  assert fp.digits_config(10, 5, 'loop').simulation.client_parallelism == 'loop'
  with pytest.raises(ValueError, match='strategy'):
    fp.digits_config(10, 5, 'threads')
  with pytest.raises(ValueError, match='clients_per_round'):
    fp.digits_config(0, 5)


def test_export_gives_fedjax_our_clients_and_cohorts(exported):
  config, info, task, exp = exported
  data = exp.data
  assert info['num_clients'] == data.num_clients == len(task.clients) == 100
  # FedJAX iterates client ids sorted: that order must be ours.
  assert sorted(task.clients) == [worker.client_id(c) for c in range(data.num_clients)]
  for c in range(data.num_clients):
    mine, theirs = data.client(c), task.clients[worker.client_id(c)]
    np.testing.assert_array_equal(theirs['x'], mine['x'])
    np.testing.assert_array_equal(theirs['y'], mine['y'])
    assert theirs['x'].dtype == np.float32 and theirs['y'].dtype == np.int32
  np.testing.assert_array_equal(task.test['x'], data.test['x'])
  np.testing.assert_array_equal(task.test['y'], data.test['y'])
  assert task.cohorts.shape == (3, 4)
  for e in range(1, 4):
    np.testing.assert_array_equal(task.cohorts[e - 1], exp.cohort(e)[:4])
    assert len(set(task.cohorts[e - 1].tolist())) == 4
  assert task.hparams == {'client_lr': 0.1, 'server_lr': 1.0, 'batch_size': 5, 'local_epochs': 1,
                          'rounds': 3, 'eval_every': config.eval_every, 'clients_per_round': 4}


def test_export_is_our_theta0(exported):
  _, info, task, exp = exported
  shapes = [(w.shape, b.shape) for w, b in task.layers]
  assert shapes == [((64, 128), (128,)), ((128, 10), (10,))]
  assert info['num_params'] == sum(w.size + b.size for w, b in task.layers) == 9610
  ours = np.asarray(exp.model.apply(exp.params0, task.test['x']))
  oracle = worker.mlp_forward(task.layers, task.test['x'])        # numpy, independent of flax
  np.testing.assert_allclose(oracle, ours, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(task.theta0_test_logits, ours)
  hk = worker.haiku_params(task.layers)
  assert sorted(hk) == ['linear', 'linear_1']
  assert hk['linear_1']['w'] is task.layers[1][0]


def test_export_rejects_what_the_worker_cannot_rebuild(tmp_path):
  cnn = fp.digits_config(4, 3)
  cnn.model.name = 'cnn'
  with pytest.raises(ValueError, match='model.name'):
    fp.export_task(cnn, str(tmp_path / 't.npz'))
  momentum = fp.digits_config(4, 3)
  momentum.server.optimizer = 'momentum'
  with pytest.raises(ValueError, match='server='):
    fp.export_task(momentum, str(tmp_path / 't.npz'))


def test_read_task_rejects_malformed_files(exported, tmp_path):
  with np.load(exported[1]['path']) as z:
    fields = dict(z.items())
  bad = tmp_path / 'format.npz'
  np.savez(bad, **{**fields, 'format': np.array('other/1')})
  with pytest.raises(ValueError, match='format'):
    worker.read_task(str(bad))
  bad = tmp_path / 'cohorts.npz'
  np.savez(bad, **{**fields, 'cohorts': fields['cohorts'] + 100})
  with pytest.raises(ValueError, match='cohorts'):
    worker.read_task(str(bad))
  bad = tmp_path / 'rounds.npz'
  np.savez(bad, **{**fields, 'rounds': np.int64(7)})
  with pytest.raises(ValueError, match='rounds=7'):
    worker.read_task(str(bad))
  with pytest.raises(ValueError, match='c=-1'):
    worker.client_id(-1)


def test_summarize_and_cpu_per_round():
  s = fp.summarize([2.0, 0.003, 0.001, 0.002], [None, 0.004, None, 0.006])
  assert s['first_round_ms'] == 2000.0 and s['n'] == 3
  assert s['median_ms'] == pytest.approx(2.0) and s['min_ms'] == pytest.approx(1.0)
  assert s['mean_ms'] == pytest.approx(2.0) and s['cpu_median_ms'] == pytest.approx(5.0)
  assert fp.summarize([1.0, 0.5])['cpu_median_ms'] is None
  with pytest.raises(ValueError, match='wall_s'):
    fp.summarize([1.0])
  cpu = fp.cpu_per_round([0.0, 5.0, 5.5, 7.0, 7.25], [False, False, True, False])
  assert cpu == [None, 0.5, None, 0.25]
  with pytest.raises(ValueError, match='stamps'):
    fp.cpu_per_round([0.0, 1.0], [False, False])


def test_pip_command_installs_every_pin_in_one_command():
  cmd = fp.pip_command('/v')
  assert cmd[:4] == ['/v/bin/python', '-m', 'pip', 'install']
  assert cmd[4:] == ['fedjax==0.0.17', 'jax==0.4.30', 'jaxlib==0.4.30', 'dm-haiku==0.0.13',
                     'optax==0.2.3']
  assert fp.pins_ok(dict(worker.PINS, numpy='2.0'))
  assert not fp.pins_ok(dict(worker.PINS, jax='0.4.31')) and not fp.pins_ok(None)


def test_aggregate_pairs_repeats_and_renders():
  settings = fp.Settings('test', 3, (10,), 2, (fp.DEFAULT,))

  def run(repeat, side, ms, acc):
    return {'repeat': repeat, 'clients_per_round': 10, 'side': side, 'median_ms': ms,
            'cpu_median_ms': ms / 2, 'first_round_ms': 900.0, 'test_accuracy': acc,
            'load_before': [1.5, 1.0, 1.0]}

  runs = [run(0, 'ours:default', 2.0, 0.9), run(0, 'fedjax', 10.0, 0.8),
          run(1, 'fedjax', 12.0, 0.85), run(1, 'ours:default', 3.0, 0.95)]
  rows = fp.aggregate(runs, settings)
  assert [r['side'] for r in rows] == ['ours:default', 'fedjax']
  assert rows[0]['speedups_vs_fedjax'] == [5.0, 4.0]
  assert rows[0]['speedup_vs_fedjax'] == 4.5 and rows[0]['median_ms'] == 2.5
  assert rows[1]['speedup_vs_fedjax'] == 1.0 and rows[1]['median_ms'] == 11.0
  result = {'settings': {'rounds': 3, 'repeats': 2}, 'aggregate': rows,
            'machine': {'cpu_model': 'x', 'cpu_cores_usable': 2, 'mem_total_bytes': None,
                        'backend': 'cpu', 'jax': 'j', 'jaxlib': 'j', 'python': '3',
                        'date_utc': 'today'},
            'ours': {'command': 'python run.py', 'versions': {'jax': '0.10.2'},
                     'strategies': {'ours:default': {'client_parallelism': 'auto',
                                                     'resolved': 'map'}}},
            'fedjax': {'versions': dict(worker.PINS), 'pip': ' '.join(fp.PIP_PINS)}}
  text = fp.render(result)
  assert 'ours:default (auto = map)' in text and '4.5x' in text and 'fedjax 0.0.17' in text
  assert '0.925 (0.900-0.950)' in text
  section = common.replace_section('# B\n', fp.README_SECTION, text)
  assert section.count('<!-- fedjax:begin -->') == 1


def test_run_ours_reports_round_times():
  out = fp.run_ours(fp.digits_config(2, 3))
  assert len(out['round_wall_s']) == len(out['round_cpu_s']) == 3
  assert all(t > 0 for t in out['round_wall_s'])
  assert out['round_cpu_s'][0] is None and out['round_cpu_s'][1] > 0
  assert out['round_cpu_s'][2] is None                    # round 3 evaluated (the last round)
  assert 0 <= out['final']['test_accuracy'] <= 1 and out['num_params'] == 9610


@pytest.mark.skipif(not os.path.exists(fp.venv_python(fp.DEFAULT_VENV)),
                    reason=f'no FedJAX venv at {fp.DEFAULT_VENV} (python -m benchmarks.fedjax_peer '
                           'makes it)')
def test_worker_in_fedjax_venv(exported):
  out = fp.run_fedjax(fp.DEFAULT_VENV, exported[1]['path'], timeout_s=300)
  assert out['versions']['fedjax'] == '0.0.17' and out['versions']['jax'] == '0.4.30'
  assert out['theta0_max_abs_logit_diff'] <= worker.LOGIT_TOLERANCE
  assert len(out['round_wall_s']) == 3 and out['clients_per_round'] == 4
  assert out['num_params'] == 9610 and 0 <= out['final']['test_accuracy'] <= 1
