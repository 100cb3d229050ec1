"""benchmarks.results_store: packed cells read back exactly (the report and the sweep running from
the packed files alone: tests/benchmarks/test_report.py)."""
import hashlib
import json
import os
import shutil

import pytest

from benchmarks import common
from benchmarks import results_store


def exact(value) -> str:
  """A text that two values share iff they are equal, NaN included (json.dumps writes NaN)."""
  return json.dumps(value, sort_keys=True)


def write_cell(work, name, summary, lines):
  d = os.path.join(work, name)
  os.makedirs(d)
  with open(os.path.join(d, 'summary.json'), 'w') as f:
    json.dump(summary, f)
  with open(os.path.join(d, 'metrics.jsonl'), 'w') as f:
    for line in lines:
      f.write(json.dumps(line) + '\n')


def test_bulk_data_is_stored_once_by_sha256(tmp_path):
  work = str(tmp_path)
  modules = [f'module_{i}.py' for i in range(100)]
  lines = [{'round': 1, 'train_loss': 2.5, 'cum_bytes_up': 4}]
  for seed in (0, 1):
    write_cell(work, f'lm__seed={seed}', {
        'status': 'finished', 'final': {'round': 1},
        'data': {'modules': modules, 'split': {'test': 3}, 'sha256': 'abc'}}, lines)
  os.makedirs(os.path.join(work, 'lm__seed=2'))
  with open(os.path.join(work, 'lm__seed=2', 'error.json'), 'w') as f:
    json.dump({'type': 'ConfigError', 'message': 'bad'}, f)
  os.makedirs(os.path.join(work, 'not_a_cell'))      # holds no cell file: not packed
  assert results_store.pack(work) == {'cells': 3, 'curves': 2, 'shared': 1}
  h = hashlib.sha256(json.dumps(modules, separators=(',', ':')).encode()).hexdigest()
  assert json.load(open(os.path.join(work, results_store.SHARED))) == {h: modules}
  packed = [json.loads(line) for line in open(os.path.join(work, results_store.CELLS))]
  assert [p['name'] for p in packed] == ['lm__seed=0', 'lm__seed=1', 'lm__seed=2']
  for p in packed[:2]:
    assert p['summary']['data'] == {'modules': {'$sha256': h}, 'split': {'test': 3},
                                    'sha256': 'abc'}
  assert packed[2]['summary'] is None and packed[2]['error']['type'] == 'ConfigError'
  for seed in (0, 1, 2):
    shutil.rmtree(os.path.join(work, f'lm__seed={seed}'))
  assert results_store.read_cell(work, 'lm__seed=2', 'error') == {'type': 'ConfigError',
                                                                 'message': 'bad'}
  assert results_store.read_metrics(work, 'lm__seed=2') == []
  assert results_store.read_cell(work, 'lm__seed=9', 'summary') is None
  assert results_store.read_cell(work, 'lm__seed=1', 'summary')['data']['modules'] == modules
  assert results_store.read_metrics(work, 'lm__seed=0') == lines
  results_store.pack(work)                    # packed cells without a directory are kept
  assert json.load(open(os.path.join(work, results_store.SHARED))) == {h: modules}
  os.remove(os.path.join(work, results_store.SHARED))
  with pytest.raises(ValueError, match='summary.data.modules'):
    results_store.read_cell(work, 'lm__seed=0', 'summary')


def test_curve_columns_round_trip():
  lines = [{'round': r, 'train_loss': 1.0 / r, 'bytes_up': 10, 'cum_bytes_up': 10 * r,
            'bytes_down': 7, 'cum_bytes_down': 70 + 7 * r, 'time_round_s': 0.1}
           for r in (1, 2, 3, 4)]
  lines[1].update(test_accuracy=0.5, time_eval_s=0.2)
  lines[3].update(test_accuracy=float('nan'), val_loss=0.25)
  curve = results_store.pack_curve('c', lines)
  # bytes_up is the differences of cum_bytes_up (dropped); bytes_down is not (kept).
  assert sorted(curve['rounds']) == ['bytes_down', 'cum_bytes_down', 'cum_bytes_up', 'round',
                                     'train_loss']
  assert exact(curve['eval']) == exact({'round': [2, 4], 'test_accuracy': [0.5, float('nan')],
                                        'val_loss': [None, 0.25]})
  want = [{k: v for k, v in line.items() if not k.startswith('time_')} for line in lines]
  assert exact(results_store.unpack_curve(json.loads(json.dumps(curve)))) == exact(want)


def test_json_text_puts_one_record_per_line():
  runs = [{'name': f'run{i}', 'values': list(range(20)), 'nested': {'a': [1, 2]}} for i in range(3)]
  value = {'name': 'x', 'short': [1, 2], 'runs': runs, 'bad': float('inf'), 'key': {3: (1, 2)}}
  text = common.json_text(value)
  assert json.loads(text) == {**value, 'bad': None, 'key': {'3': [1, 2]}}
  assert text.splitlines() == [
      '{', ' "name": "x",', ' "short": [1, 2],', ' "runs": [',
      *[f'  {json.dumps(r)}' + (',' if i < 2 else '') for i, r in enumerate(runs)],
      ' ],', ' "bad": null,', ' "key": {"3": [1, 2]}', '}']


def committed_sweeps():
  root = os.path.join(common.REPO_ROOT, 'benchmarks', 'results')
  return sorted(n for n in os.listdir(root)     # packed sweeps (a running one is not yet packed)
                if os.path.exists(os.path.join(root, n, 'cells.jsonl')))


@pytest.mark.parametrize('name', committed_sweeps())
def test_committed_sweep_keeps_every_finished_cell(name):
  """Every cell that sweep.json records as finished or diverged has its summary and its curve in
  the committed packed files (a pack run without the cell directories must not blank them)."""
  workdir = os.path.join(common.REPO_ROOT, 'benchmarks', 'results', name)
  with open(os.path.join(workdir, 'sweep.json')) as f:
    index = json.load(f)
  done = [c['name'] for c in index['cells'] if c.get('status') in ('finished', 'diverged')]
  assert done, name
  packed = {line['name']: line for line in results_store.read_lines(
      os.path.join(workdir, 'cells.jsonl'))}
  curves = {line['name'] for line in results_store.read_lines(
      os.path.join(workdir, 'curves.jsonl'))}
  lost = [n for n in done if (packed.get(n) or {}).get('summary') is None or n not in curves]
  assert not lost, f'{name}: {len(lost)} finished cells without their packed summary or curve'


def test_pack_refuses_to_blank_a_packed_summary(tmp_path):
  work = str(tmp_path)
  write_cell(work, 'a', {'status': 'finished', 'data': {}}, [{'round': 1, 'train_loss': 1.0}])
  results_store.pack(work)
  shutil.rmtree(os.path.join(work, 'a'))
  os.makedirs(os.path.join(work, 'a'))
  with open(os.path.join(work, 'a', 'config.json'), 'w') as f:     # a directory without summary
    json.dump({'rounds': 1}, f)
  with pytest.raises(ValueError, match='no summary.json'):
    results_store.pack(work)
  assert results_store.read_lines(os.path.join(work, 'cells.jsonl'))[0]['summary'] is not None
