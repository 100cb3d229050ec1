"""Tables and plots of a sweep's results (benchmarks.sweep), in the paper's layout.

  python -m benchmarks.report --workdir=benchmarks/results/digits_mlp
  python -m benchmarks.report --workdir=benchmarks/results/digits_mlp \
      --workdir=benchmarks/results/pysource_lm --readme      # also rewrites README's sweeps section
  python -m benchmarks.report --workdir=benchmarks/results/tweets_minilm \
      --workdir=benchmarks/results/digits_mlp --tolerance_readme   # README.md: within 1 / 5 points

Reads `<workdir>/sweep.json` and every cell's files (from its directory, else from the packed
cells.jsonl / curves.jsonl: benchmarks.results_store), packs the cell directories when there are
any, and writes into the workdir:
- `report.md`: one row per grid entry (method, budget): upload ×, download ×, overall × (relative
  to uncompressed training on the same cohorts, mean over seeds), the metric at the last round
  (mean ± sample standard deviation over the seeds that finished), the reference number and its
  source where `benchmarks/reference_numbers.json` has one for the cell, the seeds (with diverged,
  failed, skipped or pending ones named) and the mean wall time of a cell; when the cells scored
  θ0 (config.eval_initial), a line with the metric before round 1;
- `report.json`: the same rows, machine-readable;
- `pareto.png`: the metric against overall compression (log x), one marker series per method
  (and variant: a grid entry's fields other than the budget fields d, num_subspaces, k, rows,
  cols, rank, e.g. fetchsgd's masking);
- `metric_vs_rounds.png`, `metric_vs_bytes.png`: the metric at evaluation rounds against the round
  and against cumulative bytes (both ways, all clients; log x), one panel per method, one line per
  budget (mean over seeds), uncompressed in grey in every panel.
A workdir of benchmarks.intrinsic_dim gets its intrinsic_dim.md and metric_vs_d.png rewritten from
its intrinsic_dim.json instead. PNGs are written with at most 256 colours.
"""
import math
import os
import re
import statistics
from typing import Optional, Sequence

from benchmarks import common
from benchmarks import results_store
from fedjax_intrinsic import fields

REFERENCES = os.path.join(common.BENCH_DIR, 'reference_numbers.json')
SOURCE_FIELDS = ('paper', 'table', 'row', 'column')
TOP_README = os.path.join(common.REPO_ROOT, 'README.md')
PLOTS = ('pareto.png', 'metric_vs_rounds.png', 'metric_vs_bytes.png')
# Grid-entry fields that set a budget (docs/paper.md §5's sweep axes); other fields name a variant.
BUDGET_FIELDS = ('d', 'num_subspaces', 'k', 'rows', 'cols', 'rank')


def lower_is_better(metric: str) -> bool:
  """Perplexities and losses fall as a model improves; accuracies rise."""
  return 'perplexity' in metric or metric.endswith('loss')


def load_sweep(workdir: str) -> tuple[dict, list[dict]]:
  """(sweep.json, one record per cell: its definition plus status, summary, error, workdir).

  The status comes from the cell's own files (results_store.read_cell: its directory, else its
  packed line): 'finished' | 'diverged' (summary.json), 'failed' (error.json), 'skipped' (method
  not registered when the sweep ran), else 'pending'.
  """
  index = results_store.read_json(os.path.join(workdir, 'sweep.json'))
  if index is None:
    raise ValueError(f'workdir={workdir!r} is invalid; allowed: a sweep directory with '
                     'sweep.json (written by python -m benchmarks.sweep)')
  records = []
  for cell in index['cells']:
    summary = results_store.read_cell(workdir, cell['name'], 'summary')
    error = results_store.read_cell(workdir, cell['name'], 'error')
    rec = {k: cell[k] for k in ('name', 'method', 'budget', 'seed', 'entry')}
    rec.update(summary=None, error=None, workdir=workdir)
    if summary is not None and summary.get('status') in ('finished', 'diverged'):
      rec.update(status=summary['status'], summary=summary)
    elif error is not None:
      rec.update(status='failed', error=f'{error.get("type")}: {error.get("message")}')
    elif cell.get('status') == 'skipped':
      rec.update(status='skipped', error=cell.get('error'))
    else:
      rec.update(status='pending')
    records.append(rec)
  return index, records


