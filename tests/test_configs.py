"""Every config in configs/ and configs/sweeps/ builds and validates (no data is loaded)."""
import glob
import os

import pytest

from benchmarks import sweep as sweep_lib
from fedjax_intrinsic import algorithms
from fedjax_intrinsic import config as config_lib, preflight

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'configs', '*.py')))
SWEEPS = sorted(os.path.relpath(p, ROOT)
                for p in glob.glob(os.path.join(ROOT, 'configs', 'sweeps', '*.py')))
# Offline sweeps and the paper's tables list every registered method.
ALL_METHODS_SWEEPS = ('configs/sweeps/digits_mlp.py', 'configs/sweeps/pysource_lm.py',
                      'configs/sweeps/paper_table_cifar.py', 'configs/sweeps/paper_table_sst2.py',
                      'configs/sweeps/paper_table_personachat.py', 'configs/sweeps/tweets_minilm.py')


def test_configs_are_found():
  assert 'configs/digits_cnn.py' in EXPERIMENTS and 'configs/cifar10_resnet9.py' in EXPERIMENTS
  assert set(ALL_METHODS_SWEEPS) <= set(SWEEPS)


@pytest.mark.parametrize('path', EXPERIMENTS)
def test_experiment_config_validates_for_every_method(path):
  preflight.validate(sweep_lib.load_config_file(path))
  for method in algorithms.METHODS:
    config = sweep_lib.load_config_file(path, f'method={method}')
    assert config.method.name == method
    preflight.validate(config)


@pytest.mark.parametrize('path', EXPERIMENTS)
def test_experiment_config_docstring_names_command_and_expected_result(path):
  doc = open(os.path.join(ROOT, path)).read().split('"""')[1]
  assert 'python ' in doc and path in doc
  assert 'Expected' in doc


@pytest.mark.parametrize('path', SWEEPS)
def test_sweep_cells_build_and_validate(path):
  sweep = sweep_lib.load_config_file(path)
  cells = sweep_lib.expand(sweep)
  assert len(cells) == len(sweep.grid) * len(sweep.seeds)
  first_seed = [c for c in cells if c.seed == sweep.seeds[0]]
  for cell in first_seed:
    assert cell.method in algorithms.METHODS, f'{path}: {cell.entry}'
    config = sweep_lib.cell_config(sweep, cell)
    preflight.validate(config)
    for field, value in cell.budget.items():     # the budget reached the method's config
      if field in ('server_lr', 'client_lr'):    # configs/tweets_minilm.py's rate arguments
        assert config[field.split('_')[0]].lr == value, (cell.name, field)
        continue
      if field in config_lib.FIELDS:               # a top-level field, such as eval_initial
        assert config[field] == preflight.parse_value(config[field], str(value), field)
        continue
      expected = preflight.parse_value(config.method[field], str(value), f'method.{field}')
      assert config.method[field] == expected, (cell.name, field)
  docs = open(os.path.join(ROOT, path)).read().split('"""')[1]
  assert f'--config={path}' in docs


@pytest.mark.parametrize('path', ALL_METHODS_SWEEPS)
def test_sweep_lists_every_method(path):
  sweep = sweep_lib.load_config_file(path)
  assert {c.method for c in sweep_lib.expand(sweep)} == set(algorithms.METHODS)


def test_cifar_protocol():
  """FetchSGD's CIFAR-10 setting (docs/paper.md §5) as the data loader needs it."""
  c = sweep_lib.load_config_file('configs/cifar10_resnet9.py', 'method=intrinsic_static')
  assert (c.data.name, c.data.partition, c.data.num_clients, c.data.examples_per_client,
          c.data.validation_fraction) == ('cifar10', 'single_class', 10_000, 5, 0.0)
  assert (c.model.name, c.clients_per_round, c.server.schedule) == ('resnet9', 100, 'triangular')
  # Momentum lives in exactly one place.
  for method, field in (('fetchsgd', 'rho'), ('sketched_sgd', 'rho'), ('true_topk', 'momentum')):
    c = sweep_lib.load_config_file('configs/cifar10_resnet9.py', f'method={method}')
    assert c.method[field] > 0 and c.server.optimizer == 'sgd'
  c = sweep_lib.load_config_file('configs/cifar10_resnet9.py', 'method=fetchsgd,rho=0')
  assert c.server.optimizer == 'momentum'
  with pytest.raises(config_lib.ConfigError, match='method'):
    sweep_lib.load_config_file('configs/cifar10_resnet9.py', 'method=nope')
