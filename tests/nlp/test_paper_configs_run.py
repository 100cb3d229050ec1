"""The paper's NLP configs run on the experiment's own code path, one round each, from tiny files
in their real formats: model.safetensors with Hugging Face tensor names, GPT-2's vocab.json +
merges.txt, BERT's vocab.txt, ConvAI2's PersonaChat JSON (mocked TFDS examples for SST-2).

Only the sizes are shrunk (config fields the user can set); method, protocol, data pipeline,
checkpoint loader and the round are those of configs/personachat_gpt2.py and configs/sst2_bert.py.
"""
import json

import numpy as np
import pytest

from configs import personachat_gpt2, sst2_bert
from fedjax_intrinsic import experiment
from fedjax_intrinsic.data import glue
from fedjax_intrinsic.models import bert, gpt2, hf_checkpoint
from tests.nlp import helpers, test_nlp_models as m


def _lines(workdir):
  with open(workdir / 'metrics.jsonl') as f:
    return [json.loads(line) for line in f]


def test_personachat_gpt2_one_round(tmp_path, personachat_json, gpt2_files):
  vocab_file, merges_file = gpt2_files
  vocab = len(json.load(open(vocab_file, encoding='utf-8')))
  tensors = m.gpt2_tensors()                               # 'transformer.' names, Conv1D [in, out]
  tensors['transformer.wte.weight'] = helpers.random_tensors({'w': (vocab, m.E)}, 3)['w']
  ckpt = str(tmp_path / 'model.safetensors')
  hf_checkpoint.write_safetensors(ckpt, tensors)
  c = personachat_gpt2.get_config('method=intrinsic_static,d=64,rounds=1,clients_per_round=2')
  c.data.update({'path': personachat_json, 'vocab_file': vocab_file, 'merges_file': merges_file,
                 'seq_len': 12})
  c.model.update({'checkpoint': ckpt, 'n_layer': m.L, 'n_head': m.H, 'n_embd': m.E,
                  'n_positions': m.P})
  c.eval_batch_size = 4
  summary = experiment.run(c, str(tmp_path / 'run'))
  assert summary['status'] == 'finished'
  assert summary['num_params'] == gpt2.num_params(vocab, m.P, m.E, m.L)
  (line,) = _lines(tmp_path / 'run')
  assert np.isfinite(line['train_loss']) and line['test_perplexity'] > 1
  assert line['bytes_up'] == 2 * 64 * 4                     # 2 clients x d floats


def test_sst2_bert_one_round_from_safetensors(tmp_path, bert_vocab, monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  monkeypatch.setattr(glue, 'check_available', lambda **options: None)
  ckpt = str(tmp_path / 'model.safetensors')
  hf_checkpoint.write_safetensors(ckpt, m.bert_tensors())  # 'bert.' names, LayerNorm gamma/beta
  c = sst2_bert.get_config('method=intrinsic_static,d=64,rounds=1,clients_per_round=4')
  c.data.update({'data_dir': str(tmp_path), 'vocab_file': bert_vocab, 'seq_len': m.T,
                 'num_clients': 6})
  c.model.update({'checkpoint': ckpt, 'num_layers': m.L, 'num_heads': m.H, 'hidden': m.E,
                  'intermediate': m.I, 'vocab_size': m.V, 'max_position': m.P})
  with tfds.testing.mock_data(num_examples=40):
    summary = experiment.run(c, str(tmp_path / 'run'))
  assert summary['status'] == 'finished'
  assert summary['num_params'] == bert.num_params(m.V, m.P, m.TV, m.E, m.I, m.L, 2)
  (line,) = _lines(tmp_path / 'run')
  assert 0 <= line['test_accuracy'] <= 1 and line['bytes_up'] == 4 * 64 * 4
