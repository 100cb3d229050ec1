"""The build (config → data, model, method, round function, once) and what it hands the run loop:
bad data content is a one-line config error naming the option, a bug keeps its traceback; the
per-client bytes set up from shapes equal the bytes of a real payload; imports point one way."""
import subprocess
import sys

import jax
import numpy as np
import pytest

from fedjax_intrinsic import build, comm, config as config_lib, data as data_lib, preflight


def test_option_error_names_the_option_or_declines():
  opts = {'num_clients': 100, 'path': ''}
  e = preflight.option_error(ValueError('num_clients=0 is invalid; allowed: a positive integer'),
                             'data', opts)
  assert isinstance(e, config_lib.ConfigError) and str(e).startswith('data.num_clients=0 ')
  e = preflight.option_error(ValueError("data.path='x' is empty\nmore"), 'data', opts)
  assert str(e) == "data.path='x' is empty"
  assert preflight.option_error(ValueError('list index out of range'), 'data', opts) is None
  assert preflight.option_error(ValueError('seq_len=3 is invalid'), 'data', opts) is None  # not its


@pytest.mark.parametrize('message,config_error', [
    ('num_clients=7 is invalid; allowed: a file with 7 clients', True),   # about an option
    ('operands could not be broadcast together', False),                 # a bug
])
def test_data_loading_errors(make_digits_config, monkeypatch, message, config_error):
  def load(*args, **kwargs):
    raise ValueError(message)
  monkeypatch.setattr(data_lib, 'get', load)
  if config_error:
    with pytest.raises(config_lib.ConfigError, match=r'^data\.num_clients=7 '):
      build.build(make_digits_config())
  else:
    with pytest.raises(ValueError, match='broadcast') as info:
      build.build(make_digits_config())
    assert not isinstance(info.value, config_lib.ConfigError)


def test_per_client_bytes_are_the_payloads(make_digits_config):
  """comm.per_client_bytes (from shapes, once) == the bytes of a payload a client really computes."""
  b = build.build(make_digits_config('local_topk', k=30))
  alg = b.algorithm
  state = jax.jit(alg.init)(b.params0)
  ids = b.cohorts.sample(1)
  batches, _ = b.cohorts.inputs(1, ids)
  one = jax.tree.map(lambda x: x[0], batches)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), one) == jax.tree.map(
      lambda x: (x.shape, x.dtype), b.cohorts.batch_shapes())
  payload = alg.client_update(alg.broadcast(state), alg.init_client(b.params0), one,
                              np.asarray(b.cohorts.round_key(1)))[0]
  assert b.upload_per_client == alg_bytes(payload) == 30 * (4 + 4)     # k f32 values, k i32 indices
  assert comm.per_client_bytes(alg, state, b.params0, one) == (b.upload_per_client,
                                                               b.request_per_client)


def alg_bytes(tree):
  return sum(int(np.asarray(x).nbytes) for x in jax.tree.leaves(tree))


def test_engine_imports_point_one_way():
  """sharding imports no simulation, simulation neither the build nor the run loop."""
  code = ('import sys; import fedjax_intrinsic.sharding as s; a = "fedjax_intrinsic.simulation" in '
          'sys.modules; import fedjax_intrinsic.simulation; b = any(m in sys.modules for m in '
          '("fedjax_intrinsic.experiment", "fedjax_intrinsic.build")); '
          'print(a, b)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
  assert out.stdout.split() == ['False', 'False'], out.stderr[-2000:]
