"""The one validation pass every entry point runs before any data is loaded or anything compiled.

    config = preflight.load_config('configs/digits_cnn.py:method=fedavg', [('rounds', '50')])
    facts = preflight.check(config, workdir='/tmp/run')     # raises ConfigError, one line

`load_config(spec, overrides)`: the config file `path[:arg]` (a missing file, a syntax error, a
file without `get_config` are ConfigErrors), `get_config(arg)`, then every `--config.a.b=value`
override parsed as the type of the field it replaces (an unknown field, a float for an int, text for
a number are ConfigErrors; data and model options the loader or model accepts may be added).
`apply_arg(config, arg)`: what a config file's `get_config` does with its `:key=value,...`
argument (`method=NAME` sets that method's declared defaults, other keys set fields). Both read a
value's text with the one `parse_value` (its docstring: the rules for each type).

`check(config, workdir)`, in order, all of them pure or reading metadata only:
  1. `validate`: every field on its own (types, choices, finite ranges; rounds and seeds within
     what a run can hold: `config.validate_run`), the registry names, the data set's and the
     model's declared options (`data.validate`, `models.validate`: docs/options.md), and the
     method's declared fields and rules (`algorithms.validate`: docs/methods.md);
  2. `check_resources`: data directories and files, pretrained checkpoints;
  3. the partition options against the data set's metadata (client counts, shards, examples);
  4. the model: its options, then D from `jax.eval_shape` of its init (traced, never compiled),
     when the data set's example shape is known from metadata (`data_spec`);
  5. the method's size rules that need D (d <= D, k <= D, feedback with k = D, ...), and the
     host batches (evaluation, a round's training) against this machine's memory;
  6. devices (`simulation.num_devices` against the devices JAX sees);
  7. the workdir (not a file, writable).
A data set whose example shape is not known before loading gets steps 4-5 after loading, from the
loaded data's shape (`build` calls `check_loaded` then), still before anything is compiled.
Every failure is a `ConfigError` whose one-line message names the field (full dotted name), the
value and the allowed values; anything else raised here is a bug and keeps its traceback.
"""
import ast
import contextlib
import importlib.util
import math
import os
import re
import sys
from typing import Any, NamedTuple, Optional, Sequence

import ml_collections

from fedjax_intrinsic import config as config_lib, fields

ConfigError = config_lib.ConfigError
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- config files


