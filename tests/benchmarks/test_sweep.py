"""benchmarks.sweep: cells, resuming after an interruption, diverged / failing / skipped cells."""
import json
import os

import ml_collections
import pytest

from benchmarks import sweep as sweep_lib

# A tiny experiment (digits, logistic regression, 3 rounds); `lr=` sets the server rate so that a
# grid entry can make a real NaN.
TINY_CONFIG = '''
import os
import signal

from fedjax_intrinsic import config as config_lib, preflight


def get_config(arg=None):
  values = config_lib.parse_arg(arg)
  pid = values.pop('die_unless_pid', None)    # a cell whose process the system kills (as for OOM)
  if pid is not None and int(pid) != os.getpid():
    os.kill(os.getpid(), signal.SIGKILL)
  c = config_lib.base_config()
  c.data.name = 'digits'
  c.data.num_clients = 100
  c.data.partition = 'shards'
  c.model.name = 'logreg'
  c.rounds = 3
  c.clients_per_round = 5
  c.eval_every = 3
  c.server.lr = float(values.pop('lr', 0.5))
  return preflight.apply_arg(c, ','.join(f'{k}={v}' for k, v in values.items()))
'''


def write_tiny_config(directory) -> str:
  path = os.path.join(str(directory), 'tiny_config.py')
  with open(path, 'w') as f:
    f.write(TINY_CONFIG)
  return path


def tiny_sweep(experiment: str, grid, seeds=(0,), overrides=(), name='tiny'):
  return ml_collections.ConfigDict({
      'name': name, 'experiment': experiment, 'experiment_arg': '', 'grid': tuple(grid),
      'seeds': tuple(seeds), 'overrides': tuple(overrides), 'metric': 'test_accuracy',
      'reference': 'tiny'})


def metrics_without_time(path):
  with open(path) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith('time_')} for line in f]


@pytest.fixture(scope='module')
def experiment(tmp_path_factory):
  return write_tiny_config(tmp_path_factory.mktemp('config'))


def test_expand_names_order_and_args(experiment):
  s = tiny_sweep(experiment, ['method=uncompressed', 'method=fetchsgd,rows=3,cols=40,k=5'],
                 seeds=(0, 2))
  s.experiment_arg = 'model=logreg'
  cells = sweep_lib.expand(s)
  assert [c.name for c in cells] == [
      'uncompressed__seed=0', 'fetchsgd__rows=3_cols=40_k=5__seed=0',
      'uncompressed__seed=2', 'fetchsgd__rows=3_cols=40_k=5__seed=2']
  assert cells[1].budget == {'rows': 3, 'cols': 40, 'k': 5}
  assert cells[1].arg == 'model=logreg,method=fetchsgd,rows=3,cols=40,k=5,seed=0'
  config = sweep_lib.cell_config(s, cells[3])
  assert (config.seed, config.method.name, config.method.cols) == (2, 'fetchsgd', 40)


@pytest.mark.parametrize('field, value, match', [
    ('grid', ('method=uncompressed', 'method=uncompressed'), 'appears twice'),
    ('grid', ('d=4',), 'method=<name>'),
    ('grid', ('method=uncompressed,seed=3',), 'seed is set by the sweep'),
    ('seeds', (0, 0), 'seeds='),
    ('seeds', (), 'seeds='),
    ('name', 'a/b', 'name='),
    ('overrides', ('rounds',), 'overrides item'),
])
def test_bad_sweep_fields_raise(experiment, field, value, match):
  s = tiny_sweep(experiment, ['method=uncompressed'])
  s[field] = value
  with pytest.raises(ValueError, match=match):
    sweep_lib.expand(s)


def test_overrides_set_nested_fields_and_reject_unknown(experiment):
  s = tiny_sweep(experiment, ['method=uncompressed'],
                 overrides=('server.lr=2', 'simulation.cohort_shortcut=1', 'rounds=7',
                            'data.partition=iid', 'model.name=mlp'))
  config = sweep_lib.cell_config(s, sweep_lib.expand(s)[0])
  assert (config.server.lr, config.simulation.cohort_shortcut, config.rounds) == (2.0, True, 7)
  assert (config.data.partition, config.model.name) == ('iid', 'mlp')
  s.overrides = ('server.nope=1',)
  with pytest.raises(ValueError, match='no field'):
    sweep_lib.cell_config(s, sweep_lib.expand(s)[0])


