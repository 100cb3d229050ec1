"""A sweep's committed results: every cell's files packed into a few files per sweep.

  python -m benchmarks.results_store --pack=benchmarks/results/digits_mlp   # (repeatable)
  python -m benchmarks.results_store --compact_json=benchmarks/results/simulation_cpu.json

A sweep runs in its working layout (benchmarks.sweep): one directory per cell holding cell.json,
config.json, metrics.jsonl and summary.json (or error.json). Those directories are not committed
(.gitignore); `pack(workdir)` writes what is, next to sweep.json:

- `cells.jsonl`: one line per cell, `{"name", "cell", "config", "summary", "error"}`: the cell's
  cell.json, config.json, summary.json and error.json (null when the file is absent). In the
  summary's `data` block, every list or object longer than BULK_CHARS characters of JSON (such as
  pysource's module lists) is replaced by `{"$sha256": <hex>}` and stored once in shared.json.
- `curves.jsonl`: one line per cell that has a summary, the columns of its metrics.jsonl:
  `{"name", "rounds": {field: [one value per round]}, "eval": {"round": [evaluation rounds],
  field: [one value per evaluation round, null where that round lacks the field]},
  "from_cumulative": [fields]}`. Per-round fields are those of every line (round, train_loss,
  cum_bytes_*, the compression ratios, ...); evaluation fields are those of some lines only
  (test_*, val_*). Not kept: the time_* fields (the summary keeps time_total_s), and those of
  bytes_up / bytes_down / bytes_total that equal the round-to-round differences of their
  cumulative counts (checked here; listed in from_cumulative; `read_metrics` restores them).
- `shared.json` (only when some value is shared): `{hex: value}`, one value per line, hex the
  sha256 of the value's canonical JSON (sorted keys, separators ',' and ':', UTF-8).

The .jsonl files use the dialect of metrics.jsonl and summary.json (a non-finite float is written
as NaN / Infinity), so values come back exactly.

Reading (`read_cell`, `read_metrics`, used by benchmarks.sweep, benchmarks.report and
benchmarks.intrinsic_dim): a cell whose directory holds any of its files is read from that
directory (the runner's working copy); any other from its packed line. So a sweep resumed on a
fresh clone (packed files, no cell directories) counts the packed finished cells as done and runs
only the rest, and `pack` keeps the packed lines of cells without a directory: packing again loses
nothing.
"""
import hashlib
import json
import os
import sys
from typing import Any, Optional

from benchmarks import common

CELLS = 'cells.jsonl'
CURVES = 'curves.jsonl'
SHARED = 'shared.json'
PACKED = (CELLS, CURVES, SHARED)
CELL_FILES = {'cell': 'cell.json', 'config': 'config.json', 'summary': 'summary.json',
              'error': 'error.json'}
METRICS = 'metrics.jsonl'
BULK_CHARS = 256
REF = '$sha256'
_BYTES = ('up', 'down', 'total')


