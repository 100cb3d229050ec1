"""benchmarks.report: rows checked against the cells' own summaries, reference columns, PNGs; the
report and a resumed sweep from the packed files alone (benchmarks.results_store)."""
import json
import os
import shutil
import statistics

import pytest

from benchmarks import report
from benchmarks import results_store
from benchmarks import sweep as sweep_lib
from tests.benchmarks.test_sweep import tiny_sweep, write_tiny_config

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
  """A finished tiny sweep: 2 methods x 2 seeds, plus an entry that diverges."""
  root = tmp_path_factory.mktemp('report')
  grid = ['method=uncompressed', 'method=intrinsic_static,d=16', 'method=uncompressed,lr=1e38']
  s = tiny_sweep(write_tiny_config(root), grid, seeds=(0, 1))
  work = str(root / 'tiny')
  sweep_lib.run_sweep(s, work, log=lambda _: None)
  return s, work


def write_references(path, entries):
  with open(path, 'w') as f:
    json.dump({'entries': entries}, f)
  return str(path)


SOURCE = {'paper': 'Some paper', 'table': '2', 'row': 'intrinsic static d=16', 'column': 'acc'}


def test_rows_match_the_summaries(swept):
  s, work = swept
  index, records = report.load_sweep(work)
  rows = report.aggregate(index, records)
  assert [r['entry'] for r in rows] == list(s.grid)
  for row in rows[:2]:
    summaries = [json.load(open(os.path.join(work, c.name, 'summary.json')))
                 for c in sweep_lib.expand(s) if c.entry == row['entry']]
    accs = [x['final']['test_accuracy'] for x in summaries]
    assert row['values'] == accs and row['seeds'] == [0, 1]
    assert row['mean'] == pytest.approx(statistics.fmean(accs), abs=1e-12)
    assert row['std'] == pytest.approx(statistics.stdev(accs), abs=1e-12)
    up = statistics.fmean(x['final']['upload_compression'] for x in summaries)
    assert row['upload_compression'] == pytest.approx(up)
    assert row['wall_s_per_cell'] == pytest.approx(
        statistics.fmean(x['time_total_s'] for x in summaries))
  assert rows[0]['overall_compression'] == 1.0
  # intrinsic_static uploads d = 16 floats instead of D = 650.
  assert rows[1]['upload_compression'] == pytest.approx(650 / 16)
  diverged = rows[2]
  assert diverged['mean'] is None and diverged['seeds'] == []
  assert diverged['notes'] == ['seed 0 diverged at round 2', 'seed 1 diverged at round 2']


def test_table_layout_and_reference_columns(swept, tmp_path):
  s, work = swept
  refs = write_references(tmp_path / 'refs.json', [
      {'experiment': 'tiny', 'method': 'intrinsic_static', 'budget': {'d': 16.0},
       'metric': 'test_accuracy', 'value': 0.25, 'source': SOURCE},
      {'experiment': 'tiny', 'method': 'intrinsic_static', 'budget': {'d': 32},
       'metric': 'test_accuracy', 'value': 0.5, 'source': SOURCE},
      {'experiment': 'other', 'method': 'uncompressed', 'budget': {},
       'metric': 'test_accuracy', 'value': 0.75, 'source': SOURCE},
      {'experiment': 'tiny', 'method': 'uncompressed', 'budget': {},
       'metric': 'test_accuracy', 'value': None, 'source': {}}])
  index, records = report.load_sweep(work)
  rows = report.aggregate(index, records, report.load_references(refs))
  assert [r['reference'] for r in rows] == [None, 0.25, None]
  table = report.markdown_table(rows).splitlines()
  header = [c.strip() for c in table[0].strip('|').split('|')]
  assert header == ['method', 'budget', 'upload ×', 'download ×', 'overall ×',
                    'test_accuracy (mean ± std)', 'reference', 'reference source', 'seeds',
                    'wall s/cell']
  assert len(table) == 2 + len(s.grid)
  cells = [c.strip() for c in table[3].strip('|').split('|')]
  assert cells[:2] == ['`intrinsic_static`', 'd=16']
  assert cells[4] == f'{650 / 16:.3g}'
  assert cells[5] == f'{rows[1]["mean"]:.4f} ± {rows[1]["std"]:.4f}'
  assert cells[6:9] == ['0.2500', 'Some paper, table 2, row intrinsic static d=16, column acc',
                        '2/2']
  last = [c.strip() for c in table[4].strip('|').split('|')]
  assert last[5] == '-' and last[8].startswith('0/2: seed 0 diverged at round 2')


