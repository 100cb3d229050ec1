"""Config validation and the server optimiser, before anything touches data or devices.

`validate(config)` is pure: it reads only the ConfigDict and raises `ConfigError` (a ValueError) whose
one-line message names the field, the value and the allowed values. `check_resources(config)` then
checks what needs the outside world (data directories, memory) — still before any compilation.

The config layout (every experiment in configs/ fills it; `run.py` overrides any field):
  seed, rounds, clients_per_round, eval_every, eval_batch_size, checkpoint_every, time_client_cost,
  data.name + data options, model.name + model options, method.name + method options,
  client.{lr, batch_size (0 = the client's whole data), local_steps (0 = from local_epochs), local_epochs},
  server.{optimizer, lr, momentum, nesterov, weight_decay, schedule, warmup_fraction, b1, b2, eps,
          weighting ('examples' | 'uniform')},
  simulation.{client_parallelism, clients_per_chunk, cohort_shortcut,
              num_devices (devices of the `clients` mesh: 1 = no mesh, 0 = all), model_devices (1)}.
"""
import os

import ml_collections
import optax

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw')
SCHEDULES = ('constant', 'triangular', 'cosine')
WEIGHTINGS = ('examples', 'uniform')


class ConfigError(ValueError):
  """A bad config value; the message is one line naming the field and the allowed values."""


def _fail(field, value, allowed):
  raise ConfigError(f'{field}={value!r} is invalid; allowed: {allowed}')


def _positive_int(config, field):
  value = _get(config, field)
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    _fail(field, value, 'a positive integer')


def _get(config, field):
  node = config
  for part in field.split('.'):
    if part not in node:
      raise ConfigError(f'{field} is missing from the config')
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field that can be checked without data or devices; raises ConfigError."""
  from fedjax_intrinsic import algorithms, data, models, simulation  # registries (no data loaded)
  for field in ('rounds', 'clients_per_round', 'eval_every', 'eval_batch_size'):
    _positive_int(config, field)
  if (isinstance(config.checkpoint_every, bool) or not isinstance(config.checkpoint_every, int)
      or config.checkpoint_every < 0):
    _fail('checkpoint_every', config.checkpoint_every, 'an integer >= 0 (0 = no checkpoints)')
  if not isinstance(config.time_client_cost, bool):
    _fail('time_client_cost', config.time_client_cost, 'true or false')
  if not isinstance(config.seed, int) or isinstance(config.seed, bool) or config.seed < 0:
    _fail('seed', config.seed, 'a non-negative integer')
  for field, names in (('data.name', data.DATASETS), ('model.name', models.MODELS),
                       ('method.name', algorithms.METHODS)):
    if _get(config, field) not in names:
      _fail(field, _get(config, field), ', '.join(names))
  num_clients = config.data.get('num_clients')
  if num_clients is not None:
    _positive_int(config, 'data.num_clients')
    if config.clients_per_round > num_clients:
      _fail('clients_per_round', config.clients_per_round,
            f'at most data.num_clients={num_clients}')
  # Client training.
  if not config.client.lr >= 0:
    _fail('client.lr', config.client.lr, 'a number >= 0')
  for field in ('client.batch_size', 'client.local_steps', 'client.local_epochs'):
    value = _get(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      _fail(field, value, 'an integer >= 0')
  if config.client.local_steps == 0 and config.client.local_epochs == 0:
    _fail('client.local_steps', 0, 'a positive integer, or client.local_epochs > 0')
  # Server.
  s = config.server
  if s.optimizer not in OPTIMIZERS:
    _fail('server.optimizer', s.optimizer, ', '.join(OPTIMIZERS))
  if s.schedule not in SCHEDULES:
    _fail('server.schedule', s.schedule, ', '.join(SCHEDULES))
  if s.weighting not in WEIGHTINGS:
    _fail('server.weighting', s.weighting, ', '.join(WEIGHTINGS))
  if not s.lr >= 0:
    _fail('server.lr', s.lr, 'a number >= 0')
  if not 0 <= s.momentum < 1:
    _fail('server.momentum', s.momentum, '0 <= momentum < 1')
  if not s.weight_decay >= 0:
    _fail('server.weight_decay', s.weight_decay, 'a number >= 0')
  if not 0 <= s.warmup_fraction < 1:
    _fail('server.warmup_fraction', s.warmup_fraction, '0 <= warmup_fraction < 1')
  # Simulation.
  sim = config.simulation
  if sim.client_parallelism not in simulation.CLIENT_PARALLELISM:
    _fail('simulation.client_parallelism', sim.client_parallelism,
          ', '.join(simulation.CLIENT_PARALLELISM))
  _positive_int(config, 'simulation.clients_per_chunk')
  num_devices = sim.get('num_devices', 1)
  if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 0:
    _fail('simulation.num_devices', num_devices, 'an integer >= 0 (0 = all devices, 1 = no mesh)')
  if sim.get('model_devices', 1) != 1:
    _fail('simulation.model_devices', sim.model_devices, '1 (a model axis is not implemented)')
  if num_devices != 1 and sim.client_parallelism == 'loop':
    _fail('simulation.client_parallelism', sim.client_parallelism,
          "'vmap', 'chunked_vmap', 'map' with simulation.num_devices != 1")
  algorithms.validate(config)


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
  c.checkpoint_every = 0      # rounds between checkpoints (0 = none); resumes from the workdir's latest
  c.time_client_cost = False  # time one client's update vs. plain local SGD: the encode cost (time_*)
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
    for cast in (int, float):
      try:
        value = cast(value)
        break
      except ValueError:
        pass
    out[key.strip()] = value
  return out


def check_resources(config: ml_collections.ConfigDict) -> None:
  """Checks what lies outside the config (data directories and files); raises ConfigError.

  Runs after `validate` and before any data is loaded or anything is compiled.
  """
  from fedjax_intrinsic import data
  from fedjax_intrinsic.models import bert, hf_checkpoint
  try:
    data.check_available(config.data.name, **{k: v for k, v in config.data.items() if k != 'name'})
    if config.model.name == 'minilm_l6' and not config.model.get('checkpoint'):
      bert.minilm_file('model.safetensors')          # the installed package's checkpoint
    elif config.model.get('checkpoint') is not None:  # pretrained weights from a local file
      if config.model.name == 'llama':                 # a .gguf file or a preset name
        from fedjax_intrinsic.models import gguf_checkpoint
        gguf_checkpoint.resolve(config.model.checkpoint, 'model.checkpoint')
      else:
        hf_checkpoint.resolve(config.model.checkpoint, 'model.checkpoint')
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
      allowed = sorted(['method', 'model', 'data'] + list(config.method.keys()) +
                       [k for k in config.keys() if not isinstance(config[k], ml_collections.ConfigDict)])
      raise ConfigError(f'config argument {key!r} is unknown; allowed: {", ".join(allowed)}')
  return config
