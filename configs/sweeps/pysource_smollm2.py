"""Sweep (not run here): federated fine-tuning of pretrained SmolLM2-135M on stdlib source.

  python -m benchmarks.sweep --config=configs/sweeps/pysource_smollm2.py   # -> benchmarks/results/pysource_smollm2
  python -m benchmarks.report --workdir=benchmarks/results/pysource_smollm2

The protocol of configs/pysource_smollm2.py (one client per stdlib module, 4 x 64 BPE tokens each,
4 clients per round, 30 rounds; one gradient step per client, server Adam at 1e-4, the intrinsic
methods at 1e-4 * sqrt(D / d); FedAvg: one
local epoch, batch 2, server SGD at 1.0) on the 134.5M-parameter model; the metric is test
perplexity. Two budgets per compressing method (project's choice, untuned; sign_sgd has no size
knob, so its two entries are its two votes: the scaled mean, and signSGD's majority vote of
unscaled signs), one seed. Methods that
keep a D-sized state per client run without it (local_topk error_feedback=False, sign_sgd and
powersgd without error feedback): 117 clients x 538 MB do not fit a 24 GB host. sketched_sgd
always keeps client error and momentum, so it is left out (config.check_client_memory refuses it).
Cost: one round took 502 s on the shared 2-core CPU including compilation (configs/pysource_smollm2
.py); a cell is 30 rounds and 3 evaluations, so the grid (20 cells) is for a GPU.
"""
from benchmarks import sweep

GRID = (
    'method=uncompressed',
    'method=fedavg',
    'method=intrinsic_static,d=65536',
    'method=intrinsic_static,d=262144',
    'method=intrinsic_k_subspace,d=65536,projection=sparse',
    'method=intrinsic_k_subspace,d=262144,projection=sparse',
    'method=intrinsic_time_varying,d=65536,projection=sparse',
    'method=intrinsic_time_varying,d=262144,projection=sparse',
    'method=local_topk,k=131072',
    'method=local_topk,k=524288',
    'method=true_topk,k=131072',
    'method=true_topk,k=524288',
    'method=random_k,k=131072',
    'method=random_k,k=524288',
    'method=fetchsgd,rows=5,cols=1048576,k=131072',
    'method=fetchsgd,rows=5,cols=4194304,k=524288',
    'method=sign_sgd,error_feedback=0',
    'method=sign_sgd,vote=majority,scaled=False,error_feedback=False',   # signSGD with majority vote
    'method=powersgd,rank=2',
    'method=powersgd,rank=8',
)


def get_config():
  return sweep.sweep_config(
      name='pysource_smollm2', experiment='configs/pysource_smollm2.py', grid=GRID, seeds=(0,),
      overrides=('eval_every=10',), metric='test_perplexity', reference='pysource_smollm2')