def load_references(path: str = REFERENCES) -> list[dict]:
  """The entries of the reference-number file that carry a value (each checked for its source)."""
  data = results_store.read_json(path)
  if data is None or not isinstance(data.get('entries'), list):
    raise ValueError(f'references={path!r} is invalid; allowed: a JSON file with an "entries" list')
  out = []
  for i, e in enumerate(data['entries']):
    if e.get('value') is None:
      continue
    for field in ('experiment', 'method', 'metric'):
      if not isinstance(e.get(field), str) or not e[field]:
        raise ValueError(f'{path}: entries[{i}].{field}={e.get(field)!r} is invalid; allowed: a '
                         'non-empty string')
    if not isinstance(e.get('budget', {}), dict):
      raise ValueError(f'{path}: entries[{i}].budget={e.get("budget")!r} is invalid; allowed: an '
                       'object of budget fields ({} for none)')
    if not fields.is_real(e['value']):
      raise ValueError(f'{path}: entries[{i}].value={e["value"]!r} is invalid; allowed: a number '
                       'or null')
    source = e.get('source') or {}
    for field in SOURCE_FIELDS:
      if not isinstance(source.get(field), str) or not source[field].strip():
        raise ValueError(f'{path}: entries[{i}].source.{field}={source.get(field)!r} is invalid; '
                         f'allowed: a non-empty string (every number names its {", ".join(SOURCE_FIELDS)})')
    out.append(e)
  return out


def find_reference(references: Sequence[dict], experiment: str, method: str, budget: dict,
                   metric: str) -> Optional[dict]:
  """The entry for this cell (budget compared field by field, numbers by value), or None."""
  for e in references:
    if (e['experiment'] == experiment and e['method'] == method and e['metric'] == metric
        and _same_budget(e.get('budget', {}), budget)):
      return e
  return None


def _same_budget(a: dict, b: dict) -> bool:
  if set(a) != set(b):
    return False
  for k in a:
    x, y = a[k], b[k]
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
      if float(x) != float(y):
        return False
    elif str(x) != str(y):
      return False
  return True


