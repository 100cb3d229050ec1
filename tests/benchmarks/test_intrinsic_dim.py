"""benchmarks.intrinsic_dim: the search against exact thresholds, the §4 formulas, a resumable run."""
import json
import math
import os

import pytest

from benchmarks import intrinsic_dim
from tests.benchmarks.test_sweep import write_tiny_config

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('threshold, d_start, d_max, expect_int, expect_lo', [
    (37, 1, 1000, 37, 36),       # doubling to 64, bisection in (32, 64]
    (37, 5, 1000, 37, 36),       # doubling 5, 10, 20, 40
    (64, 64, 1000, 64, None),    # d_start already reaches it
    (1, 1, 1, 1, None),
    (1001, 1, 1000, None, 1000),  # never reached: d_max is probed, not exceeded
    (700, 16, 650, None, 650),
])
def test_search_finds_the_exact_threshold(threshold, d_start, d_max, expect_int, expect_lo):
  probed = []

  def probe(d):
    probed.append(d)
    return 1.0 if d >= threshold else 0.0

  result = intrinsic_dim.search(probe, lambda v: v >= 1.0, d_start, d_max, resolution=0.0)
  assert (result.d_int, result.lo) == (expect_int, expect_lo)
  assert len(probed) == len(set(probed)) and max(probed) <= d_max
  assert [d for d, _ in result.probes] == probed
  assert len(probed) <= 2 * math.ceil(math.log2(d_max / d_start + 1)) + 2


@pytest.mark.parametrize('resolution', [0.05, 0.25, 0.5])
def test_search_stops_at_the_resolution(resolution):
  threshold = 1234
  result = intrinsic_dim.search(lambda d: float(d >= threshold), lambda v: v == 1.0, 16, 10**6,
                                resolution)
  assert result.lo < threshold <= result.d_int
  assert result.d_int - result.lo <= max(1, math.floor(resolution * result.d_int))


def test_search_rejects_bad_arguments():
  with pytest.raises(ValueError, match='d_start'):
    intrinsic_dim.search(lambda d: 0.0, bool, 0, 10, 0.1)
  with pytest.raises(ValueError, match='d_max'):
    intrinsic_dim.search(lambda d: 0.0, bool, 8, 4, 0.1)
  with pytest.raises(ValueError, match='resolution'):
    intrinsic_dim.search(lambda d: 0.0, bool, 1, 4, 1.0)


def test_formula_compression_by_hand():
  # D = 100, d = 10, K = 2. Fresh-client downloads (docs/paper.md §4), floats per round e = 1..E:
  #   static d each round; K-subspace min(d·min(e−1, K), D): 0, 10, 20, 20, 20;
  #   time-varying min(d·(e−1), D): 0, 10, 20, 30, 40.
  out = intrinsic_dim.formula_compression(100, 10, 5, 2)
  assert out['intrinsic_static'] == {'upload': 10.0, 'download': 10.0, 'overall': 10.0}
  assert out['intrinsic_k_subspace'] == {'upload': 10.0, 'download': 500 / 70,
                                         'overall': 1000 / (50 + 70)}
  assert out['intrinsic_time_varying'] == {'upload': 10.0, 'download': 5.0,
                                           'overall': 1000 / (50 + 100)}
  # Time-varying saturates at θ (D floats) once d·(e−1) >= D.
  long = intrinsic_dim.formula_compression(100, 10, 30, 2)['intrinsic_time_varying']
  assert long['download'] == 3000 / (sum(min(10 * (e - 1), 100) for e in range(1, 31)))


