"""The intrinsic dimension of a task: the smallest d at which intrinsic training reaches a fraction
of the uncompressed metric (d_int90 of Li et al. 2018 for fraction 0.9), and what it implies.

  python -m benchmarks.intrinsic_dim --config=configs/digits_cnn.py:model=mlp \
      --name=digits_mlp_intrinsic_dim --override=eval_every=50          # the committed result
  python -m benchmarks.intrinsic_dim --config=configs/pysource_lm.py --metric=test_perplexity \
      --d_start=256 --seeds=0

Procedure. The baseline is `method=uncompressed` with the same protocol and seeds; the target is
`fraction` × its metric (for a metric where lower is better, such as perplexity: its metric /
`fraction`). Each probe trains `--method` (default intrinsic_static) at one d, once per seed, and
takes the mean metric over the seeds; a diverged or failed seed counts as not reaching the target.
d doubles from `d_start` until a probe reaches the target (or d_max, default D, is reached without
it), then bisection between the last d that missed and the first that reached narrows the interval
until its width is at most `resolution` × its upper end (and at least 1). d_int is that upper end.
Bisection assumes the metric grows with d; noise between seeds can break that, so more seeds make
the answer steadier. Every probe is a cell of a sweep (benchmarks.sweep) in the workdir, so an
interrupted search started again recomputes nothing it already has.

Implications: the three intrinsic methods are run once more at d_int (same seeds), giving measured
upload/download/overall compression under the task's own protocol (clients return, so they
download only their catch-up), and the compression of docs/paper.md §4's table for a client that is
fresh every round (E rounds, K subspaces): upload D/d for all three; download D/d (static),
D·E / Σ_e min(d·min(e−1, K), D) (K-subspace), D·E / Σ_e min(d·(e−1), D) (time-varying).

Chance: when the metric is test accuracy and the data source records the test split's majority
rate (summary.json data.test_majority_rate), a target at or below it is reached by a constant
prediction; the search then reports d_int as undefined (degenerate) and skips the implications.

Writes into the workdir: the cells, sweep.json, intrinsic_dim.json, intrinsic_dim.md and
metric_vs_d.png (metric against d, log scale, with the baseline, the target and d_int), and packs
the cells (benchmarks.results_store: what is committed). `python -m benchmarks.report
--workdir=<workdir>` rewrites the .md and .png from intrinsic_dim.json.
"""
import math
import os
import re
import statistics
import sys
from typing import Callable, NamedTuple, Optional, Sequence

import ml_collections

from benchmarks import common
from benchmarks import report
from benchmarks import results_store
from benchmarks import sweep as sweep_lib
from fedjax_intrinsic import fields

INTRINSIC = ('intrinsic_static', 'intrinsic_k_subspace', 'intrinsic_time_varying')


class Search(NamedTuple):
  """The outcome of `search`.

  d_int: the smallest d found to reach the target (None when even d_max missed it).
  lo: the largest d found to miss it (None when d_start already reached it: d_int <= d_start).
  probes: (d, value) in the order they were run.
  """
  d_int: Optional[int]
  lo: Optional[int]
  probes: list


def search(probe: Callable[[int], float], reached: Callable[[float], bool], d_start: int,
           d_max: int, resolution: float) -> Search:
  """Doubling from d_start (capped at d_max), then bisection to width <= max(1, resolution·hi)."""
  if not fields.is_int(d_start, 1):
    raise ValueError(f'd_start={d_start!r} is invalid; allowed: a positive integer')
  if not fields.is_int(d_max, d_start):
    raise ValueError(f'd_max={d_max!r} is invalid; allowed: an integer >= d_start={d_start}')
  if not 0 <= resolution < 1:
    raise ValueError(f'resolution={resolution!r} is invalid; allowed: 0 <= resolution < 1')
  probes = []

  def run(d):
    value = probe(d)
    probes.append((d, value))
    return reached(value)

  d, lo = d_start, None
  while not run(d):
    lo = d
    if d >= d_max:
      return Search(None, lo, probes)
    d = min(2 * d, d_max)
  hi = d
  if lo is None:
    return Search(hi, None, probes)
  while hi - lo > max(1, math.floor(resolution * hi)):
    mid = (lo + hi) // 2
    if run(mid):
      hi = mid
    else:
      lo = mid
  return Search(hi, lo, probes)


