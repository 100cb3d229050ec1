"""The project's first run: the main methods side by side on federated digits (offline), one seed.

  python -m benchmarks.main_job          # runs this sweep, prints the table, writes the Pareto plot

The protocol of configs/digits_cnn.py (CNN, D = 53,098; 100 shard clients, 10 per round, one
gradient step per client, server SGD; FedAvg: one local epoch, batch 5), with fewer rounds (100)
and evaluations every 20 rounds so the whole job stays short on a laptop. Budgets (project's
choice, one per method, all around 25x upload compression): d = 2,048 for the three intrinsic
methods (docs/paper.md §3), k = 1,000 values + indices for local top-k (2k numbers), a 5 x 400
count sketch with k = 400 for FetchSGD (masking='buckets', as in FetchSGD's released code).
"""
import ml_collections

GRID = (
    'method=uncompressed',
    'method=fedavg',
    'method=intrinsic_static,d=2048',
    'method=intrinsic_k_subspace,d=2048',
    'method=intrinsic_time_varying,d=2048',
    'method=local_topk,k=1000',
    'method=fetchsgd,rows=5,cols=400,k=400,masking=buckets',
)


def get_config():
  c = ml_collections.ConfigDict()
  c.name = 'digits_main'
  c.experiment = 'configs/digits_cnn.py'
  c.experiment_arg = 'rounds=100'
  c.grid = GRID
  c.seeds = (0,)
  c.overrides = ('eval_every=20', 'time_client_cost=False')
  c.metric = 'test_accuracy'
  c.reference = 'digits_main'
  return c
