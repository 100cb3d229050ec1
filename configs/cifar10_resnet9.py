"""CIFAR-10 with ResNet-9 (GroupNorm, D = 6,573,120) under FetchSGD's non-IID protocol.

Commands (from the repository root; CIFAR-10 prepared beforehand as TFDS array_record data, see
fedjax_intrinsic/data/tfds_images.py, whose missing-data error prints the preparation command):
  python run.py --config=configs/cifar10_resnet9.py:method=intrinsic_static,d=65536 \
      --config.data.data_dir=/data/tensorflow_datasets --workdir=/tmp/cifar_static
  python run.py --config=configs/cifar10_resnet9.py:method=fetchsgd,cols=250000 --workdir=/tmp/cifar_fs
  python -m benchmarks.sweep --config=configs/sweeps/paper_table_cifar.py --workdir=/data/sweeps/cifar \
      --config.overrides='("data.data_dir=/data/tensorflow_datasets",)'
Argument keys: as configs/digits_cnn.py (method, model, any field of the method's config: d,
num_subspaces, k, rows, cols, rank, ...; any top-level field: rounds, clients_per_round, seed, ...).
`method=NAME` starts from `BUDGETS[NAME]` (below), then the argument's own fields apply.

Protocol (docs/paper.md §5, FetchSGD's CIFAR-10 setting):
- Data: the 50,000 training images over 10,000 clients of 5 images of one class each
  (partition='single_class', examples_per_client=5, validation_fraction=0: no validation split);
  the metric is accuracy on the 10,000 test images (test_accuracy).
- 100 clients per round; model resnet9 (GroupNorm for BatchNorm, docs/paper.md §2).
The project's choices, untuned (nothing was run here: there is neither a GPU nor the data); check
FetchSGD's paper (§5, its CIFAR-10 experiments, and its appendix) for its rounds, learning rate,
momentum and schedule and change them here where they differ:
- Every method but FedAvg: one gradient step on the client's 5 images (client lr 1, docs/paper.md §2).
  FedAvg: one local epoch in batches of 1 (5 local steps) at client lr 0.05, server SGD at 1.0.
- Server: SGD with momentum 0.9 at a peak rate of 0.2 on FetchSGD's triangular schedule
  (server.schedule='triangular': linear warm-up over the first 20% of rounds, then linear decay
  to 0); 2,400 rounds (24 passes over the 10,000 clients). Methods whose momentum lives inside the
  method (fetchsgd and sketched_sgd `rho`, true_topk `momentum`: momentum in sketch space, on the
  clients, or before the server's top-k) get 0.9 there and plain server SGD with the same schedule.
- Budgets (`BUDGETS`): k = 50,000 and sketches of 5 rows x 500,000 columns are the typical CIFAR-10
  settings of FetchSGD's released code (docs/peers.md); d = 2^16 for the intrinsic methods, k = 50,000
  for random_k and rank 4 for PowerSGD are the project's. fetchsgd zeroes the applied buckets
  (masking='buckets', as FetchSGD's released code does; see fedjax_intrinsic/algorithms/fetchsgd.py):
  on the digits sweep the default 'subtract' diverged with every sketch that had collisions
  (benchmarks/results/digits_mlp). Client state would take 10,000 clients x
  26 MB: local_topk runs without local error (error_feedback=False, FetchSGD's local top-k baseline
  without error accumulation) and powersgd without error feedback; sketched_sgd always keeps
  client error, so `check_client_memory` refuses it on hosts with less than about 530 GB of RAM.
- Evaluation every 100 rounds (one pass over the clients), in batches of 500; all clients of a
  round vmapped at once (simulation.client_parallelism='chunked_vmap' with clients_per_chunk
  bounds the memory of the per-client gradients, 100 x 26 MB here).
Expected runtime and result: not measured here (no CIFAR-10 data on the machines that wrote this
config; the GPU lent for the benchmarks had none either); a measured run belongs in
benchmarks/results/ with the accelerator named. Measured piece: one round of 100 clients x 5 random
32x32x3 images of this ResNet-9 on one NVIDIA H200 takes 30 ms (uncompressed) / 48 ms (fedavg)
under `vmap`, 45 / 62 ms in chunks of 10 (`python -m benchmarks.simulation --preset=gpu`).
"""
import ml_collections
from ml_collections import config_dict

from fedjax_intrinsic import config as config_lib, preflight

NUM_CLIENTS = 10_000
EXAMPLES_PER_CLIENT = 5
MOMENTUM = 0.9       # project's choice (see the docstring)

# Per-method budgets and client-state choices for D = 6.6M (see the docstring for their sources).
BUDGETS = {
    'intrinsic_static': {'d': 2**16},
    'intrinsic_k_subspace': {'d': 2**16},
    'intrinsic_time_varying': {'d': 2**16},
    'local_topk': {'k': 50_000, 'error_feedback': False},
    'true_topk': {'k': 50_000, 'momentum': MOMENTUM},
    'random_k': {'k': 50_000},
    'fetchsgd': {'rows': 5, 'cols': 500_000, 'k': 50_000, 'rho': MOMENTUM, 'masking': 'buckets'},
    'sketched_sgd': {'rows': 5, 'cols': 500_000, 'k': 50_000, 'rho': MOMENTUM},
    'powersgd': {'rank': 4, 'error_feedback': False},
}
# Methods whose momentum is part of the method (the server then runs plain SGD).
_METHOD_MOMENTUM = {'fetchsgd': 'rho', 'sketched_sgd': 'rho', 'true_topk': 'momentum'}


def get_config(arg=None):
  c = config_lib.base_config()
  c.time_client_cost = True     # report the client-side cost of compression
  c.data = ml_collections.ConfigDict({
      'name': 'cifar10', 'data_dir': config_dict.placeholder(str), 'validation_fraction': 0.0,
      'partition': 'single_class', 'num_clients': NUM_CLIENTS,
      'examples_per_client': EXAMPLES_PER_CLIENT})
  c.model = ml_collections.ConfigDict({'name': 'resnet9'})
  c.clients_per_round = 100
  c.rounds = 2_400
  c.eval_every = 100
  c.eval_batch_size = 500
  c.server.update({'schedule': 'triangular', 'warmup_fraction': 0.2})
  c = preflight.apply_arg(c, arg, budgets=BUDGETS)
  set_protocol(c)
  return c


def set_protocol(c):
  """The client/server protocol that goes with c.method.name (see the module docstring)."""
  if c.method.name == 'fedavg':
    c.client.update({'lr': 0.05, 'batch_size': 1, 'local_steps': 0, 'local_epochs': 1})
    c.server.update({'optimizer': 'sgd', 'lr': 1.0, 'momentum': 0.0, 'schedule': 'constant'})
  else:
    c.client.update({'lr': 1.0, 'batch_size': 0, 'local_steps': 1, 'local_epochs': 0})
    inside = _METHOD_MOMENTUM.get(c.method.name)
    if inside is not None and c.method[inside] > 0:
      c.server.update({'optimizer': 'sgd', 'lr': 0.2, 'momentum': 0.0})
    else:
      c.server.update({'optimizer': 'momentum', 'lr': 0.2, 'momentum': MOMENTUM})
