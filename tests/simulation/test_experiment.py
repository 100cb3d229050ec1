"""run.py and experiment.run end to end: files, determinism, bad input, real learning."""
import json
import os
import subprocess
import sys

import pytest

from fedjax_intrinsic import config as config_lib, experiment, preflight
from tests.algorithms.helpers import run_and_keep_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _untimed(lines):
  return [{k: v for k, v in line.items() if not k.startswith('time_')} for line in lines]


def test_same_seed_same_metrics(make_digits_config, tmp_path):
  c = make_digits_config('fedavg', model='mlp', rounds=3)
  c.client.update({'lr': 0.1, 'batch_size': 5, 'local_steps': 2})
  for name in ('a', 'b'):
    experiment.run(c, str(tmp_path / name))
  a, b = (_lines(tmp_path / n / 'metrics.jsonl') for n in ('a', 'b'))
  assert len(a) == 3 and any(k.startswith('time_') for k in a[0])
  assert _untimed(a) == _untimed(b)
  summary = json.load(open(tmp_path / 'a' / 'summary.json'))
  assert summary['status'] == 'finished' and summary['num_params'] == 9610
  assert 'test_accuracy' in summary['final'] and summary['versions']['jax']


def test_eval_splits_choose_the_evaluated_metrics(make_digits_config, tmp_path):
  c = make_digits_config('uncompressed', model='logreg', rounds=1, clients_per_round=2)
  exp = experiment.Experiment(c)
  params = exp.algorithm.model_params(exp.init_state())
  both = exp.evaluate(params)
  assert any(k.startswith('test_') for k in both) and any(k.startswith('val_') for k in both)
  for splits, prefix in (('test', 'test_'), ('validation', 'val_')):
    c.eval_splits = splits
    one = experiment.Experiment(c).evaluate(params)
    assert one and one == {k: v for k, v in both.items() if k.startswith(prefix)}


def test_bytes_of_uncompressed(make_digits_config, tmp_path):
  c = make_digits_config('uncompressed', model='logreg', rounds=2, clients_per_round=4)
  experiment.run(c, str(tmp_path))
  line = _lines(tmp_path / 'metrics.jsonl')[0]
  assert line['bytes_up'] == 4 * 650 * 4 and line['bytes_down'] == 4 * 650 * 4
  assert line['overall_compression'] == 1.0


@pytest.mark.parametrize('method,threshold', [('uncompressed', 0.65), ('fedavg', 0.35)])
def test_learns_digits(make_digits_config, tmp_path, monkeypatch, method, threshold):
  """20 rounds of 20 shard clients (mostly one class each) on the MLP, far above chance (10%).

  Measured (seeds 0, 1, 2): uncompressed at server lr 0.5: 0.79, 0.86, 0.86; FedAvg (one local epoch,
  batch 5, client lr 0.1, server lr 1.0; client drift on one-class shards slows it): 0.52, 0.44,
  0.61. The control, θ0 (what server SGD at lr 0 keeps, round after round), must stay below 0.3.
  """
  c = make_digits_config(method, model='mlp', rounds=20, clients_per_round=20)
  if method == 'fedavg':
    c.client.update({'lr': 0.1, 'batch_size': 5, 'local_steps': 0, 'local_epochs': 1})
    c.server.lr = 1.0
  summary, exp = run_and_keep_experiment(c, str(tmp_path / 'lr'), monkeypatch)
  acc = summary['final']['test_accuracy']
  assert acc >= threshold, acc
  control = exp.evaluate(exp.params0)['test_accuracy']        # the run's own θ0 and test split
  assert control < 0.3, control


def _run_py(*args, timeout=300):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'run.py'), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_run_py_end_to_end(tmp_path):
  out = _run_py('--config=configs/digits_cnn.py:model=logreg,rounds=3', f'--workdir={tmp_path}',
                '--config.clients_per_round=5', '--quiet')
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'final test_accuracy=' in out.stdout
  assert len(_lines(tmp_path / 'metrics.jsonl')) == 3
  assert json.load(open(tmp_path / 'config.json'))['model']['name'] == 'logreg'


