"""The field vocabulary (fedjax_intrinsic/fields.py), the declarations made with it, docs/methods.md
generated from them, and config.py as a leaf module (it imports no registry)."""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest

from fedjax_intrinsic import algorithms, config as config_lib, fields, preflight
from fedjax_intrinsic.fields import Bool, Choice, ConfigError, Int, Ints, Number, Text
from tests.conftest import digits_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every method's defaults as the code gave them before the fields were declared (recorded from
# `algorithms.default_config` at commit 8f0d0f4): same keys, values and types.
DEFAULTS_BEFORE = {
    'fedavg': {'error_feedback': False, 'quantize': 'none'},
    'fetchsgd': {'cols': 1000, 'fetch_exact': False, 'k': 100, 'masking': 'buckets',
                 'quantize': 'none', 'rho': 0.0, 'rows': 5},
    'intrinsic_k_subspace': {'d': 1000, 'num_subspaces': 4, 'payload_dtype': 'float32',
                             'per_leaf': False, 'projection': 'fastfood', 'quantize': 'none',
                             'subspace_order': 'cyclic'},
    'intrinsic_static': {'d': 1000, 'payload_dtype': 'float32', 'per_leaf': False,
                         'projection': 'fastfood', 'quantize': 'none'},
    'intrinsic_time_varying': {'d': 1000, 'payload_dtype': 'float32', 'per_leaf': False,
                               'projection': 'fastfood', 'quantize': 'none', 'resample_every': 1},
    'local_topk': {'error_feedback': True, 'k': 300, 'local_momentum': 0.0, 'quantize': 'none',
                   'topk_method': 'exact'},
    'powersgd': {'error_feedback': True, 'error_memory': 'local', 'quantize': 'none', 'rank': 2},
    'random_k': {'error_feedback': False, 'index_encoding': 'seed', 'k': 5000, 'quantize': 'none',
                 'scaling': 'unbiased'},
    'sign_sgd': {'error_feedback': True, 'scaled': True, 'vote': 'mean'},
    'sketched_sgd': {'cols': 1000, 'k': 1000, 'p2': 4, 'quantize': 'none', 'rho': 0.0, 'rows': 5},
    'true_topk': {'client_error_feedback': False, 'error_feedback': True, 'k': 300,
                  'momentum': 0.0, 'quantize': 'none', 'topk_method': 'exact'},
    'uncompressed': {'error_feedback': False, 'quantize': 'none'},
}


# (field, value, allowed?) written out by hand.
CASES = [
    (Int(1, lo=1), 1, True), (Int(1, lo=1), 0, False), (Int(1, lo=1), True, False),
    (Int(1, lo=1), 1.0, False), (Int(1, lo=1), np.int64(3), True), (Int(1, lo=1), None, False),
    (Int(1, lo=1), '1', False), (Int(0, 0, 5), 5, True), (Int(0, 0, 5), 6, False),
    (Int(0, 0, 5, hi_open=True), 5, False), (Int(0, lo=0, also=(None,)), None, True),
    (Int(5, lo=1, test=lambda v: v % 2 == 1), 4, False),
    (Int(5, lo=1, test=lambda v: v % 2 == 1), 7, True),
    (Number(0, 0, 1, hi_open=True), 0, True), (Number(0, 0, 1, hi_open=True), 0.5, True),
    (Number(0, 0, 1, hi_open=True), 1, False), (Number(0, 0, 1, hi_open=True), 1.0, False),
    (Number(0, 0, 1, hi_open=True), -1e-9, False), (Number(0, 0, 1, hi_open=True), True, False),
    (Number(0, 0, 1, hi_open=True), '0.5', False), (Number(0, lo=0), float('inf'), False),
    (Number(0, lo=0), float('nan'), False), (Number(0, lo=0), np.float32(2.5), True),
    (Number(1e-8, lo=0, lo_open=True), 0.0, False), (Number(1e-8, lo=0, lo_open=True), 1e-30, True),
    (Number(100, lo=1, lo_open=True, also=(0,)), 0, True),
    (Number(100, lo=1, lo_open=True, also=(0,)), 0.0, True),
    (Number(100, lo=1, lo_open=True, also=(0,)), False, False),
    (Number(100, lo=1, lo_open=True, also=(0,)), 1, False),
    (Number(100, lo=1, lo_open=True, also=(0,)), 1.5, True),
    (Bool(False), True, True), (Bool(False), 1, False), (Bool(False), None, False),
    (Choice('a', ('a', 'b')), 'b', True), (Choice('a', ('a', 'b')), 'c', False),
    (Choice(1, (1, 2)), True, False), (Choice(1, (1, 2)), 2, True), (Choice(1, (1, 2)), 2.0, False),
    (Text('x'), 'anything', True), (Text('x'), 3, False),
    (Text(None, also=(None,)), None, True), (Text('x'), None, False),
    (Bool(None, also=(None,)), None, True), (Bool(None, also=(None,)), 0, False),
    (Choice('a', ('a', 'b'), also=(None,)), None, True),
    (Number(None, lo=0, lo_open=True, also=(None,)), None, True),
    (Number(None, lo=0, lo_open=True, also=(None,)), 0.0, False),
    (Ints((1,), lo=1), (3, 4), True), (Ints((1,), lo=1), [3, 4], True), (Ints((1,), lo=1), (), True),
    (Ints((1,), lo=1), 5, True), (Ints((1,), lo=1), (3, 0), False), (Ints((1,), lo=1), (3, 2.0), False),
    (Ints((1,), lo=1), (True,), False), (Ints((1,), lo=1), '12', False),
    (Ints((1,), lo=1), None, False), (Ints((1,), lo=1, nonempty=True), (), False),
    (Ints((1,), lo=1, nonempty=True), (np.int64(2),), True),
]


