"""Runs one federated experiment from a config file.

  python run.py                                            # the default offline digits benchmark
  python run.py --config=configs/digits_cnn.py:method=fedavg --workdir=/tmp/run1
  python run.py --config=configs/pysource_lm.py --config.rounds=20 --config.server.lr=0.5
  python run.py --multihost --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0
                --config.simulation.num_devices=0      # (one line) on each host, its own process_id

Writes config.json, metrics.jsonl (one line per round) and summary.json into --workdir and prints
the final metrics. A bad config value exits with code 2 and one line naming the field, before
anything is compiled.
"""
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(_HERE, 'configs', 'digits_cnn.py'),
    'Experiment config file, optionally with an argument: configs/x.py:key=value,key=value.',
    lock_config=True)
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
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from fedjax_intrinsic import config as config_lib, experiment, sharding
  if _MULTIHOST.value:
    sharding.initialize_multihost(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                  _DISTRIBUTED_TIMEOUT.value)
  elif any(f.present for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID, _DISTRIBUTED_TIMEOUT)):
    raise app.UsageError('--coordinator_address, --num_processes, --process_id and '
                         '--distributed_timeout_s need --multihost')
  config = _CONFIG.value
  try:
    summary = experiment.run(config, _WORKDIR.value,
                             progress=None if _QUIET.value else _progress(config.rounds))
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
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
  print(f'workdir: {_WORKDIR.value}')


if __name__ == '__main__':
  app.run(main)