def _mean_std(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
  if not values:
    return None, None
  mean = statistics.fmean(values)
  return mean, (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(index: dict, records: Sequence[dict], references: Sequence[dict] = ()) -> list[dict]:
  """One row per grid entry, in grid order (see the module docstring for the columns)."""
  metric = index['sweep']['metric']
  experiment = index['sweep'].get('reference', '')
  order = {e: i for i, e in enumerate(index['sweep']['grid'])}
  groups: dict[str, list[dict]] = {}
  for rec in records:
    groups.setdefault(rec['entry'], []).append(rec)
  rows = []
  for entry in sorted(groups, key=lambda e: order.get(e, len(order))):
    recs = sorted(groups[entry], key=lambda r: r['seed'])
    finished = [r for r in recs if r['status'] == 'finished']
    done = [r for r in recs if r['status'] in ('finished', 'diverged')]
    values = [r['summary']['final'][metric] for r in finished
              if r['summary']['final'].get(metric) is not None]   # null: non-finite (strict JSON)
    mean, std = _mean_std(values)
    ratios = {}
    for key in ('upload_compression', 'download_compression', 'overall_compression'):
      ratios[key] = _mean_std([r['summary']['final'][key] for r in finished
                               if r['summary']['final'].get(key) is not None])[0]
    wall = _mean_std([r['summary']['time_total_s'] for r in done])[0]
    initial = _mean_std([r['summary']['initial'][metric] for r in done
                         if (r['summary'].get('initial') or {}).get(metric) is not None])[0]
    notes = []
    for r in recs:
      if r['status'] == 'diverged':
        notes.append(f'seed {r["seed"]} diverged at round {r["summary"]["diverged_round"]}')
      elif r['status'] == 'failed':
        notes.append(f'seed {r["seed"]} failed ({r["error"]})')
      elif r['status'] in ('skipped', 'pending'):
        notes.append(f'seed {r["seed"]} {r["status"]}')
    ref = find_reference(references, experiment, recs[0]['method'], recs[0]['budget'], metric)
    rows.append({
        'method': recs[0]['method'], 'budget': recs[0]['budget'], 'entry': entry,
        'metric': metric, 'mean': mean, 'std': std, 'values': values,
        'seeds': [r['seed'] for r in finished], 'num_seeds': len(recs), **ratios,
        'wall_s_per_cell': wall, 'initial': initial, 'notes': notes,
        'reference': None if ref is None else ref['value'],
        'reference_source': None if ref is None else ', '.join(
            f'{f} {ref["source"][f]}' if f != 'paper' else ref['source'][f] for f in SOURCE_FIELDS),
        'skipped_reason': next((r['error'] for r in recs if r['status'] == 'skipped'), None)})
  return rows


def _fmt_value(metric: str, v: Optional[float]) -> str:
  if v is None or not math.isfinite(v):
    return '-' if v is None else str(v)
  if 'accuracy' in metric:
    return f'{v:.4f}'
  return f'{v:.2f}' if abs(v) >= 1 or v == 0 else f'{v:.3g}'


def _fmt_ratio(v: Optional[float]) -> str:
  if v is None:
    return '-'
  return f'{v:.0f}' if v >= 1000 else f'{v:.3g}'


def budget_text(budget: dict) -> str:
  return ', '.join(f'{k}={v}' for k, v in budget.items()) or '-'


def markdown_table(rows: Sequence[dict]) -> str:
  """The rows as a markdown table in the paper's layout, reference columns after the metric."""
  if not rows:
    raise ValueError('rows: need at least one row, got none')
  metric = rows[0]['metric']
  headers = ['method', 'budget', 'upload ×', 'download ×', 'overall ×',
             f'{metric} (mean ± std)', 'reference', 'reference source', 'seeds', 'wall s/cell']
  body = []
  for r in rows:
    value = _fmt_value(metric, r['mean'])
    if r['std'] is not None:
      value += f' ± {_fmt_value(metric, r["std"])}'
    seeds = f'{len(r["seeds"])}/{r["num_seeds"]}'
    if r['notes']:
      seeds += ': ' + '; '.join(r['notes'])
    body.append([f'`{r["method"]}`', budget_text(r['budget']), _fmt_ratio(r['upload_compression']),
                 _fmt_ratio(r['download_compression']), _fmt_ratio(r['overall_compression']),
                 value, _fmt_value(metric, r['reference']), r['reference_source'] or '-', seeds,
                 '-' if r['wall_s_per_cell'] is None else f'{r["wall_s_per_cell"]:.1f}'])
  return common.markdown_table(headers, [[c.replace('|', '\\|') for c in row] for row in body],
                               align='llrrrrrllr')


def within_tolerance(rows: Sequence[dict], tolerance: float) -> dict[str, Optional[dict]]:
  """Per method, the row of highest overall compression whose mean metric stays within
  `tolerance` of uncompressed training's mean in the same sweep; None when no row does.

  Within: for an accuracy, at most `tolerance` points (of 100) below; for a lower-is-better metric
  (loss, perplexity), at most `tolerance` percent above. A row counts only when every seed
  finished (none diverged, failed or pending). Raises ValueError when the sweep has no finished
  uncompressed row.
  """
  ref = next((r for r in rows if r['method'] == 'uncompressed' and r['mean'] is not None), None)
  if ref is None:
    raise ValueError('rows: need a finished uncompressed row as the reference, found none')
  metric = ref['metric']
  if lower_is_better(metric):
    ok = lambda v: v <= ref['mean'] * (1 + tolerance / 100)
  else:
    ok = lambda v: v >= ref['mean'] - tolerance / 100
  best: dict[str, Optional[dict]] = {}
  for r in rows:
    best.setdefault(r['method'], None)
    if (r['mean'] is None or r['overall_compression'] is None or not ok(r['mean'])
        or len(r.get('values', ())) < r.get('num_seeds', 0)):   # a seed diverged or is missing
      continue
    if best[r['method']] is None or r['overall_compression'] > best[r['method']]['overall_compression']:
      best[r['method']] = r
  return best


def tolerance_markdown(sweeps: Sequence[tuple[str, Sequence[dict]]],
                       tolerances: Sequence[float] = (1, 5)) -> str:
  """A table: per method (rows) and sweep x tolerance (columns), the highest overall compression
  within that tolerance of uncompressed (`within_tolerance`), with the budget that reaches it;
  '-' where no budget of the method does, 'not run' where the sweep has no finished cell of it.
  Budgets with a seed still pending (notes 'seed N pending') are not yet counted: where one of
  them compresses more than the cell's answer, the cell says how many ('k pending': no finished
  budget qualifies, k budgets are pending; '...; k pending': a finished one does, and k pending
  budgets compress more)."""
  tables = [(name, {t: within_tolerance(rows, t) for t in tolerances}, rows) for name, rows in sweeps]
  methods = list(dict.fromkeys(r['method'] for _, _, rows in tables for r in rows))
  headers = ['method']
  for name, _, rows in tables:
    unit = '%' if lower_is_better(rows[0]['metric']) else ' pt'
    headers += [f'{name}: within {t:g}{unit}' for t in tolerances]
  body = []
  for m in methods:
    row = [f'`{m}`']
    for _, best, rows in tables:
      ran = any(r['method'] == m and r['mean'] is not None for r in rows)
      pending = [r for r in rows if r['method'] == m
                 and any(str(n).endswith(' pending') for n in r.get('notes') or ())]
      for t in tolerances:
        b = best[t].get(m)
        more = sum(1 for r in pending if b is None or (r['overall_compression'] or 0)
                   > b['overall_compression'])
        if b is not None:
          row.append(f'{_fmt_ratio(b["overall_compression"])}x ({budget_text(b["budget"])})'
                     + (f'; {more} pending' if more else ''))
        elif more:
          row.append(f'{more} pending')
        else:
          row.append('-' if ran else 'not run')
    body.append(row)
  return common.markdown_table(headers, body, align='l' + 'r' * (len(headers) - 1))


# ---------------------------------------------------------------------------------------------
# Plots

def save_png(fig, path: str) -> None:
  """Saves `fig` as a PNG of at most 256 colours (a plot has few): about a third of RGBA's size."""
  import io
  from PIL import Image
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  buf.seek(0)
  with Image.open(buf) as image:
    image.convert('RGB').quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def _pyplot():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


_MARKERS = 'o^sDvP*X<>hp'


def _log_y(ax) -> None:
  """A log y axis labelled with plain numbers (perplexities: 10, 20, 30 rather than 2x10^1)."""
  from matplotlib import ticker
  ax.set_yscale('log')
  ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
  lo, hi = ax.get_ylim()
  every = lo > 0 and hi / lo < 4       # less than a factor of 4 shown: label every minor tick
  ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
      lambda v, _: f'{v:g}' if every or f'{v:e}'[0] in '235' else ''))


