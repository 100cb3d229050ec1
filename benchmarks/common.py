"""Shared benchmark helpers: timing, machine description, JSON output, README sections.

Timing protocol (``time_fn``): the first call (trace + compile + one run) is timed apart as
``first_s``; then ``warmup`` untimed calls; then timed calls, each ending in
``jax.block_until_ready`` on the output, until ``min_repeats`` are done and either
``max_repeats`` are done or ``budget_s`` seconds were spent. The figure is the median; the
minimum is kept too (on a shared machine the minimum is the least disturbed call).
``time_interleaved`` times several functions in turn, one call each per round, and records
the process CPU time next to the wall time (steadier than wall time under load).

README sections live between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` so that each
benchmark rewrites only its own part of ``benchmarks/README.md``.
"""
import datetime
import glob
import json
import math
import os
import platform
import re
import statistics
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jaxlib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(REPO_ROOT, 'benchmarks')
RESULTS_DIR = os.path.join(BENCH_DIR, 'results')


def workdir_flag(workdir, name: str) -> str:
  """' --workdir=<workdir>' for a recorded command, '' when it is the default place
  (benchmarks/results/<name>, of this checkout or of another)."""
  if not workdir:
    return ''
  tail = os.path.join('benchmarks', 'results', name)
  path = os.path.normpath(workdir)
  return '' if path == tail or path.endswith(os.sep + tail) else f' --workdir={workdir}'


def results_path(name: str, backend: str, preset: str = 'full') -> str:
  """results/<name>_<backend>.json for the full preset, results/<name>_<backend>_<preset>.json else."""
  suffix = '' if preset == 'full' else f'_{preset}'
  return os.path.join(RESULTS_DIR, f'{name}_{backend}{suffix}.json')


def load_full_results(name: str) -> list[dict[str, Any]]:
  """Every full-preset result of benchmark `name` (results/<name>_<backend>.json), by backend."""
  prefix = os.path.join(RESULTS_DIR, f'{name}_')
  out = []
  for path in sorted(glob.glob(prefix + '*.json')):
    if '_' not in path[len(prefix):-len('.json')]:
      with open(path) as f:
        out.append(json.load(f))
  return out
README = os.path.join(BENCH_DIR, 'README.md')

_SECTION_NAME = re.compile(r'^[a-z0-9][a-z0-9_-]*$')


class Timing(NamedTuple):
  """Wall-clock seconds of one function on fixed inputs.

  Attributes:
    median_s: median of the timed calls.
    min_s: fastest timed call.
    n: number of timed calls.
    first_s: the first call, untimed in the median (for a ``jax.jit`` function it includes
      tracing and compilation; for an already compiled one, first-run effects only).
    times: every timed call, in order.
  """
  median_s: float
  min_s: float
  n: int
  first_s: float
  times: tuple[float, ...]

  def as_dict(self) -> dict[str, float | int]:
    """The summary fields (without ``times``)."""
    return {'median_s': self.median_s, 'min_s': self.min_s, 'n': self.n,
            'first_s': self.first_s}


def pooled(*timings: Timing) -> Timing:
  """One ``Timing`` from several of the same function (median over all their calls)."""
  if not timings:
    raise ValueError('timings: need at least one Timing, got none')
  times = tuple(t for tm in timings for t in tm.times)
  return Timing(statistics.median(times), min(times), len(times), timings[0].first_s, times)


