"""Subprocess side of the mesh tests (XLA_FLAGS must fake the CPU devices before jax is imported).

  python tests/sharding/_worker.py mesh OUT.json NUM_DEVICES CASE...
  JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT JAX_NUM_PROCESSES=N JAX_PROCESS_ID=I \\
      python tests/sharding/_worker.py multihost OUT_DIR CASE... [--then-resume CASE STOP]
  (same environment) python tests/sharding/_worker.py resume OUT_DIR CASE STOP_AFTER_ROUND

multihost writes OUT_DIR/result<process>.json and the run's OUT_DIR/workdir; with --then-resume it
then does what resume does, in the same processes (one launch for both tests). resume: a run of
CASE with a checkpoint every round in OUT_DIR/resume_workdir, "preempted" (exit code 3) after round
STOP (0 = never; then OUT_DIR/resumed<process>.json).
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main(argv):
  mode = argv[1]
  if mode == 'mesh':
    import jax
    from tests.sharding import cases
    out, num_devices, names = argv[2], int(argv[3]), argv[4:]
    result = {'device_count': jax.device_count(),
              'cases': {n: cases.run_case(n, num_devices) for n in names}}
    with open(out, 'w') as f:
      json.dump(result, f)
  elif mode == 'multihost':
    out_dir, names, then_resume = argv[2], argv[3:], None
    if '--then-resume' in names:
      cut = names.index('--then-resume')
      names, then_resume = names[:cut], names[cut + 1:]
    from fedjax_intrinsic import sharding
    sharding.initialize_multihost(timeout_s=20)   # the coordinator and ids from the environment
    import jax
    from fedjax_intrinsic import experiment
    from tests.sharding import cases
    result = {'device_count': jax.device_count(), 'process_count': jax.process_count(),
              'local_device_count': jax.local_device_count(),
              'cases': {n: cases.run_case(n, 0) for n in names}}
    config = cases.case_config(names[0], 0)   # the whole run, files written by process 0 only
    summary = experiment.run(config, os.path.join(out_dir, 'workdir'))
    result['final'] = summary['final']
    with open(os.path.join(out_dir, f'result{jax.process_index()}.json'), 'w') as f:
      json.dump(result, f)
    if then_resume:
      resume(out_dir, then_resume[0], int(then_resume[1]))
    jax.distributed.shutdown()
  elif mode == 'resume':
    out_dir, name, stop = argv[2], argv[3], int(argv[4])
    from fedjax_intrinsic import sharding
    sharding.initialize_multihost(timeout_s=20)
    import jax
    resume(out_dir, name, stop)
    jax.distributed.shutdown()
  else:
    raise ValueError(f'mode={mode!r} is invalid; allowed: mesh, multihost, resume')


def resume(out_dir, name, stop):
  """A checkpointed run, "preempted" after round STOP (0 = never), in jax.distributed already."""
  import jax
  from fedjax_intrinsic import experiment
  from tests.sharding import cases
  config = cases.case_config(name, 0)
  config.rounds, config.checkpoint_every = 4, 1

  def progress(line):
    if line['round'] == stop:
      raise SystemExit(3)
  summary = experiment.run(config, os.path.join(out_dir, 'resume_workdir'), progress=progress)
  with open(os.path.join(out_dir, f'resumed{jax.process_index()}.json'), 'w') as f:
    json.dump({'resumed_from_round': summary['resumed_from_round']}, f)


if __name__ == '__main__':
  main(sys.argv)