def formula_compression(num_params: int, d: int, rounds: int, num_subspaces: int) -> dict:
  """docs/paper.md §4's ratios for a client fresh every round: {method: {upload, download, overall}}."""
  D, E = num_params, rounds
  dense = D * E
  downs = {
      'intrinsic_static': d * E,
      'intrinsic_k_subspace': sum(min(d * min(e - 1, num_subspaces), D) for e in range(1, E + 1)),
      'intrinsic_time_varying': sum(min(d * (e - 1), D) for e in range(1, E + 1)),
  }
  ratio = lambda ref, ours: ref / ours if ours else float('inf')
  return {m: {'upload': ratio(dense, d * E), 'download': ratio(dense, down),
              'overall': ratio(2 * dense, d * E + down)} for m, down in downs.items()}


def _entry(method: str, d: Optional[int] = None) -> str:
  return f'method={method}' + (f',d={d}' if d is not None else '')


class Finder:
  """Runs the probes as cells of one growing sweep in `workdir` (resumable)."""

  def __init__(self, experiment: str, experiment_arg: str, workdir: str, name: str, metric: str,
               seeds: Sequence[int], overrides: Sequence[str], log: Callable[[str], None] = print,
               isolate: bool = False):
    self.workdir = workdir
    self.log = log
    self.isolate = isolate
    self.sweep = ml_collections.ConfigDict({
        'name': name, 'experiment': experiment, 'experiment_arg': experiment_arg, 'grid': (),
        'seeds': tuple(seeds), 'overrides': tuple(overrides), 'metric': metric, 'reference': ''})
    self.command = None

  def value(self, entry: str) -> tuple[float, list, dict]:
    """(mean metric over seeds (nan if any seed did not finish), per-seed values, a summary)."""
    if entry not in self.sweep.grid:
      self.sweep.grid = tuple(self.sweep.grid) + (entry,)
    only = '^' + re.escape(sweep_lib.expand(_one(self.sweep, entry))[0].name.rsplit('__seed=', 1)[0]) \
        + '__seed='
    states = sweep_lib.run_sweep(self.sweep, self.workdir, only=only, log=self.log,
                                 command=self.command, isolate=self.isolate)
    values, summary = [], None
    for cell in sweep_lib.expand(_one(self.sweep, entry)):
      if states[cell.name]['status'] != 'finished':
        values.append(float('nan'))
        continue
      summary = results_store.read_cell(self.workdir, cell.name, 'summary')
      values.append(float(summary['final'][self.sweep.metric]))
    mean = statistics.fmean(values) if all(math.isfinite(v) for v in values) else float('nan')
    return mean, values, summary


def _one(sweep, entry):
  one = ml_collections.ConfigDict(sweep.to_dict())
  one.grid = (entry,)
  return one


