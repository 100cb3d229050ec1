"""Runs one federated experiment from a config file.

  python run.py                                            # the default offline digits benchmark
  python run.py --config=configs/digits_cnn.py:method=fedavg --workdir=/tmp/run1
  python run.py --config=configs/pysource_lm.py --config.rounds=20 --config.server.lr=0.5
  python run.py --multihost --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0
                --config.simulation.num_devices=0      # (one line) on each host, its own process_id

Writes config.json, metrics.jsonl (one line per round) and summary.json into --workdir and prints
the final metrics. Any bad input (a flag, the config file or its argument, a field's value, the
workdir) exits with code 2 and one line naming the field, before anything is loaded or compiled;
a second run on a workdir in use is refused the same way (fedjax_intrinsic/workdir.py).
"""
import os
import sys

from absl import app, flags

from fedjax_intrinsic import cli

_HERE = os.path.dirname(os.path.abspath(__file__))
_DEFAULT_CONFIG = os.path.join(_HERE, 'configs', 'digits_cnn.py')
# Listed for --help; cli.flags_parser takes --config and --config.a.b=value out of argv itself.
flags.DEFINE_string('config', _DEFAULT_CONFIG, 'Experiment config file, optionally with an '
                    'argument: configs/x.py:key=value,key=value; any field is then set with '
                    '--config.a.b=value.')
_WORKDIR = flags.DEFINE_string('workdir', os.path.join(_HERE, 'workdirs', 'default'),
                               'Directory for config.json, metrics.jsonl and summary.json.')
_QUIET = flags.DEFINE_bool('quiet', False, 'No per-round progress line.')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Join a multi-process run (jax.distributed.initialize) before anything else; '
    'the clients mesh then spans every process\'s devices and process 0 writes the files.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'With --multihost: host:port of process 0 (else '
    'JAX_COORDINATOR_ADDRESS, else JAX\'s cluster auto-detection).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'With --multihost: the process count (else JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'With --multihost: this process\'s index (else JAX_PROCESS_ID).')
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    'distributed_timeout_s', None, 'With --multihost: initialization and heartbeat timeout in seconds '
    '(else JAX_DISTRIBUTED_TIMEOUT_S, else JAX\'s defaults).')


def _progress(total_rounds):
  def show(line):
    parts = [f'round {line["round"]}/{total_rounds}', f'loss {line["train_loss"]:.4f}']
    for key in ('test_accuracy', 'test_perplexity'):
      if key in line:
        parts.append(f'{key} {line[key]:.4f}')
    parts.append(f'up {line["cum_bytes_up"] / 2**20:.2f} MiB')
    parts.append(f'down {line["cum_bytes_down"] / 2**20:.2f} MiB')
    evaluated = 'test_loss' in line
    if sys.stderr.isatty():      # a live progress line, kept on screen at evaluation rounds
      print('\r' + ' | '.join(parts), end='\n' if evaluated else '', file=sys.stderr, flush=True)
    elif evaluated:              # logs get one line per evaluation
      print(' | '.join(parts), file=sys.stderr, flush=True)
  return show


def main(argv):
  cli.quiet_logs()
  config = cli.config(_DEFAULT_CONFIG)       # a bad file, argument or field: one line, exit 2
  from fedjax_intrinsic import config as config_lib, experiment, sharding
  if _MULTIHOST.value:
    try:
      sharding.initialize_multihost(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                    _DISTRIBUTED_TIMEOUT.value)
    except ValueError as e:   # its one-line checks of the four flags
      cli.refuse(e)
  elif any(f.present for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID, _DISTRIBUTED_TIMEOUT)):
    cli.refuse('--coordinator_address, --num_processes, --process_id and --distributed_timeout_s '
               'need --multihost')
  try:
    summary = experiment.run(config, _WORKDIR.value,
                             progress=None if _QUIET.value else _progress(config.rounds))
  except config_lib.ConfigError as e:
    cli.refuse(e)
  if not sharding.is_primary():
    return
  final = summary['final']
  print(f'method={summary["method"]} D={summary["num_params"]:,} rounds={summary["rounds_run"]} '
        f'status={summary["status"]}')
  metric = ' '.join(f'{k}={final[k]:.4f}' for k in sorted(final) if k.startswith('test_'))
  print(f'final {metric}')
  print(f'upload x{final["upload_compression"]:.2f} download x{final["download_compression"]:.2f} '
        f'overall x{final["overall_compression"]:.2f} '
        f'(total {final["cum_bytes_total"] / 2**20:.2f} MiB)')
  if summary['status'] == 'diverged':
    print(f'diverged at round {summary["diverged_round"]}: the metrics above are of that round')
  print(f'workdir: {_WORKDIR.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.flags_parser('config'))