def test_interrupted_sweep_resumes_without_recomputing(experiment, tmp_path):
  grid = ['method=uncompressed', 'method=intrinsic_static,d=16', 'method=uncompressed,lr=0.25']
  s = tiny_sweep(experiment, grid)
  names = [c.name for c in sweep_lib.expand(s)]
  work = str(tmp_path / 'interrupted')
  log = []

  def interrupt(cell, line):         # Ctrl-C during the second cell's first round
    if cell.name == names[1]:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    sweep_lib.run_sweep(s, work, progress=interrupt, log=log.append)
  assert any('interrupted' in line for line in log)
  first_summary = open(os.path.join(work, names[0], 'summary.json')).read()
  assert not os.path.exists(os.path.join(work, names[1], 'summary.json'))
  assert sweep_lib.cell_state(work, sweep_lib.expand(s)[1])['status'] == 'pending'

  ran, log = [], []
  states = sweep_lib.run_sweep(s, work, progress=lambda c, line: ran.append(c.name),
                               log=log.append)
  assert sorted(set(ran)) == sorted(names[1:])        # the finished cell was not recomputed
  assert open(os.path.join(work, names[0], 'summary.json')).read() == first_summary
  assert all(v['status'] == 'finished' for v in states.values())
  assert any(line.startswith('sweep tiny: 3 cells, 1 done, 2 to run') for line in log)
  assert any(f'[2/3] {names[1]}: round 3/3' in line for line in log)   # round progress shown

  # The same sweep uninterrupted gives identical results (timing fields aside).
  ref = str(tmp_path / 'reference')
  sweep_lib.run_sweep(s, ref, log=lambda _: None)
  for name in names:
    assert (metrics_without_time(os.path.join(work, name, 'metrics.jsonl'))
            == metrics_without_time(os.path.join(ref, name, 'metrics.jsonl')))
  # Summaries are complete JSON written by rename: no temporary files are left behind.
  for name in names:
    assert not [f for f in os.listdir(os.path.join(work, name)) if '.tmp' in f]
  index = json.load(open(os.path.join(work, 'sweep.json')))
  assert [c['status'] for c in index['cells']] == ['finished'] * 3

  # A third start runs nothing; a changed config is refused unless told what to do.
  ran.clear()
  sweep_lib.run_sweep(s, work, progress=lambda c, line: ran.append(c.name), log=lambda _: None)
  assert ran == []
  how = tiny_sweep(experiment, grid, overrides=('simulation.client_parallelism=loop',
                                                 'eval_batch_size=7'))
  sweep_lib.run_sweep(how, work, progress=lambda c, line: ran.append(c.name), log=lambda _: None)
  assert ran == []                  # execution fields do not make a cell stale
  changed = tiny_sweep(experiment, grid, overrides=('eval_every=1',))
  assert [sweep_lib.stale_diff(how, c, work) for c in sweep_lib.expand(how)] == [[]] * 3
  assert [sweep_lib.stale_diff(changed, c, work) for c in sweep_lib.expand(changed)] == [
      ['eval_every: 3 -> 1']] * 3
  with pytest.raises(ValueError, match=f"cell '{names[0]}'.*eval_every: 3 -> 1.*--stale=rerun"):
    sweep_lib.run_sweep(changed, work, log=lambda _: None)
  sweep_lib.run_sweep(changed, work, stale='keep', progress=lambda c, line: ran.append(c.name),
                      log=lambda _: None)
  assert ran == []
  sweep_lib.run_sweep(changed, work, stale='rerun', only='__lr=0.25__',
                      progress=lambda c, line: ran.append(c.name), log=lambda _: None)
  assert set(ran) == {names[2]}
  assert json.load(open(os.path.join(work, names[2], 'config.json')))['eval_every'] == 1
  # The index the report reads still lists every cell, not only the ones just run.
  index = json.load(open(os.path.join(work, 'sweep.json')))
  assert [(c['name'], c['status']) for c in index['cells']] == [(n, 'finished') for n in names]


def _stored_as(sweep, work, cell, method_config):
  """A done cell whose config.json is today's config with `method_config` as its method."""
  d = os.path.join(work, cell.name)
  os.makedirs(d)
  config = sweep_lib._jsonable(sweep_lib.cell_config(sweep, cell).to_dict())
  config['method'] = method_config
  json.dump(config, open(os.path.join(d, 'config.json'), 'w'))
  json.dump({'status': 'finished'}, open(os.path.join(d, 'summary.json'), 'w'))


