"""Offline sweep: every method on federated digits with the MLP (64-128-10, D = 9,610), 3 seeds.

  python -m benchmarks.sweep --config=configs/sweeps/digits_mlp.py     # -> benchmarks/results/digits_mlp
  python -m benchmarks.report --workdir=benchmarks/results/digits_mlp  # table + plots

The small-scale counterpart of the paper's table (docs/paper.md §5, "offline: digits"): the protocol of
configs/digits_cnn.py (100 shard clients, 10 per round, 200 rounds, one gradient step per client and
server SGD at 1.0 for the MLP; FedAvg: one local epoch, batch 5), evaluated every 10 rounds. Budgets
(project's choice) span about 2x to 150x upload compression for D = 9,610: d for the intrinsic
methods, k for the top-k / random-k methods, rows x cols (and k) for the sketches, rank for PowerSGD;
sign_sgd runs signSGD with majority vote and EF-SignSGD (the default); fetchsgd runs with both of its
maskings (the default 'buckets', as in FetchSGD's released code, and 'subtract': see fetchsgd.py);
random_k runs unscaled (scaling=none; its default is the unbiased D/k scaling); sketched_sgd runs
its default candidate factor p2 = 4. Measured cost: 10-25 s a cell on 2 CPU
cores (see the wall-time column of benchmarks/results/digits_mlp/report.md).
"""
from benchmarks import sweep

GRID = (
    'method=uncompressed',
    'method=fedavg',
    'method=intrinsic_static,d=64',
    'method=intrinsic_static,d=256',
    'method=intrinsic_static,d=1024',
    'method=intrinsic_static,d=4096',
    'method=intrinsic_k_subspace,d=64',
    'method=intrinsic_k_subspace,d=256',
    'method=intrinsic_k_subspace,d=1024',
    'method=intrinsic_time_varying,d=64',
    'method=intrinsic_time_varying,d=256',
    'method=intrinsic_time_varying,d=1024',
    'method=intrinsic_time_varying,d=4096',
    'method=local_topk,k=50',
    'method=local_topk,k=200',
    'method=local_topk,k=1000',
    'method=true_topk,k=50',
    'method=true_topk,k=200',
    'method=true_topk,k=1000',
    'method=random_k,k=100,scaling=none',
    'method=random_k,k=500,scaling=none',
    'method=random_k,k=2000,scaling=none',
    'method=fetchsgd,rows=5,cols=100,k=50,masking=subtract',
    'method=fetchsgd,rows=5,cols=300,k=100,masking=subtract',
    'method=fetchsgd,rows=5,cols=1000,k=200,masking=subtract',
    'method=fetchsgd,rows=5,cols=100,k=50,masking=buckets',
    'method=fetchsgd,rows=5,cols=300,k=100,masking=buckets',
    'method=fetchsgd,rows=5,cols=1000,k=200,masking=buckets',
    'method=sketched_sgd,rows=5,cols=300,k=100',
    'method=sketched_sgd,rows=5,cols=1000,k=200',
    'method=sign_sgd,vote=majority,error_feedback=0',
    'method=sign_sgd,vote=mean,error_feedback=1',
    'method=powersgd,rank=1',
    'method=powersgd,rank=2',
    'method=powersgd,rank=4',
)


def get_config():
  return sweep.sweep_config(
      name='digits_mlp', experiment='configs/digits_cnn.py', experiment_arg='model=mlp', grid=GRID,
      seeds=(0, 1, 2), overrides=('eval_every=10',), metric='test_accuracy', reference='digits_mlp')
