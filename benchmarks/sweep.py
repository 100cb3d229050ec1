"""Runs a sweep: a grid of experiment cells (method × budget × seed), each in its own directory.

  python -m benchmarks.sweep --config=configs/sweeps/digits_mlp.py
  python -m benchmarks.sweep --config=configs/sweeps/paper_table_cifar.py --workdir=/data/sweeps/cifar \
      --config.seeds=0,1 --config.overrides='("data.data_dir=/data/tfds",)'
  python -m benchmarks.sweep --config=configs/sweeps/digits_mlp.py --list     # cells and their status

A sweep config (configs/sweeps/*.py, `get_config()`) has the fields
  name: str                  results directory name (default workdir: benchmarks/results/<name>)
  experiment: str            experiment config file, relative to the repository root
  experiment_arg: str        its argument common to every cell (e.g. 'model=mlp'; may be '')
  grid: tuple[str, ...]      one `get_config` argument per (method, budget): 'method=fetchsgd,rows=5,...'
  seeds: tuple[int, ...]     every grid entry runs once per seed
  overrides: tuple[str, ...] 'field.path=value' set on every cell's config after `get_config`
  metric: str                the summary metric tables and plots show ('test_accuracy', ...)
  reference: str             the experiment's key in benchmarks/reference_numbers.json
Cell `m__budget__seed=s` (budget: the entry's fields after `method`, joined by '_') runs
`experiment.run(get_config('<experiment_arg>,<grid entry>,seed=<s>') + overrides)` in
`<workdir>/<cell>/`: from the command line each cell in its own Python process (`--isolate`, the
default), so that no memory or compiled code is carried from one cell to the next, a cell killed by
the system (out of memory) is recorded as failed while the sweep goes on, and the cell's peak
resident memory is recorded (`cell.json`: peak_rss_mib); `run_sweep(..., isolate=False)` runs
them in-process.

Resuming. A cell is done when its `summary.json` (written atomically by `experiment.run`, last)
exists with status 'finished' or 'diverged' (NaN/inf loss: `diverged_round` says when); done cells
are never recomputed, so a killed sweep started again continues with the first cell not done. A cell
that raises is recorded in `<cell>/error.json` (type, message, traceback) and the sweep goes on; it
is tried again when the sweep is started again (`--noretry_failed` keeps the error). A method not in
`fedjax_intrinsic.algorithms.METHODS` is skipped with a message. If a done cell's `config.json` no
longer matches the config the sweep would build (the sweep or experiment config changed), the sweep
stops naming the cell and the differing fields, unless `--stale=rerun` (recompute it) or
`--stale=keep` (keep the old result). A field added since a cell ran counts as the value it ran
with (ADDED_FIELDS, ADDED_METHOD_FIELDS), a renamed one under its new name (RENAMED_FIELDS).

Files: `<workdir>/sweep.json` (the sweep config, the machine, each cell's status; rewritten
atomically after every cell), and per cell `cell.json` (its definition, the argument, the machine and
load average when it started; with `--isolate` also the process's peak resident memory and exit
status), `config.json`, `metrics.jsonl`, `summary.json` or `error.json`.
`--pack` packs the cell directories into cells.jsonl / curves.jsonl / shared.json, what is committed
(benchmarks.results_store); a cell without a directory is read from there, so a sweep resumed on a
fresh clone counts the packed done cells as done.
"""
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Callable, NamedTuple, Optional, Sequence

import ml_collections

from benchmarks import common
from benchmarks import results_store
from fedjax_intrinsic import fields

DONE = ('finished', 'diverged')
STALE_POLICIES = ('error', 'rerun', 'keep')
# Fields that change how a cell is computed, not what: the engine's client-parallelism strategies
# and device layouts compute the same round (up to float rounding), checkpoints resume to the same
# metrics, the evaluation batch size only splits the same sums, and time_client_cost adds timing fields.
EXECUTION_FIELDS = ('simulation', 'checkpoint_every', 'eval_batch_size', 'time_client_cost')
# Top-level fields added after cells were committed, with the default those cells ran with.
ADDED_FIELDS = {'eval_splits': 'test,validation', 'eval_initial': False}
# Method fields added after cells were committed, with what those cells ran with ('*': every
# method): float32 payloads (quantize), and so no memory of a quantiser's rounding.
ADDED_METHOD_FIELDS = {'*': {'quantize': 'none'}, 'uncompressed': {'error_feedback': False},
                       'fedavg': {'error_feedback': False},
                       'true_topk': {'client_error_feedback': False}}
