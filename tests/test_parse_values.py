"""How config text becomes a value: a config argument's `key=value` (preflight.apply_arg) and a
dotted override `--config.key=value` (preflight.set_field), for a field whose current value is of
each type. Written out by hand: (type of the field, text, value through apply_arg, value through
set_field); ERR is a one-line ConfigError naming the field."""
import math

import ml_collections
import pytest

from fedjax_intrinsic import preflight
from fedjax_intrinsic.fields import ConfigError

ERR = 'ERR'
inf, nan = float('inf'), float('nan')
OLD = {'bool': True, 'int': 5, 'float': 0.5, 'str': 'abc', 'none': None, 'tuple': (1, 2)}

TABLE = [
    ('bool', 'true', True, True),
    ('bool', 'False', False, False),
    ('bool', 'TRUE', True, True),
    ('bool', '1', True, True),
    ('bool', '0', False, False),
    ('bool', '01', True, ERR),
    ('bool', ' true', ERR, True),
    ('bool', 'yes', ERR, ERR),
    ('bool', '2', ERR, ERR),
    ('bool', '1.0', ERR, ERR),
    ('int', '5', 5, 5),
    ('int', '-3', -3, -3),
    ('int', '+4', 4, 4),
    ('int', ' 7 ', 7, 7),
    ('int', '1_000', 1000, 1000),
    ('int', '1__000', ERR, 1000),
    ('int', '_5', ERR, 5),
    ('int', '01', 1, 1),
    ('int', '1.0', ERR, ERR),
    ('int', '1e3', ERR, ERR),
    ('int', 'abc', ERR, ERR),
    ('int', 'inf', ERR, ERR),
    ('int', 'True', ERR, ERR),
    ('float', '1', 1.0, 1.0),
    ('float', '2.5', 2.5, 2.5),
    ('float', '1e3', 1000.0, 1000.0),
    ('float', '1_0.5', 10.5, 10.5),
    ('float', 'inf', inf, inf),       # parsed; the field's declaration refuses it (validate)
    ('float', 'nan', nan, nan),
    ('float', 'abc', ERR, ERR),
    ('float', 'True', ERR, ERR),
    ('str', 'abc', 'abc', 'abc'),
    ('str', '01', '1', '01'),
    ('str', '+4', '4', '+4'),
    ('str', '1e3', '1000.0', '1e3'),
    ('str', ' 7 ', '7', ' 7 '),
    ('str', '1_000', '1000', '1_000'),
    ('str', 'None', 'None', 'None'),
    ('none', 'None', 'None', None),
    ('none', 'False', 'False', False),
    ('none', '5', 5, 5),
    ('none', '01', 1, '01'),
    ('none', '1.5', 1.5, 1.5),
    ('none', 'inf', inf, 'inf'),
    ('none', 'abc', 'abc', 'abc'),
    ('none', '[3]', '[3]', [3]),
    ('none', '0x10', '0x10', 16),
    ('tuple', '3', ERR, (3,)),
    ('tuple', '[3]', ('[', '3', ']'), (3,)),
    ('tuple', '(3)', ('(', '3', ')'), (3,)),
    ('tuple', 'abc', ('a', 'b', 'c'), ERR),
    ('tuple', '', (), ERR),
    ('tuple', '0x10', ('0', 'x', '1', '0'), (16,)),
    ('tuple', 'True', ('T', 'r', 'u', 'e'), ERR),
]


def _config(kind):
  return ml_collections.ConfigDict({'method': {'name': 'uncompressed'}, 'k': OLD[kind]})


def _through_arg(kind, text):
  return preflight.apply_arg(_config(kind), f'k={text}').k


def _through_override(kind, text):
  c = _config(kind)
  preflight.set_field(c, 'k', text)
  return c.k


def _same(got, want):
  if isinstance(want, float) and math.isnan(want):
    return isinstance(got, float) and math.isnan(got)
  return got == want and type(got) is type(want)


@pytest.mark.parametrize('path', ['arg', 'override'])
@pytest.mark.parametrize('kind,text,by_arg,by_override', TABLE)
def test_text_to_value(kind, text, by_arg, by_override, path):
  parse, want = ((_through_arg, by_arg) if path == 'arg' else (_through_override, by_override))
  if want is ERR:
    with pytest.raises(ConfigError) as info:
      parse(kind, text)
    assert str(info.value).startswith('k=') and '\n' not in str(info.value), str(info.value)
  else:
    got = parse(kind, text)
    assert _same(got, want), (got, want)