@pytest.mark.parametrize('flag,field', [
    ('--config.data.name=nope', 'data.name'),
    ('--config.model.name=nope', 'model.name'),
    ('--config.server.optimizer=nope', 'server.optimizer'),
    ('--config.clients_per_round=0', 'clients_per_round'),
    ('--config.clients_per_round=101', 'clients_per_round'),
    ('--config.rounds=-3', 'rounds'),
])
def test_bad_input_exits_2_naming_the_field(tmp_path, flag, field):
  out = _run_py(flag, f'--workdir={tmp_path}', timeout=120)
  assert out.returncode == 2, out.stderr[-2000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and field in last, last
  assert not os.path.exists(tmp_path / 'metrics.jsonl')


def test_bad_method_name_in_arg(tmp_path):
  out = _run_py('--config=configs/digits_cnn.py:method=nope', f'--workdir={tmp_path}', timeout=120)
  assert out.returncode != 0 and 'method' in out.stderr


def test_validate_is_pure_and_names_fields(make_digits_config):
  c = make_digits_config()
  preflight.validate(c)
  c.simulation.client_parallelism = 'threads'
  with pytest.raises(config_lib.ConfigError, match='simulation.client_parallelism'):
    preflight.validate(c)


def test_client_cost_timing_fields(make_digits_config, tmp_path):
  """time_client_cost: the client-side cost of compression, as timing fields only."""
  c = make_digits_config('intrinsic_static', model='logreg', rounds=2, d=64)
  c.time_client_cost = True
  summary = experiment.run(c, str(tmp_path))
  line = _lines(tmp_path / 'metrics.jsonl')[0]
  for key in ('time_client_update_s', 'time_client_train_s', 'time_client_encode_s'):
    assert summary[key] >= 0 and line[key] == summary[key]
  assert summary['time_client_encode_s'] == max(
      summary['time_client_update_s'] - summary['time_client_train_s'], 0.0)
  assert not any(k.startswith('time_') for k in summary['final'])


def test_a_runaway_finite_loss_is_diverged(make_digits_config, tmp_path):
  """server.lr=1e6 on logreg: the loss explodes but stays finite. Above divergence_loss_ratio (100)
  times round 1's loss the run is 'diverged' at that round and stops; with the ratio 0 (non-finite
  only) the same run is 'finished'."""
  c = make_digits_config('uncompressed', model='logreg', rounds=4, clients_per_round=4)
  c.server.lr = 1e6
  assert c.divergence_loss_ratio == 100.0                     # the default
  summary = experiment.run(c, str(tmp_path / 'ratio'))
  lines = _lines(tmp_path / 'ratio' / 'metrics.jsonl')
  assert summary['status'] == 'diverged' and summary['diverged_round'] == len(lines) > 1
  assert all(map(lambda l: l['train_loss'] < float('inf'), lines))
  assert lines[-1]['train_loss'] > 100 * lines[0]['train_loss']
  assert all(l['train_loss'] <= 100 * lines[0]['train_loss'] for l in lines[:-1])
  c.divergence_loss_ratio = 0.0
  summary = experiment.run(c, str(tmp_path / 'none'))
  lines = _lines(tmp_path / 'none' / 'metrics.jsonl')
  assert summary['status'] == 'finished' and len(lines) == 4
  assert max(l['train_loss'] for l in lines) > 100 * lines[0]['train_loss']


@pytest.mark.parametrize('value', [1.0, 0.5, -1.0, True, 'big'])
def test_bad_divergence_ratio_rejected(make_digits_config, value):
  c = make_digits_config()
  with c.ignore_type():
    c.divergence_loss_ratio = value
  with pytest.raises(config_lib.ConfigError, match='divergence_loss_ratio=') as info:
    preflight.validate(c)
  assert '\n' not in str(info.value) and 'allowed' in str(info.value)