@pytest.mark.parametrize('field,value,ok', CASES)
def test_a_field_allows_exactly_its_values(field, value, ok):
  assert field.ok(value) is ok


@pytest.mark.parametrize('field,name,text', [
    (Int(1, lo=1, note='<= D'), 'method.k', 'a positive integer <= D'),
    (Int(0, lo=0), 'x', 'an integer >= 0'),
    (Int(0, 0, 9), 'x', 'an integer 0 .. 9'),
    (Number(0.0, 0, 1, hi_open=True), 'method.rho', '0 <= rho < 1'),
    (Number(0.1, lo=0), 'server.lr', 'a finite number >= 0'),
    (Number(1e-8, lo=0, lo_open=True), 'server.eps', 'a finite number > 0'),
    (Bool(True), 'x', 'True or False'),
    (Choice('a', ('a', 'b')), 'x', 'a, b'),
    (Int(1, 1, 1, allowed='1 (only)'), 'x', '1 (only)'),
    (Ints((1,), lo=1), 'x', 'a tuple of positive integers'),
    (Ints((1,), lo=1, nonempty=True), 'x', 'a non-empty tuple of positive integers'),
    (Text(None, also=(None,)), 'x', 'None or a string'),
    (Int(None, lo=1, also=(None,)), 'x', 'None or a positive integer'),
])
def test_allowed_text(field, name, text):
  assert field.describe(name) == text


def test_number_defaults_are_floats_and_choice_defaults_are_choices():
  assert type(Number(0).default) is float
  with pytest.raises(ValueError):
    Choice('c', ('a', 'b'))


def test_check_raises_one_line_naming_the_field():
  spec = {'k': Int(300, lo=1, note='<= D (the number of model parameters)'), 'g': {'x': Bool(False)}}
  fields.check(spec, {'k': 5, 'g': {'x': True}}, 'method.')
  with pytest.raises(ConfigError) as info:
    fields.check(spec, {'k': -3}, 'method.')
  assert str(info.value) == ('method.k=-3 is invalid; allowed: a positive integer <= D (the number '
                             'of model parameters)')
  with pytest.raises(ConfigError, match=r"^method.g.x=1 is invalid; allowed: True or False$"):
    fields.check(spec, {'k': 1, 'g': {'x': 1}}, 'method.')
  with pytest.raises(ConfigError, match=r"^method.g=3 is invalid; allowed: a group of fields"):
    fields.check(spec, {'k': 1, 'g': 3}, 'method.')
  assert fields.defaults(spec) == {'k': 300, 'g': {'x': False}}