def _method_styles(methods: Sequence[str]) -> dict:
  plt = _pyplot()
  colors = plt.get_cmap('tab20').colors
  return {m: {'color': colors[i % len(colors)], 'marker': _MARKERS[i % len(_MARKERS)]}
          for i, m in enumerate(methods)}


def series(row: dict) -> str:
  """The method plus its non-budget options: 'fetchsgd (masking=buckets)', 'intrinsic_static'."""
  variant = {k: v for k, v in row['budget'].items() if k not in BUDGET_FIELDS}
  return row['method'] + (f' ({budget_text(variant)})' if variant else '')


def plot_pareto(rows: Sequence[dict], path: str, title: str = '') -> None:
  """The metric against overall compression (log x), one marker series per method (and variant).

  A grid entry where some seeds diverged or failed is drawn hollow (mean of the seeds that finished).
  """
  plt = _pyplot()
  metric = rows[0]['metric']
  names = list(dict.fromkeys(series(r) for r in rows))
  styles = _method_styles(names)
  fig, ax = plt.subplots(figsize=(12, 6), dpi=90)
  partial = False
  for name in names:
    pts = sorted((r['overall_compression'], r['mean'], r['std'] or 0.0,
                  len(r['seeds']) < r['num_seeds']) for r in rows
                 if series(r) == name and r['mean'] is not None and r['overall_compression'])
    if not pts:
      continue
    x, y, e, incomplete = zip(*pts)
    ax.errorbar(x, y, yerr=e, label=name, linestyle='-', linewidth=1, markersize=6, capsize=2,
                **styles[name])
    hollow = [(a, b) for a, b, bad in zip(x, y, incomplete) if bad]
    if hollow:
      partial = True
      ax.scatter(*zip(*hollow), s=60, facecolors='white', edgecolors=styles[name]['color'],
                 marker=styles[name]['marker'], zorder=5)
  if partial:
    ax.scatter([], [], s=60, facecolors='white', edgecolors='k', label='some seeds diverged/failed')
  ax.set_xscale('log')
  ax.set_xlabel('overall compression × (upload + download, vs uncompressed; log scale)')
  better = 'lower' if lower_is_better(metric) else 'higher'
  ax.set_ylabel(f'{metric} ({better} is better)')
  if lower_is_better(metric):
    _log_y(ax)
  ax.set_title(title or f'{metric} against compression')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))   # outside: no point hidden
  fig.tight_layout()
  save_png(fig, path)
  plt.close(fig)


