"""Checkpoints of a run, so a preempted or killed run resumes where it stopped.

Every `config.checkpoint_every` rounds (0 = never) the run saves, with orbax-checkpoint (tensorstore
arrays and JSON metadata: nothing is pickled, so loading a checkpoint never runs code):
- the server state (parameters or z, optimiser state, round, method-specific history),
- the byte ledger (per-client last-sync round and the running totals),
- every client's `ClientState` (error feedback, local momentum), as the host-side tables.
Keys need no saving: every key of round e derives from the run's seed and e (keys.py).
In a multi-process run every process calls `save` and `restore` on the same directory (a file
system they share, such as a GCS bucket on a TPU pod): the server state is a replicated global
array and the host tables are identical on every process, so orbax writes each once.
The round number of a checkpoint is the last finished round; `metrics.jsonl` lines after it are
dropped on resume and recomputed, identically, since a run is deterministic given its config.
A checkpoint that cannot be read back (a file truncated or corrupted on disk, a save cut short)
is skipped on resume: `restore_newest_good` falls back to the newest one that restores, saying so
in one line; max_to_keep=2 keeps one to fall back to.
`resume` is the whole of a restart: the workdir's config must be the run's, then the newest good
checkpoint is loaded into the run's server state, ledger and client-state store.
"""
import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from fedjax_intrinsic import config as config_lib, workdir as workdir_lib


class Checkpointer:
  """Saves and restores {server, ledger, clients} under `workdir/checkpoints/<round>`."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_round(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, round_num: int, server_state: Any, ledger_state: dict, client_tables: Any) -> None:
    item = {'server': server_state,
            'ledger': {k: np.asarray(v, np.int64) for k, v in ledger_state.items()},
            'clients': client_tables}
    self.manager.save(round_num, args=ocp.args.StandardSave(item))
    self.manager.wait_until_finished()

  def restore(self, round_num: int, server_state: Any, ledger_state: dict,
              client_tables: Any) -> tuple[Any, dict, Any]:
    """Restores into the structure (and dtypes) of the given templates."""
    template = {'server': server_state,
                'ledger': {k: np.asarray(v, np.int64) for k, v in ledger_state.items()},
                'clients': client_tables}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    got = self.manager.restore(round_num, args=ocp.args.StandardRestore(abstract))
    server = jax.tree.map(lambda t, x: x, server_state, got['server'])
    return server, got['ledger'], got['clients']

  def restore_newest_good(self, server_state: Any, ledger_state: dict, client_tables: Any,
                          say=print) -> tuple[Optional[int], Optional[tuple]]:
    """(round, (server, ledger, clients)) of the newest checkpoint that restores, trying them
    newest first; (None, None) when none does (the run then starts from round 0). When any was
    skipped, `say` gets one line naming them and where the run resumes."""
    bad, steps = [], []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.restore(step, server_state, ledger_state, client_tables)
      except Exception as e:  # any failure to read a checkpoint back makes it unusable
        first = (str(e).strip().splitlines() or [''])[0][:160]
        bad.append(f'round {step} ({type(e).__name__}: {first})')
        steps.append(step)
        continue
      self._drop(steps)
      if bad:
        say(f'checkpoints in {self.directory} unreadable, removed: {"; ".join(bad)}; resuming '
            f'from the newest good one, round {step}')
      return step, restored
    self._drop(steps)
    if bad:
      say(f'checkpoints in {self.directory} unreadable, removed: {"; ".join(bad)}; no good one, '
          'starting from round 0')
    return None, None

  def _drop(self, steps) -> None:
    """Removes unreadable checkpoints (the resumed run saves those rounds again)."""
    for step in steps:
      self.manager.delete(step)
    if steps:
      self.manager.reload()

  def close(self) -> None:
    self.manager.close()


def resume(checkpointer: Checkpointer, workdir: str, config, server_state: Any, ledger,
           clients, say=print) -> tuple[Optional[int], Any]:
  """(round resumed from, server state) from the newest good checkpoint of `checkpointer`, with
  `ledger` (comm.ByteLedger) and `clients` (simulation.ClientStateStore) loaded in place; (None,
  server_state) when there is none. A workdir whose config.json is another config is a
  ConfigError."""
  if checkpointer.latest_round() is None:
    return None, server_state
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old != workdir_lib.strict(config.to_dict()):
      raise config_lib.ConfigError(
          f'--workdir={workdir} holds checkpoints of a different config; allowed: the same config '
          '(to resume) or a new --workdir')
  start, restored = checkpointer.restore_newest_good(
      server_state, ledger.state_dict(), clients.state_dict(), say=say)
  if start is None:
    return None, server_state
  server_state, ledger_state, tables = restored
  ledger.load_state_dict(ledger_state)
  clients.load_state_dict(tables)
  return start, server_state