def test_check_names_unknown_and_missing():
  spec = {'a': Int(0), 'b': Int(0)}
  with pytest.raises(ConfigError, match=r"^p.c=1 is invalid; allowed: no such field of o; the "
                                        r"fields here: p.a, p.b$"):
    fields.check_names(spec, {'a': 0, 'b': 0, 'c': 1}, 'p.', owner='o')
  with pytest.raises(ConfigError, match=r'^p.b is missing for o; allowed: m$'):
    fields.check_names(spec, {'a': 0}, 'p.', owner='o', missing='m')


@pytest.mark.parametrize('name', sorted(DEFAULTS_BEFORE))
def test_method_defaults_are_unchanged(name):
  c = algorithms.default_config(name).to_dict()
  assert c.pop('name') == name
  assert c == DEFAULTS_BEFORE[name]
  assert {k: type(v) for k, v in c.items()} == {k: type(v) for k, v in DEFAULTS_BEFORE[name].items()}


def _wrong(f):
  """A value of the wrong kind for field f."""
  return 'not-a-choice' if f.kind == 'choice' else (3 if f.kind == 'text' else 'text')


@pytest.mark.parametrize('name', algorithms.METHODS)
def test_every_declared_method_field_is_enforced(name):
  """preflight.validate refuses, for every declared field, a value outside its declaration,
  naming the field; and an unknown field and a missing one."""
  assert set(algorithms.fields_of(name)) == set(DEFAULTS_BEFORE[name])
  for field, f in algorithms.fields_of(name).items():
    c = digits_config(name)
    with c.method.ignore_type():
      c.method[field] = _wrong(f)
    with pytest.raises(ConfigError) as info:
      preflight.validate(c)
    assert str(info.value).startswith(f'method.{field}='), str(info.value)
    assert '\n' not in str(info.value)
  c = digits_config(name)
  c.method.nope = 1
  with pytest.raises(ConfigError, match=r'^method.nope=1 is invalid; allowed: no such field'):
    preflight.validate(c)
  c = digits_config(name)
  field = next(iter(algorithms.fields_of(name)))
  del c.method[field]
  with pytest.raises(ConfigError, match=rf'^method.{field} is missing for method.name='):
    preflight.validate(c)


def test_every_declared_run_field_is_enforced():
  def leaves(spec, prefix=''):
    for k, f in spec.items():
      if isinstance(f, dict):
        yield from leaves(f, prefix + k + '.')
      else:
        yield prefix + k, f
  for dotted, f in leaves(config_lib.FIELDS):
    c = digits_config('uncompressed')
    *groups, last = dotted.split('.')
    node = c
    for g in groups:
      node = node[g]
    with node.ignore_type():
      node[last] = _wrong(f)
    with pytest.raises(ConfigError) as info:
      config_lib.validate_run(c)
    assert str(info.value).startswith(f'{dotted}='), str(info.value)


def test_methods_doc_is_generated_from_the_declarations():
  with open(os.path.join(ROOT, 'docs', 'methods.md'), encoding='utf-8') as f:
    committed = f.read()
  assert committed == algorithms.methods_markdown(), (
      'docs/methods.md is stale: python -m fedjax_intrinsic.algorithms > docs/methods.md')


def _project_imports(module: str) -> set:
  """The fedjax_intrinsic modules `module`'s source imports, anywhere in it (functions too)."""
  path = os.path.join(ROOT, 'fedjax_intrinsic', f'{module}.py')
  names = set()
  for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
    if isinstance(node, ast.Import):
      names |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module == 'fedjax_intrinsic':
      names |= {f'fedjax_intrinsic.{a.name}' for a in node.names}
    elif isinstance(node, ast.ImportFrom):
      names.add(node.module)
  return {n for n in names if n and n.startswith('fedjax_intrinsic')}


def test_config_is_a_leaf_module():
  """config.py imports only fields.py of the project (which imports none), at module level or in
  a function; importing it loads nothing else of the project (no registry)."""
  assert _project_imports('config') == {'fedjax_intrinsic.fields'}
  assert _project_imports('fields') == set()
  out = subprocess.run(
      [sys.executable, '-c', 'import sys, fedjax_intrinsic.config; '
       'print(sorted(m for m in sys.modules if m.startswith("fedjax_intrinsic")))'],
      capture_output=True, text=True, cwd=ROOT, check=True)
  loaded = ast.literal_eval(out.stdout.strip())
  assert set(loaded) == {'fedjax_intrinsic', 'fedjax_intrinsic.config', 'fedjax_intrinsic.fields'}
