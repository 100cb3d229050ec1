"""Federated methods, one file each, selected by `config.method.name` (see base.py for the interface)."""
import importlib

from fedjax_intrinsic.algorithms.base import BuildContext, FederatedAlgorithm

# name -> module (relative to this package) whose `build(method_config, ctx)` makes the method.
_METHODS = {
    'uncompressed': 'uncompressed',
    'fedavg': 'fedavg',
    'intrinsic_static': 'intrinsic_static',
    'intrinsic_k_subspace': 'intrinsic_k_subspace',
    'intrinsic_time_varying': 'intrinsic_time_varying',
    'sign_sgd': 'sign_sgd',
    'powersgd': 'powersgd',
    'fetchsgd': 'fetchsgd',
    'sketched_sgd': 'sketched_sgd',
    'local_topk': 'local_topk',
    'true_topk': 'true_topk',
    'random_k': 'random_k',
}
METHODS = tuple(sorted(_METHODS))


def get(name: str, method_config, ctx: BuildContext) -> FederatedAlgorithm:
  """Builds method `name`; an unknown name raises ValueError listing the known ones."""
  if name not in _METHODS:
    raise ValueError(f'method.name={name!r} is unknown; known methods: {", ".join(METHODS)}')
  module = importlib.import_module(f'fedjax_intrinsic.algorithms.{_METHODS[name]}')
  return module.build(method_config, ctx)


def validate(config) -> None:
  """Runs the method's own `validate(config)` (if its module has one): pure, one-line ConfigErrors."""
  module = importlib.import_module(f'fedjax_intrinsic.algorithms.{_METHODS[config.method.name]}')
  if hasattr(module, 'validate'):
    module.validate(config)


def default_config(name: str):
  """The method's config (`name` plus its own fields with their defaults), from its module."""
  import ml_collections
  if name not in _METHODS:
    raise ValueError(f'method.name={name!r} is unknown; known methods: {", ".join(METHODS)}')
  module = importlib.import_module(f'fedjax_intrinsic.algorithms.{_METHODS[name]}')
  fields = module.default_config() if hasattr(module, 'default_config') else {}
  return ml_collections.ConfigDict({'name': name, **fields})
