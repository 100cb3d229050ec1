"""Federated handwritten digits, offline: the project's default benchmark.

Commands (from the repository root):
  python run.py                                                    # = this file, method=uncompressed
  python run.py --config=configs/digits_cnn.py:method=fedavg --workdir=/tmp/digits_fedavg
  python run.py --config=configs/digits_cnn.py:method=intrinsic_static,d=256,model=mlp
Argument keys: method (any name of `fedjax_intrinsic.algorithms.METHODS`), model (cnn | mlp | logreg),
any field of the chosen method's config (d, num_subspaces, k, rows, cols, ...) and any top-level field
(rounds, clients_per_round, seed, eval_every, ...).

Data (docs/paper.md §5, "offline: digits"): scikit-learn's bundled 8x8 digits, 20% stratified held-out
split (seed 0), half validation, half test; 100 FetchSGD-style clients (sorted by label, 14-15
examples each, mostly one class).
Protocol. FedAvg follows FedJAX's digits timing setting (docs/paper.md §5): one local epoch, batch 5,
client lr 0.1, server lr 1.0. Every other method takes one gradient step on the client's whole local
data (client lr 1: the client sends its gradient, compressed) and the server applies plain SGD at a
rate per model (`ONE_STEP_SERVER_LR`) — the project's choice, tuned on the validation split for
`uncompressed` (200 rounds, seed 0; validation accuracy): cnn 0.05 → 0.972, 0.1 → 0.967, 0.2 and
1.0 diverge to chance (the first large steps kill the ReLUs); mlp 0.2 → 0.939, 1.0 → 0.967.
The intrinsic methods step in z-space, where a gradient Aᵀg moves θ by only about d/D of a full
step, and get their own rate (`INTRINSIC_SERVER_LR`, tuned the same way for intrinsic_static
with d = 2048 on the cnn; validation accuracy: 0.5 → 0.956, 1.0 → 0.972, 2.0 → 0.972, while the
cnn's 0.05 reaches only 0.66 test accuracy).
Rounds (200) and clients per round (10) are the project's choice.
Expected result and runtime: see benchmarks/results/ (measured by benchmarks.sweep) — the numbers
quoted in README.md come from there, on the machine named there.
"""
from fedjax_intrinsic import algorithms
from fedjax_intrinsic import config as config_lib, preflight


def get_config(arg=None):
  c = config_lib.base_config()
  c.time_client_cost = True     # report the client-side cost of compression
  c.data.name = 'digits'
  c.data.num_clients = 100
  c.data.partition = 'shards'
  c.model.name = 'cnn'
  c.rounds = 200
  c.clients_per_round = 10
  c.eval_every = 20
  c.method = algorithms.default_config('uncompressed')
  c = preflight.apply_arg(c, arg)
  set_protocol(c)
  return c


# Server SGD rate of the one-gradient-step protocol, per model (tuned as the docstring says).
ONE_STEP_SERVER_LR = {'cnn': 0.05, 'mlp': 1.0, 'logreg': 1.0}
INTRINSIC_SERVER_LR = 1.0


def set_protocol(c):
  """The client/server protocol that goes with c.method.name (see the module docstring)."""
  if c.method.name == 'fedavg':
    c.client.update({'lr': 0.1, 'batch_size': 5, 'local_steps': 0, 'local_epochs': 1})
    c.server.lr = 1.0
  else:
    c.client.update({'lr': 1.0, 'batch_size': 0, 'local_steps': 1, 'local_epochs': 0})
    c.server.lr = (INTRINSIC_SERVER_LR if c.method.name.startswith('intrinsic_') else
                   ONE_STEP_SERVER_LR.get(c.model.name, 0.05))
