"""PersonaChat language modelling with pretrained GPT-2 small (124M), one client per personality.

Commands (from the repository root; the three data files and the checkpoint are local paths):
  python run.py --config=configs/personachat_gpt2.py:method=intrinsic_static,d=131072 \
      --config.data.path=/data/personachat_self_original.json \
      --config.data.vocab_file=/models/gpt2/vocab.json \
      --config.data.merges_file=/models/gpt2/merges.txt \
      --config.model.checkpoint=/models/gpt2/model.safetensors --workdir=/tmp/personachat_static
Argument keys: as configs/digits_cnn.py (method, model, any field of the method's config such as d,
k, rows, cols, num_subspaces, and any top-level field such as rounds or clients_per_round).
Files: personachat_self_original.json (data.personachat.URL), and vocab.json, merges.txt,
model.safetensors from the Hugging Face repository openai-community/gpt2. Every path is empty by
default: `check_resources` then stops with one line naming data.path (then data.vocab_file,
data.merges_file); an empty model.checkpoint stops the model build naming model.checkpoint
(None = random init, not this experiment).

Data (docs/paper.md §5, FetchSGD's protocol): one client per personality of the train dialogs (17,568
clients per docs/paper.md), an example per utterance = persona + the last 5 history turns + the gold
reply, 256 tokens, loss and perplexity on the reply tokens (data/personachat.py); the reported
metric is perplexity on ConvAI2's "valid" dialogs (stored as the test split: test_perplexity).
FetchSGD's setting is a few clients per round and one epoch: check FetchSGD's paper for its exact
numbers. The project's choices (untuned; nothing was run here, there is neither GPU nor the data):
- 4 clients per round, rounds = ceil(17,568 / 4) = 4,392, one pass over the clients; change both
  together (or use data.max_clients for a shorter run).
- One-step methods: the client's gradient on a batch of up to 16 of its utterances (most clients
  hold fewer: their whole data) at client lr 1; the server runs Adam at 1e-4 on the mean.
  FedAvg: one local epoch in batches of 8 at client lr 0.05, server SGD at 1.0.
- Budgets for D = 124M (`config.LARGE_MODEL_BUDGETS`, before the argument's own fields): d = 2^17;
  k = 2^17 for the top-k / random-k methods; sketches 5 x 2^20 with k = 2^17. Methods that would
  keep a D-sized state per client run without it (local_topk error_feedback=False, powersgd
  error_feedback=False): 17,568 clients x 498 MB do not fit any host. sketched_sgd always keeps
  client error (and momentum), so `check_client_memory` refuses it unless data.max_clients is small.
- Clients in chunks of 2 (`chunked_vmap`): a vmapped GPT-2 step holds its activations per client.
Expected result and runtime: not measured here (the GPU machine had no PersonaChat). Measured on
one NVIDIA H200 (`python -m benchmarks.memory --preset=gpu`, random tokens): a round of 64 clients
x 16 x 256 tokens of this model in chunks of 8 takes 3.1 s (intrinsic_static, d = 2^20) or 1.3 s
(uncompressed), within 55 GiB; this config's rounds are far smaller.
"""
import ml_collections
from ml_collections import config_dict

from fedjax_intrinsic import config as config_lib, preflight

NUM_CLIENTS = 17_568        # docs/paper.md §5 (FetchSGD's count of PersonaChat personalities)



def get_config(arg=None):
  c = config_lib.base_config()
  c.time_client_cost = True     # report the client-side cost of compression
  c.data = ml_collections.ConfigDict({
      'name': 'personachat', 'path': '', 'vocab_file': '', 'merges_file': '', 'seq_len': 256,
      'max_history': 2, 'targets': 'reply', 'max_clients': config_dict.placeholder(int)})
  c.model = ml_collections.ConfigDict({
      'name': 'gpt2', 'checkpoint': '', 'n_layer': 12, 'n_head': 12, 'n_embd': 768,
      'n_positions': 1024})
  c.clients_per_round = 4
  c.rounds = -(-NUM_CLIENTS // c.clients_per_round)
  c.eval_every = 500
  c.eval_batch_size = 32
  c.simulation.client_parallelism = 'chunked_vmap'
  c.simulation.clients_per_chunk = 2
  c = preflight.apply_arg(c, arg, budgets=config_lib.LARGE_MODEL_BUDGETS)
  set_protocol(c)
  return c


def set_protocol(c):
  """The client/server protocol that goes with c.method.name (see the module docstring)."""
  config_lib.set_one_step_protocol(c, fedavg_lr=0.05, fedavg_batch_size=8, batch_size=16,
                                   server_lr=1e-4)
