"""Pretrained weights from local checkpoints in the Hugging Face layout, without pickle.

Formats (`resolve` picks the file):
- `model.safetensors`: read here (no dependency). Layout: 8 bytes little-endian u64 N, then N bytes
  of JSON header {name: {"dtype": "F32"|"F16"|"BF16"|..., "shape": [...], "data_offsets": [begin,
  end]}, optional "__metadata__": {str: str}}, then the raw little-endian tensor bytes, offsets
  relative to the first byte after the header. `write_safetensors` writes the same layout (header
  padded with spaces to a multiple of 8 bytes, as the reference writer does).
- `.npz`: numpy's archive, read with allow_pickle=False; names are the archive's keys.
- `pytorch_model.bin`, `.pt`, `.pth`, `.ckpt`, `.pkl`: refused (unpickling runs code). A directory
  holding only such a file is refused with the same message: download `model.safetensors` from the
  model's Hugging Face repository instead.

Mapping to flax (`layout`): each flax parameter path has a Hugging Face name (given by the model's
`hf_name` function, which knows the optional name prefix such as `transformer.` or `bert.` and the
old `gamma`/`beta` LayerNorm names) and a transpose flag (Hugging Face `Linear` stores [out, in],
flax `Dense` [in, out]; GPT-2's `Conv1D` already stores [in, out]). Every expected name must be
present with the right shape and every checkpoint tensor must be used or ignorable (the model's
`ignore` predicate: buffers such as GPT-2's causal-mask `attn.bias`, heads the model does not have),
else a one-line ValueError names the first offending tensor. Floats of any width load as float32.

`load_params_callback(layout)` returns the params from inside `jax.jit` through
`jax.pure_callback`, so a jitted `init` reads the file at run time instead of baking hundreds of MB
of constants into the compiled program; `jax.eval_shape` does not read the file at all.
"""
import json
import os
import struct
import zipfile
from typing import Any, Callable, NamedTuple, Sequence

import jax
import ml_dtypes
import numpy as np

from fedjax_intrinsic import fields

# The model option `model.checkpoint` of the builders that load through this module.
OPTION = fields.Text(None, also=(None,), doc='a Hugging Face model.safetensors or .npz: '
                                           'pretrained init (None: random init)')

DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16,
          'BF16': ml_dtypes.bfloat16, 'I64': np.int64, 'I32': np.int32, 'I16': np.int16,
          'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_}
_DTYPE_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle')
_MAX_HEADER = 100 * 2**20


def _refuse_pickle(path: str, arg: str) -> ValueError:
  return ValueError(f'{arg}={path!r} is a pickled PyTorch checkpoint, which is never loaded '
                    '(unpickling runs arbitrary code); allowed: model.safetensors (download it '
                    'from the model\'s Hugging Face repository) or an .npz of the same tensors')


def resolve(path: str, arg: str = 'checkpoint', source: str = '') -> str:
  """The checkpoint file `path` names: itself, or in a directory model.safetensors / model.npz.

  source: where to download one (an address), named in the error for an empty path.
  """
  if not isinstance(path, str) or not path:
    where = f', e.g. {source}' if source else ''
    raise ValueError(f'{arg}={path!r} is invalid; allowed: the path of a model.safetensors or .npz '
                     f'in the Hugging Face layout (or a directory holding one){where}; None for '
                     'random init')
  if os.path.isdir(path):
    for name in ('model.safetensors', 'model.npz'):
      if os.path.isfile(os.path.join(path, name)):
        return os.path.join(path, name)
    if any(f.endswith(PICKLE_SUFFIXES) for f in os.listdir(path)):
      raise _refuse_pickle(path, arg)
    raise ValueError(f'{arg}={path!r} is a directory without model.safetensors or model.npz; '
                     'allowed: a directory holding one of them, or the file itself')
  if path.endswith(PICKLE_SUFFIXES):
    raise _refuse_pickle(path, arg)
  if not os.path.isfile(path):
    raise ValueError(f'{arg}={path!r} does not exist; allowed: the path of a model.safetensors or '
                     '.npz in the Hugging Face layout')
  if not path.endswith(('.safetensors', '.npz')):
    raise ValueError(f'{arg}={path!r} has an unknown format; allowed: a .safetensors or .npz file')
  return path


# ----------------------------------------------------------------------------- safetensors


