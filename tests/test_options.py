"""The data sets' and models' options, declared once (fields.py): the declarations match the
loaders' and builders' keyword arguments, preflight.validate refuses every declared option's bad
values in one line before anything loads, the loaders and builders refuse the same values, and
docs/options.md is generated from the declarations."""
import inspect
import os

import pytest

from fedjax_intrinsic import data, fields, keys, models, options_doc, preflight
from fedjax_intrinsic.fields import ConfigError
from tests.conftest import digits_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _signature_defaults(fn, skip):
  fn = getattr(fn, 'func', fn)       # the TFDS loaders are functools.partial(load, name)
  params = inspect.signature(fn).parameters
  return {k: p.default for k, p in params.items() if k not in skip}


@pytest.mark.parametrize('name', data.DATASETS)
def test_data_declaration_matches_the_loader(name):
  """Same names, in the same order, same defaults (value and type) as the loader's arguments."""
  want = _signature_defaults(data._loader(name), ('key', 'name'))
  got = fields.defaults(data.fields_of(name))
  assert list(got) == list(want)
  assert got == want and {k: type(v) for k, v in got.items()} == {
      k: type(v) for k, v in want.items()}


@pytest.mark.parametrize('name', models.MODELS)
def test_model_declaration_matches_the_builder(name):
  want = _signature_defaults(models.spec(name).build, ('input_shape', 'num_classes'))
  got = models.options(name)
  assert list(got) == list(want)
  assert got == want and {k: type(v) for k, v in got.items()} == {
      k: type(v) for k, v in want.items()}


def _wrong(f):
  """A value of the wrong kind for field f."""
  return 'not-a-choice' if f.kind == 'choice' else (3 if f.kind == 'text' else 'text')


def _config(group, name):
  c = digits_config('uncompressed')
  c.clients_per_round = 1
  if group == 'data':
    c.data = {'name': name}
  else:
    c.model = {'name': name}
  return c


CASES = ([('data', n, k, f) for n in data.DATASETS for k, f in data.fields_of(n).items()] +
         [('model', n, k, f) for n in models.MODELS for k, f in models.spec(n).options.items()])


@pytest.mark.parametrize('group,name,option,f', CASES,
                         ids=[f'{g}-{n}-{k}' for g, n, k, _ in CASES])
def test_every_declared_option_is_enforced_by_validate(group, name, option, f):
  """preflight.validate (pure: nothing loaded, no file read) accepts the declared default and
  refuses a value of the wrong kind, one line naming the full dotted field and the allowed text."""
  c = _config(group, name)
  c[group][option] = f.default
  preflight.validate(c)
  with c[group].ignore_type():
    c[group][option] = _wrong(f)
  with pytest.raises(ConfigError) as info:
    preflight.validate(c)
  assert str(info.value) == (f'{group}.{option}={_wrong(f)!r} is invalid; allowed: '
                             f'{f.describe(option)}')


@pytest.mark.parametrize('group,name', [('data', 'digits'), ('data', 'tweets_lm'),
                                        ('model', 'cnn'), ('model', 'logreg')])
def test_unknown_option_is_refused_by_validate(group, name):
  c = _config(group, name)
  c[group].nope = 1
  declared = data.fields_of(name) if group == 'data' else models.spec(name).options
  listed = ', '.join(f'{group}.{k}' for k in declared) or 'none'
  with pytest.raises(ConfigError) as info:
    preflight.validate(c)
  assert str(info.value) == (f'{group}.nope=1 is invalid for {group}.name={name!r}; allowed '
                             f'options: {listed}')


@pytest.mark.parametrize('group,name,option,value,allowed', [
    ('data', 'digits', 'alpha', -1.0, 'a finite number > 0'),
    ('data', 'digits', 'alpha', float('inf'), 'a finite number > 0'),
    ('data', 'digits', 'partition', 'rows', 'iid, dirichlet, shards, single_class'),
    ('data', 'digits', 'examples_per_client', 0, 'None or a positive integer <= the training '
                                                 'examples'),
    ('data', 'cifar10', 'validation_fraction', 1.0, '0 <= validation_fraction < 1'),
    ('data', 'tweets', 'classes', 4, '2 (negative, positive) or 3 (and neutral)'),
    ('data', 'tweets', 'test_fraction', 0.5, '0 < test_fraction < 0.5'),
    ('data', 'personachat', 'max_history', -1, 'an integer >= 0 (the last 2 * max_history + 1 '
                                               'turns are kept)'),
    ('data', 'pysource', 'max_windows', True, 'None or a positive integer'),
    ('model', 'mlp', 'hidden', (128, 0), 'a tuple of positive integers'),
    ('model', 'cnn', 'features', (), 'a non-empty tuple of positive integers'),
    ('model', 'resnet9', 'logit_scale', 0.0, 'a finite number > 0'),
    ('model', 'transformer_lm', 'tie_embeddings', 1, 'True or False'),
    ('model', 'llama', 'rope_theta', -1.0, 'None or a finite number > 0'),
    ('model', 'gpt2', 'checkpoint', 3, 'None or a string'),
])
def test_out_of_range_options_are_refused_by_validate(group, name, option, value, allowed):
  c = _config(group, name)
  with c[group].ignore_type():
    c[group][option] = value
  with pytest.raises(ConfigError) as info:
    preflight.validate(c)
  assert str(info.value) == f'{group}.{option}={value!r} is invalid; allowed: {allowed}'


@pytest.mark.parametrize('value', [(64,), [32, 16], 64, ()])
def test_ints_option_accepts_what_the_builder_accepts(value):
  c = _config('model', 'mlp')
  c.model.hidden = value
  preflight.validate(c)
  model = models.get('mlp', input_shape=(8, 8, 1), num_classes=10, hidden=value)
  assert model.name == 'mlp'


def test_loaders_and_builders_refuse_with_the_same_declaration():
  """Called directly (not through preflight), a loader and a builder check the same declaration
  and raise the same one-line error."""
  key = keys.data_key(keys.run_key(0))
  with pytest.raises(ConfigError, match=r'^data.alpha=-1 is invalid; allowed: a finite number > 0$'):
    data.get('digits', key=key, alpha=-1)
  with pytest.raises(ConfigError, match=r'^data.seq_len=0 is invalid; allowed: a positive integer$'):
    data.check_available('pysource', seq_len=0)
  with pytest.raises(ConfigError, match=r'^model.num_layers=0 is invalid; allowed: a positive '
                                        r'integer$'):
    models.get('transformer_lm', input_shape=(8,), num_classes=5, num_layers=0)
  with pytest.raises(ConfigError, match=r"^model.conv_impl='fft' is invalid; allowed: auto, lax, "
                                        r"patches$"):
    models.get('resnet9', input_shape=(32, 32, 3), num_classes=10, conv_impl='fft')


def test_options_doc_is_generated_from_the_declarations():
  with open(os.path.join(ROOT, 'docs', 'options.md'), encoding='utf-8') as f:
    committed = f.read()
  assert committed == options_doc.markdown(), (
      'docs/options.md is stale: python -m fedjax_intrinsic.options_doc > docs/options.md')
