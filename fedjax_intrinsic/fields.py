"""Config fields, declared once: default, kind, range or choices, and one line of documentation.

A field's declaration gives its default (`defaults`), its one-line error (`check`) and its row in
a generated table (`markdown_table`; docs/methods.md is made from the methods' declarations):

    FIELDS = {'k': fields.Int(300, lo=1, note='<= D (the number of model parameters)',
                              doc='coordinates sent per client'),
              'topk_method': fields.Choice('exact', ('exact', 'threshold'), doc='...'),
              'rho': fields.Number(0.0, lo=0, hi=1, hi_open=True, doc='...')}
    fields.defaults(FIELDS)           # {'k': 300, 'topk_method': 'exact', 'rho': 0.0}
    fields.check(FIELDS, config.method, 'method.')
    # ConfigError: method.k=-3 is invalid; allowed: a positive integer <= D (the number of model
    # parameters)

A spec is a dict name -> Field, or name -> a nested spec (a group of fields, a ConfigDict in the
config). Kinds: 'int' (an integer, never a bool), 'number' (a finite int or float, never a bool;
its default is a float, so the ConfigDict field is a float), 'bool', 'choice' (one of `choices`),
'text' (a string), 'ints' (a tuple or list of integers in the range, non-empty when declared
so; a bare integer stands for a one-item tuple). `also` lists values allowed besides the kind and range (0 = off, None = unset);
`test` is one more predicate on a value of the right kind and range (rows odd); `note` is appended
to the generated allowed text and `allowed` replaces it. Rules between fields (error feedback
needs a quantiser, ...) stay in the code that owns them.

This module imports nothing of the project: config.py and every method module import it.
"""
import math
import numbers
from typing import Any, Callable, Mapping, NamedTuple, Optional


class ConfigError(ValueError):
  """A bad config value; the message is one line naming the field and the allowed values."""


def fail(field: str, value: Any, allowed: str):
  """Raises the one-line ConfigError `field=value is invalid; allowed: ...`."""
  raise ConfigError(f'{field}={value!r} is invalid; allowed: {allowed}')


def is_real(value) -> bool:
  """An int or float (or numpy number), not a bool; possibly not finite."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def in_range(value, lo=None, hi=None, lo_open=False, hi_open=False) -> bool:
  """lo <= value <= hi (strict on an open side; None: unbounded on that side)."""
  return ((lo is None or (value > lo if lo_open else value >= lo))
          and (hi is None or (value < hi if hi_open else value <= hi)))


def is_int(value, lo=None, hi=None, lo_open=False, hi_open=False) -> bool:
  """An int (or numpy integer), not a bool, in the range given (None: unbounded on that side)."""
  return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
          and in_range(value, lo, hi, lo_open, hi_open))


def is_number(value, lo=None, hi=None, lo_open=False, hi_open=False) -> bool:
  """A finite int or float (not a bool) in the range given (None: unbounded on that side)."""
  return is_real(value) and math.isfinite(value) and in_range(value, lo, hi, lo_open, hi_open)


def type_name(value) -> str:
  """The kind of value `value` is, as an error's 'allowed:' names it."""
  if isinstance(value, bool):
    return 'True or False'
  if is_int(value):
    return 'an integer'
  if is_real(value):
    return 'a number'
  if isinstance(value, str):
    return 'a string'
  if isinstance(value, (tuple, list)):
    return 'a tuple such as (1, 2)'
  return type(value).__name__


