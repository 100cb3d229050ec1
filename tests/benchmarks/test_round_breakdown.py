"""benchmarks.round_breakdown on a tiny digits config: the merged batch is the cohort's first local
batches, the timed pieces compute what they say, the FLOP count of the reference matmul is exact,
and bad input is refused in one line. No speed is asserted."""
import os
import subprocess
import sys

import numpy as np

from benchmarks import round_breakdown as rb
from fedjax_intrinsic import build as build_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_pieces_and_merged_batch(make_digits_config, monkeypatch):
  c = make_digits_config('uncompressed', model='logreg', rounds=1, clients_per_round=3)
  c.client.batch_size = 4
  monkeypatch.setattr(rb, 'MATMUL_SHAPE', (64, 32, 16))
  b = build_lib.build(c)
  merged = rb.merged_batch(b)
  ids = b.cohorts.sample(1)
  batches, _ = b.cohorts.inputs(1, ids)
  assert merged['x'].shape == (3 * 4,) + np.asarray(batches['x']).shape[3:]
  for i in range(3):            # client i's first local batch, in cohort order
    np.testing.assert_array_equal(merged['x'][4 * i:4 * (i + 1)], np.asarray(batches['x'])[i, 0])
    np.testing.assert_array_equal(merged['y'][4 * i:4 * (i + 1)], np.asarray(batches['y'])[i, 0])
  base = make_digits_config('uncompressed', model='logreg', rounds=1, clients_per_round=3)
  res = rb.run(c, base, 'uncompressed')
  assert set(res['pieces']) == {'forward', 'gradient', 'server_update', 'eval_batch', 'matmul',
                                'round', 'round_uncompressed'}
  assert res['num_params'] == b.num_params == 650
  assert res['pieces']['matmul']['flops'] == 2 * 64 * 32 * 16      # XLA counts a multiply-add as 2
  for name, r in res['pieces'].items():
    assert r['wall_s'] > 0 and r['n'] >= 3, name
  # The logistic regression's forward is at least its matmul: 2 x batch x 64 x 10 flops.
  assert res['pieces']['forward']['flops'] >= 2 * 12 * 64 * 10
  table = rb.render('tiny', res).splitlines()
  assert table[0].startswith('tiny: D = 650') and table[2].startswith('| piece')


def test_round_piece_is_the_runs_first_round(make_digits_config):
  # What `round` times is round 1 exactly as the experiment runs it: the same new server state.
  import jax
  from fedjax_intrinsic import experiment
  c = make_digits_config('intrinsic_static', model='logreg', rounds=1, clients_per_round=3, d=32)
  fn, args = rb.round_piece(experiment.Experiment(c))
  exp = experiment.Experiment(c)            # a second one, run as run.py runs it
  state, _ = exp.run_round(exp.init_state(), 1)
  got = fn(*args)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_baseline_spec_keeps_the_experiment_and_drops_the_methods_own_fields():
  from fedjax_intrinsic import algorithms
  fields = algorithms.fields_of('intrinsic_static')
  assert rb.baseline_spec('configs/tweets_minilm.py:method=intrinsic_static,d=4096,rounds=3',
                          'uncompressed', fields) == 'configs/tweets_minilm.py:method=uncompressed,rounds=3'
  assert rb.baseline_spec('configs/tweets_minilm.py', 'uncompressed', fields) == \
      'configs/tweets_minilm.py:method=uncompressed'


def test_bad_input_is_refused_in_one_line():
  out = subprocess.run([sys.executable, '-m', 'benchmarks.round_breakdown',
                        '--config=configs/digits_cnn.py:method=bogus'],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: method.name='bogus' is invalid")
  out = subprocess.run([sys.executable, '-m', 'benchmarks.round_breakdown',
                        '--config=configs/digits_cnn.py:method=uncompressed', '--baseline=bogus'],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert out.returncode == 2
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: method.name='bogus' is invalid") and 'allowed' in last