def test_initial_metric_row_and_line(swept):
  """A cell run with config.eval_initial carries summary['initial']: its row's 'initial' is the
  mean over the seeds, and the report states it; rows without it stay None."""
  _, work = swept
  index, records = report.load_sweep(work)
  assert all('initial' not in r['summary'] for r in records)
  rows = report.aggregate(index, records)
  assert [r['initial'] for r in rows] == [None, None, None]
  assert 'Before round 1' not in report.report_markdown(index, rows, work)
  for r, value in zip([r for r in records if r['entry'] == 'method=uncompressed'], (0.125, 0.25)):
    r['summary'] = dict(r['summary'], initial={'test_accuracy': value, 'time_eval_s': 1.0})
  rows = report.aggregate(index, records)
  assert [r['initial'] for r in rows] == [0.1875, None, None]
  assert 'Before round 1 (θ0, scored by `eval_initial`): `test_accuracy` 0.1875.' in (
      report.report_markdown(index, rows, work))


@pytest.mark.parametrize('bad, match', [
    ({'source': {**SOURCE, 'row': ''}}, r'source\.row'),
    ({'source': None}, r'source\.paper'),
    ({'value': 'high'}, 'value'),
    ({'method': ''}, 'method'),
])
def test_reference_without_full_source_raises(tmp_path, bad, match):
  entry = {'experiment': 'tiny', 'method': 'uncompressed', 'budget': {},
           'metric': 'test_accuracy', 'value': 0.5, 'source': SOURCE, **bad}
  with pytest.raises(ValueError, match=match):
    report.load_references(write_references(tmp_path / 'r.json', [entry]))


def test_shipped_reference_file_has_no_numbers():
  data = json.load(open(report.REFERENCES))
  assert data['entries'] and all(e['value'] is None for e in data['entries'])
  assert report.load_references() == []


def test_write_report_files(swept):
  import matplotlib.image
  s, work = swept
  paths = report.write_report(work)
  md = open(paths['report.md']).read()
  assert '### Sweep `tiny`' in md and '](pareto.png)' in md
  assert json.load(open(paths['report.json']))['rows'][1]['method'] == 'intrinsic_static'
  for name in report.PLOTS:
    with open(paths[name], 'rb') as f:
      assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(paths[name])
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
  section = report.readme_section([work])
  rel = os.path.relpath(work, report.common.BENCH_DIR)
  assert f']({rel}/pareto.png)' in section and '](pareto.png)' not in section


def test_missing_sweep_raises(tmp_path):
  with pytest.raises(ValueError, match='sweep.json'):
    report.load_sweep(str(tmp_path))


def exact(value) -> str:
  """A text that two values share iff they are equal, NaN included (json.dumps writes NaN)."""
  return json.dumps(value, sort_keys=True)


def packed_copy(s, work, tmp_path) -> str:
  """A copy of the sweep `work` packed, without its cell directories (a fresh clone's layout)."""
  out = str(tmp_path / 'tiny')
  shutil.copytree(work, out)
  results_store.pack(out)
  for c in sweep_lib.expand(s):
    shutil.rmtree(os.path.join(out, c.name))
  return out


def test_report_from_the_packed_files_alone_is_the_same(swept, tmp_path):
  s, work = swept
  cells = sweep_lib.expand(s)
  copied = str(tmp_path / 'with_cells')
  shutil.copytree(work, copied)
  paths = report.write_report(copied)         # reads the cell directories and packs them
  before = {name: open(path, 'rb').read() for name, path in paths.items()}
  files = {(c.name, k): results_store.read_cell(copied, c.name, k) for c in cells
           for k in results_store.CELL_FILES}
  metrics = {c.name: [{k: v for k, v in line.items() if not k.startswith('time_')}
                      for line in results_store.read_lines(os.path.join(copied, c.name,
                                                                   'metrics.jsonl'))]
             for c in cells}
  states = {c.name: sweep_lib.cell_state(copied, c) for c in cells}
  lines = [json.loads(l) for l in open(os.path.join(copied, results_store.CELLS))]
  assert [l['name'] for l in lines] == [c.name for c in cells]
  curves = [json.loads(l)['name'] for l in open(os.path.join(copied, results_store.CURVES))]
  assert curves == [c.name for c in cells]    # finished and diverged cells have curves

  packed = copied
  for c in cells:
    shutil.rmtree(os.path.join(packed, c.name))
  # .lock: the sweep's workdir lock (git-ignored)
  assert sorted(set(os.listdir(packed)) - {'.lock'}) == sorted(['sweep.json', results_store.CELLS,
                                               results_store.CURVES, *paths])
  for (name, kind), value in files.items():
    assert exact(results_store.read_cell(packed, name, kind)) == exact(value), (name, kind)
  for name, want in metrics.items():
    assert exact(results_store.read_metrics(packed, name)) == exact(want), name
  assert {c.name: sweep_lib.cell_state(packed, c) for c in cells} == states
  paths = report.write_report(packed)
  after = {name: open(path, 'rb').read() for name, path in paths.items()}
  assert after == before                      # report.md, report.json and the three PNGs