class Field(NamedTuple):
  """One config field (see the module docstring); make it with Int, Number, Bool, Choice, Text."""
  default: Any
  kind: str
  lo: Optional[float] = None
  hi: Optional[float] = None
  lo_open: bool = False
  hi_open: bool = False
  choices: tuple = ()
  also: tuple = ()
  test: Optional[Callable[[Any], bool]] = None
  note: str = ''
  allowed: str = ''
  doc: str = ''
  nonempty: bool = False        # 'ints': () is refused

  def ok(self, value) -> bool:
    """`value` is allowed (its kind, range or choices, `test`, or one of `also`)."""
    if any(value is a or (not isinstance(value, bool) and a is not None and value == a)
           for a in self.also):
      return True
    if self.kind == 'int':
      good = is_int(value, self.lo, self.hi, self.lo_open, self.hi_open)
    elif self.kind == 'number':
      good = is_number(value, self.lo, self.hi, self.lo_open, self.hi_open)
    elif self.kind == 'bool':
      good = isinstance(value, bool)
    elif self.kind == 'choice':
      good = any(type(value) is type(c) and value == c for c in self.choices)
    elif self.kind == 'text':
      good = isinstance(value, str)
    elif self.kind == 'ints':
      items = (value,) if is_int(value) else value
      good = (isinstance(items, (tuple, list)) and (bool(items) or not self.nonempty)
              and all(is_int(v, self.lo, self.hi, self.lo_open, self.hi_open) for v in items))
    else:
      raise ValueError(f'kind={self.kind!r} is not a field kind; allowed: int, number, bool, '
                       'choice, text, ints')
    return good and (self.test is None or bool(self.test(value)))

  def describe(self, name: str) -> str:
    """The 'allowed:' text of field `name` (its last dotted part is used in ranges)."""
    if self.allowed:
      return self.allowed
    name = name.split('.')[-1]
    lo, hi = _show(self.lo), _show(self.hi)
    one_sided = lambda noun: (f'{noun} {">" if self.lo_open else ">="} {lo}' if self.lo is not None
                              else f'{noun} {"<" if self.hi_open else "<="} {hi}'
                              if self.hi is not None else noun)
    both = self.lo is not None and self.hi is not None
    if self.kind == 'int':
      if self.lo == 1 and self.hi is None and not self.lo_open:
        text = 'a positive integer'
      else:
        text = f'an integer {lo} .. {hi}' if both else one_sided('an integer')
    elif self.kind == 'number':
      text = (f'{lo} {"<" if self.lo_open else "<="} {name} {"<" if self.hi_open else "<="} {hi}'
              if both else one_sided('a finite number'))
    elif self.kind == 'bool':
      text = 'True or False'
    elif self.kind == 'choice':
      text = ', '.join(str(c) for c in self.choices)
    elif self.kind == 'ints':
      item = ('positive integers' if self.lo == 1 and self.hi is None and not self.lo_open
              else one_sided('integers'))
      text = f'a {"non-empty " if self.nonempty else ""}tuple of {item}'
    else:
      text = 'a string'
    if self.also:
      text = f'{" or ".join(repr(a) for a in self.also)} or {text}'
    return f'{text} {self.note}' if self.note else text


def _show(bound) -> str:
  return str(int(bound)) if isinstance(bound, float) and bound.is_integer() else str(bound)


def Int(default: int, lo=None, hi=None, *, lo_open=False, hi_open=False, also=(), test=None,
        note='', allowed='', doc='') -> Field:
  """An integer field (a bool is refused)."""
  return Field(default, 'int', lo, hi, lo_open, hi_open, (), tuple(also), test, note, allowed, doc)


def Number(default: Optional[float], lo=None, hi=None, *, lo_open=False, hi_open=False, also=(), test=None,
           note='', allowed='', doc='') -> Field:
  """A finite-number field; its default is stored as a float (a float field in the ConfigDict),
  or None with `also=(None,)`."""
  return Field(default if default is None else float(default), 'number', lo, hi, lo_open, hi_open, (), tuple(also), test, note,
               allowed, doc)


def Bool(default: Optional[bool], *, also=(), note='', doc='') -> Field:
  """True or False (1 and 0 are refused); `also=(None,)` allows None (unset), the default then."""
  return Field(default if default is None else bool(default), 'bool', also=tuple(also), note=note,
               doc=doc)


def Choice(default: Any, choices, *, also=(), note='', doc='') -> Field:
  """One of `choices` (compared by type and value: True is not 1)."""
  choices = tuple(choices)
  if default not in choices + tuple(also):
    raise ValueError(f'default={default!r} is not one of the choices {choices}')
  return Field(default, 'choice', choices=choices, also=tuple(also), note=note, doc=doc)


