"""Shared small models with their params and jitted functions (compiled once per test session)."""
from typing import Any, Callable, NamedTuple

import jax
import pytest

from fedjax_intrinsic import models

KEY = jax.random.PRNGKey(0)


class Compiled(NamedTuple):
  model: models.Model
  params: Any
  init: Callable    # jitted model.init
  apply: Callable   # jitted model.apply
  metrics: Callable  # jitted model.example_metrics


def compiled(model: models.Model) -> Compiled:
  init = jax.jit(model.init)
  return Compiled(model, init(KEY), init, jax.jit(model.apply), jax.jit(model.example_metrics))


@pytest.fixture(scope='session')
def mlp() -> Compiled:
  return compiled(models.get('mlp', input_shape=(8, 8, 1), num_classes=10, hidden=(16,)))


@pytest.fixture(scope='session')
def lm() -> Compiled:
  return compiled(models.get('transformer_lm', input_shape=(6,), num_classes=11, d_model=16,
                             num_heads=2, d_ff=32))


@pytest.fixture(scope='session')
def small_cnn() -> Compiled:
  return compiled(models.get('cnn', input_shape=(8, 8, 1), num_classes=10, features=(4, 8),
                             dense=(16,), num_groups=2))
