"""Config validation and the server optimiser, before anything touches data or devices.

`validate(config)` is pure: it reads only the ConfigDict and raises `ConfigError` (a ValueError) whose
one-line message names the field, the value and the allowed values. `check_resources(config)` then
checks what needs the outside world (data directories, memory) — still before any compilation.

The config layout (every experiment in configs/ fills it; `run.py` overrides any field):
  seed, rounds, clients_per_round, eval_every, eval_batch_size, eval_splits (EVAL_SPLITS: which
  held-out splits an evaluation round scores), checkpoint_every, time_client_cost,
  divergence_loss_ratio (a run is 'diverged' at the first round whose training loss is non-finite or
  above this multiple of round 1's; 0 = non-finite only),
  data.name + data options, model.name + model options, method.name + method options,
  client.{lr, batch_size (0 = the client's whole data), local_steps (0 = from local_epochs), local_epochs},
  server.{optimizer, lr, momentum, nesterov, weight_decay, schedule, warmup_fraction, b1, b2, eps,
          weighting ('examples' | 'uniform')},
  simulation.{client_parallelism, clients_per_chunk, cohort_shortcut,
              num_devices (devices of the `clients` mesh: 1 = no mesh, 0 = all), model_devices (1)}.
"""
import math
import os

import ml_collections
import optax

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw')
SCHEDULES = ('constant', 'triangular', 'cosine')
WEIGHTINGS = ('examples', 'uniform')
EVAL_SPLITS = ('test,validation', 'test', 'validation')   # metrics test_* and/or val_*


class ConfigError(ValueError):
  """A bad config value; the message is one line naming the field and the allowed values."""


def _fail(field, value, allowed):
  raise ConfigError(f'{field}={value!r} is invalid; allowed: {allowed}')


def is_real(value) -> bool:
  """value is an int or a float, and not a bool."""
  return not isinstance(value, bool) and isinstance(value, (int, float))


def is_int(value, lo=None, hi=None) -> bool:
  """value is an int (not a bool) in [lo, hi] (None: unbounded on that side)."""
  return (not isinstance(value, bool) and isinstance(value, int)
          and (lo is None or value >= lo) and (hi is None or value <= hi))


def is_number(value, lo=None, hi=None, lo_open=False, hi_open=False) -> bool:
  """value is a finite int or float (not a bool) in the interval given (None: unbounded)."""
  return (is_real(value) and math.isfinite(value)
          and (lo is None or (value > lo if lo_open else value >= lo))
          and (hi is None or (value < hi if hi_open else value <= hi)))


def _positive_int(config, field):
  value = _get(config, field)
  if not is_int(value, 1):
    _fail(field, value, 'a positive integer')


def _get(config, field):
  node = config
  for part in field.split('.'):
    if part not in node:
      raise ConfigError(f'{field} is missing from the config')
    node = node[part]
  return node


def type_name(value) -> str:
  """The kind of value `value` is, as an error's 'allowed:' names it."""
  if isinstance(value, bool):
    return 'true or false'
  if isinstance(value, int):
    return 'an integer'
  if isinstance(value, float):
    return 'a number'
  if isinstance(value, str):
    return 'a string'
  if isinstance(value, (tuple, list)):
    return 'a tuple such as (1, 2)'
  return type(value).__name__


def _same_kind(default, value) -> bool:
  """value has the type of default (an int is a float; a float is never an int)."""
  if default is None or value is None:
    return True
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(default, bool) and isinstance(value, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(default))


def check_fields(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
                 prefix: str = '', open_groups: tuple = ('data', 'model', 'method')) -> None:
  """Every field of `config` exists in `reference` with the same type (ints are not floats);
  the groups in `open_groups` are checked against their data set, model and method instead."""
  for key in config.keys():
    field = prefix + key
    value = config[key]
    if key not in reference:
      allowed = ', '.join(prefix + k for k in sorted(reference.keys()))
      _fail(field, value, f'no such field; the fields here: {allowed}')
    ref = reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        _fail(field, value, f'a group of fields ({", ".join(field + "." + k for k in ref.keys())})')
      if not prefix and key in open_groups:
        continue
      check_fields(value, ref, field + '.', open_groups)
    elif not _same_kind(ref, value):
      _fail(field, value, type_name(ref))
  for key in reference.keys():
    if key not in config:
      raise ConfigError(f'{prefix + key} is missing from the config; allowed: every field of '
                        'config.base_config()')