def _resolve(path: str) -> str:
  """A config path as given (absolute or from the working directory), else from the repository."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  return os.path.join(_REPO_ROOT, path)


def load_module(path: str, field: str = '--config'):
  """Executes config file `path` as a module; ConfigError when it is missing or not valid Python."""
  full = _resolve(path)
  if not path or not os.path.isfile(full):
    raise ConfigError(f'{field}={path!r} is not a file; allowed: the path of a config file '
                      '(configs/*.py) with get_config, optionally followed by :key=value,...')
  if _REPO_ROOT not in sys.path:    # configs import each other as `configs.<name>`
    sys.path.insert(0, _REPO_ROOT)
  try:
    source = open(full, encoding='utf-8').read()
    compile(source, full, 'exec')
  except (SyntaxError, UnicodeDecodeError, ValueError) as e:
    where = f' line {e.lineno}' if getattr(e, 'lineno', None) else ''
    msg = getattr(e, 'msg', None) or str(e).splitlines()[0]
    raise ConfigError(f'{field}={path!r} is not valid Python ({type(e).__name__}{where}: {msg}); '
                      'allowed: a config file with get_config') from None
  name = '_config_' + re.sub(r'\W', '_', os.path.abspath(full))
  spec = importlib.util.spec_from_file_location(name, full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not callable(getattr(module, 'get_config', None)):
    raise ConfigError(f'{field}={path!r} defines no get_config; allowed: a config file with '
                      'get_config(arg)')
  return module


def split_spec(spec: str) -> tuple[str, Optional[str]]:
  """'configs/x.py:a=1,b=2' -> ('configs/x.py', 'a=1,b=2'); 'configs/x.py' -> (..., None)."""
  path, sep, arg = spec.partition(':')
  return path, (arg if sep else None)


def load_config(spec: str, overrides: Sequence[tuple[str, str]] = (),
                field: str = '--config') -> ml_collections.ConfigDict:
  """`get_config(arg)` of the file in `spec` ('path[:arg]'), then the `(dotted field, text)`
  overrides in order; ConfigError for any bad part (see the module docstring)."""
  path, arg = split_spec(spec)
  module = load_module(path, field)
  config = module.get_config(arg) if arg is not None else module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'{field}={path!r}: get_config returned {type(config).__name__}; allowed: '
                      'an ml_collections.ConfigDict')
  for dotted, text in overrides:
    set_field(config, dotted, text, field=field)
  return config


def apply_arg(config: ml_collections.ConfigDict, arg: Optional[str],
              budgets: Optional[dict] = None) -> ml_collections.ConfigDict:
  """Applies a config-file argument such as 'method=fedavg,model=mlp,rounds=50,d=1000'.

  `method=NAME` replaces config.method with that method's defaults (`algorithms.default_config`),
  updated with `budgets[NAME]` (an experiment's own budgets) when given; `model`, `data` set the
  names; any other key sets the method field of that name, else the top-level field of that name.
  """
  from fedjax_intrinsic import algorithms
  values = config_lib.split_arg(arg)       # text; each value is parsed as its field's type
  name = values.pop('method', None)
  if name is None and budgets is not None:
    name = config.method.name
  if name is not None:
    if name not in algorithms.METHODS:
      fields.fail('method.name', name, ', '.join(algorithms.METHODS))
    config.method = algorithms.default_config(name)
    config.method.update((budgets or {}).get(name, {}))
  for key in ('model', 'data'):
    if key in values:
      config[key].name = values.pop(key)
  for key, value in values.items():
    if key in config.method:
      config.method[key] = parse_value(config.method[key], value, f'method.{key}')
    elif key in config and not isinstance(config[key], ml_collections.ConfigDict):
      config[key] = parse_value(config[key], value, key)
    else:
      algorithms.check_renamed(config.method.get('name'), key)
      allowed = sorted(['method', 'model', 'data'] + [k for k in config.method.keys() if k != 'name'] +
                       [k for k in config.keys() if not isinstance(config[k], ml_collections.ConfigDict)])
      raise ConfigError(f'config argument {key!r} is unknown; allowed: {", ".join(allowed)}')
  return config


# ----------------------------------------------------------------------------- overrides


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return text


def parse_value(old: Any, text: str, field: str) -> Any:
  """`text` as a value of the type of `old` (the field's current value); ConfigError otherwise.

  The one reader of config text: a dotted override's value (`set_field`) and each value of a
  config argument (`apply_arg`).
  - bool: true, false, 1 or 0, in any case; nothing else (no surrounding spaces, no '01', 'yes').
  - int: a base-10 integer literal as Python's int() reads it (a sign, surrounding spaces, single
    '_' between digits); a float is refused, never rounded.
  - float: what Python's float() reads, inf and nan included: the field's declared range refuses
    them (`validate`, naming the range).
  - str: the text as given.
  - tuple / list: a Python literal, or one bare item, whose items have the old items' type.
  - None (a field without a value yet): a Python literal (None, True, 5, [3], ...), else the text.
  """
  bad = lambda: ConfigError(f'{field}={text!r} is invalid; allowed: {fields.type_name(old)}')
  if isinstance(old, bool):
    low = text.lower()
    if low not in ('true', 'false', '1', '0'):
      raise bad()
    return low in ('true', '1')
  if isinstance(old, int):
    try:
      return int(text, 10)
    except ValueError:
      raise bad() from None
  if isinstance(old, float):
    try:
      return float(text)
    except ValueError:
      raise bad() from None
  if isinstance(old, str):
    return text
  if isinstance(old, (tuple, list)):
    value = _literal(text if text.strip().startswith(('(', '[')) else f'({text},)')
    if isinstance(value, (int, float, str)):
      value = (value,)
    if not isinstance(value, (tuple, list)):
      raise bad()
    if old:
      kind = type(old[0])
      if kind is float:
        ok = all(fields.is_real(v) for v in value)
      else:
        ok = all(type(v) is kind for v in value)
      if not ok:
        raise ConfigError(f'{field}={text!r} is invalid; allowed: a tuple of '
                          f'{fields.type_name(old[0]).split(" ", 1)[-1]}s')
    return type(old)(value)
  if old is None:
    return _literal(text)
  raise bad()


def _option_defaults(config: ml_collections.ConfigDict, node: str) -> dict:
  """The options data set / model `config.<node>.name` declares, with their defaults ({} if
  unknown)."""
  from fedjax_intrinsic import data, models
  name = config[node].get('name')
  if node == 'data' and name in data.DATASETS:
    return fields.defaults(data.fields_of(name))
  if node == 'model' and name in models.MODELS:
    return models.options(name)
  return {}


def set_field(config: ml_collections.ConfigDict, dotted: str, text: str,
              field: str = '--config') -> None:
  """Sets `config.<dotted>` from `text` (parse_value); ConfigError naming `dotted` when the field
  does not exist (data and model options their loader accepts may be added)."""
  parts = dotted.split('.') if dotted else ['']
  node = config
  for i, part in enumerate(parts[:-1]):
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      prefix = '.'.join(parts[:i])
      allowed = sorted(k for k in node.keys() if isinstance(node[k], ml_collections.ConfigDict))
      raise ConfigError(f'{field}.{dotted} is unknown: {prefix + "." if prefix else ""}{part} is '
                        f'not a group of fields; allowed groups: {", ".join(allowed)}')
    node = node[part]
  last = parts[-1]
  if last in node:
    if isinstance(node[last], ml_collections.ConfigDict):
      raise ConfigError(f'{field}.{dotted} is a group of fields; allowed: one of its fields, '
                        f'{", ".join(f"{dotted}.{k}" for k in sorted(node[last].keys()))}')
    old = node[last]
  else:
    options = _option_defaults(config, parts[0]) if len(parts) == 2 else {}
    if parts[:-1] == ['method']:
      from fedjax_intrinsic import algorithms
      algorithms.check_renamed(node.get('name'), last)
    if last not in options:
      allowed = sorted(set(node.keys()) | set(options))
      raise ConfigError(f'{field}.{dotted}={text!r} is invalid: no field {dotted!r}; allowed: '
                        f'{", ".join((".".join(parts[:-1] + [k])) for k in allowed)}')
    old = options[last]
  value = parse_value(old, text, dotted)
  with node.ignore_type():
    node[last] = value


# ----------------------------------------------------------------------------- checks


def validate(config: ml_collections.ConfigDict) -> None:
  """Every field on its own, pure (reads the config and the registries, loads nothing): the run's
  fields (`config.validate_run`), the names the registries hold (data.name, model.name,
  method.name, simulation.client_parallelism), the data set's and the model's declared options
  (`data.validate`, `models.validate`), then the method's declared fields and its rules
  (`algorithms.validate`); raises ConfigError."""
  from fedjax_intrinsic import algorithms, data, models, simulation
  config_lib.validate_run(config)
  for field, names in (('data.name', data.DATASETS), ('model.name', models.MODELS),
                       ('method.name', algorithms.METHODS),
                       ('simulation.client_parallelism', simulation.CLIENT_PARALLELISM)):
    group, key = field.split('.')
    if config[group][key] not in names:
      fields.fail(field, config[group][key], ', '.join(names))
  data.validate(config)
  models.validate(config)
  algorithms.validate(config)


def check_resources(config: ml_collections.ConfigDict) -> None:
  """Checks what lies outside the config (data directories and files, the model's pretrained files:
  `models.check_available`); raises ConfigError.

  Runs after `validate` and before any data is loaded or anything is compiled.
  """
  from fedjax_intrinsic import data, models
  try:
    data.check_available(config.data.name, **{k: v for k, v in config.data.items() if k != 'name'})
    models.check_available(config.model.name,
                           **{k: v for k, v in config.model.items() if k != 'name'})
  except ValueError as e:
    raise ConfigError(str(e)) from None


class Facts(NamedTuple):
  """What the checks found: D (None when the data's shape needs loading), the parameter shapes."""
  num_params: Optional[int]
  param_shapes: Any


# Example shapes known without loading (the data sets' metadata): name -> (input_shape(opts),
# num_classes, train examples or None). digits: sklearn's 1,797 images minus the 20% held out.
def _digits_spec(opts):
  return (8, 8, 1), 10, 1437


def _pysource_spec(opts):
  from fedjax_intrinsic.data import pysource
  return (opts.get('seq_len', 64),), pysource.VOCAB_SIZE, None


_SPECS = {
    'digits': _digits_spec,
    'pysource': _pysource_spec,
    'cifar10': lambda opts: ((32, 32, 3), 10, None),
    'cifar100': lambda opts: ((32, 32, 3), 100, None),
    'mnist': lambda opts: ((28, 28, 1), 10, None),
}


def data_spec(config) -> Optional[tuple]:
  """(input_shape, num_classes, train examples or None) of config.data without loading it, or None
  when only loading tells (the check of sizes then runs after loading)."""
  fn = _SPECS.get(config.data.name)
  if fn is None or config.data.get('tfds_name') is not None:
    return None
  return fn({k: v for k, v in config.data.items() if k != 'name'})


def check_data_options(config, num_train: Optional[int] = None) -> None:
  """The partition options (the ones any loader with a `partition` takes) against the data set's
  metadata: the bounds that need its `num_train` training examples. Each option on its own was
  checked against its declaration (`data.validate`)."""
  d = config.data
  defaults = _option_defaults(config, 'data')
  if 'partition' not in defaults:
    return
  get = lambda k: d.get(k, defaults[k])
  partition = get('partition')
  n = get('num_clients')
  if num_train and n > num_train:
    raise ConfigError(f'data.num_clients={n!r} is invalid; allowed: a positive integer <= the '
                      f'{num_train} training examples')
  if config.clients_per_round > n:
    raise ConfigError(f'clients_per_round={config.clients_per_round} is invalid; allowed: at most '
                      f'data.num_clients={n}')
  if partition == 'shards':
    s = get('shards_per_client')
    if num_train and s * n > num_train:
      raise ConfigError(f'data.shards_per_client={s!r} is invalid; allowed: a positive integer '
                        f'with data.num_clients * shards_per_client <= {num_train}')
  e = get('examples_per_client') if partition == 'single_class' else None
  if num_train and e is not None and e > num_train:
    raise ConfigError(f'data.examples_per_client={e!r} is invalid; allowed: a positive integer '
                      f'<= {num_train}, or None')


def _dotted(msg: str, group: str, options) -> str:
  """msg with its first bare `option=` of `options` written as `group.option=`."""
  for opt in sorted(options, key=len, reverse=True):
    new, n = re.subn(r'(?<![\w.])' + re.escape(opt) + r'=', f'{group}.{opt}=', msg, count=1)
    if n:
      return new
  return msg


def option_error(e: ValueError, group: str, options) -> Optional[ConfigError]:
  """A loader's or builder's ValueError about one of its options as a ConfigError, else None.

  It is about option x when its first line starts with `x=` (written `group.x=` in the error) or
  with `group.x`; any other ValueError is a bug, which the caller re-raises with its traceback.
  """
  msg = str(e).splitlines()[0]
  m = re.match(r'^(?:' + re.escape(group) + r'\.(\w+)|(\w+)=)', msg)
  if m is None or (m.group(1) or m.group(2)) not in options:
    return None
  return ConfigError(msg if m.group(1) else f'{group}.{msg}')


def model_shapes(config, input_shape, num_classes):
  """(model, parameter ShapeDtypeStructs) of config.model for these inputs; traced, not compiled."""
  import jax
  import jax.numpy as jnp
  from fedjax_intrinsic import models
  options = models.options(config.model.name)
  opts = {k: v for k, v in config.model.items() if k != 'name'}   # declared: models.validate
  try:   # the builders validate their options (one-line ValueErrors) and run nothing
    model = models.get(config.model.name, input_shape=tuple(input_shape), num_classes=num_classes,
                       **opts)
  except ValueError as e:
    error = option_error(e, 'model', options)
    if error is None:
      raise
    raise error from None
  shapes = jax.eval_shape(model.init, jax.ShapeDtypeStruct((2,), jnp.uint32))
  return model, shapes


def _size_error(fn, *args):
  try:
    fn(*args)
  except ConfigError:
    raise
  except ValueError as e:    # the methods' own D-dependent rules (topk_common, powersgd.layout)
    raise ConfigError(str(e).splitlines()[0]) from None


def check_sizes(config, param_shapes) -> int:
  """The method's rules that need D (from the parameter shapes); returns D."""
  import jax
  from fedjax_intrinsic.algorithms import topk_common as tc
  D = int(sum(math.prod(x.shape) for x in jax.tree.leaves(param_shapes)))
  m, name = config.method, config.method.name
  if name.startswith('intrinsic_'):
    if m.projection == 'identity' and m.d != D:
      raise ConfigError(f'method.d={m.d} is invalid for method.projection=identity; allowed: '
                        f'd = D = {D}')
    if m.d > D:
      raise ConfigError(f'method.d={m.d} is invalid; allowed: 1 <= d <= D = {D} (the number of '
                        'model parameters)')
  if 'k' in m and name in ('local_topk', 'true_topk', 'random_k', 'fetchsgd', 'sketched_sgd'):
    if m.k > D:
      raise ConfigError(f'method.k={m.k} is invalid; allowed: 1 <= k <= D = {D} (the number of '
                        'model parameters)')
    if name in ('local_topk', 'true_topk', 'random_k'):
      _size_error(tc.check_feedback_needs_loss, m.k, D, bool(m.error_feedback))
    for momentum in ('local_momentum', 'momentum'):
      if momentum in m and name in ('local_topk', 'true_topk'):
        _size_error(tc.check_masked_momentum, m.k, D, float(m[momentum]), f'method.{momentum}')
  if name == 'powersgd':
    from fedjax_intrinsic.algorithms import powersgd
    _size_error(powersgd.layout, param_shapes, m.rank)
  return D


def check_memory(config, input_shape, memory_fraction: float = 0.25) -> None:
  """Batches the run would allocate on the host, from the example shape alone (4 bytes a number):
  an evaluation batch (padded to eval_batch_size), and a round's training batches
  (clients_per_round x local_steps x client.batch_size, at least one example a step); refused when one
  exceeds `memory_fraction` of this machine's memory."""
  total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  per_example = 4 * math.prod(input_shape)
  budget = memory_fraction * total
  c = config.client
  if config.eval_batch_size * per_example > budget:
    raise ConfigError(f'eval_batch_size={config.eval_batch_size} is invalid; allowed: at most '
                      f'{int(budget // per_example):,} (a padded batch of {per_example} bytes an '
                      f'example within {memory_fraction:.0%} of this machine\'s '
                      f'{total / 2**30:.1f} GiB)')
  if c.local_steps:      # batch_size 0 (the client's whole data): at least one example a step
    need = config.clients_per_round * c.local_steps * max(c.batch_size, 1) * per_example
    if need > budget:
      field = 'client.batch_size' if c.batch_size > c.local_steps else 'client.local_steps'
      raise ConfigError(
          f'{field}={c[field.split(".")[1]]} is invalid with client.batch_size={c.batch_size}, '
          f'client.local_steps={c.local_steps}, clients_per_round={config.clients_per_round}: a '
          f'round\'s batches take at least {need / 2**30:.1f} GiB; allowed: a product within '
          f'{memory_fraction:.0%} of this machine\'s {total / 2**30:.1f} GiB')


def check_devices(config) -> None:
  """simulation.num_devices / model_devices against the devices JAX sees (starts no computation)."""
  from fedjax_intrinsic import sharding
  sim = config.simulation
  try:
    sharding.make_mesh(sim.get('num_devices', 1), sim.get('model_devices', 1))
  except ValueError as e:    # make_mesh's own one-line checks of these two fields
    raise ConfigError(str(e).splitlines()[0]) from None


@contextlib.contextmanager
def _quiet_absl():
  from absl import logging
  before = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(before)


def check(config: ml_collections.ConfigDict, workdir: Optional[str] = None) -> Facts:
  """Every check of the module docstring; raises ConfigError (one line) at the first failure."""
  from fedjax_intrinsic import workdir as workdir_lib
  validate(config)
  try:
    with _quiet_absl():      # TFDS logs a warning per missing folder while it looks
      check_resources(config)
  except ConfigError as e:   # the loaders name their options bare (data_dir=...): dot them
    raise ConfigError(_dotted(str(e), 'data', _option_defaults(config, 'data'))) from None
  spec = data_spec(config)
  check_data_options(config, spec[2] if spec else None)
  num_params = shapes = None
  if spec is not None:
    check_memory(config, spec[0])
    _, shapes = model_shapes(config, spec[0], spec[1])
    num_params = check_sizes(config, shapes)
  check_devices(config)
  if workdir is not None:
    workdir_lib.check_writable(workdir)
  return Facts(num_params, shapes)


# ----------------------------------------------------------------------------- after loading


def load_data(config, data_key):
  """config.data loaded (`data.get`). The loaders check their files' content as they read them:
  a ValueError about one of the data set's options is a ConfigError naming `data.<option>`."""
  from fedjax_intrinsic import data
  options = {k: v for k, v in config.data.items() if k != 'name'}
  try:
    return data.get(config.data.name, key=data_key, **options)
  except ValueError as e:
    error = option_error(e, 'data', _option_defaults(config, 'data'))
    if error is None:
      raise
    raise error from None


def check_loaded(config, facts: Facts, loaded) -> tuple:
  """The checks that need the loaded data set `loaded`; returns (model, parameter shapes).

  clients_per_round against its clients; the model for its example shape (`model_shapes`); and
  when that shape was not known before loading (`facts.num_params` None), the size rules that need
  D (`check_sizes`). Nothing is compiled.
  """
  if config.clients_per_round > loaded.num_clients:
    raise ConfigError(f'clients_per_round={config.clients_per_round} is invalid; allowed: at most '
                      f'the {loaded.num_clients} clients of data set {config.data.name!r}')
  model, shapes = model_shapes(config, loaded.example_spec['x'][0], loaded.num_classes)
  if facts.num_params is None:
    check_sizes(config, shapes)
  return model, shapes


def check_built(config, algorithm, client_state0, num_clients: int) -> None:
  """The rules that need the built method, before its round is compiled: the cohort shortcut only
  for a method that allows it, and every client's state within this machine's memory."""
  from fedjax_intrinsic import simulation
  if config.simulation.cohort_shortcut and not algorithm.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid for method.name='
                      f'{config.method.name!r} (not linear in one gradient with no client state); '
                      'allowed: False')
  config_lib.check_client_memory(
      config.method.name, simulation.ClientStateStore.bytes_needed(client_state0, 1), num_clients)