# Method fields renamed after cells were committed: old name -> (new name, old value -> new value).
# A stored method config that has `error_type` predates `method.error_feedback` (local_topk,
# random_k, true_topk); true_topk's `error_feedback` then (the clients' memory of the quantiser's
# rounding) is its `client_error_feedback` now (RENAMED_WITH).
RENAMED_FIELDS = {'error_type': ('error_feedback', {'local': True, 'virtual': True, 'none': False})}
RENAMED_WITH = {'error_type': {'true_topk': {'error_feedback': 'client_error_feedback'}}}
SWEEP_FIELDS = ('name', 'experiment', 'experiment_arg', 'grid', 'seeds', 'overrides', 'metric',
                'reference')
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.+=-]*$')


class Cell(NamedTuple):
  """One run of a sweep.

  name: its directory name, '<method>__<budget>__seed=<s>' ('<method>__seed=<s>' without budget).
  method: the method name. budget: the grid entry's other fields, in order ({} for none).
  seed: the run's seed. entry: the grid entry it comes from. arg: the full `get_config` argument.
  """
  name: str
  method: str
  budget: dict
  seed: int
  entry: str
  arg: str


def sweep_config(*, name: str, experiment: str, grid: Sequence[str], seeds: Sequence[int],
                 metric: str, reference: str, overrides: Sequence[str] = (),
                 experiment_arg: str = '') -> ml_collections.ConfigDict:
  """A sweep config with the fields of this module's docstring: what configs/sweeps/*.py return."""
  return ml_collections.ConfigDict({
      'name': name, 'experiment': experiment, 'experiment_arg': experiment_arg,
      'grid': tuple(grid), 'seeds': tuple(seeds), 'overrides': tuple(overrides),
      'metric': metric, 'reference': reference})


def load_config_file(path: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file `path` (relative paths: from the repository root); a
  missing file or one that is not valid Python is a ConfigError (`preflight.load_module`)."""
  from fedjax_intrinsic import preflight
  full = path if os.path.isabs(path) else os.path.join(common.REPO_ROOT, path)
  module = preflight.load_module(full, field='experiment')
  return module.get_config(arg) if arg is not None else module.get_config()


def validate_sweep(sweep: ml_collections.ConfigDict) -> None:
  """Checks the sweep config's own fields (not the cells'); raises ValueError naming the field."""
  for field in SWEEP_FIELDS:
    if field not in sweep:
      raise ValueError(f'sweep field {field!r} is missing; allowed fields: {", ".join(SWEEP_FIELDS)}')
  if not isinstance(sweep.name, str) or not _NAME.match(sweep.name):
    raise ValueError(f'name={sweep.name!r} is invalid; allowed: letters, digits and _.+=- '
                     '(a directory name)')
  if not sweep.grid:
    raise ValueError('grid=() is invalid; allowed: a non-empty tuple of get_config arguments')
  seeds = tuple(sweep.seeds)
  if not seeds or any(not fields.is_int(s, 0) for s in seeds) \
      or len(set(seeds)) != len(seeds):
    raise ValueError(f'seeds={seeds!r} is invalid; allowed: distinct non-negative integers, at '
                     'least one')
  for item in sweep.overrides:
    if not isinstance(item, str) or '=' not in item:
      raise ValueError(f'overrides item {item!r} is invalid; allowed: "field.path=value" strings')


def _parse_entry(entry: str) -> tuple[str, dict]:
  from fedjax_intrinsic import config as config_lib
  values = config_lib.parse_arg(entry)
  method = values.pop('method', None)
  if not isinstance(method, str):
    raise ValueError(f'grid entry {entry!r} is invalid; allowed: an argument starting with '
                     'method=<name>')
  for key in ('seed', 'model', 'data'):
    if key in values:
      raise ValueError(f'grid entry {entry!r} is invalid: {key} is set by the sweep (seeds, '
                       'experiment_arg); allowed: the method and its budget fields')
  return method, values


def budget_label(budget: dict) -> str:
  """{'rows': 5, 'cols': 100} -> 'rows=5_cols=100' ('' for no budget)."""
  return '_'.join(f'{k}={v}' for k, v in budget.items())


def expand(sweep: ml_collections.ConfigDict) -> list[Cell]:
  """The sweep's cells in run order: the whole grid with the first seed, then with the next, ...

  (so a sweep cut short still has every grid entry with the first seeds).
  """
  validate_sweep(sweep)
  cells, names = [], set()
  entries = [(entry, *_parse_entry(entry)) for entry in sweep.grid]
  for seed in sweep.seeds:
    for entry, method, budget in entries:
      label = budget_label(budget)
      name = f'{method}__{label}__seed={seed}' if label else f'{method}__seed={seed}'
      if not _NAME.match(name):
        raise ValueError(f'grid entry {entry!r} gives the cell name {name!r}; allowed: letters, '
                         'digits and _.+=- in budget values')
      if name in names:
        raise ValueError(f'grid entry {entry!r} is invalid: cell {name!r} appears twice')
      names.add(name)
      arg = ','.join(filter(None, [sweep.experiment_arg, entry, f'seed={seed}']))
      cells.append(Cell(name, method, budget, int(seed), entry, arg))
  return cells


def _set_field(config: ml_collections.ConfigDict, item: str) -> None:
  """Applies one overrides item 'field.path=value': the value parsed as the field's type
  (`preflight.set_field`: an unknown field, or a float for an int, is a ConfigError)."""
  from fedjax_intrinsic import preflight
  path, text = item.split('=', 1)
  preflight.set_field(config, path.strip(), text, field='overrides')


def cell_config(sweep: ml_collections.ConfigDict, cell: Cell) -> ml_collections.ConfigDict:
  """The experiment config of `cell`: the experiment file's `get_config(cell.arg)`, then overrides."""
  config = load_config_file(sweep.experiment, cell.arg)
  for item in sweep.overrides:
    _set_field(config, item)
  return config


