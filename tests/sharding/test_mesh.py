"""Clients sharded over 8 faked CPU devices give the one-device round (padding, state, 2nd exchange)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fedjax_intrinsic import config as config_lib, preflight, sharding
from tests.sharding import cases

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_worker.py')


def _subprocess_env(num_devices: int) -> dict:
  env = dict(os.environ)
  env['XLA_FLAGS'] = (f'{env.get("XLA_FLAGS", "")} '
                      f'--xla_force_host_platform_device_count={num_devices}').strip()
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def assert_same_run(ref: dict, got: dict):
  theta_ref, theta = np.array(ref['theta']), np.array(got['theta'])
  assert np.linalg.norm(theta - theta_ref) <= 1e-5 * np.linalg.norm(theta_ref)
  np.testing.assert_allclose(got['losses'], ref['losses'], rtol=1e-5)
  assert got['bytes'] == ref['bytes']          # padding clients cost no bytes
  np.testing.assert_allclose(got['tables'], ref['tables'], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope='module')
def mesh_results(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('mesh') / 'out.json')
  proc = subprocess.run([sys.executable, WORKER, 'mesh', out, '8', *cases.CASES],
                        env=_subprocess_env(8), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out) as f:
    return json.load(f)


def test_subprocess_sees_eight_devices(mesh_results):
  assert mesh_results['device_count'] == 8


@pytest.mark.parametrize('name', list(cases.CASES))
def test_eight_devices_equal_one(mesh_results, name):
  """Same config and seed on 1 and 8 devices: same θ, losses, bytes and client states.

  Cohorts of 5, 6, 7 and 13 clients are padded with masked clients to a multiple of 8.
  """
  got = mesh_results['cases'][name]
  assert got['cohort_size'] % 8 == 0
  ref = cases.run_case(name, 1)
  assert_same_run(ref, got)


def test_one_device_is_no_mesh():
  assert sharding.make_mesh(1) is None
  assert sharding.mesh_size(None) == 1


@pytest.mark.parametrize('field,value', [('num_devices', -1), ('model_devices', 2)])
def test_bad_mesh_config_rejected(field, value):
  c = cases.case_config('uncompressed_vmap_6', 1)
  c.simulation[field] = value
  with pytest.raises(config_lib.ConfigError, match=f'simulation.{field}='):
    preflight.validate(c)


def test_loop_with_mesh_rejected():
  c = cases.case_config('uncompressed_vmap_6', 0)
  c.simulation.client_parallelism = 'loop'
  with pytest.raises(config_lib.ConfigError, match='simulation.client_parallelism='):
    preflight.validate(c)


def test_more_devices_than_present_rejected():
  with pytest.raises(ValueError, match='simulation.num_devices=64'):
    sharding.make_mesh(64)
  with pytest.raises(ValueError, match='simulation.model_devices=2'):
    sharding.make_mesh(1, model_devices=2)
