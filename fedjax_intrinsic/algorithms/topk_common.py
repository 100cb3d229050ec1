"""Config checks shared by the sparsification baselines `local_topk`, `true_topk` and `random_k`.

All three work on the raveled parameters θ: f32[D]. A client's pseudo-gradient is Δ = θ_start −
θ_end after `client.local_steps` SGD steps at `client.lr` (docs/paper.md §2; `recipe.flat_delta`).
A sparse payload is `{'values': f32[k], 'indices': i32[k]}` (`compressors.top_k`, `random_k`); the
server is `servers.sparse_sync` (θ, optimiser state, last_changed: changed-coordinate download).
"""
from typing import Any

import projections as P

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