def _jsonable(obj: Any) -> Any:
  """`obj` as `experiment.run` writes it to config.json (tuples as lists, numbers as numbers)."""
  def default(x):
    if hasattr(x, 'tolist'):
      return x.tolist()
    return str(x)
  return json.loads(json.dumps(obj, default=default))


def _config_diff(old: Any, new: Any, prefix: str = '') -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for k in sorted(set(old) | set(new)):
      out += _config_diff(old.get(k, '<absent>'), new.get(k, '<absent>'), f'{prefix}{k}.')
    return out
  return [] if old == new else [f'{prefix[:-1]}: {old!r} -> {new!r}']


def cell_state(workdir: str, cell: Cell) -> dict:
  """{'status': 'finished'|'diverged'|'failed'|'pending', ...} from the files of `cell`."""
  summary = results_store.read_cell(workdir, cell.name, 'summary')
  if summary is not None and summary.get('status') in DONE:
    return {'status': summary['status'], 'diverged_round': summary.get('diverged_round'),
            'time_total_s': summary.get('time_total_s')}
  error = results_store.read_cell(workdir, cell.name, 'error')
  if error is not None:
    return {'status': 'failed', 'error': f'{error.get("type")}: {error.get("message")}'}
  return {'status': 'pending'}


def _clear_partial(d: str, keep_checkpoints: bool) -> None:
  """Removes what an unfinished attempt left (a stale summary/metrics/error), keeping checkpoints."""
  for name in ('summary.json', 'metrics.jsonl', 'error.json', 'config.json'):
    path = os.path.join(d, name)
    if os.path.exists(path) and not (keep_checkpoints and name in ('metrics.jsonl', 'config.json')):
      os.remove(path)


def _progress_printer(prefix: str, rounds: int, metric: str, log: Callable[[str], None]):
  def show(line):
    if any(k.startswith('test_') for k in line) or line['round'] == rounds:
      value = line.get(metric)
      value = f' {metric} {value:.4f}' if isinstance(value, float) else ''
      log(f'{prefix} round {line["round"]}/{rounds} loss {line["train_loss"]:.4f}{value} '
          f'overall x{line["overall_compression"]:.3g}')
  return show


