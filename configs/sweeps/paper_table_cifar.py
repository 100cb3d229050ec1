"""The paper's image-classification table: CIFAR-10 + ResNet-9, FetchSGD's protocol, every method.

  python -m benchmarks.sweep --config=configs/sweeps/paper_table_cifar.py --workdir=/data/sweeps/cifar \
      --config.overrides='("data.data_dir=/data/tensorflow_datasets",)'
  python -m benchmarks.report --workdir=/data/sweeps/cifar

Cells: configs/cifar10_resnet9.py (its docstring gives the protocol and which settings are the
project's) with the budgets below (project's choice, around that config's defaults: d from 2^12 to
2^20 as docs/paper.md §5's sweep axis; k and sketch sizes around FetchSGD's code's typical k = 50,000 and
5 x 500,000, docs/peers.md), 3 seeds. sketched_sgd keeps 26 MB of client state for each of 10,000 clients
and is refused (and recorded as failed) on hosts with less than about 530 GB of RAM.
Expected runtime and results: not measured here (no CIFAR-10 data on the machines that wrote this,
GPU or CPU); benchmarks.report puts the per-cell wall time next to every row.
"""
from benchmarks import sweep

GRID = (
    'method=uncompressed',
    'method=fedavg',
    'method=intrinsic_static,d=4096',
    'method=intrinsic_static,d=16384',
    'method=intrinsic_static,d=65536',
    'method=intrinsic_static,d=262144',
    'method=intrinsic_static,d=1048576',
    'method=intrinsic_k_subspace,d=16384',
    'method=intrinsic_k_subspace,d=65536',
    'method=intrinsic_k_subspace,d=262144',
    'method=intrinsic_time_varying,d=4096',
    'method=intrinsic_time_varying,d=16384',
    'method=intrinsic_time_varying,d=65536',
    'method=intrinsic_time_varying,d=262144',
    'method=local_topk,k=25000',
    'method=local_topk,k=50000',
    'method=local_topk,k=100000',
    'method=true_topk,k=25000',
    'method=true_topk,k=50000',
    'method=true_topk,k=100000',
    'method=random_k,k=50000',
    'method=fetchsgd,rows=5,cols=250000,k=50000',
    'method=fetchsgd,rows=5,cols=500000,k=50000',
    'method=fetchsgd,rows=5,cols=1000000,k=100000',
    'method=fetchsgd,rows=5,cols=500000,k=50000,masking=subtract',
    'method=sketched_sgd,rows=5,cols=500000,k=50000',
    'method=sign_sgd',
    'method=powersgd,rank=2',
    'method=powersgd,rank=4',
)


def get_config():
  return sweep.sweep_config(
      name='paper_table_cifar', experiment='configs/cifar10_resnet9.py', grid=GRID, seeds=(0, 1, 2),
      metric='test_accuracy', reference='cifar10_resnet9')
