"""How config text becomes a value: a config argument's `key=value` (preflight.apply_arg) and a
dotted override `--config.key=value` (preflight.set_field), for a field whose current value is of
each type. Both read it with the one preflight.parse_value. Written out by hand: (type of the
field, text, value); ERR is a one-line ConfigError naming the field. The rows marked `changed`
are where the two paths differed before they shared parse_value (pinned at the commit before):
the stricter, documented rule of the two was kept, and for a text field the text as given."""
import math

import ml_collections
import pytest

from fedjax_intrinsic import preflight
from fedjax_intrinsic.fields import ConfigError

ERR = 'ERR'
inf, nan = float('inf'), float('nan')
OLD = {'bool': True, 'int': 5, 'float': 0.5, 'str': 'abc', 'none': None, 'tuple': (1, 2)}

TABLE = [
    ('bool', 'true', True),
    ('bool', 'False', False),
    ('bool', 'TRUE', True),
    ('bool', '1', True),
    ('bool', '0', False),
    ('bool', '01', ERR),   # changed: arg path took '01' as True (it read 01 as the integer 1)
    ('bool', ' true', ERR),   # changed: the override path stripped spaces and took True
    ('bool', 'yes', ERR),
    ('bool', '2', ERR),
    ('bool', '1.0', ERR),
    ('int', '5', 5),
    ('int', '-3', -3),
    ('int', '+4', 4),
    ('int', ' 7 ', 7),
    ('int', '1_000', 1000),
    ('int', '1__000', ERR),   # changed: the override path dropped every '_' and took 1000
    ('int', '_5', ERR),   # changed: the override path dropped every '_' and took 5
    ('int', '01', 1),
    ('int', '1.0', ERR),
    ('int', '1e3', ERR),
    ('int', 'abc', ERR),
    ('int', 'inf', ERR),
    ('int', 'True', ERR),
    ('float', '1', 1.0),
    ('float', '2.5', 2.5),
    ('float', '1e3', 1000.0),
    ('float', '1_0.5', 10.5),
    ('float', 'inf', inf),       # parsed; the field's declaration refuses it (validate)
    ('float', 'nan', nan),
    ('float', 'abc', ERR),
    ('float', 'True', ERR),
    ('str', 'abc', 'abc'),
    ('str', '01', '01'),   # changed: arg path gave '1' (the text went through int first)
    ('str', '+4', '+4'),   # changed: arg path gave '4'
    ('str', '1e3', '1e3'),   # changed: arg path gave '1000.0'
    ('str', ' 7 ', ' 7 '),   # changed: arg path gave '7'
    ('str', '1_000', '1_000'),   # changed: arg path gave '1000'
    ('str', 'None', 'None'),
    ('none', 'None', None),   # changed: arg path gave the text 'None'
    ('none', 'False', False),   # changed: arg path gave the text 'False'
    ('none', '5', 5),
    ('none', '01', '01'),   # changed: arg path gave 1
    ('none', '1.5', 1.5),
    ('none', 'inf', 'inf'),   # changed: arg path gave the float inf
    ('none', 'abc', 'abc'),
    ('none', '[3]', [3]),   # changed: arg path gave the text '[3]'
    ('none', '0x10', 16),   # changed: arg path gave the text '0x10'
    ('tuple', '3', (3,)),   # changed: arg path refused it
    ('tuple', '[3]', (3,)),   # changed: arg path gave its characters ('[', '3', ']')
    ('tuple', '(3)', (3,)),   # changed: arg path gave its characters
    ('tuple', 'abc', ERR),   # changed: arg path gave its characters ('a', 'b', 'c')
    ('tuple', '', ERR),   # changed: arg path gave ()
    ('tuple', '0x10', (16,)),   # changed: arg path gave its characters
    ('tuple', 'True', ERR),   # changed: arg path gave its characters
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
@pytest.mark.parametrize('kind,text,want', TABLE)
def test_text_to_value(kind, text, want, path):
  parse = _through_arg if path == 'arg' else _through_override
  if want is ERR:
    with pytest.raises(ConfigError) as info:
      parse(kind, text)
    assert str(info.value).startswith('k=') and '\n' not in str(info.value), str(info.value)
  else:
    got = parse(kind, text)
    assert _same(got, want), (got, want)