def time_fn(fn: Callable[..., Any], *args, warmup: int = 1, min_repeats: int = 3,
            max_repeats: int = 21, budget_s: float = 1.0, carry: bool = False) -> Timing:
  """Times ``fn(*args)`` (usually a jitted or compiled function) after warm-up.

  Args:
    fn: called as ``fn(*args)``; its output (any pytree of arrays) is waited for with
      ``jax.block_until_ready``. The arguments should already be on the device.
    warmup: untimed calls after the first one (which is always made and timed apart).
    min_repeats: at least this many timed calls, whatever the budget.
    max_repeats: at most this many timed calls.
    budget_s: stop adding timed calls (beyond ``min_repeats``) once this much time is spent.
    carry: for a function of one array that returns one of the same shape and dtype, each
      call gets the previous call's output (so a function that donates its argument,
      ``jax.jit(f, donate_argnums=0)``, can be called repeatedly).
  Returns:
    A ``Timing``.
  """
  if warmup < 0:
    raise ValueError(f'warmup: must be >= 0, got {warmup}')
  if min_repeats < 1 or max_repeats < min_repeats:
    raise ValueError(f'min_repeats, max_repeats: need 1 <= min_repeats <= max_repeats, got '
                     f'{min_repeats}, {max_repeats}')
  if not budget_s >= 0:
    raise ValueError(f'budget_s: must be >= 0, got {budget_s}')
  if carry and len(args) != 1:
    raise ValueError(f'args: carry=True needs exactly one argument, got {len(args)}')

  def call():
    nonlocal args
    out = jax.block_until_ready(fn(*args))
    if carry:
      args = (out,)

  start = time.perf_counter()
  call()
  first = time.perf_counter() - start
  for _ in range(warmup):
    call()
  times = []
  spent = 0.0
  while len(times) < min_repeats or (len(times) < max_repeats and spent < budget_s):
    start = time.perf_counter()
    call()
    t = time.perf_counter() - start
    times.append(t)
    spent += t
  return Timing(statistics.median(times), min(times), len(times), first, tuple(times))


class WallCpu(NamedTuple):
  """The wall-clock and the process CPU time of the same calls (CPU time adds up every thread:
  above the wall time when the calls run in parallel, and much steadier under load)."""
  wall: Timing
  cpu: Timing


