"""The memory benchmark: its core on a 1-layer model (structure and monotonicity, never values)."""
import math

import jax
import numpy as np
import pytest

from benchmarks import common
from benchmarks import memory as bench
from fedjax_intrinsic.models import gpt2


@pytest.fixture(scope='module')
def res():
  """One run of the 'test' preset: 1-layer GPT-2 shape, 8 clients, chunks 1, 2, 4, vmap."""
  return bench.run(bench.make_config('test'), log=lambda *a: None)


def test_result_structure(res):
  cfg = res['config']
  assert (res['benchmark'], res['schema'], res['preset']) == ('memory', 1, 'test')
  assert res['machine']['backend'] == jax.default_backend()
  (m,) = res['models']
  s = bench.MODELS['tiny']
  assert m['D'] == gpt2.num_params(s.vocab, s.n_positions, s.n_embd, s.n_layer)
  assert m['act'] > 0 and m['client_grad']['output'] >= 4 * m['D']   # the gradient is an output
  plan = len(cfg['chunks']) + len(cfg['vmap_models']) + len(cfg['cohort_sizes'])
  assert len(res['rounds']) == plan * len(cfg['methods'])
  for r in res['rounds']:
    assert r['peak'] == r['argument'] + r['output'] + r['temp'] - r['alias']
    assert min(r['argument'], r['output'], r['temp']) > 0 and r['compile_s'] > 0
    # The server state (θ-sized at least: θ0 raveled) is an argument and an output.
    assert r['argument'] >= 4 * m['D'] and r['output'] >= 4 * m['D']
  vm = [r for r in res['rounds'] if r['strategy'] == 'vmap']
  assert vm and all(r['clients_per_chunk'] == cfg['clients_per_round'] for r in vm)


def test_peak_is_monotone_in_clients_per_chunk(res):
  cfg = res['config']
  assert res['monotone']
  for meth in cfg['methods']:
    rounds = [r for r in res['rounds'] if r['method'] == meth
              and r['clients_per_round'] == cfg['clients_per_round']]
    peaks = [r['peak'] for r in sorted(rounds, key=lambda r: r['clients_per_chunk'])]
    assert [r['clients_per_chunk'] for r in sorted(rounds, key=lambda r: r['clients_per_chunk'])
            ] == sorted(cfg['chunks']) + [cfg['clients_per_round']]
    assert all(p1 < p2 for p1, p2 in zip(peaks, peaks[1:])), peaks
    # A larger cohort in small chunks needs less than a smaller cohort all at once.
    big_cohort = next(r for r in res['rounds'] if r['method'] == meth
                      and r['clients_per_round'] == max(cfg['cohort_sizes']))
    assert big_cohort['clients_per_chunk'] == cfg['cohort_chunk']
    assert big_cohort['peak'] < peaks[-1]


def test_fits_formula_and_render(res, tmp_path):
  cfg = res['config']
  assert len(res['fits']) == len(cfg['methods'])
  for f in res['fits']:
    assert f['b'] > 0 and f['max_rel_err'] >= 0 and f['max_chunk'] >= 0
    budget = cfg['device_memory_gib'] * 2**30
    assert 0 <= f['max_chunk'] <= cfg['clients_per_round']
    assert f['a'] + f['b'] * f['max_chunk'] <= budget
    if f['max_chunk'] < cfg['clients_per_round']:   # else capped at the cohort
      assert budget < f['a'] + f['b'] * (f['max_chunk'] + 1)
  assert [f['method'] for f in res['formula']] == list(cfg['methods'])
  assert all(math.isfinite(f['alpha']) and math.isfinite(f['beta']) for f in res['formula'])
  readme = tmp_path / 'README.md'
  readme.write_text('# Benchmarks\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n')
  common.update_readme_section(bench.README_SECTION, bench.render_section([res]), str(readme))
  text = readme.read_text()
  assert 'keep me' in text and text.count('<!-- memory:begin -->') == 1
  assert 'peak ≈ a0 + α·4D + chunk · (act + β·4D)' in text and '| chunk 4 |' in text
  common.write_json(str(tmp_path / 'r.json'), res)   # JSON-serialisable


def test_fit_line_and_max_chunk_are_exact_on_a_line():
  f = bench.fit_line([1, 2, 4, 8], [3 + 5 * c for c in (1, 2, 4, 8)])
  assert f['a'] == pytest.approx(3) and f['b'] == pytest.approx(5) and f['max_rel_err'] < 1e-9
  assert bench.max_chunk(3, 5, 3 + 5 * 7) == 7 and bench.max_chunk(3, 5, 3 + 5 * 7 - 1) == 6
  assert bench.max_chunk(10, 5, 9) == 0
  with pytest.raises(ValueError, match='xs'):
    bench.fit_line([1, 1], [2, 3])
  with pytest.raises(ValueError, match='b='):
    bench.max_chunk(1, 0, 10)


def test_formula_recovers_alpha_and_beta():
  rows = []
  for D, act in ((1000, 50.0), (5000, 70.0), (20000, 90.0)):
    rows.append({'method': 'm', 'D': D, 'act': act, 'a': 7 + 3 * 4 * D, 'b': act + 2 * 4 * D})
  (f,) = bench.formula(rows, ['m'])
  assert f['alpha'] == pytest.approx(3) and f['beta'] == pytest.approx(2)
  assert f['a0'] == pytest.approx(7, abs=1e-6) and f['max_rel_err'] < 1e-9


def test_bad_settings_raise_one_line_errors():
  with pytest.raises(ValueError, match="preset='nope'"):
    bench.make_config('nope')
  with pytest.raises(ValueError, match="methods='fedavg'"):
    bench.make_config('test', methods=('fedavg',))
  with pytest.raises(ValueError, match="models='gpt3'"):
    bench.make_config('test', models=('gpt3',))
  with pytest.raises(ValueError, match='chunks='):
    bench.make_config('test', chunks=(4,))
  with pytest.raises(ValueError, match='seq_len=17'):
    bench.build_model('tiny', 17)
  assert bench.method_fields('intrinsic_static', 100)['d'] == 100          # capped at D
  assert bench.method_fields('fetchsgd', 10**9) == bench.METHOD_BUDGETS['fetchsgd']
  assert np.all([k in bench.METHOD_BUDGETS for k in bench.METHODS])


def test_execute_runs_the_compiled_rounds():
  """execute=True also runs each chunked round of the cohort: same loss whatever the chunk (the
  chunk only changes how the clients are batched), a wall time, and the RUN table in the render."""
  cfg = bench.make_config('test', chunks=(1, 2))
  cfg = bench.dataclasses.replace(cfg, execute=True, vmap_models=(), cohort_sizes=())
  res = bench.run(cfg, log=lambda *a: None)
  ran = [r for r in res['rounds'] if 'exec' in r]
  assert [r['clients_per_chunk'] for r in ran] == [1, 2]
  losses = [r['exec']['loss'] for r in ran]
  assert all(math.isfinite(x) for x in losses)
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
  assert all(r['exec']['median_s'] > 0 for r in ran)
  assert 'RUN on this device' in bench.render(res)