def _number(config, field, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
  """field: a finite int or float in the interval given (None: unbounded on that side)."""
  value = _get(config, field)
  if not is_number(value, lo, hi, lo_open, hi_open):
    name = field.split('.')[-1]
    if lo is not None and hi is not None:
      allowed = f'{lo} {"<" if lo_open else "<="} {name} {"<" if hi_open else "<="} {hi}'
    elif lo is not None:
      allowed = f'a finite number {">" if lo_open else ">="} {lo}'
    else:
      allowed = 'a finite number'
    _fail(field, value, allowed)


# Finite numbers and their ranges (field: lo, hi, lo_open, hi_open), checked for every config.
NUMBERS = {
    'client.lr': (0, None, False, False),
    'server.lr': (0, None, False, False),
    'server.momentum': (0, 1, False, True),
    'server.weight_decay': (0, None, False, False),
    'server.warmup_fraction': (0, 1, False, True),
    'server.b1': (0, 1, False, True),
    'server.b2': (0, 1, False, True),
    'server.eps': (0, None, True, False),
}
MAX_SEED = 2**32 - 1          # keys.run_key: PRNGKey keeps 32 bits; larger seeds would collide
# Host bytes a run keeps per round whatever the model: the sampling and round key tables
# (2 x uint32[2]), their derivation's temporaries and the K-subspace schedule (int32), rounded up.
BYTES_PER_ROUND = 64
MAX_ROUND = 2**31 - 2         # the servers' round counters are int32


def max_rounds(memory_fraction: float = 0.25) -> int:
  """The most rounds a run can hold: int32 round counters, per-round tables in memory."""
  total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return int(min(MAX_ROUND, memory_fraction * total // BYTES_PER_ROUND))


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field that can be checked without data or devices; raises ConfigError."""
  from fedjax_intrinsic import algorithms, data, models, simulation  # registries (no data loaded)
  check_fields(config, base_config())
  for field in ('rounds', 'clients_per_round', 'eval_every', 'eval_batch_size'):
    _positive_int(config, field)
  if config.rounds > max_rounds():
    _fail('rounds', config.rounds, f'1 .. {max_rounds():,} (per-round tables of '
          f'{BYTES_PER_ROUND} bytes within a quarter of this machine\'s memory; int32 round '
          'counters)')
  if not is_int(config.checkpoint_every, 0):
    _fail('checkpoint_every', config.checkpoint_every, 'an integer >= 0 (0 = no checkpoints)')
  if not isinstance(config.time_client_cost, bool):
    _fail('time_client_cost', config.time_client_cost, 'true or false')
  if config.eval_splits not in EVAL_SPLITS:
    _fail('eval_splits', config.eval_splits, ', '.join(EVAL_SPLITS))
  if not is_int(config.seed, 0, MAX_SEED):
    _fail('seed', config.seed, f'an integer 0 .. 2**32 - 1 = {MAX_SEED}')
  for field, names in (('data.name', data.DATASETS), ('model.name', models.MODELS),
                       ('method.name', algorithms.METHODS)):
    if _get(config, field) not in names:
      _fail(field, _get(config, field), ', '.join(names))
  _check_method_fields(config)
  for field, (lo, hi, lo_open, hi_open) in NUMBERS.items():
    _number(config, field, lo, hi, lo_open, hi_open)
  num_clients = config.data.get('num_clients')
  if num_clients is not None:
    _positive_int(config, 'data.num_clients')
    if config.clients_per_round > num_clients:
      _fail('clients_per_round', config.clients_per_round,
            f'at most data.num_clients={num_clients}')
  ratio = config.get('divergence_loss_ratio', 0.0)
  if not is_real(ratio) or not (ratio == 0 or ratio > 1):
    _fail('divergence_loss_ratio', ratio, '0 (non-finite loss only) or a number > 1')
  # Client training (client.lr: NUMBERS).
  for field in ('client.batch_size', 'client.local_steps', 'client.local_epochs'):
    value = _get(config, field)
    if not is_int(value, 0):
      _fail(field, value, 'an integer >= 0')
  if config.client.local_steps == 0 and config.client.local_epochs == 0:
    _fail('client.local_steps', 0, 'a positive integer, or client.local_epochs > 0')
  # Server (its numbers: NUMBERS).
  s = config.server
  if s.optimizer not in OPTIMIZERS:
    _fail('server.optimizer', s.optimizer, ', '.join(OPTIMIZERS))
  if s.schedule not in SCHEDULES:
    _fail('server.schedule', s.schedule, ', '.join(SCHEDULES))
  if s.weighting not in WEIGHTINGS:
    _fail('server.weighting', s.weighting, ', '.join(WEIGHTINGS))
  # Simulation.
  sim = config.simulation
  if sim.client_parallelism not in simulation.CLIENT_PARALLELISM:
    _fail('simulation.client_parallelism', sim.client_parallelism,
          ', '.join(simulation.CLIENT_PARALLELISM))
  _positive_int(config, 'simulation.clients_per_chunk')
  num_devices = sim.get('num_devices', 1)
  if not is_int(num_devices, 0):
    _fail('simulation.num_devices', num_devices, 'an integer >= 0 (0 = all devices, 1 = no mesh)')
  if sim.get('model_devices', 1) != 1:
    _fail('simulation.model_devices', sim.model_devices, '1 (a model axis is not implemented)')
  if num_devices != 1 and sim.client_parallelism == 'loop':
    _fail('simulation.client_parallelism', sim.client_parallelism,
          "'vmap', 'chunked_vmap', 'map' with simulation.num_devices != 1")
  algorithms.validate(config)


def _check_method_fields(config) -> None:
  """config.method has exactly its method's fields (algorithms.default_config), each of its type."""
  from fedjax_intrinsic import algorithms
  m = config.method
  ref = algorithms.default_config(m.name)
  for key in m.keys():
    if key not in ref:
      _fail(f'method.{key}', m[key], f'no such field of method.name={m.name!r}; its fields: '
            + ', '.join(f'method.{k}' for k in ref.keys() if k != 'name'))
    if not _same_kind(ref[key], m[key]):
      _fail(f'method.{key}', m[key], type_name(ref[key]))
  for key in ref.keys():
    if key not in m:
      raise ConfigError(f'method.{key} is missing for method.name={m.name!r}; allowed: the '
                        f'method\'s own fields (:method={m.name} in the config argument sets them)')


def server_optimizer(server: ml_collections.ConfigDict, rounds: int) -> optax.GradientTransformation:
  """The optax transformation the server applies to the mean pseudo-gradient, one step a round."""
  lr = server.lr
  if server.schedule == 'triangular':   # FetchSGD's: linear warm-up to lr, then linear decay to 0
    warm = max(int(server.warmup_fraction * rounds), 1)
    lr = optax.join_schedules([optax.linear_schedule(0.0, server.lr, warm),
                               optax.linear_schedule(server.lr, 0.0, max(rounds - warm, 1))], [warm])
  elif server.schedule == 'cosine':
    lr = optax.cosine_decay_schedule(server.lr, rounds)
  name = server.optimizer
  if name == 'sgd':
    opt = optax.sgd(lr)
  elif name in ('momentum', 'nesterov'):
    opt = optax.sgd(lr, momentum=server.momentum, nesterov=(name == 'nesterov' or server.nesterov))
  elif name == 'adam':
    opt = optax.adam(lr, b1=server.b1, b2=server.b2, eps=server.eps)
  else:
    opt = optax.adamw(lr, b1=server.b1, b2=server.b2, eps=server.eps,
                      weight_decay=server.weight_decay)
  if server.weight_decay and name != 'adamw':
    opt = optax.chain(optax.add_decayed_weights(server.weight_decay), opt)
  return opt


def server_optimizer_is_stateless(server: ml_collections.ConfigDict) -> bool:
  """True when a server step depends only on the current aggregate (plain SGD, constant rate)."""
  return (server.optimizer == 'sgd' and server.schedule == 'constant'
          and not server.weight_decay)


def base_config() -> ml_collections.ConfigDict:
  """Every field with its default; experiments in configs/ start from this and change what differs."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.rounds = 100
  c.clients_per_round = 10
  c.eval_every = 10
  c.eval_batch_size = 512
  c.eval_splits = 'test,validation'
  c.checkpoint_every = 0      # rounds between checkpoints (0 = none); resumes from the workdir's latest
  c.time_client_cost = False  # time one client's update vs. plain local SGD: the encode cost (time_*)
  # 'diverged' when the training loss is non-finite or exceeds this multiple of round 1's (0: the
  # first only). 100: above every committed sane run (benchmarks/results: at most ~36x, signSGD-MV's
  # early spikes on the digits MLP) and below the runaway runs (1e3x and more).
  c.divergence_loss_ratio = 100.0
  c.data = ml_collections.ConfigDict({'name': 'digits'})
  c.model = ml_collections.ConfigDict({'name': 'mlp'})
  c.method = ml_collections.ConfigDict({'name': 'uncompressed'})
  c.client = ml_collections.ConfigDict(
      {'lr': 1.0, 'batch_size': 0, 'local_steps': 1, 'local_epochs': 0})
  c.server = ml_collections.ConfigDict({
      'optimizer': 'sgd', 'lr': 0.1, 'momentum': 0.0, 'nesterov': False, 'weight_decay': 0.0,
      'schedule': 'constant', 'warmup_fraction': 0.2, 'b1': 0.9, 'b2': 0.999, 'eps': 1e-8,
      'weighting': 'examples'})
  c.simulation = ml_collections.ConfigDict(
      {'client_parallelism': 'auto', 'clients_per_chunk': 10, 'cohort_shortcut': False,
       'num_devices': 1, 'model_devices': 1})
  return c


def parse_arg(arg: str | None) -> dict:
  """'method=fedavg,d=1000' -> {'method': 'fedavg', 'd': 1000} (ints and floats parsed)."""
  out = {}
  for item in filter(None, (arg or '').split(',')):
    if '=' not in item:
      raise ConfigError(f'config argument {item!r} is invalid; allowed: key=value pairs separated by commas')
    key, value = item.split('=', 1)
    if not key.strip():
      raise ConfigError(f'config argument {item!r} has no key; allowed: key=value pairs separated '
                        'by commas')
    for cast in (int, float):
      try:
        value = cast(value)
        break
      except ValueError:
        pass
    out[key.strip()] = value
  return out


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


def check_client_memory(method: str, bytes_per_client: int, num_clients: int,
                        memory_fraction: float = 0.5) -> None:
  """Refuses a run whose client states (num_clients x bytes_per_client) would not fit in memory.

  Client state (local error feedback, local momentum) lives on the host for every client.
  """
  need = bytes_per_client * num_clients
  total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  if need > memory_fraction * total:
    raise ConfigError(
        f'method.name={method!r} keeps {bytes_per_client / 2**20:.1f} MiB of state per client, '
        f'{need / 2**30:.1f} GiB for data.num_clients={num_clients}: more than '
        f'{memory_fraction:.0%} of this machine\'s {total / 2**30:.1f} GiB; allowed: a method '
        'without client state, fewer clients, or a smaller model')


def _cast_like(old, value, field: str):
  """`value` (parsed from a config argument) as the type of the field's default `old`."""
  if isinstance(old, bool):
    text = str(value).lower()
    if text not in ('true', 'false', '1', '0'):
      _fail(field, value, 'true or false')
    return text in ('true', '1')
  if old is None:
    return value
  if isinstance(old, int):       # never round: a float given for an integer field is refused
    if not is_int(value):
      _fail(field, value, 'an integer')
    return value
  if isinstance(old, float):
    if not is_real(value):
      _fail(field, value, 'a number')
    return float(value)
  if isinstance(old, str):
    return str(value)
  try:
    return type(old)(value)
  except (TypeError, ValueError):
    _fail(field, value, f'a value of type {type(old).__name__}')


# Per-method budgets for models of ~10^8 parameters (GPT-2 small, BERT-base): the project's
# choice, untuned; methods that would keep a D-sized state per client run without it (17,568
# PersonaChat clients x 0.5 GB fit no host).
LARGE_MODEL_BUDGETS = {
    'intrinsic_static': {'d': 2**17},
    'intrinsic_k_subspace': {'d': 2**17},
    'intrinsic_time_varying': {'d': 2**17},
    'local_topk': {'k': 2**17, 'error_type': 'none'},
    'true_topk': {'k': 2**17},
    'random_k': {'k': 2**17},
    'fetchsgd': {'rows': 5, 'cols': 2**20, 'k': 2**17},
    'sketched_sgd': {'rows': 5, 'cols': 2**20, 'k': 2**17},
    'powersgd': {'error_feedback': False},
}


def apply_arg(config: ml_collections.ConfigDict, arg: str | None,
              budgets: dict | None = None) -> ml_collections.ConfigDict:
  """Applies a config-file argument such as 'method=fedavg,model=mlp,rounds=50,d=1000'.

  `method=NAME` replaces config.method with that method's defaults, updated with `budgets[NAME]`
  (an experiment's own budgets) when given; `model`, `data` set the names; any other key sets the
  method field of that name, else the top-level field of that name.
  """
  from fedjax_intrinsic import algorithms
  values = parse_arg(arg)
  name = values.pop('method', None)
  if name is None and budgets is not None:
    name = config.method.name
  if name is not None:
    if name not in algorithms.METHODS:
      _fail('method.name', name, ', '.join(algorithms.METHODS))
    config.method = algorithms.default_config(name)
    config.method.update((budgets or {}).get(name, {}))
  for key in ('model', 'data'):
    if key in values:
      config[key].name = values.pop(key)
  for key, value in values.items():
    if key in config.method:
      config.method[key] = _cast_like(config.method[key], value, f'method.{key}')
    elif key in config and not isinstance(config[key], ml_collections.ConfigDict):
      config[key] = _cast_like(config[key], value, key)
    else:
      allowed = sorted(['method', 'model', 'data'] + [k for k in config.method.keys() if k != 'name'] +
                       [k for k in config.keys() if not isinstance(config[k], ml_collections.ConfigDict)])
      raise ConfigError(f'config argument {key!r} is unknown; allowed: {", ".join(allowed)}')
  return config


def set_one_step_protocol(c: ml_collections.ConfigDict, *, fedavg_lr: float,
                          fedavg_batch_size: int, batch_size: int, server_lr: float,
                          server_optimizer: str = 'adam') -> None:
  """The protocol most configs share, set for c.method.name. FedAvg: one local epoch of SGD at
  client rate `fedavg_lr` (batches of `fedavg_batch_size`), server SGD at 1.0 on the mean model
  change. Every other method: one local step on a batch of `batch_size` (0: the client's whole
  data) at client rate 1, so that what a client compresses is its gradient, and the server's
  `server_optimizer` at `server_lr` on the aggregate."""
  if c.method.name == 'fedavg':
    c.client.update({'lr': fedavg_lr, 'batch_size': fedavg_batch_size, 'local_steps': 0,
                     'local_epochs': 1})
    c.server.update({'optimizer': 'sgd', 'lr': 1.0})
  else:
    c.client.update({'lr': 1.0, 'batch_size': batch_size, 'local_steps': 1, 'local_epochs': 0})
    c.server.update({'optimizer': server_optimizer, 'lr': server_lr})
