"""Config checks shared by the sparsification baselines `local_topk`, `true_topk` and `random_k`.

All three work on the raveled parameters θ: f32[D]. A client's pseudo-gradient is Δ = θ_start −
θ_end after `client.local_steps` SGD steps at `client.lr` (docs/paper.md §2; `recipe.flat_delta`).
A sparse payload is `{'values': f32[k], 'indices': i32[k]}` (`compressors.top_k`, `random_k`); the
server is `servers.sparse_sync` (θ, optimiser state, last_changed: changed-coordinate download).
"""
from typing import Any, Optional

import projections as P
from fedjax_intrinsic.algorithms import servers

TOPK_METHODS = P.sparsify.METHODS   # ('exact', 'threshold')


# ----------------------------------------------------------------------------- config checks


def check_positive_int(value: Any, field: str) -> None:
  from fedjax_intrinsic.config import ConfigError
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f'{field}={value!r} is invalid; allowed: a positive integer <= D '
                      '(the number of model parameters)')


def check_choice(value: Any, field: str, allowed: tuple) -> None:
  from fedjax_intrinsic.config import ConfigError
  if value not in allowed:
    raise ConfigError(f'{field}={value!r} is invalid; allowed: {", ".join(allowed)}')


def check_momentum(value: Any, field: str) -> None:
  from fedjax_intrinsic.config import ConfigError
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
    raise ConfigError(f'{field}={value!r} is invalid; allowed: 0 <= {field.split(".")[-1]} < 1')


def check_one_momentum(config, field: str) -> None:
  """Momentum lives in one place: `field` (the method's) or the server optimiser, not both."""
  from fedjax_intrinsic.config import ConfigError
  if _get(config, field) > 0 and config.server.optimizer in ('momentum', 'nesterov'):
    raise ConfigError(f'{field}={_get(config, field)} is invalid with server.optimizer='
                      f'{config.server.optimizer!r} (momentum in two places); allowed: '
                      f'{field}=0, or server.optimizer=sgd/adam/adamw')


def check_no_cohort_shortcut(config) -> None:
  from fedjax_intrinsic.config import ConfigError
  if config.simulation.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid for method.name='
                      f'{config.method.name!r} (each client compresses its own message); '
                      'allowed: False')


def check_k(k: int, D: int) -> None:
  """Build-time check (D is known only then); ValueError, turned into a ConfigError upstream."""
  if k > D:
    raise ValueError(f'method.k={k} is invalid; allowed: 1 <= k <= D = {D} '
                     '(the number of model parameters)')


def check_feedback_needs_loss(k: int, D: int, error_type: str) -> None:
  if error_type != 'none' and k == D:
    raise ValueError(f'method.error_type={error_type!r} is invalid with method.k = D = {D} '
                     '(everything is sent, nothing to feed back); allowed: none')


def check_masked_momentum(k: int, D: int, momentum: float, field: str) -> None:
  if momentum > 0 and k == D:
    raise ValueError(f'{field}={momentum} is invalid with method.k = D = {D} (momentum factor '
                     'masking zeroes every coordinate each round: no momentum); allowed: 0')


def _get(config, field: str):
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


# ----------------------------------------------------------------------------- the family's checks


def topk_defaults(error_type: str, momentum: str) -> dict:
  """k ≈ 3% of the digits MLP's D = 9,610 (learns on digits; see tests/algorithms/test_topk.py)."""
  return {'k': 300, 'error_type': error_type, momentum: 0.0, 'topk_method': 'exact'}


def validate_fields(config, error_types: tuple, momentum: Optional[str] = None) -> None:
  """k, error_type, topk_method (when the method has it), and the momentum field `momentum`
  (method.<momentum>, in [0, 1), not together with a momentum server optimiser)."""
  m = config.method
  check_positive_int(m.k, 'method.k')
  check_choice(m.error_type, 'method.error_type', error_types)
  if 'topk_method' in m:
    check_choice(m.topk_method, 'method.topk_method', TOPK_METHODS)
  if momentum is not None:
    check_momentum(m[momentum], f'method.{momentum}')
    check_one_momentum(config, f'method.{momentum}')


def sizes(method_config, params0, momentum: Optional[str] = None
          ) -> tuple[servers.Flat, int, int, float]:
  """(raveling, D, k, ρ) with the build-time checks that need D (ValueErrors naming the field)."""
  flat = servers.flat_setup(params0)
  D, k = flat.D, method_config.k
  check_k(k, D)
  check_feedback_needs_loss(k, D, method_config.error_type)
  rho = float(method_config[momentum]) if momentum is not None else 0.0
  if momentum is not None:
    check_masked_momentum(k, D, rho, f'method.{momentum}')
  return flat, D, k, rho