def read_safetensors_header(path: str) -> tuple[dict, dict, int]:
  """(tensors {name: {'dtype', 'shape', 'data_offsets'}}, metadata, data start) of a file.

  Checks the layout: dtypes known, each tensor's byte span equal to its shape times its itemsize,
  spans inside the file and not overlapping.
  """
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(8)
    if len(head) < 8:
      raise ValueError(f'checkpoint={path!r} is shorter than 8 bytes; allowed: a safetensors file')
    (n,) = struct.unpack('<Q', head)
    if n > min(_MAX_HEADER, size - 8):
      raise ValueError(f'checkpoint={path!r} declares a {n}-byte header in a {size}-byte file; '
                       'allowed: a safetensors file')
    try:
      header = json.loads(f.read(n).decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as e:
      raise ValueError(f'checkpoint={path!r} has a header that is not JSON ({e}); allowed: a '
                       'safetensors file') from None
  if not isinstance(header, dict):
    raise ValueError(f'checkpoint={path!r} has a header that is not a JSON object; allowed: a '
                     'safetensors file')
  metadata = header.pop('__metadata__', None) or {}
  start = 8 + n
  spans = []
  for name, info in header.items():
    ok = (isinstance(info, dict) and info.get('dtype') in DTYPES
          and isinstance(info.get('shape'), list) and isinstance(info.get('data_offsets'), list)
          and len(info['data_offsets']) == 2
          and all(isinstance(v, int) and v >= 0 for v in info['shape'] + info['data_offsets']))
    if not ok:
      raise ValueError(f'checkpoint={path!r} tensor {name!r} has entry {info!r}; allowed: '
                       f'{{dtype in {sorted(DTYPES)}, shape, data_offsets}}')
    begin, end = info['data_offsets']
    nbytes = int(np.prod(info['shape'], dtype=np.int64)) * np.dtype(DTYPES[info['dtype']]).itemsize
    if end - begin != nbytes or start + end > size:
      raise ValueError(f'checkpoint={path!r} tensor {name!r} spans bytes {begin}..{end} of a '
                       f'{size - start}-byte body; allowed: {nbytes} bytes inside the file')
    spans.append((begin, end, name))
  spans.sort()
  for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
    if begin < end:
      raise ValueError(f'checkpoint={path!r} tensors {a!r} and {b!r} overlap; allowed: disjoint '
                       'byte spans')
  return header, metadata, start


def read_safetensors(path: str, names: Sequence[str] | None = None) -> dict:
  """{name: np.ndarray} of the tensors `names` (default: all) in their stored dtypes."""
  header, _, start = read_safetensors_header(path)
  names = list(header) if names is None else list(names)
  out = {}
  with open(path, 'rb') as f:
    for name in names:
      if name not in header:
        raise ValueError(f'checkpoint={path!r} has no tensor {name!r}')
      info = header[name]
      begin, end = info['data_offsets']
      f.seek(start + begin)
      buf = f.read(end - begin)
      dtype = np.dtype(DTYPES[info['dtype']]).newbyteorder('<')
      out[name] = np.frombuffer(buf, dtype).reshape(info['shape']).astype(dtype.newbyteorder('='))
  return out


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None) -> None:
  """Writes {name: array} in the safetensors layout (names sorted, data in that order)."""
  header, offset, blobs = {}, 0, []
  for name in sorted(tensors):
    a = np.asarray(tensors[name], order='C')   # (ascontiguousarray would make a scalar 1-D)
    if a.dtype not in _DTYPE_NAMES:
      raise ValueError(f'tensor {name!r} has dtype {a.dtype}; allowed: '
                       f'{", ".join(str(d) for d in _DTYPE_NAMES)}')
    blob = a.astype(a.dtype.newbyteorder('<')).tobytes()
    header[name] = {'dtype': _DTYPE_NAMES[a.dtype], 'shape': list(a.shape),
                    'data_offsets': [offset, offset + len(blob)]}
    offset += len(blob)
    blobs.append(blob)
  if metadata:
    header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
  text = json.dumps(header, separators=(',', ':')).encode('utf-8')
  text += b' ' * (-len(text) % 8)
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(text)))
    f.write(text)
    for blob in blobs:
      f.write(blob)


# ----------------------------------------------------------------------------- any format