def test_a_sweep_resumed_from_packed_cells_runs_only_the_new_ones(swept, tmp_path):
  s, work = swept
  work = packed_copy(s, work, tmp_path)
  old_lines = open(os.path.join(work, results_store.CELLS)).read().splitlines()
  ran = []
  sweep_lib.run_sweep(s, work, progress=lambda c, line: ran.append(c.name), log=lambda _: None)
  assert ran == [] and results_store.cell_dirs(work) == []
  more = tiny_sweep(s.experiment, s.grid, seeds=(0, 1, 2))
  states = sweep_lib.run_sweep(more, work, only='^uncompressed__seed=2$',
                               progress=lambda c, line: ran.append(c.name), log=lambda _: None)
  assert set(ran) == {'uncompressed__seed=2'}
  assert states['uncompressed__seed=2']['status'] == 'finished'
  assert results_store.cell_dirs(work) == ['uncompressed__seed=2']
  assert results_store.pack(work) == {'cells': 7, 'curves': 7, 'shared': 0}
  new_lines = open(os.path.join(work, results_store.CELLS)).read().splitlines()
  assert [l for l in new_lines if '"name": "uncompressed__seed=2"' not in l] == old_lines
  # A packed cell's config still makes it stale when the sweep's config changes.
  changed = tiny_sweep(s.experiment, s.grid, seeds=(0, 1), overrides=('eval_every=1',))
  with pytest.raises(ValueError, match="cell 'uncompressed__seed=0'.*eval_every: 3 -> 1"):
    sweep_lib.run_sweep(changed, work, log=lambda _: None)


def _row(method, mean, overall, metric='test_accuracy', **budget):
  return {'method': method, 'budget': budget, 'metric': metric, 'mean': mean,
          'overall_compression': overall}


def test_within_tolerance_picks_the_highest_compression_inside_the_band():
  rows = [_row('uncompressed', 0.90, 1.0),
          _row('topk', 0.895, 10.0, k=100), _row('topk', 0.87, 100.0, k=10),
          _row('topk', 0.80, 1000.0, k=1), _row('sign', 0.70, 32.0), _row('late', None, 5.0),
          {**_row('topk', 0.95, 500.0, k=5), 'values': [0.95], 'num_seeds': 3}]   # 2 seeds diverged
  one, five = report.within_tolerance(rows, 1), report.within_tolerance(rows, 5)
  assert one['topk']['budget'] == {'k': 100} and five['topk']['budget'] == {'k': 10}
  assert one['sign'] is None and five['sign'] is None and one['late'] is None
  assert one['uncompressed']['overall_compression'] == 1.0
  ppl = [_row('uncompressed', 20.0, 1.0, 'test_perplexity'),
         _row('topk', 20.15, 10.0, 'test_perplexity'), _row('topk', 20.9, 100.0, 'test_perplexity')]
  assert report.within_tolerance(ppl, 1)['topk']['overall_compression'] == 10.0   # +0.75 %
  assert report.within_tolerance(ppl, 5)['topk']['overall_compression'] == 100.0  # +4.5 %
  table = report.tolerance_markdown([('a', rows), ('b', ppl)])
  assert 'a: within 1 pt' in table and 'b: within 5%' in table and '10x (k=100)' in table
  assert '| `sign`' in table and 'not run' in table      # sign has no row in sweep b
  with pytest.raises(ValueError, match='uncompressed'):
    report.within_tolerance(rows[1:], 1)
  # Budgets with a seed pending are counted as pending, not as misses.
  partial = [_row('uncompressed', 0.90, 1.0), _row('topk', 0.895, 10.0, k=100),
             {**_row('topk', 0.899, 50.0, k=20), 'values': [0.899], 'num_seeds': 3,
              'notes': ['seed 1 pending', 'seed 2 pending']},
             {**_row('sign', 0.90, 32.0), 'values': [0.90], 'num_seeds': 3,
              'notes': ['seed 2 pending']}, _row('rand', 0.5, 8.0)]
  lines = {l.split('|')[1].strip(): l for l in
           report.tolerance_markdown([('p', partial)]).splitlines()[2:]}
  assert '10x (k=100); 1 pending' in lines['`topk`'] and '1 pending' in lines['`sign`']
  assert '-' in lines['`rand`'] and 'pending' not in lines['`rand`']
