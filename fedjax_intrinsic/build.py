"""The build: a checked config → data, model, method and round function, once, before any round.

    built = build.build(config)          # preflight.check(config) first, unless facts are given
    state = jax.jit(built.algorithm.init)(built.params0)

Order (each step reads only what the steps before it made; nothing here reads the config later):
  1. `preflight.check(config)` (every check that needs no data), unless its `facts` are given;
  2. the run key (`keys.run_key(config.seed)`) and the data (`preflight.load_data`: a bad file's
     content is a one-line ConfigError naming the data option);
  3. `preflight.check_loaded`: what only the loaded data tells, and the model for its shapes;
  4. θ0 (`keys.init_key`), then the method (`algorithms.get` with a `BuildContext`): an error
     raised here is a bug and keeps its traceback (its config rules were all checked before);
  5. `preflight.check_built` (the rules that need the built method), the device mesh, the cohort
     sampler (`cohort.Cohorts`), the round function (`simulation.build_round`, client parallelism
     'auto' resolved by the model's declared family, `models.family`), the evaluator, and the
     per-client bytes that are the same every round (`comm.per_client_bytes`, from shapes).
What runs the rounds (and holds the state that changes: server state, client states, the byte
ledger) is experiment.py.
"""
from typing import Any, Callable, NamedTuple, Optional

import jax
import ml_collections

from fedjax_intrinsic import algorithms, cohort, comm, config as config_lib, keys, models
from fedjax_intrinsic import preflight, sharding, simulation


class Build(NamedTuple):
  """Everything a run is made of that does not change from round to round."""
  config: ml_collections.ConfigDict
  run_key: Any                 # keys.run_key(config.seed)
  data: Any                    # data.FederatedData
  model: models.Model
  params0: Any                 # θ0, the model's parameter pytree (float32)
  num_params: int              # D
  algorithm: algorithms.FederatedAlgorithm
  mesh: Any                    # jax.sharding.Mesh over the `clients` axis, or None (one device)
  cohorts: cohort.Cohorts      # each round's cohort, batches, weights and round key
  round_fn: Callable           # simulation.build_round's: (state, cstates, batches, w, ids, key)
  client_state0: Any           # the method's initial client state (() when stateless)
  evaluator: Callable          # models.make_evaluator: (params, split) -> metrics
  upload_per_client: int       # bytes one participant uploads a round (comm.per_client_bytes)
  request_per_client: int      # bytes every participant downloads besides its catch-up


def build(config: ml_collections.ConfigDict, facts: Optional[preflight.Facts] = None) -> Build:
  """The build of the module docstring; ConfigError (one line) for bad input, anything else a bug."""
  if facts is None:
    facts = preflight.check(config)
  run_key = keys.run_key(config.seed)
  data = preflight.load_data(config, keys.data_key(run_key))
  model, _ = preflight.check_loaded(config, facts, data)
  params0 = jax.jit(model.init)(keys.init_key(run_key))
  ctx = algorithms.BuildContext(
      model=model, params0=params0, run_key=run_key,
      server_optimizer=config_lib.server_optimizer(config.server, config.rounds),
      client_lr=config.client.lr, num_clients=data.num_clients, num_rounds=config.rounds,
      server_optimizer_stateless=config_lib.server_optimizer_is_stateless(config.server))
  algorithm = algorithms.get(config.method.name, config.method, ctx)
  client_state0 = algorithm.init_client(params0)
  preflight.check_built(config, algorithm, client_state0, data.num_clients)
  sim = config.simulation
  mesh = sharding.make_mesh(sim.get('num_devices', 1), sim.get('model_devices', 1))
  cohorts = cohort.Cohorts(config, data, run_key, simulation.padded_cohort_size(
      config.clients_per_round, sim.client_parallelism, sim.clients_per_chunk,
      sharding.mesh_size(mesh)))
  round_fn = simulation.build_round(algorithm, sim.client_parallelism, sim.clients_per_chunk,
                                    sim.cohort_shortcut, family=models.family(config.model.name),
                                    mesh=mesh)
  upload, request = comm.per_client_bytes(algorithm, jax.eval_shape(algorithm.init, params0),
                                          params0, cohorts.batch_shapes())
  return Build(config=config, run_key=run_key, data=data, model=model, params0=params0,
               num_params=models.num_params(params0), algorithm=algorithm, mesh=mesh,
               cohorts=cohorts, round_fn=round_fn, client_state0=client_state0,
               evaluator=models.make_evaluator(model, config.eval_batch_size),
               upload_per_client=upload, request_per_client=request)