def find(experiment: str, experiment_arg: str, workdir: str, *, name: str, metric: str,
         fraction: float, method: str = 'intrinsic_static', d_start: int = 16,
         d_max: Optional[int] = None, resolution: float = 0.05, seeds: Sequence[int] = (0,),
         overrides: Sequence[str] = (), log: Callable[[str], None] = print,
         command: Optional[str] = None, isolate: bool = False) -> dict:
  """Runs (or resumes) the search and writes intrinsic_dim.{json,md} and metric_vs_d.png.

  isolate: run each probe's cells in their own Python process (benchmarks.sweep.run_cell_isolated).
  """
  if not 0 < fraction <= 1:
    raise ValueError(f'fraction={fraction!r} is invalid; allowed: 0 < fraction <= 1')
  if method not in INTRINSIC:
    raise ValueError(f'method={method!r} is invalid; allowed: {", ".join(INTRINSIC)}')
  finder = Finder(experiment, experiment_arg, workdir, name, metric, seeds, overrides, log, isolate)
  finder.command = command
  base, base_values, base_summary = finder.value(_entry('uncompressed'))
  if not math.isfinite(base):
    raise ValueError(f'the uncompressed baseline did not finish for every seed ({base_values}); '
                     f'see the cells in {workdir}')
  num_params = int(base_summary['num_params'])
  lower = report.lower_is_better(metric)
  target = base / fraction if lower else base * fraction
  majority = majority_rate(base_summary, metric)
  trivial = degenerate({'majority_rate': majority, 'lower_is_better': lower, 'target': target})
  if trivial:
    log(f'the target {metric} {target:.4f} is at or below the majority rate {majority:.4f}: a '
        'constant prediction reaches it, so d_int will be degenerate')
  reached = lambda v: math.isfinite(v) and (v <= target if lower else v >= target)
  per_d = {}

  def probe(d):
    per_d[d] = finder.value(_entry(method, d))
    log(f'probe d={d}: {metric} {per_d[d][0]:.4f} (target {target:.4f}): '
        f'{"reached" if reached(per_d[d][0]) else "missed"}')
    return per_d[d][0]

  result = search(probe, reached, d_start, d_max or num_params, resolution)
  implied = {}
  if result.d_int is not None and not trivial:
    for m in INTRINSIC:
      value, values, summary = finder.value(_entry(m, result.d_int))
      final = summary['final'] if summary is not None else {}
      implied[m] = {'metric': value, 'values': values,
                    'upload': final.get('upload_compression'),
                    'download': final.get('download_compression'),
                    'overall': final.get('overall_compression')}
  config = sweep_lib.cell_config(finder.sweep, sweep_lib.expand(
      _one(finder.sweep, _entry('intrinsic_k_subspace', result.d_int or d_start)))[0])
  formula = (formula_compression(num_params, result.d_int, config.rounds,
                                 config.method.num_subspaces) if result.d_int else {})
  out = {
      'name': name, 'experiment': experiment, 'experiment_arg': experiment_arg,
      'overrides': list(overrides), 'seeds': list(seeds), 'metric': metric,
      'lower_is_better': lower, 'fraction': fraction, 'method': method,
      'num_params': num_params, 'rounds': config.rounds,
      'num_subspaces': config.method.num_subspaces, 'baseline': base,
      'baseline_values': base_values, 'target': target, 'majority_rate': majority,
      'd_start': d_start,
      'd_max': d_max or num_params, 'resolution': resolution, 'd_int': result.d_int,
      'd_missed': result.lo,
      'probes': [{'d': d, 'metric': per_d[d][0], 'values': per_d[d][1]} for d, _ in result.probes],
      'measured_at_d_int': implied, 'formula_at_d_int': formula,
      'command': command, 'machines': (results_store.read_json(os.path.join(workdir, 'sweep.json'))
                                       or {}).get('machines', [])}
  common.write_json(os.path.join(workdir, 'intrinsic_dim.json'), out)
  write_outputs(workdir)
  return out


def majority_rate(summary: dict, metric: str) -> Optional[float]:
  """The test split's majority-class rate (summary.json data.test_majority_rate, which data
  sources with labels record) when `metric` is test accuracy; None otherwise."""
  if metric != 'test_accuracy':
    return None
  return (summary.get('data') or {}).get('test_majority_rate')


def degenerate(out: dict) -> bool:
  """Whether the target is at or below the majority rate: a constant prediction reaches it, so
  the d found measures nothing about the task."""
  majority = out.get('majority_rate')
  return majority is not None and not out['lower_is_better'] and out['target'] <= majority


