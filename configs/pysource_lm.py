"""Next-byte language modelling on the Python standard library's source, offline.

Commands (from the repository root):
  python run.py --config=configs/pysource_lm.py --workdir=/tmp/pysource
  python run.py --config=configs/pysource_lm.py:method=intrinsic_time_varying,d=4096 --workdir=/tmp/pysource_tv
Argument keys: as configs/digits_cnn.py (method, model, method fields, top-level fields).

Data (docs/paper.md §5, "offline: pysource"): one client per stdlib module file (a natural, non-IID
partition), held-out modules as validation and test sets, byte-level vocabulary of 256; the module
list and the corpus sha256 are recorded in the run's summary (they change with the Python version).
Windows of 64 bytes, at most 64 per module (project's choice, to keep a CPU round fast).
Model: a small causal transformer (2 layers, d_model 64; project's choice).
Protocol (project's choice): one-step methods take one gradient on the client's whole local data
(client lr 1) and the server runs Adam at 3e-3; FedAvg runs one local epoch in batches of 16 at client
lr 0.5 with server SGD at 1.0. 10 clients per round, 100 rounds; the metric is test perplexity.
Expected result and runtime: see benchmarks/results/ (measured by benchmarks.sweep).
"""
from fedjax_intrinsic import algorithms
from fedjax_intrinsic import config as config_lib, preflight


def get_config(arg=None):
  c = config_lib.base_config()
  c.time_client_cost = True     # report the client-side cost of compression
  c.data.name = 'pysource'
  c.data.seq_len = 64
  c.data.max_windows = 64
  c.model.name = 'transformer_lm'
  c.rounds = 100
  c.clients_per_round = 10
  c.eval_every = 20
  c.eval_batch_size = 256
  c.method = algorithms.default_config('uncompressed')
  c = preflight.apply_arg(c, arg)
  set_protocol(c)
  return c


def set_protocol(c):
  """The client/server protocol that goes with c.method.name (see the module docstring)."""
  config_lib.set_one_step_protocol(c, fedavg_lr=0.5, fedavg_batch_size=16, batch_size=0,
                                   server_lr=3e-3)