def run_cell(sweep: ml_collections.ConfigDict, cell: Cell, workdir: str, *,
             progress: Optional[Callable[[dict], None]] = None,
             log: Callable[[str], None] = print, prefix: str = '') -> dict:
  """Runs one cell now (whatever its files say) and returns its state (see `cell_state`).

  An exception from building or running the experiment is recorded in `<cell>/error.json` and
  returned as status 'failed'; KeyboardInterrupt (and other BaseExceptions) propagate, leaving the
  cell unfinished.
  """
  from fedjax_intrinsic import experiment
  d = os.path.join(workdir, cell.name)
  os.makedirs(d, exist_ok=True)
  t0 = time.time()
  config = None
  try:
    config = cell_config(sweep, cell)
    _clear_partial(d, keep_checkpoints=bool(config.checkpoint_every))
    common.write_json(os.path.join(d, 'cell.json'), {
        **cell._asdict(), 'sweep': sweep.name, 'experiment': sweep.experiment,
        'overrides': list(sweep.overrides), 'started_utc': time.strftime('%Y-%m-%d %H:%M:%S',
                                                                          time.gmtime()),
        'machine': common.machine_line(common.machine_info()),
        'load_average_at_start': common.load_average()})
    shown = _progress_printer(prefix, config.rounds, sweep.metric, log)

    def on_round(line):
      shown(line)
      if progress is not None:
        progress(line)

    summary = experiment.run(config, d, progress=on_round)
  except Exception as e:  # a failing cell is recorded; the sweep goes on
    error = {'type': type(e).__name__, 'message': str(e).splitlines()[0] if str(e) else '',
             'traceback': traceback.format_exc(), 'time_s': time.time() - t0,
             'config': config.to_dict() if config is not None else None}
    common.write_json(os.path.join(d, 'error.json'), _jsonable(error))
    log(f'{prefix} FAILED: {error["type"]}: {error["message"]}')
    return {'status': 'failed', 'error': f'{error["type"]}: {error["message"]}'}
  state = {'status': summary['status'], 'diverged_round': summary['diverged_round'],
           'time_total_s': summary['time_total_s']}
  where = f' at round {summary["diverged_round"]}' if summary['status'] == 'diverged' else ''
  log(f'{prefix} {summary["status"]}{where} in {summary["time_total_s"]:.1f} s')
  return state


_CHILD = ('import pickle, sys\n'
          'from benchmarks import sweep\n'
          'sweep._run_cell_child(*pickle.load(sys.stdin.buffer))\n')


def _exit_when_orphaned(parent: int, every_s: float = 1.0) -> None:
  """Ends this process soon after `parent` is gone (a killed sweep leaves no cell running on)."""
  def watch():
    while os.getppid() == parent:
      time.sleep(every_s)
    os._exit(3)
  threading.Thread(target=watch, daemon=True).start()


def _run_cell_child(sweep: ml_collections.ConfigDict, cell: dict, workdir: str, prefix: str,
                    parent: int) -> None:
  """The body of `run_cell_isolated`'s process: runs the cell, its lines on stderr."""
  from fedjax_intrinsic import cli
  _exit_when_orphaned(parent)
  cli.quiet_logs()
  run_cell(sweep, Cell(**cell), workdir, log=lambda s: print(s, file=sys.stderr, flush=True),
           prefix=prefix)