def Text(default: Optional[str], *, also=(), note='', allowed='', doc='') -> Field:
  """Any string (a name whose registry is checked elsewhere, a path, ...)."""
  return Field(default, 'text', also=tuple(also), note=note, allowed=allowed, doc=doc)


def Ints(default: tuple, lo=None, hi=None, *, nonempty=False, also=(), note='', allowed='',
         doc='') -> Field:
  """A tuple (or list) of integers, each in the range (layer widths); `nonempty` refuses ().
  A bare integer is allowed and means a one-item tuple (the builder makes it one)."""
  return Field(tuple(default), 'ints', lo, hi, also=tuple(also), note=note, allowed=allowed,
               doc=doc, nonempty=nonempty)


def defaults(spec: Mapping) -> dict:
  """{name: default} of `spec`, nested specs as nested dicts (a ConfigDict makes them groups)."""
  return {k: defaults(f) if isinstance(f, Mapping) else f.default for k, f in spec.items()}


def check_options(spec: Mapping, values: Mapping, section: str) -> None:
  """The options of a named config section (config.data, config.model: `values` with its 'name')
  against `spec`, what that name declares: an option `spec` lacks, then each value, gives a
  one-line ConfigError naming '<section>.<option>'."""
  for key in values.keys():
    if key != 'name' and key not in spec:
      raise ConfigError(
          f'{section}.{key}={values[key]!r} is invalid for {section}.name={values["name"]!r}; '
          f'allowed options: {", ".join(f"{section}.{k}" for k in spec) or "none"}')
  check(spec, values, section + '.')


def check(spec: Mapping, values: Mapping, prefix: str = '') -> None:
  """Every field of `spec` present in `values` is allowed; ConfigError (one line) at the first
  that is not, naming `prefix + name`. Nested specs are checked in their groups."""
  for name, f in spec.items():
    if name not in values:
      continue
    value = values[name]
    if isinstance(f, Mapping):
      if not isinstance(value, Mapping) and not hasattr(value, 'keys'):
        fail(prefix + name, value,
             f'a group of fields ({", ".join(f"{prefix}{name}.{k}" for k in f)})')
      check(f, value, f'{prefix}{name}.')
    elif not f.ok(value):
      fail(prefix + name, value, f.describe(name))


def check_names(spec: Mapping, values, prefix: str = '', *, owner: str = '',
                missing: str = 'every declared field', skip: tuple = (),
                open_groups: tuple = ()) -> None:
  """`values` has exactly the fields of `spec` (but `skip`): ConfigError for an unknown one or a
  missing one. `owner` ('method.name=...') names whose fields they are; `missing` is the allowed
  text of a missing field. Nested specs recurse, except the groups named in `open_groups`, whose
  fields belong to someone else (the data set's loader, the model, the method)."""
  for key in values.keys():
    if key not in spec and key not in skip:
      listed = ', '.join(prefix + k for k in sorted(spec) if k not in skip)
      fail(prefix + key, values[key],
           f'no such field{" of " + owner if owner else ""}; the fields here: {listed}')
  for key, f in spec.items():
    if key in skip:
      continue
    if key not in values:
      raise ConfigError(f'{prefix}{key} is missing{" for " + owner if owner else " from the config"}'
                        f'; allowed: {missing}')
    if isinstance(f, Mapping) and key not in open_groups and hasattr(values[key], 'keys'):
      check_names(f, values[key], f'{prefix}{key}.', owner=owner, missing=missing)


def _cell(text: str) -> str:
  return str(text).replace('|', '\\|').replace('\n', ' ')


def markdown_table(spec: Mapping, prefix: str = '') -> str:
  """The fields of `spec` as a markdown table: field, default, allowed values, meaning."""
  rows = ['| field | default | allowed | meaning |', '|---|---|---|---|']
  for name, f in spec.items():
    if isinstance(f, Mapping):
      continue
    rows.append(f'| `{prefix}{name}` | `{f.default!r}` | {_cell(f.describe(name))} | '
                f'{_cell(f.doc)} |')
  return '\n'.join(rows)
