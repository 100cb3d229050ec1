"""Two local processes x 4 CPU devices (jax.distributed, Gloo) give the single-process run."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from fedjax_intrinsic import experiment, sharding
from tests.sharding import cases
from tests.sharding.test_mesh import WORKER, assert_same_run

NAMES = ('powersgd_vmap_8', 'local_topk_map_5')   # 2nd exchange + state; 5 clients padded to 8


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch(out_dir: str, num_processes: int = 2, timeout_s: int = 150,
            args: tuple = (), tag: str = '') -> list:
  port = _free_port()   # picked just before launch
  procs = []
  try:
    for i in range(num_processes):
      flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count=4'
      env = dict(os.environ, XLA_FLAGS=flags.strip(),
                 JAX_PLATFORMS='cpu', JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
                 JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(i))
      log = open(os.path.join(out_dir, f'log{tag}{i}.txt'), 'w')
      procs.append((subprocess.Popen([sys.executable, WORKER, args[0], out_dir, *args[1:]],
                                     env=env, stdout=log, stderr=subprocess.STDOUT), log))
    return [proc.wait(timeout=timeout_s) for proc, _ in procs]
  finally:
    for proc, log in procs:    # stragglers (a dead peer, a hang) are killed here
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      log.close()


def _logs(out_dir):
  return '\n'.join(open(os.path.join(out_dir, f)).read()[-2000:] for f in sorted(os.listdir(out_dir))
                   if f.startswith('log'))


@pytest.fixture(scope='module')
def launched(tmp_path_factory):
  """One launch of two processes serves both tests below: the multihost cases and run (result*.json,
  workdir/), then, in the same processes, NAMES[1]'s checkpointed run preempted after round 2
  (resume_workdir/), so both exit with code 3. Returns (out_dir, exit codes)."""
  out_dir = str(tmp_path_factory.mktemp('multihost'))
  codes = _launch(out_dir, timeout_s=300, tag='_first',
                  args=('multihost', *NAMES, '--then-resume', NAMES[1], '2'))
  return out_dir, codes


def test_two_processes_equal_one(launched, tmp_path):
  out_dir, codes = launched
  assert codes == [3, 3], _logs(out_dir)
  results = []
  for i in range(2):
    with open(os.path.join(out_dir, f'result{i}.json')) as f:
      results.append(json.load(f))
  for r in results:
    assert (r['device_count'], r['process_count'], r['local_device_count']) == (8, 2, 4)
  assert results[0]['cases'] == results[1]['cases']   # every process holds the same global result
  for name in NAMES:
    assert_same_run(cases.run_case(name, 1), results[0]['cases'][name])
  # experiment.run: files from process 0 only, the metrics of a single-process run.
  single = experiment.run(cases.case_config(NAMES[0], 1), str(tmp_path / 'single'))
  workdir = pathlib.Path(out_dir) / 'workdir'
  assert sorted(os.listdir(workdir)) == ['.lock', 'config.json', 'metrics.jsonl', 'summary.json']
  read = lambda d: [json.loads(l) for l in open(d / 'metrics.jsonl')]
  multi_lines, single_lines = read(workdir), read(tmp_path / 'single')
  assert len(multi_lines) == len(single_lines) == cases.ROUNDS
  for got, want in zip(multi_lines, single_lines):
    assert got.keys() == want.keys()
    for k in want:
      if want[k] is None:               # strict JSON's null (an infinite ratio in round 1)
        assert got[k] is None, k
      elif not k.startswith('time_'):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)
  assert results[0]['final'].keys() == single['final'].keys()


def test_local_round_inputs_are_slices_of_the_global(make_digits_config):
  """A process's share, loaded alone (skipping the shuffle draws before it), equals the slice."""
  for batch_size, steps, epochs in ((5, 3, 0), (0, 1, 0), (4, 0, 2)):
    c = make_digits_config('fedavg', clients_per_round=7)
    c.client.update({'lr': 0.1, 'batch_size': batch_size, 'local_steps': steps,
                     'local_epochs': epochs})
    exp = experiment.Experiment(c)
    ids = np.concatenate([exp.cohort(3), [-1]]).astype(np.int32)     # 8: one padding client
    batches, weights = exp.round_inputs(3, ids)
    for share in (slice(0, 4), slice(4, 8), slice(2, 6)):
      local, local_w = exp.local_round_inputs(3, ids, share)
      np.testing.assert_array_equal(local_w, weights[share])
      for k in batches:
        np.testing.assert_array_equal(local[k], batches[k][share], err_msg=k)


def test_process_share_single_process():
  assert sharding.process_share(8) == slice(0, 8)


def test_two_processes_resume_from_checkpoint(launched, tmp_path):
  """Both processes checkpoint to a shared workdir; killed after round 2 (the fixture's launch),
  they resume from it and end with the metrics of an uninterrupted single-process run (client state
  included)."""
  (out_dir, codes), name = launched, NAMES[1]
  assert codes == [3, 3], _logs(out_dir)
  assert not any(f.startswith('resumed') for f in os.listdir(out_dir))   # preempted: no summary
  assert _launch(out_dir, args=('resume', name, '0'), tag='_resume') == [0, 0], _logs(out_dir)
  for i in range(2):
    with open(os.path.join(out_dir, f'resumed{i}.json')) as f:
      assert json.load(f)['resumed_from_round'] == 2
  config = cases.case_config(name, 1)
  config.rounds = 4
  experiment.run(config, str(tmp_path / 'single'))
  read = lambda d: [json.loads(l) for l in open(d / 'metrics.jsonl')]
  got, want = read(pathlib.Path(out_dir) / 'resume_workdir'), read(tmp_path / 'single')
  assert [l['round'] for l in got] == [1, 2, 3, 4]
  for g, w in zip(got, want):
    for k in w:
      if w[k] is None:                  # strict JSON's null (an infinite ratio in round 1)
        assert g[k] is None, k
      elif not k.startswith('time_'):
        np.testing.assert_allclose(g[k], w[k], rtol=1e-5, err_msg=k)
