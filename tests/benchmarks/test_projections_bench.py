"""The projection benchmark: its command line on the tiny 'test' preset, and its settings.

Checks the JSON fields, the ratio arithmetic and the README section, never the speed.
"""
import json
import os
import subprocess
import sys

import jax
import pytest

from benchmarks import common
from benchmarks import projections as bench
import projections as P

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def cli_run(tmp_path_factory):
  """One run of ``python -m benchmarks.projections --preset=test``: (json, readme, stdout)."""
  tmp = tmp_path_factory.mktemp('bench')
  out_json, readme = tmp / 'r.json', tmp / 'README.md'
  readme.write_text('# Benchmarks\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n')
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.projections', '--preset=test',
       f'--out_json={out_json}', f'--readme={readme}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out_json.read_text()), readme.read_text(), proc.stdout


def _check_timing(entry, refs):
  for k in ('median_s', 'min_s', 'n', 'first_s', 'cpu_median_s', 'cpu_min_s', 'compile_s',
            'memory', 'x_pass', 'x_inplace', 'x_sort'):
    assert k in entry, k
  assert 0 < entry['min_s'] <= entry['median_s'] and entry['n'] >= 1
  assert 0 <= entry['cpu_min_s'] <= entry['cpu_median_s']
  for k in bench.REFERENCES:  # The ratios are exactly time / reference time.
    assert entry[f'x_{k}'] == pytest.approx(entry['median_s'] / refs[k]['median_s'])


def test_json_has_machine_references_and_every_section(cli_run):
  res, _, _ = cli_run
  assert (res['benchmark'], res['schema'], res['preset']) == ('projections', 1, 'test')
  m = res['machine']
  assert m['backend'] == 'cpu' and m['jax'] == jax.__version__ and m['cpu_cores'] >= 1
  assert res['config']['log2_D'] == [10] and res['wall_s'] > 0
  refs = {r['n']: r for r in res['references']}
  assert set(refs) == {1024}
  for k in bench.REFERENCES:
    assert refs[1024][k]['median_s'] > 0 and refs[1024][k]['n'] >= 2
  for section in bench.SECTIONS:
    assert res[section], section


def test_operator_rows(cli_run):
  res, _, _ = cli_run
  refs = {r['n']: r for r in res['references']}
  rows = {(r['op'], r['d']): r for r in res['operators']}
  assert set(rows) == {(op, 16) for op in P.OPERATORS if op != 'identity'} | {
      ('identity', 1024)}
  for r in rows.values():
    assert r['D'] == 1024 and r['init_timed_at_d'] == r['d']
    for f in ('init', 'project', 'lift'):
      _check_timing(r[f], refs[1024])
      assert set(r[f]['memory']) >= {'temp', 'argument', 'output', 'peak'}
      assert r[f]['compile_s'] > 0
    for k in ('median_s', 'min_s', 'cpu_median_s'):
      assert r['project_lift'][k] == pytest.approx(r['project'][k] + r['lift'][k])
    for k in bench.REFERENCES:
      assert r['project_lift'][f'x_{k}'] == pytest.approx(
          r['project_lift']['median_s'] / refs[1024][k]['median_s'])
  # state_bytes: the bytes of the arrays init returns (abstractly evaluated here).
  for (op, d), r in rows.items():
    shapes = jax.eval_shape(P.get(op, D=1024, d=d).init, jax.random.PRNGKey(0))
    want = sum(s.size * s.dtype.itemsize for s in jax.tree_util.tree_leaves(shapes))
    assert r['state_bytes'] == want, op
  assert rows[('identity', 1024)]['state_bytes'] == 0
  # Only the d's output/input sizes travel: project's output is d floats.
  assert rows[('fastfood', 16)]['project']['memory']['output'] == 4 * 16


def test_dense_memory_rows_and_skips(cli_run):
  res, _, _ = cli_run
  (row,) = res['dense_memory']
  assert (row['D'], row['d'], row['dense_bytes']) == (1024, 16, 1024 * 16 * 4)
  assert row['project']['argument'] >= 4 * 1024 and row['lift']['output'] == 4 * 1024
  assert res['skipped'] == []  # D*d = 16384 <= dense_max_Dd of the test preset


def test_sketch_sparsify_and_wht_rows(cli_run):
  res, _, _ = cli_run
  refs = {r['n']: r for r in res['references']}
  (sk,) = res['sketch']
  assert (sk['D'], sk['rows'], sk['cols'], sk['k']) == (1024, 3, 64, 8)
  assert sk['table_bytes'] == 3 * 64 * 4 and not sk['cache_buckets']
  for f in ('init', 'sketch', 'unsketch_topk_exact', 'unsketch_topk_threshold'):
    _check_timing(sk[f], refs[1024])
  fns = {(r['fn'], r['D'], r['k']) for r in res['sparsify']}
  assert fns == {(f, 1024, 10) for f in ('top_k_exact', 'top_k_threshold', 'random_k',
                                         'densify')}
  for r in res['sparsify']:
    _check_timing(r['timing'], refs[1024])
  assert {(r['method'], r['block']) for r in res['wht']} == {
      ('native', None), ('butterfly', None), ('kron', 128)}
  for r in res['wht']:
    _check_timing(r['timing'], refs[r['L']])
  s = res['wht_summary']
  assert s['faster_method'] in ('native', 'butterfly', 'kron') and s['per_L'][0]['L'] == 1024
  assert s['default_method'] == P.default_wht_method('cpu')
  assert sum(s['wins'].values()) == 1