# Method configs as cells committed before method.error_feedback replaced error_type, and before
# method.quantize existed, wrote them (benchmarks/results/*/cells.jsonl), with the grid entry
# that builds the same method today.
OLD_CELLS = [
    ('method=local_topk,k=20', {'name': 'local_topk', 'k': 20, 'error_type': 'local',
                                'local_momentum': 0.0, 'topk_method': 'exact'}),
    ('method=local_topk,k=21,error_feedback=False',
     {'name': 'local_topk', 'k': 21, 'error_type': 'none', 'local_momentum': 0.0,
      'topk_method': 'exact'}),
    ('method=random_k,k=20,scaling=none,error_feedback=True',
     {'name': 'random_k', 'k': 20, 'error_type': 'local', 'scaling': 'none',
      'index_encoding': 'seed'}),
    ('method=true_topk,k=20', {'name': 'true_topk', 'k': 20, 'error_type': 'virtual',
                               'momentum': 0.0, 'topk_method': 'exact'}),
    # after method.quantize, before the rename: true_topk's error_feedback was the clients' one
    ('method=true_topk,k=22,quantize=int8,client_error_feedback=True',
     {'name': 'true_topk', 'k': 22, 'error_type': 'virtual', 'error_feedback': True,
      'momentum': 0.0, 'quantize': 'int8', 'topk_method': 'exact'}),
    ('method=true_topk,k=23,error_feedback=False',
     {'name': 'true_topk', 'k': 23, 'error_type': 'none', 'error_feedback': False,
      'momentum': 0.0, 'quantize': 'none', 'topk_method': 'exact'}),
    ('method=uncompressed', {'name': 'uncompressed'}),
]


def test_cells_stored_before_a_rename_or_an_added_method_field_are_not_stale(experiment,
                                                                             tmp_path):
  """A stored `error_type` reads as today's `error_feedback` (true_topk's old `error_feedback` as
  `client_error_feedback`), an absent quantize as none; a real difference is still stale."""
  s = tiny_sweep(experiment, [entry for entry, _ in OLD_CELLS])
  work = str(tmp_path / 'old')
  cells = sweep_lib.expand(s)
  for cell, (_, stored) in zip(cells, OLD_CELLS):
    _stored_as(s, work, cell, stored)
    assert sweep_lib._check_stale(s, cell, work, 'error') is False, cell.name
  # Controls: the same stored cells against entries that differ in the renamed or added field.
  changed = tiny_sweep(experiment, ['method=local_topk,k=20,error_feedback=False',
                                    'method=local_topk,k=21',
                                    'method=random_k,k=20,scaling=none',
                                    'method=true_topk,k=20,error_feedback=False',
                                    'method=true_topk,k=22,quantize=int8',
                                    'method=true_topk,k=23',
                                    'method=uncompressed,quantize=bf16'])
  diffs = ['method.error_feedback: True -> False', 'method.error_feedback: False -> True',
           'method.error_feedback: True -> False', 'method.error_feedback: True -> False',
           "method.client_error_feedback: True -> '<absent>'", 'method.error_feedback: False -> True',
           "method.quantize: '<absent>' -> 'bf16'"]
  for cell, stored, diff in zip(sweep_lib.expand(changed), cells, diffs):
    with pytest.raises(ValueError) as info:         # today's config for the stored cell's name
      sweep_lib._check_stale(changed, cell._replace(name=stored.name), work, 'error')
    assert diff in str(info.value), (cell.name, str(info.value))


def test_the_committed_digits_cells_are_not_stale():
  """The digits sweep's committed cells (run before error_type was renamed and quantize added)
  are done for the sweep as configs/sweeps/digits_mlp.py builds it today."""
  s = sweep_lib.load_config_file('configs/sweeps/digits_mlp.py')
  work = os.path.join(sweep_lib.common.REPO_ROOT, 'benchmarks', 'results', 'digits_mlp')
  cells = [c for c in sweep_lib.expand(s) if c.seed == 0]
  assert {'local_topk', 'random_k', 'true_topk', 'uncompressed'} <= {c.method for c in cells}
  for cell in cells:
    assert sweep_lib.cell_state(work, cell)['status'] in sweep_lib.DONE, cell.name
    assert sweep_lib._check_stale(s, cell, work, 'error') is False, cell.name


def test_unfinished_or_truncated_summary_is_not_done(experiment, tmp_path):
  s = tiny_sweep(experiment, ['method=uncompressed'])
  cell = sweep_lib.expand(s)[0]
  d = tmp_path / cell.name
  d.mkdir()
  (d / 'summary.json').write_text('{"status": "finish')          # cut mid-write
  assert sweep_lib.cell_state(str(tmp_path), cell)['status'] == 'pending'
  (d / 'summary.json').write_text(json.dumps({'status': 'running'}))
  assert sweep_lib.cell_state(str(tmp_path), cell)['status'] == 'pending'
  (d / 'summary.json').write_text(json.dumps({'status': 'diverged', 'diverged_round': 4}))
  assert sweep_lib.cell_state(str(tmp_path), cell) == {
      'status': 'diverged', 'diverged_round': 4, 'time_total_s': None}


