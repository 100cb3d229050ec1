"""Shared fixtures: small configs of the offline digits task; a per-session compilation cache."""
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


FULL_OPT_ENV = 'FEDJAX_INTRINSIC_TESTS_FULL_OPT'   # set to 1: compile at XLA's default level
_FAST_COMPILE_FLAG = '--xla_backend_optimization_level=0'


def _compile_fast() -> None:
  """XLA:CPU's LLVM backend at optimisation level 0 for this session and its subprocesses.

  Most of the suite's time is compiling small programs, and LLVM's optimisation passes are most
  of that (some shapes take seconds: a (64, 10) threefry draw compiles in 2.4 s at the default
  level, 0.2 s at level 0). The HLO programs, XLA's own passes and fusion decisions, and the
  matmuls and convolutions (library calls) are the same at both levels; LLVM's code for a fused
  loop may differ in the last bits (a multiply-add contracted or not), and every tolerance in the
  suite holds at both levels: `FEDJAX_INTRINSIC_TESTS_FULL_OPT=1 python -m pytest -n 2` runs it at
  the default level. Set in the environment before any backend exists, so workers and
  subprocesses inherit it.
  """
  if os.environ.get(FULL_OPT_ENV) == '1':
    return
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_backend_optimization_level' not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {_FAST_COMPILE_FLAG}'.strip()


def pytest_configure(config):
  """XLA's fast compile level (`_compile_fast`); JAX's persistent compilation cache, in a fresh
  directory per test process, for this session.

  Most of the suite's time is XLA compiling small digits programs, and many tests build their own
  Experiment (fresh jitted closures) for the same program; an identical program is then read back
  instead of compiled again (the executable XLA made for it earlier in the session: same results).
  One directory per pytest-xdist worker (JAX writes cache files without locking), removed at the
  end. A JAX_COMPILATION_CACHE_DIR set by the user is left alone.
  """
  _compile_fast()
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return
  import jax
  worker = getattr(config, 'workerinput', {}).get('workerid', 'main')
  config._jax_cache_dir = tempfile.mkdtemp(prefix=f'fedjax-intrinsic-tests-jax-cache-{worker}-')
  jax.config.update('jax_compilation_cache_dir', config._jax_cache_dir)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)   # small programs too


def pytest_unconfigure(config):
  path = getattr(config, '_jax_cache_dir', None)
  if path:
    shutil.rmtree(path, ignore_errors=True)


def digits_config(method='uncompressed', model='logreg', rounds=3, clients_per_round=6, **method_fields):
  """A tiny digits experiment config (the project's default task), for fast tests."""
  from fedjax_intrinsic import algorithms, config as config_lib
  c = config_lib.base_config()
  c.data.name = 'digits'
  c.data.num_clients = 100
  c.data.partition = 'shards'
  c.model.name = model
  c.rounds = rounds
  c.clients_per_round = clients_per_round
  c.eval_every = rounds
  c.method = algorithms.default_config(method)
  c.method.update(method_fields)
  c.client.update({'lr': 1.0, 'batch_size': 0, 'local_steps': 1, 'local_epochs': 0})
  c.server.lr = 0.5
  return c


@pytest.fixture
def make_digits_config():
  return digits_config
