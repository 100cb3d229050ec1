"""Subprocess side of the mesh tests (XLA_FLAGS must fake the CPU devices before jax is imported).

  python tests/sharding/_worker.py mesh OUT.json NUM_DEVICES CASE...
  python tests/sharding/_worker.py multihost OUT_DIR PORT PROCESS_ID NUM_PROCESSES CASE
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
    out_dir, port, pid, num, name = argv[2], argv[3], int(argv[4]), int(argv[5]), argv[6]
    from fedjax_intrinsic import sharding
    sharding.initialize_multihost(f'127.0.0.1:{port}', num, pid, timeout_s=20)
    import jax
    from fedjax_intrinsic import experiment
    from tests.sharding import cases
    result = {'device_count': jax.device_count(), 'process_count': jax.process_count(),
              'local_device_count': jax.local_device_count(),
              'case': cases.run_case(name, 0)}
    config = cases.case_config(name, 0)
    summary = experiment.run(config, os.path.join(out_dir, 'workdir'))
    result['final'] = summary['final']
    with open(os.path.join(out_dir, f'result{pid}.json'), 'w') as f:
      json.dump(result, f)
    jax.distributed.shutdown()
  else:
    raise ValueError(f'mode={mode!r} is invalid; allowed: mesh, multihost')


if __name__ == '__main__':
  main(sys.argv)
