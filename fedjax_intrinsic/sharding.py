"""Clients sharded over a device mesh, and multi-host runs.

The mesh has one axis, `clients`: a round's cohort `[C, ...]` (padded with masked clients, id −1,
so that the devices divide C) is split into contiguous shards of C / n clients, one per device. Each
device runs its shard with the round's client-parallelism strategy; the aggregates and weighted
metric sums are then summed over devices (`psum` under `jax.shard_map`): `aggregate` is a LINEAR
weighted sum, so the per-device partial sums add up to the one-device aggregate. The server state,
the broadcast, the second exchange's request and the server update are replicated (every device
computes them from the same summed aggregate). Client states travel with their clients (sharded).

A `model` axis (parameters sharded over devices, for GPT-2-size models) is not implemented:
`simulation.model_devices` must be 1.

Multi-host: `initialize_multihost` joins the processes (`jax.distributed.initialize`); the mesh
spans every device of every process, ordered process by process, so process p holds the contiguous
share `process_share(C)` of the cohort and passes only that share's inputs to the round function
(`jax.make_array_from_process_local_data` builds the global arrays).
"""
import os
from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

CLIENTS = 'clients'
REPLICATED = P()          # the partition spec of what every device holds whole
SPLIT = P(CLIENTS)        # ... and of what is split over the clients axis (leading axis)


def make_mesh(num_devices: int = 1, model_devices: int = 1) -> Optional[Mesh]:
  """A 1-D `clients` mesh over `num_devices` devices (0 = all), or None for one device.

  Devices are ordered by (process, id), so each process owns a contiguous block of the axis. In a
  multi-process run the mesh must span every device (num_devices 0 or `jax.device_count()`).
  """
  if model_devices != 1:
    raise ValueError(f'simulation.model_devices={model_devices!r} is invalid; allowed: 1 (a model '
                     'axis is not implemented)')
  available = jax.device_count()
  if not isinstance(num_devices, int) or not 0 <= num_devices <= available:
    raise ValueError(f'simulation.num_devices={num_devices!r} is invalid; allowed: 0 (all) .. '
                     f'{available} (the devices JAX sees)')
  n = num_devices or available
  if jax.process_count() > 1 and n != available:
    raise ValueError(f'simulation.num_devices={num_devices!r} is invalid in a {jax.process_count()}'
                     f'-process run; allowed: 0 or {available} (every device of every process)')
  if n == 1:
    return None
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))[:n]
  return Mesh(np.array(devices), (CLIENTS,))


def mesh_size(mesh: Optional[Mesh]) -> int:
  return 1 if mesh is None else mesh.devices.size


def process_share(num_clients: int) -> slice:
  """The contiguous slice of a global cohort of `num_clients` that this process loads."""
  count, index = jax.process_count(), jax.process_index()
  if num_clients % count:
    raise ValueError(f'a cohort of {num_clients} clients is invalid with {count} processes; '
                     'allowed: a multiple of the process count')
  per = num_clients // count
  return slice(index * per, (index + 1) * per)


def _put(x: Any, sharding: NamedSharding, global_shape: tuple) -> jax.Array:
  """x as a global array with `sharding` (x: this process's local data, or an array already there)."""
  if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
    return x
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)   # a replicated array of another layout: every process holds it all
  return jax.make_array_from_process_local_data(sharding, np.asarray(x), global_shape)


def shard_round(round_body: Callable, mesh: Mesh, out_specs: Any) -> Callable:
  """round_fn(server_state, client_states, batches, weights, client_ids, round_key) on `mesh`.

  round_body(..., allsum) is the one-device round of `simulation.build_round`, whose `allsum`
  reduces the per-device aggregates and metric sums. Client-axis inputs (client_states: leaves
  [C_p, ...], batches: [C_p, S, B, ...], weights: f32[C_p], client_ids: i32[C_p]) are this process's
  share (C_p = C on one process). out_specs: the partition specs of round_body's output, a
  pytree of REPLICATED and SPLIT (the round's client states SPLIT, everything else REPLICATED);
  the result holds global arrays laid out so.
  """
  n = mesh.devices.size
  rep, split = NamedSharding(mesh, REPLICATED), NamedSharding(mesh, SPLIT)
  allsum = lambda tree: jax.lax.psum(tree, CLIENTS)

  def body(server_state, client_states, batches, weights, client_ids, round_key):
    return round_body(server_state, client_states, batches, weights, client_ids, round_key,
                      allsum=allsum)

  mapped = jax.jit(jax.shard_map(
      body, mesh=mesh, in_specs=(REPLICATED, SPLIT, SPLIT, SPLIT, SPLIT, REPLICATED),
      out_specs=out_specs, check_vma=False))
  processes = jax.process_count()

  def round_fn(server_state, client_states, batches, weights, client_ids, round_key):
    local = np.shape(weights)[0]
    if (local * processes) % n:
      raise ValueError(f'a cohort of {local * processes} clients is invalid on {n} devices; '
                       'allowed: a multiple of the device count (pad with masked clients)')
    replicated = lambda t: jax.tree.map(lambda x: _put(x, rep, np.shape(x)), t)
    sharded = lambda t: jax.tree.map(
        lambda x: _put(x, split, (np.shape(x)[0] * processes,) + np.shape(x)[1:]), t)
    return mapped(replicated(server_state), sharded(client_states), sharded(batches),
                  sharded(weights), sharded(client_ids), replicated(round_key))

  return round_fn


def to_host(tree: Any) -> Any:
  """Numpy copies of a pytree's global arrays, whole on every process (sharded ones all-gathered)."""
  def leaf(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(leaf, tree)


def initialize_multihost(coordinator_address: Optional[str] = None,
                         num_processes: Optional[int] = None, process_id: Optional[int] = None,
                         timeout_s: Optional[int] = None) -> None:
  """`jax.distributed.initialize` from arguments, else JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID (unset everywhere: JAX's cluster auto-detection).

  timeout_s (else JAX_DISTRIBUTED_TIMEOUT_S, else JAX's defaults of minutes) bounds initialization
  and the heartbeat, so a dead peer fails the run quickly. A 127.0.0.1 coordinator binds to
  127.0.0.1 only.
  """
  env = os.environ
  address = coordinator_address or env.get('JAX_COORDINATOR_ADDRESS') or None
  num = num_processes if num_processes is not None else _env_int('JAX_NUM_PROCESSES')
  pid = process_id if process_id is not None else _env_int('JAX_PROCESS_ID')
  timeout = timeout_s if timeout_s is not None else _env_int('JAX_DISTRIBUTED_TIMEOUT_S')
  if num is not None and num < 1:
    raise ValueError(f'num_processes={num!r} is invalid; allowed: an integer >= 1')
  if pid is not None and num is not None and not 0 <= pid < num:
    raise ValueError(f'process_id={pid!r} is invalid; allowed: 0 .. {num - 1}')
  kwargs = {}
  if timeout is not None:
    kwargs = {'initialization_timeout': timeout, 'heartbeat_timeout_seconds': timeout}
  if address is not None and address.startswith('127.0.0.1:'):
    kwargs['coordinator_bind_address'] = address
  jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid,
                             **kwargs)


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value in (None, ''):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'{name}={value!r} is invalid; allowed: an integer') from None


def is_primary() -> bool:
  """True on the process that writes metrics and results (process 0)."""
  return jax.process_index() == 0