def write_outputs(workdir: str) -> list[str]:
  """Packs the cell directories (when there are any), then writes intrinsic_dim.md and
  metric_vs_d.png from intrinsic_dim.json; returns the names of the files written."""
  out = results_store.read_json(os.path.join(workdir, 'intrinsic_dim.json'))
  if out is None:
    raise ValueError(f'workdir={workdir!r} is invalid; allowed: a directory with '
                     'intrinsic_dim.json (written by python -m benchmarks.intrinsic_dim)')
  # JSON keeps a seed that did not finish as null: its metric is nan again here.
  nan = lambda v: float('nan') if v is None else v
  for p in out['probes'] + list(out['measured_at_d_int'].values()):
    p['metric'], p['values'] = nan(p['metric']), [nan(v) for v in p['values']]
  written = []
  if results_store.cell_dirs(workdir):
    results_store.pack(workdir)
    written += [p for p in results_store.PACKED if os.path.exists(os.path.join(workdir, p))]
  with open(os.path.join(workdir, 'intrinsic_dim.md'), 'w') as f:
    f.write(markdown(out, workdir))
  plot(out, os.path.join(workdir, 'metric_vs_d.png'))
  return written + ['intrinsic_dim.md', 'metric_vs_d.png']


def _fmt(v: Optional[float], digits: str = '.3g') -> str:
  if v is None:
    return '-'
  if not math.isfinite(v):
    return str(v)
  return f'{v:.0f}' if abs(v) >= 1000 else format(v, digits)


def markdown(out: dict, workdir: str) -> str:
  """The result as a markdown section (table of implications, probes, plot)."""
  m, frac = out['metric'], out['fraction']
  rel = os.path.relpath(os.path.abspath(workdir), common.REPO_ROOT)
  arg = f':{out["experiment_arg"]}' if out['experiment_arg'] else ''
  lines = [f'### Intrinsic dimension: `{out["name"]}`', '']
  if degenerate(out):
    lines.append(
        f'**d_int{round(frac * 100)} is undefined here (degenerate)**: the target '
        f'{_fmt(out["target"], ".4f")} = {frac:g} × the uncompressed {_fmt(out["baseline"], ".4f")} '
        f'`{m}` (mean over seeds {", ".join(map(str, out["seeds"]))}) is at or below the test '
        f'split\'s majority rate {_fmt(out["majority_rate"], ".4f")}, which a constant prediction '
        'reaches; the d at which the search stopped '
        f'({"none" if out["d_int"] is None else format(out["d_int"], ",")}) is not an intrinsic '
        'dimension. It needs a protocol in which the uncompressed baseline learns.')
  elif out['d_int'] is None:
    lines.append(f'`{out["method"]}` did not reach {frac:.0%} of the uncompressed `{m}` up to '
                 f'd = {out["d_max"]:,} (D = {out["num_params"]:,}).')
  else:
    bound = (f' (d_start = {out["d_start"]} already reached it: an upper bound)'
             if out['d_missed'] is None else f' (d = {out["d_missed"]:,} missed it)')
    lines.append(
        f'**d_int{round(frac * 100)} = {out["d_int"]:,}** of D = {out["num_params"]:,} parameters'
        f'{bound}: `{out["method"]}` reaches {_fmt(out["target"], ".4f")} = '
        f'{"1/" if out["lower_is_better"] else ""}{frac:g} × the uncompressed '
        f'{_fmt(out["baseline"], ".4f")} `{m}` (mean over seeds {", ".join(map(str, out["seeds"]))}).')
  lines += ['', f'Experiment `{out["experiment"]}{arg}`, overrides '
            f'{", ".join(f"`{o}`" for o in out["overrides"]) or "none"}; doubling from d = '
            f'{out["d_start"]} then bisection to {out["resolution"]:.0%} of d. Machine: '
            f'{"; ".join(out["machines"]) or "not recorded"}.', '']
  if out['d_int'] is not None and not degenerate(out):
    headers = ['method at d_int', f'{m} (mean)', 'upload ×', 'download ×', 'overall ×',
               'fresh-client upload ×', 'fresh-client download ×', 'fresh-client overall ×']
    rows = []
    for meth in INTRINSIC:
      meas = out['measured_at_d_int'].get(meth, {})
      form = out['formula_at_d_int'].get(meth, {})
      rows.append([f'`{meth}`', _fmt(meas.get('metric'), '.4f'), _fmt(meas.get('upload')),
                   _fmt(meas.get('download')), _fmt(meas.get('overall')), _fmt(form.get('upload')),
                   _fmt(form.get('download')), _fmt(form.get('overall'))])
    lines += [common.markdown_table(headers, rows, align='lrrrrrrr'), '',
              'Measured: this protocol\'s cohorts (returning clients download only their catch-up). '
              f'Fresh client: docs/paper.md §4\'s table, a new client every round, E = {out["rounds"]} '
              f'rounds, K = {out["num_subspaces"]}.', '']
  probes = sorted(out['probes'], key=lambda p: p['d'])
  lines += ['Probes: ' + ', '.join(f'd={p["d"]}: {_fmt(p["metric"], ".4f")}' for p in probes) + '.',
            '', f'Regenerate: `{out["command"] or "python -m benchmarks.intrinsic_dim ..."}` '
            f'(resumes from `{rel}`).', '', f'![{m} against d](metric_vs_d.png)', '']
  return '\n'.join(lines)


