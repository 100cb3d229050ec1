"""A run's workdir: one owner at a time, strict JSON written atomically, metrics appended.

- `Lock(workdir)`: an exclusive `fcntl.flock` on `<workdir>/.lock`, held for the whole run (the OS
  releases it when the process ends, however it ends). The file holds the holder's pid, host and
  start time; a second run on the same workdir is refused (`WorkdirBusy`, a ConfigError: exit 2)
  with one line naming the holder.
- `strict(obj)`: obj with every non-finite float replaced by None (JSON has no NaN or Infinity);
  `write_json(path, obj)`: strict JSON, written to a temporary file, fsynced, renamed over `path`
  (readers see the old file or the new one, never a part).
- `MetricsLog(path, keep_rounds)`: metrics.jsonl opened for appending. The complete lines of rounds
  <= keep_rounds stay byte for byte; whatever follows them (lines of rounds a resumed run recomputes,
  or a last line torn by an interruption) is cut off with one truncate, then new lines are appended,
  each flushed as its round ends (fsynced with every checkpoint and at the end).
"""
import datetime
import fcntl
import json
import math
import os
import socket
import tempfile
from typing import Any, Optional

import numpy as np

from fedjax_intrinsic import config as config_lib

LOCK_NAME = '.lock'


class WorkdirBusy(config_lib.ConfigError):
  """Another live process holds the workdir's lock."""


def check_writable(workdir: str, field: str = '--workdir') -> None:
  """Refuses (ConfigError) a workdir that is a file, or that this process cannot create or write
  (tried for real: a probe file, or the directories created and removed again)."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise config_lib.ConfigError(f'{field}={workdir!r} is a file; allowed: a directory, or a path '
                                 'that can be created')
  refuse = lambda what: config_lib.ConfigError(
      f'{field}={workdir!r} {what}; allowed: a directory this user can create and write')
  if os.path.isdir(path):
    try:
      fd, probe = tempfile.mkstemp(prefix='.write_probe', dir=path)
      os.close(fd)
      os.remove(probe)
    except OSError as e:
      raise refuse(f'is not writable ({e.strerror})') from None
    return
  missing = []
  probe = path
  while not os.path.exists(probe):
    missing.append(probe)
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise refuse(f'cannot be created ({probe!r} is a file)')
  try:
    os.makedirs(path, exist_ok=True)    # exist_ok: another process of the run may make it too
  except OSError as e:
    raise refuse(f'cannot be created ({e.strerror})') from None
  for made in missing:            # leave no trace: the run creates it when it starts
    try:
      os.rmdir(made)
    except OSError:               # another process of a multi-process run is using it
      break


class Lock:
  """Exclusive ownership of a workdir (see the module docstring); a context manager."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd: Optional[int] = None

  def acquire(self) -> 'Lock':
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.read(fd, 4096).decode(errors='replace').strip() or 'unknown'
      os.close(fd)
      raise WorkdirBusy(f'--workdir={os.path.dirname(self.path)!r} is in use by another run '
                        f'({holder}); allowed: wait for it to end, or a new --workdir') from None
    started = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()} since {started}\n'.encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> 'Lock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _plain(x: Any) -> Any:
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  return x


def strict(obj: Any) -> Any:
  """obj as strict-JSON-ready data: numpy scalars and arrays as Python ones, NaN/±inf as None."""
  obj = _plain(obj)
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {str(k): strict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict(v) for v in obj]
  if obj is None or isinstance(obj, (bool, int, str)):
    return obj
  return str(obj)


def dumps(obj: Any, **kwargs) -> str:
  """Strict JSON text of `obj` (see `strict`); never contains NaN or Infinity."""
  return json.dumps(strict(obj), allow_nan=False, **kwargs)


def write_json(path: str, obj: Any) -> None:
  """Writes strict JSON atomically: a temporary file in the same directory, fsynced, renamed."""
  tmp = f'{path}.tmp.{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(dumps(obj, indent=2, sort_keys=True) + '\n')
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  try:        # the rename itself is durable once the directory is synced
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
      os.fsync(dfd)
    finally:
      os.close(dfd)
  except OSError:
    pass


def complete_lines(path: str, up_to_round: Optional[int] = None) -> tuple[list[dict], int, bool]:
  """(lines, end, torn) of a metrics.jsonl: its complete JSON lines (of rounds <= up_to_round when
  given), the byte offset where they end, and whether an incomplete line was found after them
  (a line without its newline, or one that is not JSON: cut by an interruption)."""
  lines, end, torn = [], 0, False
  if not os.path.exists(path):
    return lines, end, torn
  with open(path, 'rb') as f:
    for raw in f:
      if not raw.endswith(b'\n'):
        torn = True
        break
      try:
        line = json.loads(raw)
      except (json.JSONDecodeError, UnicodeDecodeError):
        torn = True
        break
      if not isinstance(line, dict) or (up_to_round is not None and line.get('round', 0) > up_to_round):
        break
      lines.append(line)
      end += len(raw)
  return lines, end, torn


class MetricsLog:
  """metrics.jsonl of a run, kept up to round `keep_rounds` and appended from there (module doc)."""

  def __init__(self, path: Optional[str], keep_rounds: int = 0):
    self.kept: list[dict] = []
    self.torn = False
    self._file = None
    if path is None:       # a process that writes no files (multi-process runs: not process 0)
      return
    self.kept, end, self.torn = complete_lines(path, keep_rounds)
    mode = 'r+b' if os.path.exists(path) else 'wb'
    self._file = open(path, mode)
    self._file.truncate(end)
    self._file.seek(end)

  def append(self, line: dict) -> None:
    if self._file is None:
      return
    self._file.write((dumps(line, sort_keys=False) + '\n').encode())
    self._file.flush()

  def sync(self) -> None:
    if self._file is not None:
      os.fsync(self._file.fileno())

  def close(self) -> None:
    if self._file is not None:
      self.sync()
      self._file.close()
      self._file = None

  def __enter__(self) -> 'MetricsLog':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
