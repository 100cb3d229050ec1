"""The project's first run: the main methods side by side on federated digits (offline), one seed.

  python -m benchmarks.main_job          # runs this sweep, prints the table, writes the Pareto plot
  python -m benchmarks.sweep --config=configs/sweeps/digits_main.py     # the sweep alone

The protocol of configs/digits_cnn.py with its MLP (64-128-10, D = 9,610; 100 shard clients, 10
per round, 200 rounds, one gradient step per client and server SGD; FedAvg: one local epoch, batch
5), evaluated every 20 rounds. One budget per method (project's choice, from the budgets of
configs/sweeps/digits_mlp.py that learn there): d = 1,024 for the three intrinsic methods (9.4x
upload; docs/paper.md §3), k = 200 values + indices for local top-k (24x upload), a 5 x 300 count
sketch with k = 100 for FetchSGD (6.4x upload; masking='buckets', as in FetchSGD's released code).
The MLP rather than the CNN keeps the job short: a few seconds a cell on 2 CPU cores.
"""
from benchmarks import sweep

GRID = (
    'method=uncompressed',
    'method=fedavg',
    'method=intrinsic_static,d=1024',
    'method=intrinsic_k_subspace,d=1024',
    'method=intrinsic_time_varying,d=1024',
    'method=local_topk,k=200',
    'method=fetchsgd,rows=5,cols=300,k=100,masking=buckets',
)


def get_config():
  return sweep.sweep_config(
      name='digits_main', experiment='configs/digits_cnn.py', experiment_arg='model=mlp', grid=GRID,
      seeds=(0,), overrides=('eval_every=20', 'time_client_cost=False'), metric='test_accuracy',
      reference='digits_main')
