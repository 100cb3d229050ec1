"""Projection operators by name, for configs: ``get('fastfood', D=D, d=d)``."""
import inspect
from typing import Callable

from projections import base
from projections.dense import dense_gaussian
from projections.fastfood import fastfood
from projections.identity import identity
from projections.sparse import sparse

_FACTORIES: dict[str, Callable[..., base.Projection]] = {
    'dense_gaussian': dense_gaussian,
    'fastfood': fastfood,
    'identity': identity,
    'sparse': sparse,
}
OPERATORS: tuple[str, ...] = tuple(sorted(_FACTORIES))


def get(name: str, **kwargs) -> base.Projection:
  """The operator ``name`` built with ``kwargs`` (``D``, ``d`` and operator options).

  ``identity`` accepts ``d`` only when it equals ``D``. Unknown names or options raise a
  ValueError listing the allowed ones.
  """
  if name not in _FACTORIES:
    raise ValueError(f'name: unknown projection {name!r}; known: {", ".join(OPERATORS)}')
  factory = _FACTORIES[name]
  allowed = tuple(inspect.signature(factory).parameters)
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise ValueError(f'{unknown[0]}: not an option of projection {name!r}; '
                     f'allowed: {", ".join(allowed)}')
  return factory(**kwargs)