def run_cell_isolated(sweep: ml_collections.ConfigDict, cell: Cell, workdir: str, *,
                      log: Callable[[str], None] = print, prefix: str = '') -> dict:
  """`run_cell` in a fresh Python process; returns the state its files then give (`cell_state`).

  The process inherits the environment and working directory; its stderr (the cell's progress
  lines) passes through; it ends itself when this process dies (a killed sweep leaves no cell
  running on). Its peak resident memory (getrusage of that child) and exit status are
  added to `<cell>/cell.json`. A process that dies without recording a result (killed by a signal,
  for example by the kernel when memory runs out) leaves an error.json saying so: the cell is
  'failed' and is tried again when the sweep is started again.
  """
  t0 = time.time()
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (common.REPO_ROOT, env.get('PYTHONPATH')) if p)
  child = subprocess.Popen([sys.executable, '-c', _CHILD], stdin=subprocess.PIPE, env=env)
  try:
    # The cell as a dict: `Cell` may be __main__.Cell here (python -m benchmarks.sweep).
    child.stdin.write(pickle.dumps((sweep, cell._asdict(), workdir, prefix, os.getpid())))
    child.stdin.close()
    _, status, usage = os.wait4(child.pid, 0)
  except BaseException:          # Ctrl-C (which the child got too) or an error here: stop it
    child.kill()
    child.wait()
    raise
  child.returncode = code = os.waitstatus_to_exitcode(status)
  peak_mib = round(usage.ru_maxrss / 1024, 1)       # ru_maxrss is in KiB on Linux
  d = os.path.join(workdir, cell.name)
  definition = results_store.read_json(os.path.join(d, 'cell.json'))
  if definition is not None:
    common.write_json(os.path.join(d, 'cell.json'),
                      {**definition, 'peak_rss_mib': peak_mib, 'exit_status': code})
  state = cell_state(workdir, cell)
  if state['status'] == 'pending':   # it died before writing a summary or an error
    how = (f'killed by signal {signal.Signals(-code).name}' if code < 0
           else f'exited with status {code}')
    hint = ' (SIGKILL: most often the kernel, out of memory)' if code == -signal.SIGKILL else ''
    os.makedirs(d, exist_ok=True)
    common.write_json(os.path.join(d, 'error.json'), {
        'type': 'CellProcessDied', 'message': f'the cell process {how}{hint} after '
        f'{time.time() - t0:.0f} s; peak resident memory {peak_mib:.0f} MiB',
        'traceback': '', 'time_s': time.time() - t0, 'config': None, 'exit_status': code,
        'peak_rss_mib': peak_mib})
    state = cell_state(workdir, cell)
    log(f'{prefix} FAILED: {state["error"]}')
  return state