def test_targets_are_reported_not_measured_at_tiny_sizes(cli_run):
  res, _, _ = cli_run
  names = [t['name'] for t in res['targets']]
  assert names == ['fastfood project+lift, D=2^22', 'count-sketch sketch, 5 rows, D=2^22',
                   'top_k exact, D=10^7, k=10^5', 'top_k threshold, D=10^7, k=10^5']
  for t in res['targets']:
    assert t['x_pass'] is None and t['met'] is None and t['target_x_pass'] in (10, 24)


def test_readme_section_and_stdout(cli_run):
  res, readme, stdout = cli_run
  assert '<!-- other:begin -->\nkeep me\n<!-- other:end -->' in readme
  begin, end = common.section_markers('projections')
  body = readme[readme.index(begin):readme.index(end)]
  assert 'How to read this' in body and 'python -m benchmarks.projections' in body
  assert res['machine']['cpu_model'] in body and '| fastfood' in body
  assert 'Walsh-Hadamard' in stdout and '| dense_gaussian' in stdout


def test_targets_pick_the_fastest_row_and_compare_with_the_goal():
  def entry(t):
    return {'median_s': t, 'x_pass': t, 'x_inplace': 2 * t}

  res = {
      'operators': [dict(op='fastfood', D=2**22, d=d, project_lift=entry(t))
                    for d, t in ((10, 30.0), (20, 20.0))],
      'sketch': [dict(D=2**22, rows=5, sketch=entry(11.0)),
                 dict(D=2**22, rows=3, sketch=entry(1.0))],
      'sparsify': [dict(D=10**7, k=10**5, fn='top_k_exact', timing=entry(9.0))],
  }
  got = {t['name']: t for t in bench.targets(res)}
  ff = got['fastfood project+lift, D=2^22']
  assert (ff['x_pass'], ff['x_inplace'], ff['met']) == (20.0, 40.0, True)
  cs = got['count-sketch sketch, 5 rows, D=2^22']
  assert (cs['x_pass'], cs['met']) == (11.0, False)  # The 3-row sketch does not count.
  assert got['top_k exact, D=10^7, k=10^5']['met'] is True
  assert got['top_k threshold, D=10^7, k=10^5']['met'] is None


def test_wht_summary_counts_wins_between_the_fwht_methods():
  rows = [dict(L=L, method=m, block=b, timing={'median_s': t}) for L, m, b, t in (
      (256, 'butterfly', None, 1.0), (256, 'kron', 128, 2.0), (256, 'kron', 4, 0.5),
      (512, 'butterfly', None, 3.0), (512, 'kron', 128, 2.0),
      (1024, 'butterfly', None, 1.0), (1024, 'kron', 128, 3.0))]
  s = bench.wht_summary(rows)
  assert s['wins'] == {'butterfly': 2, 'kron': 1} and s['faster_method'] == 'butterfly'
  assert [p['fastest'] for p in s['per_L']] == ['kron_block4', 'kron', 'butterfly']


def test_dense_gaussian_compiled_memory_stays_far_below_d_times_D():
  """The memory report at a size never run: A would take 4 GB, a call holds MiBs."""
  cfg = bench.make_config('test', 'cpu', ds=(1000,))
  b = bench._Bench(cfg, log=lambda s: None)
  b.dense_memory(2**20)
  (row,) = b.out['dense_memory']
  assert row['dense_bytes'] == 2**20 * 1000 * 4
  for f in ('project', 'lift'):
    total = row[f]['argument'] + row[f]['output'] + row[f]['temp']
    assert total < row['dense_bytes'] / 100, (f, row[f])


@pytest.mark.parametrize('kwargs, arg', [
    (dict(preset='huge'), 'preset'),
    (dict(preset='full', log2_D=(26,)), 'log2_D'),
    (dict(preset='full', log2_D=('x',)), 'log2_D'),
    (dict(preset='full', large=True), 'large'),
    (dict(preset='full', ds=(0,)), 'ds'),
    (dict(preset='full', sketch_rows=(4,)), 'sketch_rows'),
    (dict(preset='full', operators=('nope',)), 'operators'),
    (dict(preset='full', sections=('nope',)), 'sections'),
    (dict(preset='full', sections=()), 'sections'),
    (dict(preset='full', wht_kron_blocks=(48,)), 'wht_kron_blocks'),
    (dict(preset='full', dense_max_Dd=-1.0), 'dense_max_Dd'),
    (dict(preset='full', min_repeats=0), 'min_repeats'),
    (dict(preset='full', colour='red'), 'colour'),
])
def test_make_config_rejects_bad_settings(kwargs, arg):
  with pytest.raises(ValueError, match=arg):
    bench.make_config(backend='cpu', **kwargs)


def test_make_config_overrides_and_accelerator_sizes():
  cfg = bench.make_config('quick', 'cpu', log2_D=['18', '16', '18'], ds=['1e3'])
  assert cfg.log2_D == (16, 18) and cfg.ds == (1000,) and cfg.preset == 'quick'
  big = bench.make_config('full', 'gpu', large=True)
  assert big.log2_D[-3:] == (25, 26, 27)
  assert bench.make_config('full', 'tpu', log2_D=(27,)).log2_D == (27,)
  full = bench.make_config('full', 'cpu')
  assert 10**7 in full.sparsify_Ds and 2**22 in {2**i for i in full.log2_D}
  assert full.dense_max_Dd == 2e8 and full.wht_log2_L == tuple(range(16, 25))


def test_default_json_path_names_backend_and_preset():
  assert bench.default_json_path('full', 'cpu').endswith('results/projections_cpu.json')
  assert bench.default_json_path('quick', 'gpu').endswith('results/projections_gpu_quick.json')
