"""benchmarks.report: rows checked against the cells' own summaries, reference columns, PNGs."""
import json
import os
import statistics

import pytest

from benchmarks import report
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
