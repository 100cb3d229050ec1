"""Every method's metrics on a fixed short digits run equal the recorded ones (a refactoring guard).

`tests/simulation/same_metrics.json` holds, per method, the metrics lines of a 3-round run of
configs/digits_cnn.py with the MLP (4 clients a round, seed 0): training loss, every byte count
and compression ratio, and the test and validation metrics of round 3. They were recorded from the
code before the compressor-layer redesign (docs/design.md), so a change that alters what a method
computes or what it sends fails here.

Byte counts and round numbers must be equal. Floats are compared to 1e-5 relative here, since XLA
may round differently on another CPU; on the machine that recorded them they are equal exactly:

  python -m tests.simulation.test_same_metrics --check     # exact comparison, this machine
  python -m tests.simulation.test_same_metrics --record    # rewrite the file (a deliberate change)
"""
import json
import math
import os
import sys

import pytest

from configs import digits_cnn

PATH = os.path.join(os.path.dirname(__file__), 'same_metrics.json')
METHODS = {     # method -> config argument (budgets small enough for the MLP's D = 2,410)
    'uncompressed': '',
    'fedavg': '',
    'intrinsic_static': 'd=256',
    'intrinsic_k_subspace': 'd=256,num_subspaces=2',
    'intrinsic_time_varying': 'd=256',
    'local_topk': 'k=100',
    'true_topk': 'k=100',
    'fetchsgd': 'rows=3,cols=400,k=100',
    'sketched_sgd': 'rows=3,cols=400,k=50',
    'random_k': 'k=200',
    'sign_sgd': '',
    'powersgd': 'rank=2',
}
TIMING = ('time_',)


def config_for(method):
  arg = ','.join(x for x in (f'method={method},model=mlp', METHODS[method]) if x)
  c = digits_cnn.get_config(arg)
  c.rounds = 3
  c.clients_per_round = 4
  c.eval_every = 3
  c.time_client_cost = False
  return c


def metrics_of(method):
  """The metrics lines of the short run, timing fields dropped."""
  from fedjax_intrinsic import experiment
  c = config_for(method)
  exp = experiment.Experiment(c)
  state = exp.init_state()
  lines = []
  for r in range(1, c.rounds + 1):
    state, line = exp.run_round(state, r)
    if r == c.rounds:
      line.update(exp.evaluate(exp.algorithm.model_params(state)))
    lines.append({k: v for k, v in line.items() if not k.startswith(TIMING)})
  return lines


def compare(got, want, rtol):
  """Differences between two lists of metrics lines ('' when none)."""
  if len(got) != len(want):
    return f'{len(got)} lines, recorded {len(want)}'
  for i, (g, w) in enumerate(zip(got, want)):
    if sorted(g) != sorted(w):
      return f'line {i + 1}: fields {sorted(g)} != recorded {sorted(w)}'
    for k in w:
      a, b = g[k], w[k]
      if isinstance(b, float) and not isinstance(a, bool):
        same = (a == b) if rtol == 0 else (
            math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12) if math.isfinite(b) else a == b)
      else:
        same = a == b
      if not same:
        return f'line {i + 1} {k}: {a!r} != recorded {b!r}'
  return ''


def recorded():
  with open(PATH) as f:
    return json.load(f)


@pytest.mark.parametrize('method', sorted(METHODS))
def test_metrics_equal_the_recorded_ones(method):
  want = recorded()[method]
  diff = compare(metrics_of(method), want, rtol=1e-5)
  assert not diff, f'{method}: {diff}'


def test_every_method_is_recorded():
  from fedjax_intrinsic import algorithms
  assert sorted(recorded()) == sorted(METHODS) == sorted(algorithms.METHODS)


if __name__ == '__main__':
  mode = sys.argv[1] if len(sys.argv) > 1 else '--check'
  if mode == '--record':
    out = {m: metrics_of(m) for m in sorted(METHODS)}
    with open(PATH, 'w') as f:
      json.dump(out, f, indent=1, sort_keys=True)
      f.write('\n')
    print(f'wrote {PATH}')
  else:
    want, bad = recorded(), 0
    for m in sorted(METHODS):
      diff = compare(metrics_of(m), want[m], rtol=0)
      bad += bool(diff)
      print(f'{m}: {"identical" if not diff else diff}')
    sys.exit(1 if bad else 0)
