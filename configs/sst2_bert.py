"""SST-2 sentiment classification with pretrained BERT-base (110M), clients split non-IID by label.

Commands (from the repository root; TFDS data prepared beforehand, vocabulary and checkpoint local):
  python run.py --config=configs/sst2_bert.py:method=intrinsic_time_varying,d=131072 \
      --config.data.data_dir=/data/tensorflow_datasets \
      --config.data.vocab_file=/models/bert-base-uncased/vocab.txt \
      --config.model.checkpoint=/models/bert-base-uncased/model.safetensors --workdir=/tmp/sst2_tv
Argument keys: as configs/digits_cnn.py (method, model, any field of the method's config such as d,
k, rows, cols, num_subspaces, and any top-level field such as rounds or clients_per_round).
Files: TFDS glue/sst2 prepared as array_record in data.data_dir ('' = TFDS's default directory;
the error message prints the preparation command), and vocab.txt, model.safetensors from the Hugging
Face repository google-bert/bert-base-uncased. data.vocab_file and model.checkpoint are empty by
default: `check_resources` then stops with one line naming data.vocab_file (or data.data_dir when
the data are not prepared); an empty model.checkpoint stops the model build naming
model.checkpoint (None = random init, not this experiment).

Data (docs/paper.md §5): SST-2's train split less a stratified 10% validation split, over 100 clients
by a seeded Dirichlet label skew (alpha 0.5); the reported metric is accuracy on GLUE's validation
split (stored as the test split: test_accuracy), since GLUE's test labels are hidden. Sentences as
[CLS] WordPiece [SEP], 64 tokens (data/glue.py). The project's choices (untuned; nothing was run
here, there is neither GPU nor the data):
- 10 clients per round, 600 rounds (about 3 passes over the training sentences at 32 per client).
- One-step methods: the client's gradient on a batch of 32 of its sentences at client lr 1; the
  server runs Adam at 1e-4 on the mean. FedAvg: one local epoch in batches of 32 at client lr
  0.05, server SGD at 1.0.
- Budgets for D = 109M: as configs/personachat_gpt2.py (`config.LARGE_MODEL_BUDGETS`: d = 2^17, k = 2^17,
  sketches 5 x 2^20; local_topk without error feedback, powersgd without error feedback: 100
  clients x 438 MB of client state would not fit). sketched_sgd keeps client error, which
  `check_client_memory` may refuse on a small host.
- Clients in chunks of 2 (`chunked_vmap`).
Expected result and runtime: not measured here.
"""
import ml_collections

from fedjax_intrinsic import config as config_lib, preflight


def get_config(arg=None):
  c = config_lib.base_config()
  c.time_client_cost = True     # report the client-side cost of compression
  c.data = ml_collections.ConfigDict({
      'name': 'sst2', 'data_dir': '', 'vocab_file': '', 'seq_len': 64, 'do_lower_case': True,
      'validation_fraction': 0.1, 'partition': 'dirichlet', 'num_clients': 100, 'alpha': 0.5})
  c.model = ml_collections.ConfigDict({
      'name': 'bert_classifier', 'checkpoint': '', 'num_layers': 12, 'num_heads': 12,
      'hidden': 768, 'intermediate': 3072, 'vocab_size': 30522, 'max_position': 512,
      'type_vocab_size': 2, 'pad_id': 0})
  c.clients_per_round = 10
  c.rounds = 600
  c.eval_every = 50
  c.eval_batch_size = 256
  c.simulation.client_parallelism = 'chunked_vmap'
  c.simulation.clients_per_chunk = 2
  c = preflight.apply_arg(c, arg, budgets=config_lib.LARGE_MODEL_BUDGETS)
  set_protocol(c)
  return c


def set_protocol(c):
  """The client/server protocol that goes with c.method.name (see the module docstring)."""
  config_lib.set_one_step_protocol(c, fedavg_lr=0.05, fedavg_batch_size=32, batch_size=32,
                                   server_lr=1e-4)
