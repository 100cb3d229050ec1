"""Drivers shared by the method tests: run rounds on chosen cohorts, compare parameter vectors."""
import jax
import numpy as np

from fedjax_intrinsic import experiment


def flat(params) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(params)])


def assert_close(a, b, rtol=1e-5):
  """‖a − b‖ within rtol of ‖a‖ (docs/paper.md §2: compare with a tolerance relative to ‖θ‖)."""
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


def simulate_client_syncs(alg, params0, states, schedule, memo=None):
  """A client that syncs at the rounds of `schedule` (increasing, 1-based), keeping only what it
  received: it starts fresh (`alg.init(params0)`, held round 1), and at each sync round s downloads
  `catch_up(states[s-1], h)`, rebuilds θ from its kept state, then keeps `alg.keep(...)` and holds
  the round `alg.held_after` says (s by default). states[r-1]: the server state before round r.
  Checks at every sync that the rebuilt θ is the server's and the payload's bytes are what
  `download_bytes` charges; returns the held rounds after each sync. `memo` (a dict shared by the
  calls of one run's schedules) keeps what a client holds after each schedule prefix: a client's
  state after syncs s_1 … s_i depends on those rounds only, so each distinct prefix is checked once
  (and the fresh client's `alg.init(params0)`, the empty prefix, is built once, and the server's
  θ is read with one jitted `alg.model_params`). `alg.init` is jittable (base.py): the fresh
  client's state is built by `jax.jit(alg.init)`, the program `Experiment.init_state` compiled
  already (served by the compilation cache), not op by op.
  """
  memo = {} if memo is None else memo
  if () not in memo:     # the fresh client (no sync yet): the same for every schedule of the run
    memo[()] = (jax.jit(alg.init)(params0), 1)
  if 'model_params' not in memo:   # jittable for every method (base.py): one compilation a run
    memo['model_params'] = jax.jit(alg.model_params)
  (held, h), helds, model_params = memo[()], [], memo['model_params']
  for i, s in enumerate(schedule):
    prefix = tuple(schedule[:i + 1])
    if prefix in memo:
      held, h = memo[prefix]
      helds.append(h)
      continue
    state = states[s - 1]
    payload = alg.catch_up(state, h)
    assert_close(model_params(state), alg.rebuild(held, payload, h, s), rtol=1e-5)
    nbytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(payload))
    assert nbytes == int(alg.download_bytes(state, np.array([h]))[0]), (alg.name, schedule, s, h)
    if alg.keep is not None:
      held = alg.keep(held, payload, h, s)
    h = s if alg.held_after is None else int(alg.held_after(state, np.array([h]))[0])
    memo[prefix] = (held, h)
    helds.append(h)
  return helds


def every_schedule(num_states, max_syncs=None):
  """Every non-empty increasing subset of rounds 1 … num_states with at most max_syncs rounds
  (None: all), plus every round: the sync schedules of the simulated clients."""
  import itertools
  rounds = range(1, num_states + 1)
  top = num_states if max_syncs is None else min(max_syncs, num_states)
  out = [list(c) for n in range(1, top + 1) for c in itertools.combinations(rounds, n)]
  return out if top == num_states else out + [list(rounds)]


def run_and_keep_experiment(config, workdir, monkeypatch):
  """`experiment.run(config, workdir)`, as run.py calls it; returns (summary, the Experiment it
  built), so that a test reuses its data, θ0 and evaluator (e.g. a control evaluating θ0 on the
  same test split) instead of building them again."""
  made = []

  class Recording(experiment.Experiment):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      made.append(self)

  monkeypatch.setattr(experiment, 'Experiment', Recording)
  summary = experiment.run(config, workdir)
  (exp,) = made
  return summary, exp
