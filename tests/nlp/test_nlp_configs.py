"""configs/personachat_gpt2.py and configs/sst2_bert.py: every method validates without data; empty
paths stop with one line naming the field; a tiny SST-2 run goes end to end (mocked TFDS data, tiny
BERT from a Hugging Face-layout checkpoint, through `experiment.run`)."""
import json

import numpy as np
import pytest

from configs import personachat_gpt2, sst2_bert
from fedjax_intrinsic import algorithms, config as config_lib, experiment, models, preflight
from fedjax_intrinsic.data import glue
from fedjax_intrinsic.models import bert
from tests.nlp import test_nlp_models

CONFIGS = {'personachat_gpt2': personachat_gpt2, 'sst2_bert': sst2_bert}


@pytest.mark.parametrize('name', list(CONFIGS))
def test_every_method_validates(name):
  module = CONFIGS[name]
  for method in algorithms.METHODS:
    c = module.get_config(f'method={method}')
    preflight.validate(c)
    assert c.method.name == method
    assert c.simulation.client_parallelism == 'chunked_vmap' and c.simulation.clients_per_chunk <= 2
    for field, value in config_lib.LARGE_MODEL_BUDGETS.get(method, {}).items():
      assert c.method[field] == value, (method, field)
  c = module.get_config('method=intrinsic_static,d=4096,rounds=7')   # the argument wins
  assert c.method.d == 4096 and c.rounds == 7
  assert module.get_config().method.name == 'uncompressed'
  with pytest.raises(ValueError, match="method.name='nope'"):
    module.get_config('method=nope')


def test_empty_paths_name_the_field():
  c = personachat_gpt2.get_config()
  assert c.rounds == 4392 and c.clients_per_round == 4
  with pytest.raises(config_lib.ConfigError, match=r"^path='' \(data.path\) is empty.*json") as e:
    preflight.check_resources(c)
  assert '\n' not in str(e.value)
  c = sst2_bert.get_config('method=fedavg')
  assert c.client.local_epochs == 1 and c.server.optimizer == 'sgd'
  with pytest.raises(config_lib.ConfigError, match=r"vocab_file='' \(data.vocab_file\) is empty"):
    preflight.check_resources(c)
  for module, seq_len, classes in ((personachat_gpt2, 8, 50257), (sst2_bert, 8, 2)):
    options = {k: v for k, v in module.get_config().model.items() if k != 'name'}
    with pytest.raises(ValueError, match=r"model.checkpoint='' is invalid.*huggingface.co"):
      models.get(module.get_config().model.name, input_shape=(seq_len,), num_classes=classes,
                 **options)


def test_tiny_sst2_run_end_to_end(tmp_path, bert_vocab, monkeypatch):
  """intrinsic_static on mocked SST-2 with a 2-layer BERT loaded from a tiny .npz checkpoint.

  mock_data serves examples but leaves the builder unprepared, so the (separately tested)
  availability check is skipped here.
  """
  tfds = pytest.importorskip('tensorflow_datasets')
  monkeypatch.setattr(glue, 'check_available', lambda **options: None)
  m = test_nlp_models
  np.savez(tmp_path / 'model.npz', **m.bert_tensors())
  c = sst2_bert.get_config('method=intrinsic_static,d=64,rounds=2,clients_per_round=4')
  c.data.update({'data_dir': str(tmp_path), 'vocab_file': bert_vocab, 'seq_len': m.T,
                 'num_clients': 6})
  c.model.update({'checkpoint': str(tmp_path / 'model.npz'), 'num_layers': m.L, 'num_heads': m.H,
                  'hidden': m.E, 'intermediate': m.I, 'vocab_size': m.V, 'max_position': m.P})
  c.eval_every = 2
  with tfds.testing.mock_data(num_examples=40):
    summary = experiment.run(c, str(tmp_path / 'run'))
  assert summary['status'] == 'finished'
  assert summary['num_params'] == bert.num_params(m.V, m.P, m.TV, m.E, m.I, m.L, 2)
  with open(tmp_path / 'run' / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f]
  assert len(lines) == 2 and 0 <= lines[-1]['test_accuracy'] <= 1
  assert lines[0]['bytes_up'] == 4 * 64 * 4                 # 4 clients x d floats
