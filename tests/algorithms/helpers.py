"""Drivers shared by the method tests: run rounds on chosen cohorts, compare parameter vectors."""
import jax
import numpy as np

from fedjax_intrinsic import experiment


def flat(params) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(params)])


def assert_close(a, b, rtol=1e-5):
  """‖a − b‖ within rtol of ‖a‖ (PAPER.md §2: compare with a tolerance relative to ‖θ‖)."""
  a, b = flat(a), flat(b)
  err = np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)
  assert err <= rtol, f'relative error {err:.3g} > {rtol}'


def run(config, cohorts=None, rounds=None):
  """Runs an Experiment; returns (exp, final state, [states before each round], [lines])."""
  exp = experiment.Experiment(config)
  state = exp.init_state()
  states, lines = [], []
  n = len(cohorts) if cohorts is not None else (rounds or config.rounds)
  for e in range(1, n + 1):
    states.append(state)
    state, line = exp.run_round(state, e, None if cohorts is None else cohorts[e - 1])
    lines.append(line)
  return exp, state, states, lines
