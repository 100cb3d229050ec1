"""Small digits experiments run on 1 device (in the test process) and on a mesh (in a subprocess)."""
import jax
import numpy as np

from tests.conftest import digits_config

CASES = {
    # name: (method, clients_per_round, client_parallelism, other overrides)
    'uncompressed_vmap_6': ('uncompressed', 6, 'vmap', {}),
    'fedavg_chunked_13': ('fedavg', 13, 'chunked_vmap', {
        'simulation.clients_per_chunk': 4, 'client.lr': 0.1, 'client.batch_size': 5,
        'client.local_steps': 2}),
    'local_topk_map_5': ('local_topk', 5, 'map', {'method.k': 50}),        # client state
    'powersgd_vmap_8': ('powersgd', 8, 'vmap', {'method.rank': 1}),      # second exchange + state
    'intrinsic_shortcut_7': ('intrinsic_static', 7, 'vmap', {
        'method.d': 50, 'simulation.cohort_shortcut': True}),
}
ROUNDS = 2


def case_config(name: str, num_devices: int):
  method, clients, strategy, overrides = CASES[name]
  c = digits_config(method, clients_per_round=clients, rounds=ROUNDS)
  c.simulation.client_parallelism = strategy
  c.simulation.num_devices = num_devices
  for field, value in overrides.items():
    group, key = field.split('.')
    c[group][key] = value
  return c


def run_case(name: str, num_devices: int) -> dict:
  """Runs ROUNDS rounds; returns θ, the losses, the byte ledger and the client-state tables."""
  from fedjax_intrinsic import experiment, sharding
  exp = experiment.Experiment(case_config(name, num_devices))
  state = exp.init_state()
  losses, lines = [], []
  for e in range(1, ROUNDS + 1):
    state, line = exp.run_round(state, e)
    losses.append(line['train_loss'])
    lines.append({k: v for k, v in line.items() if k.startswith(('bytes', 'cum_bytes'))})
  params = sharding.to_host(exp.algorithm.model_params(state))
  tables = jax.tree.leaves(exp.clients.state_dict())
  return {
      'cohort_size': exp.cohort_size,
      'theta': np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)]).tolist(),
      'losses': losses, 'bytes': lines,
      'tables': np.concatenate([np.ravel(t) for t in tables]).tolist() if tables else [],
  }
