"""The first run: the main methods side by side on offline digits, a comparison table and a plot.

  python -m benchmarks.main_job                          # -> workdirs/digits_main/
  python -m benchmarks.main_job --workdir=/tmp/main --config.seeds=0,1

Runs the sweep configs/sweeps/digits_main.py (uncompressed SGD, FedAvg, the three intrinsic
methods, local top-k and FetchSGD on the digits CNN; benchmarks.sweep: each cell in its own
directory, resumable), then benchmarks.report's table and plots, and prints the comparison table:
method, budget, upload ×, download ×, overall × (bytes of uncompressed training on the same
cohorts divided by the method's) and test accuracy at the last round. Writes into the workdir
the cells, sweep.json, report.md, report.json and pareto.png (accuracy against overall
compression) with the two curve plots. Any sweep field can be set with --config.a.b=value.
Exit code: 2 for bad input (nothing run), 1 when a cell failed, else 0.
"""
import os
import sys

from benchmarks import common
from benchmarks import report
from benchmarks import sweep as sweep_lib

SWEEP = os.path.join(common.REPO_ROOT, 'configs', 'sweeps', 'digits_main.py')
DEFAULT_WORKDIR = os.path.join(common.REPO_ROOT, 'workdirs', 'digits_main')


def table(rows) -> str:
  """The comparison table of report rows (one per method and budget) as aligned markdown."""
  metric = rows[0]['metric']
  body = [[r['method'], report.budget_text(r['budget']), report._fmt_ratio(r['upload_compression']),
           report._fmt_ratio(r['download_compression']),
           report._fmt_ratio(r['overall_compression']),
           report._fmt_value(metric, r['mean']) + (f' ({"; ".join(r["notes"])})' if r['notes']
                                                   else '')]
          for r in rows]
  return common.markdown_table(['method', 'budget', 'upload ×', 'download ×', 'overall ×', metric],
                               body, align='llrrrl')


def main(argv):
  from absl import flags
  from fedjax_intrinsic import cli, config as config_lib, workdir as workdir_lib
  cli.quiet_logs()
  sweep = cli.config(SWEEP)
  workdir = flags.FLAGS.workdir
  log = lambda s: print(s, file=sys.stderr, flush=True)
  try:
    workdir_lib.check_writable(workdir)
    sweep_lib.check_cells(sweep, sweep_lib.expand(sweep))   # every cell, before any runs
  except (config_lib.ConfigError, ValueError) as e:
    cli.refuse(e)
  states = sweep_lib.run_sweep(sweep, workdir, log=log,
                               command=f'python -m benchmarks.main_job --workdir={workdir}')
  paths = report.write_report(workdir)
  index, records = report.load_sweep(workdir)
  rows = report.aggregate(index, records)
  print(table(rows))
  print(f'\nPareto plot ({sweep.metric} against overall compression): {paths["pareto.png"]}')
  print(f'Report: {paths["report.md"]}; cells: {workdir}/<cell>/')
  sys.exit(sweep_lib.exit_code(states))


if __name__ == '__main__':
  from absl import app, flags
  from fedjax_intrinsic import cli
  flags.DEFINE_string('config', SWEEP, 'Sweep config (default configs/sweeps/digits_main.py); any '
                      'field is then set with --config.a.b=value.')
  flags.DEFINE_string('workdir', DEFAULT_WORKDIR, 'Where the cells, the report and the plots go.')
  app.run(main, flags_parser=cli.flags_parser('config'))
