"""The safetensors reader/writer, .npz headers, and the refusal of pickled checkpoints."""
import json
import struct

import ml_dtypes
import numpy as np
import pytest

from fedjax_intrinsic.models import hf_checkpoint as hf


def test_reads_bytes_built_by_hand(tmp_path):
  """The format's layout assembled by hand with struct and numpy (not with our writer)."""
  a = np.array([1.5, -2.0], '<f4')
  b = np.array([[1, 2, 3]], '<i8')
  header = {'__metadata__': {'format': 'pt'},
            'b': {'dtype': 'I64', 'shape': [1, 3], 'data_offsets': [8, 32]},
            'a': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]}}
  text = json.dumps(header).encode()
  path = tmp_path / 'model.safetensors'
  path.write_bytes(struct.pack('<Q', len(text)) + text + a.tobytes() + b.tobytes())
  tensors = hf.read_safetensors(str(path))
  np.testing.assert_array_equal(tensors['a'], a)
  np.testing.assert_array_equal(tensors['b'], b)
  assert tensors['b'].dtype == np.int64
  _, metadata, start = hf.read_safetensors_header(str(path))
  assert metadata == {'format': 'pt'} and start == 8 + len(text)
  assert hf.tensor_specs(str(path)) == {'a': ((2,), np.dtype(np.float32)),
                                        'b': ((1, 3), np.dtype(np.int64))}


def test_round_trip_every_dtype(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {
      'f32': rng.normal(size=(3, 4)).astype(np.float32),
      'f16': rng.normal(size=(5,)).astype(np.float16),
      'bf16': rng.normal(size=(2, 2)).astype(ml_dtypes.bfloat16),
      'f64': rng.normal(size=(1,)),
      'i32': np.arange(6, dtype=np.int32).reshape(2, 3),
      'u8': np.arange(7, dtype=np.uint8),
      'bool': np.array([True, False]),
      'scalar': np.float32(3.0).reshape(()),
      'empty': np.zeros((0, 4), np.float32),
  }
  path = str(tmp_path / 'x.safetensors')
  hf.write_safetensors(path, tensors, metadata={'k': 1})
  with open(path, 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
  assert n % 8 == 0                                    # header padded as the reference writer
  back = hf.read_safetensors(path)
  assert set(back) == set(tensors)
  for k, v in tensors.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    np.testing.assert_array_equal(back[k], v)
  assert hf.read_safetensors_header(path)[1] == {'k': '1'}
  assert set(hf.read_safetensors(path, ['f16'])) == {'f16'}


def test_corrupt_files_are_rejected(tmp_path):
  def write(header, body=b'\0' * 16):
    text = json.dumps(header).encode()
    path = tmp_path / 'bad.safetensors'
    path.write_bytes(struct.pack('<Q', len(text)) + text + body)
    return str(path)

  cases = [
      ({'a': {'dtype': 'F32', 'shape': [3], 'data_offsets': [0, 8]}}, 'allowed: 12 bytes'),
      ({'a': {'dtype': 'F32', 'shape': [8], 'data_offsets': [0, 32]}}, 'inside the file'),
      ({'a': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]},
        'b': {'dtype': 'F32', 'shape': [2], 'data_offsets': [4, 12]}}, 'overlap'),
      ({'a': {'dtype': 'Q4', 'shape': [2], 'data_offsets': [0, 8]}}, 'dtype in'),
  ]
  for header, message in cases:
    with pytest.raises(ValueError, match=message):
      hf.read_safetensors(write(header))
  path = tmp_path / 'huge.safetensors'
  path.write_bytes(struct.pack('<Q', 10**9) + b'{}')
  with pytest.raises(ValueError, match='header'):
    hf.read_safetensors_header(str(path))


def test_resolve_and_npz(tmp_path):
  np.savez(tmp_path / 'model.npz', w=np.ones((2, 3), np.float32), b=np.zeros(3, np.float16))
  assert hf.resolve(str(tmp_path)) == str(tmp_path / 'model.npz')
  assert hf.tensor_specs(str(tmp_path / 'model.npz')) == {'w': ((2, 3), np.dtype(np.float32)),
                                                          'b': ((3,), np.dtype(np.float16))}
  np.testing.assert_array_equal(hf.read_tensors(str(tmp_path / 'model.npz'), ['w'])['w'],
                                np.ones((2, 3)))
  hf.write_safetensors(str(tmp_path / 'model.safetensors'), {'w': np.ones(1, np.float32)})
  assert hf.resolve(str(tmp_path)) == str(tmp_path / 'model.safetensors')   # preferred

  torch_dir = tmp_path / 'torch'
  torch_dir.mkdir()
  (torch_dir / 'pytorch_model.bin').write_bytes(b'\x80\x02')
  for path in (torch_dir, torch_dir / 'pytorch_model.bin', tmp_path / 'weights.pt'):
    with pytest.raises(ValueError, match='pickled PyTorch checkpoint.*model.safetensors'):
      hf.resolve(str(path), 'model.checkpoint')
  with pytest.raises(ValueError, match="model.checkpoint=.*does not exist"):
    hf.resolve(str(tmp_path / 'absent.safetensors'), 'model.checkpoint')
  with pytest.raises(ValueError, match="checkpoint='' is invalid.*e.g. https://x.*None for random"):
    hf.resolve('', source='https://x')
  (tmp_path / 'w.h5').write_bytes(b'')
  with pytest.raises(ValueError, match='unknown format'):
    hf.resolve(str(tmp_path / 'w.h5'))
