"""Every registered method learns with its default config, on the default task's protocol.

`configs/digits_cnn.py` with the MLP (D = 9,610; the CNN's figures, 200 rounds, are in README's
methods table) for ROUNDS rounds: 100 shard clients (mostly one class each), 10 a round, each
method's protocol (server rate) from the config file and every method field at its default. The
threshold, THRESHOLD, is far above chance (0.1); the control, θ0 (what a zero server rate keeps),
stays below 0.2. Read from the registry at collection time, so a new method is tested here too.
"""
import pytest

from fedjax_intrinsic import algorithms
from tests.algorithms.helpers import run_and_keep_experiment

ROUNDS = 100
THRESHOLD = 0.6


@pytest.mark.parametrize('method', algorithms.METHODS)
def test_default_learns(method, tmp_path, monkeypatch):
  from configs import digits_cnn
  c = digits_cnn.get_config(f'method={method},model=mlp,rounds={ROUNDS}')
  c.time_client_cost = False
  c.eval_every = ROUNDS
  assert dict(c.method) == dict(algorithms.default_config(method))   # the defaults, untouched
  summary, exp = run_and_keep_experiment(c, str(tmp_path), monkeypatch)
  accuracy = summary['final']['test_accuracy']
  print(f'{method}: test accuracy {accuracy:.4f} after {ROUNDS} rounds')
  assert summary['status'] == 'finished', summary['diverged_round']
  assert accuracy > THRESHOLD, accuracy
  assert exp.evaluate(exp.params0)['test_accuracy'] < 0.2      # the run's own θ0 and test split
