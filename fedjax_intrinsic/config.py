"""The config's fields, their defaults and their checks, and the server optimiser.

A leaf module: it imports no registry (algorithms, data, models, simulation). Its fields are
declared once in `FIELDS` (fedjax_intrinsic/fields.py's vocabulary): `base_config()` is their
defaults and `validate_run(config)` checks them and the rules between them; pure, a `ConfigError`
(a ValueError) whose one line names the field, the value and the allowed values.
`preflight.validate` adds what needs the registries (the names of the data set, model, method and
client-parallelism strategy, the method's own declared fields and rules), and `preflight.check` what
needs the outside world (data files, D from the model's shapes, devices), before any compilation.

The config layout (every experiment in configs/ fills it; `run.py` overrides any field):
  seed, rounds, clients_per_round, eval_every, eval_batch_size, eval_splits (EVAL_SPLITS: which
  held-out splits an evaluation round scores), eval_initial (also score θ0, before round 1:
  summary.json 'initial'), checkpoint_every, time_client_cost,
  divergence_loss_ratio (a run is 'diverged' at the first round whose training loss is non-finite or
  above this multiple of round 1's; 0 = non-finite only),
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

from fedjax_intrinsic import fields
from fedjax_intrinsic.fields import Bool, Choice, ConfigError, Int, Number, Text

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw')
SCHEDULES = ('constant', 'triangular', 'cosine')
WEIGHTINGS = ('examples', 'uniform')
EVAL_SPLITS = ('test,validation', 'test', 'validation')   # metrics test_* and/or val_*
MAX_SEED = 2**32 - 1          # keys.run_key: PRNGKey keeps 32 bits; larger seeds would collide
# Host bytes a run keeps per round whatever the model: the sampling and round key tables
# (2 x uint32[2]), their derivation's temporaries and the K-subspace schedule (int32), rounded up.
BYTES_PER_ROUND = 64
MAX_ROUND = 2**31 - 2         # the servers' round counters are int32

# Every field of a run but the data set's, the model's and the method's options (`OPEN_GROUPS`:
# the loader, the model and the method module declare those), declared once: base_config() is
# their defaults, validate_run checks them.
FIELDS = {
    'seed': Int(0, 0, MAX_SEED, doc='every random key of the run derives from it (keys.py)'),
    'rounds': Int(100, lo=1, doc='federated rounds'),
    'clients_per_round': Int(10, lo=1, note='<= the data set\'s clients',
                             doc='clients sampled each round (the cohort)'),
    'eval_every': Int(10, lo=1, doc='rounds between evaluations'),
    'eval_batch_size': Int(512, lo=1, doc='examples per evaluation batch (padded)'),
    'eval_splits': Choice('test,validation', EVAL_SPLITS,
                          doc='held-out splits an evaluation scores (metrics test_*, val_*)'),
    'eval_initial': Bool(False, doc='also evaluate θ0 before round 1 (summary.json: initial)'),
    'checkpoint_every': Int(0, lo=0, note='(0 = no checkpoints)',
                            doc='rounds between checkpoints; a run resumes from the latest'),
    'time_client_cost': Bool(False, doc='time one client\'s update vs. plain local SGD (time_*)'),
    # 100: above every committed sane run (benchmarks/results: at most ~36x, signSGD-MV's early
    # spikes on the digits MLP) and below the runaway runs (1e3x and more).
    'divergence_loss_ratio': Number(
        100.0, lo=1, lo_open=True, also=(0,), allowed='0 (non-finite loss only) or a number > 1',
        doc='a run is diverged at the first round whose training loss is non-finite or above '
            'this multiple of round 1\'s'),
    'data': {'name': Text('digits', doc='the data set (data.DATASETS); its options are its '
                                        'loader\'s arguments')},
    'model': {'name': Text('mlp', doc='the model (models.MODELS); its options are its builder\'s')},
    'method': {'name': Text('uncompressed', doc='the method (algorithms.METHODS); its fields: '
                                                 'docs/methods.md')},
    'client': {
        'lr': Number(1.0, lo=0, doc='local SGD rate'),
        'batch_size': Int(0, lo=0, note='(0 = the client\'s whole data)', doc='local batch size'),
        'local_steps': Int(1, lo=0, note='(0 = from client.local_epochs)',
                           doc='local SGD steps a round'),
        'local_epochs': Int(0, lo=0, doc='local epochs a round, when local_steps = 0'),
    },
    'server': {
        'optimizer': Choice('sgd', OPTIMIZERS, doc='applied to the aggregate, one step a round'),
        'lr': Number(0.1, lo=0, doc='server rate'),
        'momentum': Number(0.0, 0, 1, hi_open=True, doc='for optimizer momentum / nesterov'),
        'nesterov': Bool(False, doc='Nesterov momentum with optimizer momentum'),
        'weight_decay': Number(0.0, lo=0, doc='decoupled weight decay'),
        'schedule': Choice('constant', SCHEDULES, doc='the server rate\'s schedule over rounds'),
        'warmup_fraction': Number(0.2, 0, 1, hi_open=True,
                                  doc='rounds of linear warm-up (schedule triangular)'),
        'b1': Number(0.9, 0, 1, hi_open=True, doc='adam / adamw'),
        'b2': Number(0.999, 0, 1, hi_open=True, doc='adam / adamw'),
        'eps': Number(1e-8, lo=0, lo_open=True, doc='adam / adamw'),
        'weighting': Choice('examples', WEIGHTINGS,
                            doc='clients weighted by their examples, or equally'),
    },
    'simulation': {
        'client_parallelism': Text('auto', doc='how clients run in parallel '
                                               '(simulation.CLIENT_PARALLELISM)'),
        'clients_per_chunk': Int(10, lo=1, doc='clients per chunk (chunked_vmap)'),
        'cohort_shortcut': Bool(False, doc='one gradient of the cohort for methods linear in it'),
        'num_devices': Int(1, lo=0, note='(0 = all devices, 1 = no mesh)',
                           doc='devices of the clients mesh'),
        'model_devices': Int(1, 1, 1, allowed='1 (a model axis is not implemented)',
                             doc='devices of a model axis'),
    },
}
OPEN_GROUPS = ('data', 'model', 'method')


def max_rounds(memory_fraction: float = 0.25) -> int:
  """The most rounds a run can hold: int32 round counters, per-round tables in memory."""
  total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return int(min(MAX_ROUND, memory_fraction * total // BYTES_PER_ROUND))


def validate_run(config: ml_collections.ConfigDict) -> None:
  """Checks the run's own fields (`FIELDS`: every field but the data, model and method options)
  and the rules between them; pure, raises ConfigError. `preflight.validate` runs it, then checks
  the names against the registries and the method's fields (this module imports no registry)."""
  fields.check_names(FIELDS, config, missing='every field of config.base_config()',
                     open_groups=OPEN_GROUPS)
  fields.check(FIELDS, config)
  if config.rounds > max_rounds():
    fields.fail('rounds', config.rounds, f'1 .. {max_rounds():,} (per-round tables of '
                f'{BYTES_PER_ROUND} bytes within a quarter of this machine\'s memory; int32 round '
                'counters)')
  num_clients = config.data.get('num_clients')   # its own rule: its data set's (data.validate)
  if fields.is_int(num_clients, 1):
    if config.clients_per_round > num_clients:
      fields.fail('clients_per_round', config.clients_per_round,
                  f'at most data.num_clients={num_clients}')
  if config.client.local_steps == 0 and config.client.local_epochs == 0:
    fields.fail('client.local_steps', 0, 'a positive integer, or client.local_epochs > 0')
  sim = config.simulation
  if sim.num_devices != 1 and sim.client_parallelism == 'loop':
    fields.fail('simulation.client_parallelism', sim.client_parallelism,
                "'vmap', 'chunked_vmap', 'map' with simulation.num_devices != 1")


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
  """Every field with its default (`FIELDS`); experiments in configs/ start from this and change
  what differs."""
  return ml_collections.ConfigDict(fields.defaults(FIELDS))