def tensor_specs(path: str) -> dict:
  """{name: (shape, dtype)} of a checkpoint file, from headers only (no tensor data read)."""
  if path.endswith('.safetensors'):
    header, _, _ = read_safetensors_header(path)
    return {k: (tuple(v['shape']), np.dtype(DTYPES[v['dtype']])) for k, v in header.items()}
  specs = {}
  try:
    with zipfile.ZipFile(path) as z:
      for member in z.namelist():
        if not member.endswith('.npy'):
          continue
        with z.open(member) as f:
          version = np.lib.format.read_magic(f)
          read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
          shape, _, dtype = read(f)                                      # header only
        specs[member[:-4]] = (tuple(shape), np.dtype(dtype))
  except (zipfile.BadZipFile, ValueError) as e:
    raise ValueError(f'checkpoint={path!r} is not a readable .npz ({e}); allowed: an archive '
                     'written by numpy.savez') from None
  return specs


def read_tensors(path: str, names: Sequence[str]) -> dict:
  """{name: np.ndarray} of `names` from a .safetensors or .npz file (npz: allow_pickle=False)."""
  if path.endswith('.safetensors'):
    return read_safetensors(path, names)
  with np.load(path, allow_pickle=False) as z:
    return {name: z[name] for name in names}


# ----------------------------------------------------------------------------- flax mapping


class Entry(NamedTuple):
  """One flax parameter: its path in the params tree, its checkpoint name, whether to transpose."""
  path: tuple
  name: str
  transpose: bool


class Layout(NamedTuple):
  """How a checkpoint file fills (part of) a flax params tree; `shapes` is that part's shape tree
  (jax.ShapeDtypeStruct leaves, float32)."""
  file: str
  entries: tuple
  shapes: Any


def _path_keys(path) -> tuple:
  return tuple(getattr(k, 'key', getattr(k, 'name', k)) for k in path)


def layout(path: str, shapes: Any, hf_name: Callable[[tuple, set], tuple[str, bool]],
           ignore: Callable[[str], bool], arg: str = 'checkpoint', source: str = '') -> Layout:
  """Matches the flax shape tree `shapes` to the tensors of checkpoint `path` (header only).

  hf_name(flax_path, checkpoint_names) -> (checkpoint name, transpose). ignore(name) -> True for
  checkpoint tensors the model does not use. Raises ValueError on any missing, misshapen or
  unexpected tensor. arg, source: the option's name and a download address, for the messages.
  """
  file = resolve(path, arg, source)
  specs = tensor_specs(file)
  available = set(specs)
  entries, used = [], set()
  for p, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    keys = _path_keys(p)
    name, transpose = hf_name(keys, available)
    if name not in specs:
      raise ValueError(f'{arg}={path!r} lacks tensor {name!r} (flax parameter '
                       f'{"/".join(keys)}, shape {tuple(leaf.shape)}); allowed: a checkpoint of '
                       'this architecture and size in the Hugging Face layout')
    shape, dtype = specs[name]
    want = tuple(leaf.shape)[::-1] if transpose else tuple(leaf.shape)
    if shape != want:
      raise ValueError(f'{arg}={path!r} tensor {name!r} has shape {shape}; allowed: {want} for '
                       f'flax parameter {"/".join(keys)} (check the model size options)')
    if dtype.kind != 'f' and dtype != ml_dtypes.bfloat16:
      raise ValueError(f'{arg}={path!r} tensor {name!r} has dtype {dtype}; allowed: a float dtype')
    entries.append(Entry(keys, name, transpose))
    used.add(name)
  extra = sorted(n for n in available - used if not ignore(n))
  if extra:
    raise ValueError(f'{arg}={path!r} holds tensor {extra[0]!r} ({len(extra)} unexpected in all) '
                     'that this model does not have; allowed: a checkpoint of this architecture '
                     'and size (check the model size options)')
  return Layout(file, tuple(entries), shapes)


def load_params(lay: Layout) -> Any:
  """The params subtree of `lay` as float32 numpy arrays (host memory)."""
  tensors = read_tensors(lay.file, [e.name for e in lay.entries])
  leaves = []
  for e in lay.entries:
    a = np.asarray(tensors.pop(e.name), np.float32)
    leaves.append(np.asarray(a.T if e.transpose else a, order='C'))
  return jax.tree.unflatten(jax.tree.structure(lay.shapes), leaves)


def load_params_callback(lay: Layout) -> Any:
  """`load_params(lay)` as jax arrays, usable inside jit (a jax.pure_callback; see above)."""
  return jax.pure_callback(lambda: load_params(lay), lay.shapes)


def prefixed(name: str, prefixes: Sequence[str], available: set) -> str:
  """The first of prefix + name that the checkpoint holds (else the first, for the error)."""
  candidates = [p + name for p in prefixes]
  return next((c for c in candidates if c in available), candidates[0])