def test_find_on_a_tiny_task_resumes(tmp_path):
  # Logistic regression on digits, 20 rounds of 20 clients: uncompressed reaches about 0.83 test
  # accuracy; intrinsic_static about 0.46 at d = 128 and 0.61 at d = 256 (of D = 650).
  experiment = write_tiny_config(tmp_path)
  work = str(tmp_path / 'idim')
  log = []
  kwargs = dict(name='tiny_idim', metric='test_accuracy', fraction=0.7, d_start=128, d_max=650,
                resolution=0.5, seeds=(0,), log=log.append,
                overrides=('rounds=20', 'clients_per_round=20', 'eval_every=20', 'server.lr=1.0'))
  out = intrinsic_dim.find(experiment, '', work, **kwargs)
  assert out['num_params'] == 650 and out['target'] == pytest.approx(0.7 * out['baseline'])
  assert out['baseline'] > 0.6
  values = {p['d']: p['metric'] for p in out['probes']}
  assert out['d_int'] is not None and out['d_missed'] is not None
  assert values[out['d_int']] >= out['target'] > values[out['d_missed']]
  assert 0 < out['d_int'] - out['d_missed'] <= 0.5 * out['d_int']
  assert set(out['measured_at_d_int']) == set(intrinsic_dim.INTRINSIC)
  static = out['measured_at_d_int']['intrinsic_static']
  assert static['metric'] == values[out['d_int']]
  assert static['upload'] == pytest.approx(650 / out['d_int'])
  assert out['formula_at_d_int']['intrinsic_static']['overall'] == pytest.approx(
      650 / out['d_int'])
  for name in ('intrinsic_dim.json', 'intrinsic_dim.md', 'metric_vs_d.png'):
    assert os.path.exists(os.path.join(work, name))
  with open(os.path.join(work, 'metric_vs_d.png'), 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE
  assert json.load(open(os.path.join(work, 'intrinsic_dim.json')))['d_int'] == out['d_int']
  assert f'**d_int70 = {out["d_int"]:,}**' in open(os.path.join(work, 'intrinsic_dim.md')).read()
  # baseline + probes + the two other intrinsic methods at d_int (static's probe is reused).
  assert sum('starting' in line for line in log) == 1 + len(out['probes']) + 2
  # Started again: every probe is a finished cell already, nothing runs, same answer.
  log.clear()
  again = intrinsic_dim.find(experiment, '', work, **kwargs)
  assert not any('starting' in line for line in log)
  assert (again['d_int'], again['probes']) == (out['d_int'], out['probes'])


def test_find_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match='fraction'):
    intrinsic_dim.find('x.py', '', str(tmp_path), name='x', metric='test_accuracy', fraction=1.5)
  with pytest.raises(ValueError, match='method'):
    intrinsic_dim.find('x.py', '', str(tmp_path), name='x', metric='test_accuracy', fraction=0.9,
                       method='uncompressed')


def _out(**changes):
  out = {'name': 'x', 'experiment': 'configs/x.py', 'experiment_arg': '', 'overrides': [],
         'seeds': [0], 'metric': 'test_accuracy', 'lower_is_better': False, 'fraction': 0.9,
         'method': 'intrinsic_static', 'num_params': 1000, 'rounds': 10, 'num_subspaces': 4,
         'baseline': 0.70, 'baseline_values': [0.70], 'target': 0.63, 'majority_rate': 0.70,
         'd_start': 16, 'd_max': 1000, 'resolution': 0.5, 'd_int': 16, 'd_missed': None,
         'probes': [{'d': 16, 'metric': 0.70, 'values': [0.70]}], 'measured_at_d_int': {},
         'formula_at_d_int': {}, 'command': None, 'machines': []}
  out.update(changes)
  return out


def test_a_target_at_the_majority_rate_is_reported_degenerate(tmp_path):
  # A baseline that never leaves the majority class: 0.9 x it is below the majority rate, so
  # any d "reaches" it and the d found is not an intrinsic dimension.
  out = _out()
  assert intrinsic_dim.degenerate(out)
  text = intrinsic_dim.markdown(out, str(tmp_path))
  assert 'undefined here (degenerate)' in text and '**d_int90 = ' not in text
  assert 'majority rate 0.7000' in text and 'method at d_int' not in text
  # Control: a baseline that learns puts the target above the majority rate.
  learned = _out(baseline=0.85, target=0.765)
  assert not intrinsic_dim.degenerate(learned)
  assert '**d_int90 = 16**' in intrinsic_dim.markdown(learned, str(tmp_path))
  # No recorded majority rate (e.g. digits), or a lower-is-better metric: never degenerate.
  assert not intrinsic_dim.degenerate(_out(majority_rate=None))
  assert not intrinsic_dim.degenerate(_out(lower_is_better=True, metric='test_perplexity'))
  assert intrinsic_dim.majority_rate({'data': {'test_majority_rate': 0.7}}, 'test_accuracy') == 0.7
  assert intrinsic_dim.majority_rate({'data': {'test_majority_rate': 0.7}}, 'val_accuracy') is None
  assert intrinsic_dim.majority_rate({'data': {}}, 'test_accuracy') is None