def plot(out: dict, path: str) -> None:
  """The metric of every probe against d (log2 axis), with baseline, target and d_int."""
  plt = report._pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
  probes = sorted(out['probes'], key=lambda p: p['d'])
  for p in probes:
    ax.scatter([p['d']] * len(p['values']), p['values'], color='0.7', s=12, zorder=2)
  ok = [p for p in probes if math.isfinite(p['metric'])]
  ax.plot([p['d'] for p in ok], [p['metric'] for p in ok], marker='o', color='C0', zorder=3,
          label=f'{out["method"]} (mean over seeds; grey: each seed)')
  ax.axhline(out['baseline'], color='k', linestyle='--', linewidth=1, label='uncompressed')
  ax.axhline(out['target'], color='C3', linestyle=':', linewidth=1,
             label=f'target ({out["fraction"]:g} of uncompressed)')
  if out.get('majority_rate') is not None:
    ax.axhline(out['majority_rate'], color='0.5', linestyle='-.', linewidth=1,
               label='majority rate (test split)')
  if out['d_int'] is not None and not degenerate(out):
    ax.axvline(out['d_int'], color='C2', linewidth=1, label=f'd_int = {out["d_int"]:,}')
  ax.set_xscale('log', base=2)
  ax.set_xlabel(f'd (subspace dimension; D = {out["num_params"]:,})')
  ax.set_ylabel(out['metric'])
  if out['lower_is_better']:
    ax.set_yscale('log')
  ax.set_title(f'{out["name"]}: {out["metric"]} against d')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  report.save_png(fig, path)
  plt.close(fig)


def check_inputs(experiment: str, arg: str, workdir: str, *, name: str, metric: str,
                 fraction: float, method: str, d_start: int, d_max: int, resolution: float,
                 seeds: str, overrides: Sequence[str]) -> tuple[int, ...]:
  """Every flag and the cells they imply (the baseline, the first and the largest probe) through
  `preflight.check` before anything runs; returns the seeds. Raises ConfigError (one line)."""
  from fedjax_intrinsic import config as config_lib, workdir as workdir_lib
  bad = lambda flag, value, allowed: config_lib.ConfigError(
      f'--{flag}={value!r} is invalid; allowed: {allowed}')
  try:
    parsed = tuple(int(x, 10) for x in seeds.split(','))
  except ValueError:
    raise bad('seeds', seeds, 'comma-separated integers such as 0,1,2') from None
  if len(set(parsed)) != len(parsed) or any(not 0 <= x <= config_lib.MAX_SEED for x in parsed):
    raise bad('seeds', seeds, f'distinct integers 0 .. {config_lib.MAX_SEED}')
  if not math.isfinite(fraction) or not 0 < fraction <= 1:
    raise bad('fraction', fraction, '0 < fraction <= 1')
  if not math.isfinite(resolution) or not 0 <= resolution < 1:
    raise bad('resolution', resolution, '0 <= resolution < 1')
  if d_start < 1:
    raise bad('d_start', d_start, 'a positive integer')
  if d_max and d_max < d_start:
    raise bad('d_max', d_max, f'0 (= D) or an integer >= --d_start={d_start}')
  if not re.match(r'^(test|val)_\w+$', metric):
    raise bad('metric', metric, 'a test_* or val_* metric, such as test_accuracy or '
              'test_perplexity')
  if not sweep_lib._NAME.match(name):
    raise bad('name', name, 'letters, digits and _.+=- (a directory name)')
  for item in overrides:
    if '=' not in item:
      raise bad('override', item, '"field.path=value"')
  workdir_lib.check_writable(workdir)
  finder = Finder(experiment, arg, workdir, name, metric, parsed, overrides)
  entries = [_entry('uncompressed'), _entry(method, d_start)] + ([_entry(method, d_max)]
                                                                 if d_max else [])
  sweep_lib.check_cells(finder.sweep, sweep_lib.expand(
      ml_collections.ConfigDict({**finder.sweep.to_dict(), 'grid': tuple(entries)})))
  return parsed