def _what_is_run(config: dict) -> dict:
  """The config without its execution fields (EXECUTION_FIELDS), which do not make a cell stale,
  and without fields at their ADDED_FIELDS / ADDED_METHOD_FIELDS value (a cell run before the
  field existed)."""
  out = {k: v for k, v in config.items()
         if k not in EXECUTION_FIELDS and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
  if isinstance(out.get('method'), dict):
    m = out['method']
    added = {**ADDED_METHOD_FIELDS['*'], **ADDED_METHOD_FIELDS.get(m.get('name'), {})}
    out['method'] = {k: v for k, v in m.items() if not (k in added and v == added[k])}
  return out


def _today_names(config: dict) -> dict:
  """A stored config with its method fields under today's names (RENAMED_FIELDS)."""
  m = config.get('method')
  if not isinstance(m, dict) or not set(m) & set(RENAMED_FIELDS):
    return config
  m = dict(m)
  for old, (new, values) in RENAMED_FIELDS.items():
    if old in m:
      moved = RENAMED_WITH.get(old, {}).get(m.get('name'), {})
      for was, now in moved.items():
        if was in m:
          m[now] = m.pop(was)
      value = m.pop(old)
      m[new] = values.get(value, value) if isinstance(value, str) else value
  return {**config, 'method': m}


def stale_diff(sweep, cell: Cell, workdir: str) -> list[str]:
  """How the config a done cell ran with (its config.json) differs from what the sweep would run
  now, one 'field: old -> new' string per field, execution fields aside; [] when it does not."""
  old = _what_is_run(_today_names(results_store.read_cell(workdir, cell.name, 'config') or {}))
  new = _what_is_run(_jsonable(cell_config(sweep, cell).to_dict()))
  return [] if old == new else _config_diff(old, new)


def _check_stale(sweep, cell: Cell, workdir: str, policy: str) -> bool:
  """True when the done cell must be recomputed (its config.json differs and policy is 'rerun')."""
  diff = stale_diff(sweep, cell, workdir)
  if not diff:
    return False
  if policy == 'keep':
    return False
  if policy == 'rerun':
    return True
  raise ValueError(f'cell {cell.name!r} in {workdir} was run with another config '
                   f'({"; ".join(diff[:4])}); allowed: --stale=rerun to recompute it, '
                   '--stale=keep to keep it, or a new --workdir')


def _write_index(sweep, workdir: str, cells: Sequence[Cell], states: dict,
                 command: Optional[str]) -> None:
  index = results_store.read_json(os.path.join(workdir, 'sweep.json')) or {}
  machines = index.get('machines', [])
  line = common.machine_line(common.machine_info())
  # A machine line ends with the date: keep one line per distinct machine (the latest date).
  key = line.rsplit(';', 1)[0]
  machines = [m for m in machines if m.rsplit(';', 1)[0] != key] + [line]
  common.write_json(os.path.join(workdir, 'sweep.json'), {
      'name': sweep.name, 'command': command or index.get('command'),
      'sweep': _jsonable(sweep.to_dict()), 'machines': machines,
      'cells': [{**c._asdict(), **states.get(c.name, {'status': 'pending'})} for c in cells]})


def run_sweep(sweep: ml_collections.ConfigDict, workdir: str, *, only: Optional[str] = None,
              retry_failed: bool = True, stale: str = 'error',
              progress: Optional[Callable[[Cell, dict], None]] = None,
              log: Callable[[str], None] = print, command: Optional[str] = None,
              isolate: bool = False) -> dict:
  """Runs every cell of `sweep` not yet done; returns {cell name: state} for the selected cells.

  Args:
    only: a regular expression; only cells whose name it matches (re.search) are run or listed.
    retry_failed: run cells that failed in an earlier attempt again (else keep their error).
    stale: what to do with a done cell whose config.json differs from today's config (see module
      docstring): 'error' | 'rerun' | 'keep'.
    progress: called as progress(cell, metrics_line) after every round of every cell run now.
    log: where the progress lines go.
    command: the command that runs this sweep (recorded in sweep.json for the report).
    isolate: run each cell in its own Python process (`run_cell_isolated`); `progress` is then not
      called (the cell's progress lines still reach `log`).
  """
  if stale not in STALE_POLICIES:
    raise ValueError(f'stale={stale!r} is invalid; allowed: {", ".join(STALE_POLICIES)}')
  from fedjax_intrinsic import workdir as workdir_lib
  all_cells = expand(sweep)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.Lock(workdir):     # one sweep at a time on a workdir (a second: WorkdirBusy)
    return _run_sweep_locked(sweep, workdir, all_cells, only, retry_failed, stale, progress, log,
                             command, isolate)


def _run_sweep_locked(sweep, workdir, all_cells, only, retry_failed, stale, progress, log,
                      command, isolate) -> dict:
  from fedjax_intrinsic import algorithms
  cells = [c for c in all_cells if only is None or re.search(only, c.name)]
  states = {c.name: cell_state(workdir, c) for c in cells}
  # sweep.json always lists EVERY cell of the sweep (the report reads it): the ones `only` leaves
  # out keep the state they have on disk.
  others = {c.name: cell_state(workdir, c) for c in all_cells if c.name not in states}
  write_index = lambda: _write_index(sweep, workdir, all_cells, {**others, **states}, command)
  for c in cells:
    if c.method not in algorithms.METHODS:
      states[c.name] = {'status': 'skipped', 'error': f'method {c.method!r} is not registered in '
                        'fedjax_intrinsic.algorithms.METHODS (yet)'}
    elif states[c.name]['status'] in DONE and _check_stale(sweep, c, workdir, stale):
      states[c.name] = {'status': 'pending'}
  todo = [c for c in cells if states[c.name]['status'] == 'pending'
          or (retry_failed and states[c.name]['status'] == 'failed')]
  done = sum(states[c.name]['status'] in DONE for c in cells)
  log(f'sweep {sweep.name}: {len(cells)} cells, {done} done, {len(todo)} to run, '
      f'workdir {workdir}')
  for c in cells:
    if states[c.name]['status'] == 'skipped':
      log(f'  skip {c.name}: {states[c.name]["error"]}')
  write_index()
  for i, c in enumerate(todo):
    prefix = f'[{done + 1}/{len(cells)}] {c.name}:'
    log(f'{prefix} starting')
    hook = None if progress is None else (lambda line, c=c: progress(c, line))
    try:
      if isolate:
        states[c.name] = run_cell_isolated(sweep, c, workdir, log=log, prefix=prefix)
      else:
        states[c.name] = run_cell(sweep, c, workdir, progress=hook, log=log, prefix=prefix)
    except BaseException:
      log(f'{prefix} interrupted; run the same command again to resume from this cell')
      raise
    done += states[c.name]['status'] in DONE
    write_index()
  counts = {}
  for s in states.values():
    counts[s['status']] = counts.get(s['status'], 0) + 1
  log(f'sweep {sweep.name}: ' + ', '.join(f'{v} {k}' for k, v in sorted(counts.items())))
  return states


def default_workdir(sweep: ml_collections.ConfigDict) -> str:
  return os.path.join(common.RESULTS_DIR, sweep.name)


def check_cells(sweep: ml_collections.ConfigDict, cells: Sequence[Cell]) -> None:
  """Every cell's config through `preflight.check` (nothing loaded or compiled) before any cell
  runs; the first bad one raises ConfigError naming the cell and the field."""
  from fedjax_intrinsic import algorithms, config as config_lib, preflight
  for c in cells:
    if c.method not in algorithms.METHODS:
      continue      # run_sweep skips it with a message
    try:
      preflight.check(cell_config(sweep, c))
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f'cell {c.name}: {e}') from None