def time_interleaved(fns: dict[str, Callable[..., Any]], *args, warmup: int = 1,
                     min_repeats: int = 3, max_repeats: int = 21,
                     budget_s: float = 10.0) -> dict[str, WallCpu]:
  """Times several functions on the same ``args``, one call of each in turn per repeat.

  On a shared machine the load drifts; taking the calls of all functions in turn spreads the
  drift evenly over them, so their ratios stay fair. Each function's first call is timed apart
  (``first_s``), then ``warmup`` untimed rounds, then timed rounds (each call ends in
  ``jax.block_until_ready``) until ``min_repeats`` rounds are done and either ``max_repeats``
  are done or the timed calls of all functions together took ``budget_s`` wall seconds.

  Returns:
    name -> ``WallCpu`` (median and minimum over that function's timed calls).
  """
  if not fns:
    raise ValueError('fns: need at least one function, got none')
  if warmup < 0:
    raise ValueError(f'warmup: must be >= 0, got {warmup}')
  if min_repeats < 1 or max_repeats < min_repeats:
    raise ValueError(f'min_repeats, max_repeats: need 1 <= min_repeats <= max_repeats, got '
                     f'{min_repeats}, {max_repeats}')
  if not budget_s >= 0:
    raise ValueError(f'budget_s: must be >= 0, got {budget_s}')

  def call(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - wall, time.process_time() - cpu

  first = {name: call(fn) for name, fn in fns.items()}
  for _ in range(warmup):
    for fn in fns.values():
      call(fn)
  times = {name: [] for name in fns}
  spent = 0.0
  rounds = 0
  while rounds < min_repeats or (rounds < max_repeats and spent < budget_s):
    for name, fn in fns.items():
      times[name].append(call(fn))
      spent += times[name][-1][0]
    rounds += 1

  def timing(ts, first_t):
    return Timing(statistics.median(ts), min(ts), len(ts), first_t, tuple(ts))

  return {name: WallCpu(timing([t[0] for t in ts], first[name][0]),
                        timing([t[1] for t in ts], first[name][1]))
          for name, ts in times.items()}


def compile_fn(fn: Callable[..., Any], *args, **jit_kwargs) -> tuple[Any, float]:
  """``jax.jit(fn, **jit_kwargs)`` lowered and compiled for ``args``: ``(compiled, seconds)``.

  ``args`` may be arrays or ``jax.ShapeDtypeStruct``s; call ``compiled(*args)`` with arrays
  of the same shapes (pytree structure included) to run it without further tracing.
  """
  start = time.perf_counter()
  compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
  return compiled, time.perf_counter() - start


def memory_stats(compiled: Any) -> dict[str, int]:
  """XLA's memory analysis of a compiled function, in bytes.

  Args:
    compiled: the result of ``jax.jit(fn).lower(...).compile()`` (see ``compile_fn``).
  Returns:
    ``argument``, ``output``, ``alias``, ``temp`` (scratch buffers XLA allocates per call),
    ``generated_code`` and ``peak`` (``peak_memory_in_bytes``; 0 where the backend does
    not report it).
  """
  stats = compiled.memory_analysis()
  if stats is None:
    raise ValueError(f'backend: {jax.default_backend()!r} gives no memory_analysis()')
  fields = ('argument', 'output', 'alias', 'temp', 'generated_code')
  out = {f: int(getattr(stats, f'{f}_size_in_bytes')) for f in fields}
  out['peak'] = int(getattr(stats, 'peak_memory_in_bytes', 0) or 0)
  return out


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.lower().startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or 'unknown'


def _cpu_detail() -> str | None:
  """'family F model M, L2 X, L3 Y' from /proc/cpuinfo and sysfs (None where absent): CPUs that
  report the same model name (e.g. 'AMD EPYC' under KVM) differ in these, and timings with them."""
  ids = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip()
        if key in ('cpu family', 'model') and key not in ids:
          ids[key] = value.strip()
        if not line.strip() and ids:
          break
  except OSError:
    pass
  sizes = {}   # cache level -> size of cpu0's cache at that level (L1 has two: data, instruction)
  for base in sorted(glob.glob('/sys/devices/system/cpu/cpu0/cache/index*/')):
    try:
      with open(base + 'level') as f, open(base + 'size') as g:
        sizes.setdefault(f.read().strip(), g.read().strip())
    except OSError:
      continue
  parts = [f'family {ids["cpu family"]} model {ids["model"]}'] if len(ids) == 2 else []
  parts += [f'L{level} {sizes[level]}' for level in ('2', '3') if level in sizes]
  return ', '.join(parts) or None


def _mem_total_bytes() -> int | None:
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemTotal:'):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def load_average() -> list[float] | None:
  """The 1, 5 and 15 minute load averages, or None where the OS has none."""
  try:
    return [round(v, 2) for v in os.getloadavg()]
  except OSError:
    return None


def machine_info() -> dict[str, Any]:
  """What the numbers were measured on: CPU, cores, memory, backend, versions, date, load."""
  devices = jax.devices()
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = os.cpu_count()
  return {
      'cpu_model': _cpu_model(),
      'cpu_detail': _cpu_detail(),
      'cpu_cores': os.cpu_count(),
      'cpu_cores_usable': usable,
      'mem_total_bytes': _mem_total_bytes(),
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'device_count': len(devices),
      'jax': jax.__version__,
      'jaxlib': jaxlib.__version__,
      'python': platform.python_version(),
      'platform': platform.platform(),
      'date_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
      'load_average': load_average(),
  }


def machine_line(info: dict[str, Any]) -> str:
  """One markdown line describing ``machine_info()``'s result."""
  mem = info.get('mem_total_bytes')
  mem = f', {mem / 2**30:.0f} GiB RAM' if mem else ''
  dev = ''
  if info['backend'] != 'cpu':
    dev = f' ({info["device_count"]} x {info["device_kind"]})'
  detail = f' ({info["cpu_detail"]})' if info.get('cpu_detail') else ''
  return (f'{info["cpu_model"]}{detail}, {info["cpu_cores_usable"]} cores{mem}; backend '
          f'`{info["backend"]}`{dev}; jax {info["jax"]}, jaxlib {info["jaxlib"]}, '
          f'Python {info["python"]}; {info["date_utc"]}')


def _finite(obj: Any) -> Any:
  """Replaces non-finite floats by None so the JSON stays standard."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def json_text(obj: Any, width: int = 100) -> str:
  """``obj`` as standard JSON (non-finite floats as null), one record per line.

  The top-level object has one member per line; a member that does not fit in ``width`` characters
  gets one item (list) or one member (object) per line; everything deeper is written on one line.
  So a results file's list of runs reads (and diffs) one run per line.
  """
  def encode(value, depth):
    flat = json.dumps(value, allow_nan=False)
    if (not isinstance(value, (dict, list)) or not value or depth >= 2
        or (depth == 1 and len(flat) + 2 <= width)):
      return flat
    pad = ' ' * (depth + 1)
    if isinstance(value, dict):
      items = [f'{pad}{json.dumps(k)}: {encode(v, depth + 1)}' for k, v in value.items()]
      return '{\n' + ',\n'.join(items) + '\n' + ' ' * depth + '}'
    items = [pad + encode(v, depth + 1) for v in value]
    return '[\n' + ',\n'.join(items) + '\n' + ' ' * depth + ']'
  # The round trip makes keys strings and tuples lists, as json.dump would.
  return encode(json.loads(json.dumps(_finite(obj), allow_nan=False)), 0) + '\n'


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as ``json_text(obj)`` (strict: non-finite numbers as null), atomically
  (temporary file, fsynced, then rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  text = json_text(obj)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def section_markers(name: str) -> tuple[str, str]:
  """The begin and end markers of README section ``name``."""
  if not isinstance(name, str) or not _SECTION_NAME.match(name):
    raise ValueError(f'name: a README section name must match {_SECTION_NAME.pattern}, '
                     f'got {name!r}')
  return f'<!-- {name}:begin -->', f'<!-- {name}:end -->'


def replace_section(text: str, name: str, body: str) -> str:
  """``text`` with section ``name`` set to ``body`` (appended when the section is absent)."""
  begin, end = section_markers(name)
  nb, ne = text.count(begin), text.count(end)
  block = f'{begin}\n{body.strip()}\n{end}'
  if nb == 0 and ne == 0:
    text = text.rstrip('\n')
    return f'{text}\n\n{block}\n' if text else f'{block}\n'
  i, j = text.find(begin), text.find(end)
  if nb != 1 or ne != 1 or j < i:
    raise ValueError(f'text: section {name!r} needs exactly one {begin} followed by one '
                     f'{end}, found {nb} begin and {ne} end markers')
  return text[:i] + block + text[j + len(end):]


def record_run(name: str, section: str, preset: str,
               run: Callable[[Callable[[dict], None]], dict[str, Any]],
               render: Callable[[dict], str],
               render_section: Callable[[Sequence[dict]], str],
               out_json: str | None, readme: str = README) -> dict[str, Any]:
  """What a benchmark script does with one run of benchmark `name`.

  `run(on_progress)` gets a callback that writes the partial result to the JSON file (so an
  interrupted run keeps every finished step); the final result goes there too: `out_json`, or
  results/<name>_<backend>[_<preset>].json. Prints `render(result)`; a full-preset run saved at
  the default path also rebuilds README section `section` from every backend's full result.
  """
  path = out_json or results_path(name, jax.default_backend(), preset)
  res = run(lambda partial: write_json(path, partial))
  write_json(path, res)
  print(render(res))
  if preset == 'full' and not out_json:
    render_saved(name, section, render_section, readme)
  return res


def render_saved(name: str, section: str, render_section: Callable[[Sequence[dict]], str],
                 readme: str = README) -> None:
  """Rebuilds README section `section` from every backend's saved full result of `name`."""
  update_readme_section(section, render_section(load_full_results(name)), readme)


def int_list(flag: str, values: Sequence[str] | None) -> tuple[int, ...] | None:
  """A list flag's values as ints (None when the flag is unset); ValueError naming the flag."""
  if values is None:
    return None
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ValueError(f'{flag}: every value must be an integer, got {list(values)}') from None


def define_output_flags(name: str, section: str) -> tuple:
  """The --out_json, --readme and --render_only flags of a benchmark script (flag holders, in that
  order); call it from the script's entry point only."""
  from absl import flags
  return (flags.DEFINE_string('out_json', None, f'JSON path (default: benchmarks/results/'
                              f'{name}_<backend>[_<preset>].json).'),
          flags.DEFINE_string('readme', None, f'Markdown file for the "{section}" section '
                              '(default: benchmarks/README.md; full preset only).'),
          flags.DEFINE_bool('render_only', False, 'Only rebuild the README section from the saved '
                            'JSON files.'))


def update_readme_section(name: str, body: str, path: str = README,
                          title: str = '# Benchmarks') -> None:
  """Rewrites section ``name`` of the markdown file ``path`` (created with ``title``)."""
  text = f'{title}\n' if not os.path.exists(path) else open(path).read()
  new = replace_section(text, name, body)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(new)
  os.replace(tmp, path)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: str | None = None) -> str:
  """A markdown table padded into columns (readable as plain text too).

  Args:
    headers: column titles.
    rows: cells, converted with ``str``.
    align: one character per column, 'l' or 'r' (default: first column left, others right).
  """
  ncol = len(headers)
  align = align or 'l' + 'r' * (ncol - 1)
  if len(align) != ncol or set(align) - {'l', 'r'}:
    raise ValueError(f'align: needs {ncol} characters from "lr", got {align!r}')
  cells = [[str(c) for c in headers]]
  for r in rows:
    if len(r) != ncol:
      raise ValueError(f'rows: every row needs {ncol} cells, got {len(r)}: {r!r}')
    cells.append([str(c) for c in r])
  width = [max(len(row[c]) for row in cells) for c in range(ncol)]

  def line(row):
    out = [v.ljust(w) if a == 'l' else v.rjust(w) for v, w, a in zip(row, width, align)]
    return '| ' + ' | '.join(out) + ' |'

  rule = '|' + '|'.join(('-' * (w + 1) + ':') if a == 'r' else ('-' * (w + 2))
                        for w, a in zip(width, align)) + '|'
  return '\n'.join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def fmt_seconds(s: float | None) -> str:
  """Seconds in a short human unit: '812 us', '3.41 ms', '2.05 s'."""
  if s is None:
    return '-'
  if s < 1e-3:
    return f'{s * 1e6:.0f} us'
  if s < 1:
    return f'{s * 1e3:.3g} ms'
  return f'{s:.3g} s'


def fmt_ratio(r: float | None) -> str:
  """A ratio to a reference: '0.52x', '12.3x', '1530x'."""
  if r is None:
    return '-'
  return f'{r:.2g}x' if r < 1 else f'{r:.3g}x' if r < 1000 else f'{r:.0f}x'


def fmt_bytes(b: int | float | None) -> str:
  """Bytes in binary units: '512 B', '4.0 MiB', '7.5 GiB'."""
  if b is None:
    return '-'
  for unit, scale in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if abs(b) >= scale:
      v = b / scale
      return f'{v:.0f} {unit}' if abs(v) >= 100 else f'{v:.3g} {unit}'
  return f'{int(b)} B'


def fmt_pow2(n: int) -> str:
  """'2^20' for powers of two, else the number with a scientific shorthand ('1e7')."""
  if n > 0 and n & (n - 1) == 0:
    return f'2^{n.bit_length() - 1}'
  e = math.log10(n) if n > 0 else 0
  return f'1e{round(e)}' if n > 0 and 10**round(e) == n else str(n)