def split_arg(arg: str | None) -> dict:
  """'method=fedavg,d=1000' -> {'method': 'fedavg', 'd': '1000'} (the values as text)."""
  out = {}
  for item in filter(None, (arg or '').split(',')):
    if '=' not in item:
      raise ConfigError(f'config argument {item!r} is invalid; allowed: key=value pairs separated by commas')
    key, value = item.split('=', 1)
    if not key.strip():
      raise ConfigError(f'config argument {item!r} has no key; allowed: key=value pairs separated '
                        'by commas')
    out[key.strip()] = value
  return out


def parse_arg(arg: str | None) -> dict:
  """'method=fedavg,d=1000' -> {'method': 'fedavg', 'd': 1000} (ints and floats parsed, for a
  config file's own keys; preflight.apply_arg parses a field's value by the field's type)."""
  out = split_arg(arg)
  for key, value in out.items():
    for cast in (int, float):
      try:
        value = cast(value)
        break
      except ValueError:
        pass
    out[key] = value
  return out


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


# Per-method budgets for models of ~10^8 parameters (GPT-2 small, BERT-base): the project's
# choice, untuned; methods that would keep a D-sized state per client run without it (17,568
# PersonaChat clients x 0.5 GB fit no host).
LARGE_MODEL_BUDGETS = {
    'intrinsic_static': {'d': 2**17},
    'intrinsic_k_subspace': {'d': 2**17},
    'intrinsic_time_varying': {'d': 2**17},
    'local_topk': {'k': 2**17, 'error_feedback': False},
    'true_topk': {'k': 2**17},
    'random_k': {'k': 2**17},
    'fetchsgd': {'rows': 5, 'cols': 2**20, 'k': 2**17},
    'sketched_sgd': {'rows': 5, 'cols': 2**20, 'k': 2**17},
    'powersgd': {'error_feedback': False},
}


# Methods whose one-step client message is linear in the gradient, without client state, so that
# simulation.cohort_shortcut applies with their default fields (the configs of pretrained models
# turn it on for these).
COHORT_SHORTCUT_METHODS = ('uncompressed', 'intrinsic_static', 'intrinsic_k_subspace',
                           'intrinsic_time_varying', 'true_topk', 'fetchsgd')


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
