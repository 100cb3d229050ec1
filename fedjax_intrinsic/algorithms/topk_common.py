"""Config checks shared by the sparsification baselines `local_topk`, `true_topk` and `random_k`.

All three work on the raveled parameters θ: f32[D]. A client's pseudo-gradient is Δ = θ_start −
θ_end after `client.local_steps` SGD steps at `client.lr` (docs/paper.md §2; `recipe.flat_delta`).
A sparse payload is `{'values': f32[k], 'indices': i32[k]}` (`compressors.top_k`, `random_k`); the
server is `servers.sparse_sync` (θ, optimiser state, last_changed: changed-coordinate download).
"""
from typing import Optional

import projections as P
from fedjax_intrinsic.algorithms import servers
from fedjax_intrinsic.fields import Bool, Choice, ConfigError, Int, Number

TOPK_METHODS = P.sparsify.METHODS   # ('exact', 'threshold')
D_NOTE = '<= D (the number of model parameters)'   # checked by preflight.check_sizes


# ----------------------------------------------------------------------------- config checks


def check_one_momentum(config, field: str) -> None:
  """Momentum lives in one place: `field` (the method's) or the server optimiser, not both."""
  if _get(config, field) > 0 and config.server.optimizer in ('momentum', 'nesterov'):
    raise ConfigError(f'{field}={_get(config, field)} is invalid with server.optimizer='
                      f'{config.server.optimizer!r} (momentum in two places); allowed: '
                      f'{field}=0, or server.optimizer=sgd/adam/adamw')


def check_no_cohort_shortcut(config) -> None:
  if config.simulation.cohort_shortcut:
    raise ConfigError(f'simulation.cohort_shortcut=True is invalid for method.name='
                      f'{config.method.name!r} (each client compresses its own message); '
                      'allowed: False')


def check_k(k: int, D: int) -> None:
  """Build-time check (D is known only then); ValueError, turned into a ConfigError upstream."""
  if k > D:
    raise ValueError(f'method.k={k} is invalid; allowed: 1 <= k <= D = {D} '
                     '(the number of model parameters)')


def check_feedback_needs_loss(k: int, D: int, error_feedback: bool) -> None:
  if error_feedback and k == D:
    raise ValueError(f'method.error_feedback=True is invalid with method.k = D = {D} '
                     '(everything is sent, nothing to feed back); allowed: False')


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


def topk_fields(error_feedback_doc: str, momentum: str) -> dict:
  """k, error_feedback (on by default, as in FetchSGD; `error_feedback_doc` says where its memory
  is), the momentum field `momentum` and topk_method. k = 300 ≈ 3% of the digits MLP's D = 9,610
  (learns on digits; see tests/algorithms/test_topk.py)."""
  return {
      'k': Int(300, lo=1, note=D_NOTE, doc='coordinates applied per round'),
      'error_feedback': Bool(True, doc=error_feedback_doc),
      momentum: Number(0.0, 0, 1, hi_open=True,
                       doc='momentum ρ before the top-k (masked where applied); not with a '
                           'momentum server optimiser'),
      'topk_method': Choice('exact', TOPK_METHODS,
                            doc='exact top-k (a sort), or counting passes over a threshold'),
  }


def sizes(method_config, params0, momentum: Optional[str] = None
          ) -> tuple[servers.Flat, int, int, float]:
  """(raveling, D, k, ρ) with the build-time checks that need D (ValueErrors naming the field)."""
  flat = servers.flat_setup(params0)
  D, k = flat.D, method_config.k
  check_k(k, D)
  check_feedback_needs_loss(k, D, method_config.error_feedback)
  rho = float(method_config[momentum]) if momentum is not None else 0.0
  if momentum is not None:
    check_masked_momentum(k, D, rho, f'method.{momentum}')
  return flat, D, k, rho