def _curves(records: Sequence[dict], metric: str, x_key: str) -> dict:
  """entry -> (x: mean over seeds at each evaluation round, y: mean metric) of finished cells."""
  out = {}
  groups: dict[str, list[list[dict]]] = {}
  for rec in records:
    if rec['status'] != 'finished':
      continue
    lines = [l for l in results_store.read_metrics(rec['workdir'], rec['name'])
             if l.get(metric) is not None]
    if lines:
      groups.setdefault(rec['entry'], []).append(lines)
  for entry, runs in groups.items():
    n = min(len(r) for r in runs)
    xs = [statistics.fmean(float(r[i][x_key]) for r in runs) for i in range(n)]
    ys = [statistics.fmean(float(r[i][metric]) for r in runs) for i in range(n)]
    out[entry] = (xs, ys)
  return out


def plot_curves(rows: Sequence[dict], records: Sequence[dict], path: str, x_key: str,
                x_label: str, log_x: bool, x_scale: float = 1.0, title: str = '') -> None:
  """One panel per method, one line per budget: the metric at evaluation rounds against x_key."""
  plt = _pyplot()
  metric = rows[0]['metric']
  curves = _curves(records, metric, x_key)
  methods = list(dict.fromkeys(r['method'] for r in rows))
  ncol = min(4, len(methods))
  nrow = -(-len(methods) // ncol)
  fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), dpi=80, squeeze=False,
                           sharex=True, sharey=True)
  base = next((r['entry'] for r in rows if r['method'] == 'uncompressed'), None)
  for ax, m in zip(axes.flat, methods):
    if base in curves and m != 'uncompressed':
      x, y = curves[base]
      ax.plot([v / x_scale for v in x], y, color='0.6', linestyle='--', linewidth=1,
              label='uncompressed')
    for r in rows:
      if r['method'] == m and r['entry'] in curves:
        x, y = curves[r['entry']]
        ax.plot([v / x_scale for v in x], y, marker='.', linewidth=1.2,
                label=budget_text(r['budget']) if r['budget'] else m)
    ax.set_title(m, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc='best')
    if log_x:
      ax.set_xscale('log')
    if lower_is_better(metric):
      _log_y(ax)
  for ax in list(axes.flat)[len(methods):]:
    ax.axis('off')
  for ax in axes[-1]:
    ax.set_xlabel(x_label, fontsize=8)
  for ax in axes[:, 0]:
    ax.set_ylabel(metric, fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  save_png(fig, path)
  plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Report files

def report_markdown(index: dict, rows: Sequence[dict], workdir: str) -> str:
  sweep = index['sweep']
  name = index['name']
  rel = os.path.relpath(os.path.abspath(workdir), common.REPO_ROOT)
  command = index.get('command') or f'python -m benchmarks.sweep --config=<sweep config of {name}>'
  overrides = ', '.join(f'`{o}`' for o in sweep['overrides']) or 'none'
  arg = f' with `{sweep["experiment_arg"]}`' if sweep['experiment_arg'] else ''
  machines = '; '.join(index.get('machines', [])) or 'not recorded'
  skipped = sorted({f'`{r["method"]}` ({r["skipped_reason"]})' for r in rows if r['skipped_reason']})
  lines = [
      f'### Sweep `{name}`', '',
      f'Experiment `{sweep["experiment"]}`{arg}; overrides {overrides}; seeds '
      f'{", ".join(str(s) for s in sweep["seeds"])}. Metric: `{sweep["metric"]}` at the last round, '
      'mean ± sample standard deviation over the seeds that finished. Compression: bytes of '
      'uncompressed training on the same cohorts divided by the method\'s (mean over seeds). Wall '
      'time: one whole cell (build, compile, rounds, evaluation), mean over seeds, on a machine '
      f'shared with other work: {machines}.', '',
      f'Regenerate: `{command}` (resumes; finished cells are kept), then '
      f'`python -m benchmarks.report --workdir={rel}`.', '',
      markdown_table(rows), '']
  initial = [r['initial'] for r in rows if r['initial'] is not None]
  if initial:
    lines += [f'Before round 1 (θ0, scored by `eval_initial`): `{sweep["metric"]}` '
              f'{_fmt_value(sweep["metric"], min(initial))}'
              + ('' if max(initial) == min(initial) else
                 f' to {_fmt_value(sweep["metric"], max(initial))} over the rows') + '.', '']
  if skipped:
    lines += ['Skipped: ' + '; '.join(skipped) + '.', '']
  lines += [f'![{sweep["metric"]} against overall compression](pareto.png)', '',
            f'![{sweep["metric"]} against rounds](metric_vs_rounds.png)', '',
            f'![{sweep["metric"]} against cumulative bytes](metric_vs_bytes.png)', '']
  return '\n'.join(lines)


def write_report(workdir: str, references: str = REFERENCES) -> dict:
  """Writes report.md, report.json and the three PNGs into workdir; returns {name: path}.

  Packs the cell directories first when there are any (results_store.pack).
  """
  if results_store.cell_dirs(workdir):
    results_store.pack(workdir)
  index, records = load_sweep(workdir)
  rows = aggregate(index, records, load_references(references))
  name = index['name']
  metric = index['sweep']['metric']
  paths = {p: os.path.join(workdir, p) for p in ('report.md', 'report.json') + PLOTS}
  with open(paths['report.md'], 'w') as f:
    f.write(report_markdown(index, rows, workdir))
  common.write_json(paths['report.json'], {'name': name, 'rows': rows})
  plot_pareto(rows, paths['pareto.png'], f'{name}: {metric} against compression')
  plot_curves(rows, records, paths['metric_vs_rounds.png'], 'round', 'round', log_x=False,
              title=f'{name}: {metric} against rounds (mean over seeds)')
  plot_curves(rows, records, paths['metric_vs_bytes.png'], 'cum_bytes_total',
              'cumulative MiB, up + down, all clients', log_x=True, x_scale=2**20,
              title=f'{name}: {metric} against cumulative bytes (mean over seeds)')
  return paths


def readme_section(workdirs: Sequence[str]) -> str:
  """benchmarks/README.md's sweeps section: each workdir's report.md (or intrinsic_dim.md), with
  image links made relative to benchmarks/."""
  parts = ['## Sweeps: the paper\'s tables at small scale', '',
           'A sweep config (`configs/sweeps/*.py`) lists grid entries (method and budget) and '
           'seeds; `python -m benchmarks.sweep --config=configs/sweeps/<name>.py` runs every cell '
           'in its own directory under `results/<name>/` (config.json, metrics.jsonl, '
           'summary.json) and resumes where it stopped: a cell counts as done once its '
           'summary.json is written (atomically), a diverged cell is recorded with its round, a '
           'failing one with its error, and the sweep goes on. `python -m benchmarks.report '
           '--workdir=results/<name>` packs the cell directories into `cells.jsonl` (one line '
           'per cell: its definition, config and summary), `curves.jsonl` (one line per cell: '
           'its per-round columns) and `shared.json` (bulk that summaries share, such as '
           'pysource\'s module list, once, by sha256), then writes the table and plots. Those '
           'files, sweep.json and the report are what is committed (the cell directories are '
           'git-ignored): the report regenerates from them alone, and a sweep resumed on a fresh '
           'clone counts the packed finished cells as done (`results_store.py`). Reference '
           'numbers, each with its source, go in `reference_numbers.json` (shipped empty). '
           '`python -m benchmarks.intrinsic_dim` finds a task\'s intrinsic dimension. Paper-scale '
           'sweeps (`paper_table_cifar`, `paper_table_sst2`, `paper_table_personachat`) need a '
           'GPU and prepared data and were not run here.', '']
  for workdir in workdirs:
    rel = os.path.relpath(os.path.abspath(workdir), common.BENCH_DIR)
    for md in ('report.md', 'intrinsic_dim.md'):
      path = os.path.join(workdir, md)
      if os.path.exists(path):
        text = open(path).read()
        text = re.sub(r'\]\(([^)/:]+\.png)\)', lambda m: f']({rel}/{m.group(1)})', text)
        parts += [text.strip(), '']
  return '\n'.join(parts)


def main(argv):
  from absl import flags
  from fedjax_intrinsic import cli
  f = flags.FLAGS
  for workdir in f.workdir:     # every input checked before anything is written
    if not os.path.isdir(workdir) or not (os.path.exists(os.path.join(workdir, 'sweep.json')) or
                                          os.path.exists(os.path.join(workdir, 'intrinsic_dim.json'))):
      cli.refuse(f'--workdir={workdir!r} is invalid; allowed: a sweep directory with sweep.json '
                 '(written by python -m benchmarks.sweep)')
  try:
    load_references(f.references)
  except ValueError as e:
    cli.refuse(e)
  for workdir in f.workdir:
    if os.path.exists(os.path.join(workdir, 'intrinsic_dim.json')):
      from benchmarks import intrinsic_dim
      print(f'{workdir}: ' + ', '.join(intrinsic_dim.write_outputs(workdir)))
      continue
    try:
      paths = write_report(workdir, f.references)
    except ValueError as e:
      cli.refuse(e)
    print(f'{workdir}: ' + ', '.join(os.path.basename(p) for p in paths.values()))
  if f.readme:
    common.update_readme_section('sweeps', readme_section(f.workdir))
    print(f'updated the sweeps section of {common.README}')
  if f.tolerance_readme:
    sweeps = []
    for workdir in f.workdir:
      if os.path.exists(os.path.join(workdir, 'sweep.json')):
        index, records = load_sweep(workdir)
        sweeps.append((index['name'], aggregate(index, records)))
    try:
      table = tolerance_markdown(sweeps)
    except ValueError as e:
      cli.refuse(e)
    common.update_readme_section('tolerance', table, path=TOP_README)
    print(f'updated the tolerance section of {TOP_README}')


if __name__ == '__main__':
  from absl import app, flags
  from fedjax_intrinsic import cli
  flags.DEFINE_multi_string('workdir', None, 'Sweep directory (repeat for several).')
  flags.mark_flag_as_required('workdir')
  flags.DEFINE_string('references', REFERENCES, 'Reference numbers (JSON, every number with its '
                      'source).')
  flags.DEFINE_bool('readme', False, 'Also rewrite the sweeps section of benchmarks/README.md '
                    'from the given workdirs.')
  flags.DEFINE_bool('tolerance_readme', False, 'Also rewrite the tolerance section of README.md: '
                    'per method and sweep, the highest overall compression within 1 and 5 points '
                    '(perplexity: percent) of uncompressed.')
  app.run(main, flags_parser=cli.flags_parser(None))
