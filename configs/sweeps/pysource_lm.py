"""Offline sweep: every method on next-byte language modelling of the Python stdlib, 3 seeds.

  python -m benchmarks.sweep --config=configs/sweeps/pysource_lm.py    # -> benchmarks/results/pysource_lm
  python -m benchmarks.report --workdir=benchmarks/results/pysource_lm

The small-scale counterpart of the paper's language-modelling table (docs/paper.md §5, "offline:
pysource"): the protocol of configs/pysource_lm.py (one client per stdlib module, 10 per round,
100 rounds; one gradient step per client and server Adam at 3e-3; FedAvg: one local epoch, batch 16,
server SGD at 1.0) with the 2-layer transformer (D = 120,576); the metric is test perplexity. One or
two budgets per method (project's choice), at about 15x-120x upload compression for the intrinsic,
top-k and random-k methods. sketched_sgd runs with p2 = 1 (candidates = the k applied
coordinates; its default is p2 = 4), random_k unscaled (its default is the unbiased scaling).
Measured cost: about 1-2 minutes a cell on an idle 2-core CPU (0.6 s a round), several times that
under load; see the wall-time column of the report.
"""
from benchmarks import sweep

GRID = (
    'method=uncompressed',
    'method=fedavg',
    'method=intrinsic_static,d=1024',
    'method=intrinsic_static,d=8192',
    'method=intrinsic_k_subspace,d=4096',
    'method=intrinsic_time_varying,d=1024',
    'method=intrinsic_time_varying,d=8192',
    'method=local_topk,k=4096',
    'method=true_topk,k=4096',
    'method=random_k,k=8192,scaling=none',
    'method=fetchsgd,rows=5,cols=8192,k=4096,masking=buckets',
    'method=sketched_sgd,rows=5,cols=8192,k=4096,p2=1',
    'method=sign_sgd,vote=mean,error_feedback=1',
    'method=powersgd,rank=2',
)


def get_config():
  return sweep.sweep_config(
      name='pysource_lm', experiment='configs/pysource_lm.py', grid=GRID, seeds=(0, 1, 2),
      overrides=('eval_every=10',), metric='test_perplexity', reference='pysource_lm')