def read_json(path: str) -> Optional[Any]:
  """The parsed file, or None when it is missing or not complete JSON."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def read_lines(path: str) -> list:
  """The complete JSON lines of a file (a line cut by an interruption ends the list)."""
  lines = []
  if os.path.exists(path):
    with open(path) as f:
      for text in f:
        try:
          lines.append(json.loads(text))
        except json.JSONDecodeError:
          break
  return lines


_CACHE: dict = {}


def _by_name(path: str) -> dict:
  """{line['name']: line} of a packed .jsonl file ({} when absent), cached until it changes."""
  try:
    stat = os.stat(path)
  except OSError:
    return {}
  key = (stat.st_mtime_ns, stat.st_size)
  hit = _CACHE.get(path)
  if hit is None or hit[0] != key:
    hit = (key, {line['name']: line for line in read_lines(path)})
    _CACHE[path] = hit
  return hit[1]


def _shared(workdir: str) -> dict:
  return read_json(os.path.join(workdir, SHARED)) or {}


def digest(value: Any) -> str:
  """sha256 (hex) of `value`'s canonical JSON: sorted keys, separators ',' and ':', UTF-8."""
  text = json.dumps(value, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
  return hashlib.sha256(text.encode('utf-8')).hexdigest()


def share_bulk(summary: dict, shared: dict) -> dict:
  """`summary` with its data block's long values replaced by {'$sha256': hex} (added to shared)."""
  data = summary.get('data')
  if not isinstance(data, dict):
    return summary
  out = dict(data)
  for key, value in data.items():
    if isinstance(value, (list, dict)) and len(json.dumps(value)) > BULK_CHARS:
      h = digest(value)
      shared[h] = value
      out[key] = {REF: h}
  return {**summary, 'data': out}


def expand_bulk(summary: dict, shared: dict, where: str = '') -> dict:
  """The inverse of `share_bulk` (raises ValueError when a referenced value is missing)."""
  data = summary.get('data')
  if not isinstance(data, dict):
    return summary
  out = {}
  for key, value in data.items():
    if isinstance(value, dict) and set(value) == {REF}:
      if value[REF] not in shared:
        raise ValueError(f'{where}: summary.data.{key} refers to {REF} {value[REF]} which '
                         f'{SHARED} lacks; allowed: a {SHARED} written by the same pack')
      value = shared[value[REF]]
    out[key] = value
  return {**summary, 'data': out}


def _refs(summary: Optional[dict]) -> list:
  data = (summary or {}).get('data')
  if not isinstance(data, dict):
    return []
  return [v[REF] for v in data.values() if isinstance(v, dict) and set(v) == {REF}]


def _differences(cumulative: list) -> list:
  return [b - a for a, b in zip([0] + cumulative[:-1], cumulative)]


def pack_curve(name: str, lines: list) -> dict:
  """The columns of one cell's metrics lines (see the module docstring)."""
  keys = list(dict.fromkeys(k for line in lines for k in line))
  every = [k for k in keys if all(k in line for line in lines) and not k.startswith('time_')]
  some = [k for k in keys if any(k not in line for line in lines) and not k.startswith('time_')]
  rounds = {k: [line[k] for line in lines] for k in every}
  derived = []
  for b in _BYTES:
    per, cum = f'bytes_{b}', f'cum_bytes_{b}'
    if per in rounds and cum in rounds and rounds[per] == _differences(rounds[cum]):
      del rounds[per]
      derived.append(per)
  evals = [line for line in lines if any(k in line for k in some)]
  # A field absent from an eval line is listed by position, so that a null (a non-finite value
  # written as strict JSON) reads back as null, not as absent.
  missing = {k: [j for j, line in enumerate(evals) if k not in line] for k in some}
  return {'name': name, 'rounds': rounds,
          'eval': {'round': [line['round'] for line in evals],
                   **{k: [line.get(k) for line in evals] for k in some}},
          'eval_missing': {k: v for k, v in missing.items() if v},
          'from_cumulative': derived}


def unpack_curve(curve: dict) -> list:
  """Metrics lines from `pack_curve`'s columns (the time_* fields are not there)."""
  rounds = dict(curve['rounds'])
  for per in curve.get('from_cumulative', ()):
    rounds[per] = _differences(rounds[f'cum_{per}'])
  lines = [{k: v[i] for k, v in rounds.items()} for i in range(len(rounds['round']))]
  at = {r: i for i, r in enumerate(rounds['round'])}
  evals = curve['eval']
  missing = curve.get('eval_missing')     # absent in curves packed before nulls were kept
  for j, r in enumerate(evals['round']):
    for k, values in evals.items():
      if k == 'round':
        continue
      absent = values[j] is None if missing is None else j in missing.get(k, ())
      if not absent:
        lines[at[r]][k] = values[j]
  return lines


def is_cell_dir(workdir: str, name: str) -> bool:
  """Whether `<workdir>/<name>/` exists and holds one of the cell files or metrics.jsonl."""
  d = os.path.join(workdir, name)
  return os.path.isdir(d) and any(os.path.exists(os.path.join(d, f))
                                  for f in (*CELL_FILES.values(), METRICS))


def read_cell(workdir: str, name: str, kind: str) -> Optional[dict]:
  """The cell's 'cell' | 'config' | 'summary' | 'error' file: from its directory when that
  exists, else from cells.jsonl (summary bulk expanded); None when absent."""
  if kind not in CELL_FILES:
    raise ValueError(f'kind={kind!r} is invalid; allowed: {", ".join(CELL_FILES)}')
  if is_cell_dir(workdir, name):
    return read_json(os.path.join(workdir, name, CELL_FILES[kind]))
  entry = _by_name(os.path.join(workdir, CELLS)).get(name)
  value = None if entry is None else entry.get(kind)
  if kind == 'summary' and value is not None:
    value = expand_bulk(value, _shared(workdir), os.path.join(workdir, CELLS))
  return value


def read_metrics(workdir: str, name: str) -> list:
  """The cell's metrics lines: its metrics.jsonl when its directory exists, else from curves.jsonl
  (without time_* fields); [] when there are none."""
  if is_cell_dir(workdir, name):
    return read_lines(os.path.join(workdir, name, METRICS))
  curve = _by_name(os.path.join(workdir, CURVES)).get(name)
  return [] if curve is None else unpack_curve(curve)


def cell_dirs(workdir: str) -> list:
  """The names of the cell directories in workdir (those holding one of the cell files), sorted."""
  if not os.path.isdir(workdir):
    return []
  return sorted(n for n in os.listdir(workdir) if is_cell_dir(workdir, n))


def _write_lines(path: str, lines: list, raw: bool = False) -> None:
  """Writes one JSON value per line (`raw`: the lines as they are), atomically."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    for line in lines:
      f.write((line if raw else json.dumps(line)) + '\n')
  os.replace(tmp, path)


def pack(workdir: str) -> dict:
  """Writes cells.jsonl, curves.jsonl and shared.json from the cell directories, keeping the packed
  lines of cells that have no directory; returns {'cells': n, 'curves': n, 'shared': n}.

  Raises ValueError, writing nothing, when a cell directory without summary.json or error.json
  would replace a packed summary.

  Cells are in sweep.json's order, then the others by name.
  """
  if not os.path.isdir(workdir):
    raise ValueError(f'workdir={workdir!r} is invalid; allowed: an existing sweep directory')
  old_cells = dict(_by_name(os.path.join(workdir, CELLS)))
  old_curves = dict(_by_name(os.path.join(workdir, CURVES)))
  old_shared = _shared(workdir)
  index = read_json(os.path.join(workdir, 'sweep.json')) or {}
  dirs = cell_dirs(workdir)
  names = list(dict.fromkeys([c['name'] for c in index.get('cells', [])] + dirs + list(old_cells)))
  cells, curves, shared = [], [], {}
  for name in names:
    if name in dirs:
      files = {k: read_json(os.path.join(workdir, name, f)) for k, f in CELL_FILES.items()}
      if (files['summary'] is None and files['error'] is None and
          (old_cells.get(name) or {}).get('summary') is not None):
        raise ValueError(f'{os.path.join(workdir, name)} has no summary.json but '
                         f'{os.path.join(workdir, CELLS)} has one for that cell; allowed: finish '
                         'or remove the cell directory before packing (packing would lose it)')
      if files['summary'] is not None:
        files['summary'] = share_bulk(files['summary'], shared)
      entry = {'name': name, **files}
      lines = read_lines(os.path.join(workdir, name, METRICS)) if files['summary'] else []
      curve = pack_curve(name, lines) if lines else None
    elif name in old_cells:
      entry, curve = old_cells[name], old_curves.get(name)
      for h in _refs(entry.get('summary')):
        if h not in old_shared:
          raise ValueError(f'{os.path.join(workdir, CELLS)}: cell {name!r} refers to {REF} {h} '
                           f'which {SHARED} lacks')
        shared[h] = old_shared[h]
    else:
      continue
    cells.append(entry)
    if curve is not None:
      curves.append(curve)
  _write_lines(os.path.join(workdir, CELLS), cells)
  _write_lines(os.path.join(workdir, CURVES), curves)
  shared_path = os.path.join(workdir, SHARED)
  if shared:   # one line per value
    members = [f' {json.dumps(h)}: {json.dumps(v)}' for h, v in sorted(shared.items())]
    _write_lines(shared_path, ['{', ',\n'.join(members), '}'], raw=True)
  elif os.path.exists(shared_path):
    os.remove(shared_path)
  return {'cells': len(cells), 'curves': len(curves), 'shared': len(shared)}


def compact_json(path: str) -> None:
  """Rewrites a JSON file in common.json_text's layout (the same JSON value; checked)."""
  value = read_json(path)
  if value is None:
    raise ValueError(f'compact_json={path!r} is invalid; allowed: an existing JSON file')
  text = common.json_text(value)
  if json.loads(text) != common._finite(value):
    raise ValueError(f'{path}: the compact layout changed its value')
  common.write_json(path, value)


def main(argv):
  from absl import flags
  del argv
  f = flags.FLAGS
  try:
    for workdir in f.pack or ():
      counts = pack(workdir)
      print(f'{workdir}: ' + ', '.join(f'{v} {k}' for k, v in counts.items()))
    for path in f.compact_json or ():
      compact_json(path)
      print(f'{path}: rewritten')
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  from absl import app, flags
  flags.DEFINE_multi_string('pack', None, 'Sweep directory to pack (repeatable).')
  flags.DEFINE_multi_string('compact_json', None, 'JSON results file to rewrite in the compact '
                            'layout of benchmarks.common.write_json (repeatable).')
  app.run(main)
