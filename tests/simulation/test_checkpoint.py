"""Preemption: a run killed after round k resumes from its checkpoint and ends with the same metrics."""
import json

import pytest

from fedjax_intrinsic import config as config_lib, experiment


class _Preempted(Exception):
  pass


def _untimed(path):
  with open(path) as f:
    return [{k: v for k, v in json.loads(t).items() if not k.startswith('time_')} for t in f]


def _stop_after(round_num):
  def progress(line):
    if line['round'] == round_num:
      raise _Preempted()
  return progress


@pytest.mark.parametrize('method', ['fedavg', 'intrinsic_time_varying'])
def test_resume_equals_uninterrupted(make_digits_config, tmp_path, method):
  c = make_digits_config(method, model='logreg', rounds=7, clients_per_round=5)
  if method == 'intrinsic_time_varying':
    c.method.d = 32
  c.checkpoint_every = 2
  c.eval_every = 3
  c.server.optimizer, c.server.momentum = 'momentum', 0.9     # optimiser state must survive too
  c.eval_initial = True                                        # θ0's metrics must survive too
  whole = experiment.run(c, str(tmp_path / 'whole'))
  with pytest.raises(_Preempted):
    experiment.run(c, str(tmp_path / 'cut'), progress=_stop_after(5))   # killed after round 5
  assert len(_untimed(tmp_path / 'cut' / 'metrics.jsonl')) == 5
  resumed = experiment.run(c, str(tmp_path / 'cut'))
  assert resumed['resumed_from_round'] == 4
  assert _untimed(tmp_path / 'cut' / 'metrics.jsonl') == _untimed(tmp_path / 'whole' / 'metrics.jsonl')
  assert resumed['final'] == whole['final']
  untimed = lambda d: {k: v for k, v in d.items() if not k.startswith('time_')}
  exp = experiment.Experiment(c)
  assert untimed(whole['initial']) == exp.evaluate(exp.params0)   # θ0, scored before round 1
  with open(tmp_path / 'cut' / 'initial.json') as f:             # the cut run's, read back
    assert resumed['initial'] == json.load(f)
  assert untimed(resumed['initial']) == untimed(whole['initial'])
  assert set(untimed(whole['initial'])) == {'test_loss', 'test_accuracy', 'val_loss', 'val_accuracy'}


def test_resume_refuses_a_different_config(make_digits_config, tmp_path):
  c = make_digits_config('uncompressed', rounds=3)
  c.checkpoint_every = 1
  with pytest.raises(_Preempted):
    experiment.run(c, str(tmp_path), progress=_stop_after(2))
  c.server.lr = 0.25
  with pytest.raises(config_lib.ConfigError, match='--workdir'):
    experiment.run(c, str(tmp_path))


def test_checkpoint_has_no_pickle(make_digits_config, tmp_path):
  import os
  c = make_digits_config('uncompressed', rounds=2)
  c.checkpoint_every = 1
  experiment.run(c, str(tmp_path))
  for root, _, files in os.walk(tmp_path / 'checkpoints'):
    for name in files:
      with open(os.path.join(root, name), 'rb') as f:
        head = f.read(2)
      assert not head.startswith(b'\x80'), f'{name} looks like a pickle'