def exit_code(states: dict) -> int:
  """1 when a cell failed (an exception: error.json), else 0; diverged cells are results."""
  return 1 if any(s['status'] == 'failed' for s in states.values()) else 0


def main(argv):
  from absl import flags
  from fedjax_intrinsic import cli, config as config_lib
  cli.quiet_logs()
  f = flags.FLAGS
  sweep = cli.config()
  log = lambda s: print(s, file=sys.stderr, flush=True)
  try:
    all_cells = expand(sweep)
    workdir = f.workdir or default_workdir(sweep)
    if f.workdir is not None or not os.path.exists(workdir):
      from fedjax_intrinsic import workdir as workdir_lib
      workdir_lib.check_writable(workdir)
    if f.pack:
      counts = results_store.pack(workdir)
      print(f'{workdir}: ' + ', '.join(f'{v} {k}' for k, v in counts.items()))
      return
    cells = [c for c in all_cells if f.only is None or re.search(f.only, c.name)]
    if f.list:
      for c in cells:
        status = cell_state(workdir, c)['status']
        diff = stale_diff(sweep, c, workdir) if status in DONE else []
        stale = f'  (stale, run with another config: {"; ".join(diff[:4])})' if diff else ''
        print(f'{c.name:60s} {status}{stale}')
      return
    check_cells(sweep, cells)
    if f.dry_run:
      for c in cells:
        print(f'{c.name:60s} {cell_state(workdir, c)["status"]}  (config valid)')
      return
  except (config_lib.ConfigError, ValueError) as e:   # the sweep file's fields, or a cell's
    cli.refuse(e)
  command = (f'python -m benchmarks.sweep --config={cli.spec()}'
             + common.workdir_flag(f.workdir, sweep.name))
  try:
    states = run_sweep(sweep, workdir, only=f.only, retry_failed=f.retry_failed, stale=f.stale,
                       log=log, command=command, isolate=f.isolate)
  except ValueError as e:    # a done cell whose config changed (--stale)
    cli.refuse(e)
  failed = [n for n, s in states.items() if s['status'] == 'failed']
  if failed:
    log(f'sweep {sweep.name}: {len(failed)} of {len(states)} cells failed ({", ".join(failed[:5])}'
        f'{", ..." if len(failed) > 5 else ""}); their error.json hold the tracebacks')
  sys.exit(exit_code(states))


if __name__ == '__main__':
  from absl import app, flags
  from fedjax_intrinsic import cli
  flags.DEFINE_string('config', None, 'Sweep config file (configs/sweeps/*.py); any field is then '
                      'set with --config.a.b=value.')
  flags.DEFINE_string('workdir', None, 'Sweep directory (default benchmarks/results/<name>).')
  flags.DEFINE_string('only', None, 'Regular expression: run only the cells whose name matches.')
  flags.DEFINE_bool('retry_failed', True, 'Run cells that failed before again.')
  flags.DEFINE_enum('stale', 'error', STALE_POLICIES, 'A done cell whose config changed: stop '
                    '(error), recompute it (rerun) or keep its result (keep).')
  flags.DEFINE_bool('isolate', True, 'Run each cell in its own Python process (no memory carried '
                    'between cells; a cell killed for memory is recorded as failed).')
  flags.DEFINE_bool('list', False, 'List the cells and their status (a done cell run with '
                    'another config is marked stale, with the fields), run nothing.')
  flags.DEFINE_bool('dry_run', False, 'Build and validate every cell config, run nothing.')
  flags.DEFINE_bool('pack', False, 'Pack the cell directories into cells.jsonl, curves.jsonl and '
                    'shared.json (what is committed), run nothing.')
  app.run(main, flags_parser=cli.flags_parser('config'))
