"""docs/adding_a_method.md works: its TernGrad module and its tests, extracted from the markdown, run.

The module block is loaded as `fedjax_intrinsic.algorithms.terngrad` and registered for the test only
(as the guide's one registry line would), then put through the every-method contracts of
test_all_methods.py and through the guide's own test block.
"""
import inspect
import os
import re
import sys
import types

import pytest

from fedjax_intrinsic import algorithms
from tests.algorithms import test_all_methods as contracts
from tests.conftest import digits_config

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   'docs', 'adding_a_method.md')
MODULE_PATH = 'fedjax_intrinsic/algorithms/terngrad.py'
TEST_PATH = 'tests/algorithms/test_terngrad.py'


def python_block(path: str) -> str:
  """The ```python block of the guide whose first line is `# <path>`."""
  with open(DOC) as f:
    blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
  found = [b for b in blocks if b.startswith(f'# {path}\n')]
  assert len(found) == 1, f'{DOC} must hold exactly one ```python block starting "# {path}"'
  return found[0]


def load(path: str, name: str) -> types.ModuleType:
  module = types.ModuleType(name)
  module.__file__ = f'{DOC}:{path}'
  exec(compile(python_block(path), module.__file__, 'exec'), module.__dict__)
  return module


@pytest.fixture
def terngrad_registered(monkeypatch):
  """The guide's module as `fedjax_intrinsic.algorithms.terngrad`, registered as method 'terngrad'."""
  module = load(MODULE_PATH, 'fedjax_intrinsic.algorithms.terngrad')
  monkeypatch.setitem(sys.modules, module.__name__, module)
  monkeypatch.setattr(algorithms, 'terngrad', module, raising=False)
  monkeypatch.setitem(algorithms._METHODS, 'terngrad', 'terngrad')
  monkeypatch.setattr(algorithms, 'METHODS', tuple(sorted(algorithms._METHODS)))
  return module


def test_guide_registration_line_is_the_one_used(terngrad_registered):
  with open(DOC) as f:
    assert "    'terngrad': 'terngrad',\n" in f.read()
  assert algorithms.default_config('terngrad').to_dict() == {'name': 'terngrad', 'k': 0}


def test_guide_method_meets_every_method_contract(terngrad_registered, tmp_path, monkeypatch):
  contracts.test_every_method('terngrad', tmp_path, monkeypatch)


def _calls(fn):
  """The argument sets of a test function: its parametrize marks expanded, fixtures filled."""
  params = [{}]
  for mark in getattr(fn, 'pytestmark', []):
    assert mark.name == 'parametrize', mark.name
    names = [n.strip() for n in mark.args[0].split(',')] if isinstance(mark.args[0], str) else mark.args[0]
    values = [v if len(names) > 1 else (v,) for v in mark.args[1]]
    params = [{**p, **dict(zip(names, v))} for p in params for v in values]
  fixtures = {'make_digits_config': digits_config}
  for p in params:
    yield {name: p[name] if name in p else fixtures[name]
           for name in inspect.signature(fn).parameters}


def test_guide_tests_pass(terngrad_registered):
  module = load(TEST_PATH, 'tests.algorithms.test_terngrad_from_guide')
  tests = {k: v for k, v in vars(module).items() if k.startswith('test_') and callable(v)}
  assert set(tests) == {'test_ternarise_is_unbiased', 'test_bytes', 'test_learns', 'test_bad_k'}
  for name, fn in tests.items():
    for kwargs in _calls(fn):
      fn(**kwargs)