def main(argv):
  from absl import flags
  from fedjax_intrinsic import cli, config as config_lib
  cli.quiet_logs()
  f = flags.FLAGS
  experiment, _, arg = f.config.partition(':')
  workdir = f.workdir or os.path.join(common.RESULTS_DIR, f.name)
  args = sys.argv[1:]
  kept = [a for i, a in enumerate(args) if not a.startswith('--workdir=') and a != '--workdir'
          and not (i > 0 and args[i - 1] == '--workdir')]
  command = (' '.join(['python -m benchmarks.intrinsic_dim'] + kept)
             + common.workdir_flag(f.workdir, f.name))
  try:
    seeds = check_inputs(experiment, arg, workdir, name=f.name, metric=f.metric,
                         fraction=f.fraction, method=f.method, d_start=f.d_start, d_max=f.d_max,
                         resolution=f.resolution, seeds=f.seeds, overrides=tuple(f.override or ()))
  except (config_lib.ConfigError, ValueError) as e:
    cli.refuse(e)
  try:
    out = find(experiment, arg, workdir, name=f.name, metric=f.metric, fraction=f.fraction,
               method=f.method, d_start=f.d_start, d_max=f.d_max or None,
               resolution=f.resolution, seeds=seeds, overrides=tuple(f.override or ()),
               log=lambda s: print(s, file=sys.stderr, flush=True), command=command,
               isolate=f.isolate)
  except config_lib.ConfigError as e:
    cli.refuse(e)
  print(markdown(out, workdir))


if __name__ == '__main__':
  from absl import app, flags
  from fedjax_intrinsic import cli
  flags.DEFINE_string('config', 'configs/digits_cnn.py:model=mlp',
                      'Experiment config file and its argument (path:key=value,...).')
  flags.DEFINE_string('name', 'digits_mlp_intrinsic_dim', 'Result name (workdir default: '
                      'benchmarks/results/<name>).')
  flags.DEFINE_string('workdir', None, 'Where the probes and the result go.')
  flags.DEFINE_string('metric', 'test_accuracy', 'Summary metric (final round).')
  flags.DEFINE_float('fraction', 0.9, 'Fraction of the uncompressed metric to reach (0.9: d_int90).')
  flags.DEFINE_enum('method', 'intrinsic_static', INTRINSIC, 'The intrinsic method probed.')
  flags.DEFINE_integer('d_start', 16, 'First d of the doubling.')
  flags.DEFINE_integer('d_max', 0, 'Largest d tried (0: D).')
  flags.DEFINE_float('resolution', 0.05, 'Stop bisecting at interval width <= resolution x d.')
  flags.DEFINE_string('seeds', '0,1,2', 'Comma-separated seeds; a probe takes their mean.')
  flags.DEFINE_bool('isolate', True, 'Run each cell in its own Python process (benchmarks.sweep '
                    '--isolate).')
  flags.DEFINE_multi_string('override', None, 'field.path=value set on every cell (repeatable).')
  app.run(main, flags_parser=cli.flags_parser(None))