def test_diverged_failed_and_skipped_cells_are_recorded_and_the_sweep_goes_on(experiment,
                                                                             tmp_path):
  grid = ['method=uncompressed,lr=1e38',            # a real NaN loss in round 2
          'method=uncompressed,clients_per_round=500',  # more clients than the data has
          'method=not_a_method',
          'method=uncompressed']
  s = tiny_sweep(experiment, grid)
  work = str(tmp_path)
  log = []
  states = sweep_lib.run_sweep(s, work, log=log.append)
  diverged, failed, skipped, ok = [c.name for c in sweep_lib.expand(s)]
  assert states[diverged] == {'status': 'diverged', 'diverged_round': 2,
                              'time_total_s': states[diverged]['time_total_s']}
  summary = json.load(open(os.path.join(work, diverged, 'summary.json')))
  assert summary['status'] == 'diverged' and summary['diverged_round'] == 2
  assert states[failed]['status'] == 'failed'
  error = json.load(open(os.path.join(work, failed, 'error.json')))
  assert error['type'] == 'ConfigError' and 'clients_per_round=500' in error['message']
  assert 'Traceback' in error['traceback']
  assert states[skipped]['status'] == 'skipped'
  assert 'not registered' in states[skipped]['error']
  assert not os.path.exists(os.path.join(work, skipped))
  assert any(f'skip {skipped}' in line for line in log)
  assert states[ok]['status'] == 'finished'
  assert log[-1] == 'sweep tiny: 1 diverged, 1 failed, 1 finished, 1 skipped'
  # Started again: done cells stay, the failed one is tried again unless told not to.
  ran = []
  sweep_lib.run_sweep(s, work, retry_failed=False, progress=lambda c, line: ran.append(c.name),
                      log=log.append)
  assert ran == []
  again = sweep_lib.run_sweep(s, work, log=log.append)
  assert again[failed]['status'] == 'failed' and again[ok]['status'] == 'finished'
  assert any(f'{failed}: starting' in line for line in log[-6:])


def test_isolated_cells_match_in_process_and_a_killed_cell_is_failed(experiment, tmp_path):
  grid = ['method=uncompressed', f'method=uncompressed,die_unless_pid={os.getpid()}']
  s = tiny_sweep(experiment, grid)
  ok, killed = sweep_lib.expand(s)
  inline = str(tmp_path / 'inline')
  sweep_lib.run_sweep(s, inline, only=f'^{ok.name}$', log=lambda _: None)
  work = str(tmp_path / 'isolated')
  log = []
  states = sweep_lib.run_sweep(s, work, log=log.append, isolate=True)
  assert states[ok.name]['status'] == 'finished'
  assert (metrics_without_time(os.path.join(work, ok.name, 'metrics.jsonl'))
          == metrics_without_time(os.path.join(inline, ok.name, 'metrics.jsonl')))
  cell = json.load(open(os.path.join(work, ok.name, 'cell.json')))
  assert cell['exit_status'] == 0 and 50 < cell['peak_rss_mib'] < 64 * 1024
  assert states[killed.name]['status'] == 'failed'
  assert 'killed by signal SIGKILL' in states[killed.name]['error']
  error = json.load(open(os.path.join(work, killed.name, 'error.json')))
  assert error['type'] == 'CellProcessDied' and 'out of memory' in error['message']
  assert error['exit_status'] == -9
  assert log[-1] == 'sweep tiny: 1 failed, 1 finished'


def test_a_cell_process_ends_when_its_sweep_dies():
  import subprocess
  import sys
  import time
  # A parent starts a child that watches it, waits until the watch runs, then dies; the child
  # (which would sleep a minute) must end soon after.
  code = ('import os, subprocess, sys\n'
          'child = subprocess.Popen([sys.executable, "-c", "import sys, time; '
          'from benchmarks import sweep; sweep._exit_when_orphaned(int(sys.argv[1]), 0.05); '
          'print(flush=True); time.sleep(60)", str(os.getpid())], stdout=subprocess.PIPE)\n'
          'child.stdout.readline()\n'
          'print(child.pid, flush=True)\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  pid = int(out.stdout.split()[0])

  def running():
    try:
      with open(f'/proc/{pid}/stat') as f:
        return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
      return False

  deadline = time.time() + 30
  while running() and time.time() < deadline:
    time.sleep(0.1)
  assert not running()
