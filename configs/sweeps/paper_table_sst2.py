"""The paper's sentiment table: SST-2 + pretrained BERT-base, every method.

  python -m benchmarks.sweep --config=configs/sweeps/paper_table_sst2.py --workdir=/data/sweeps/sst2 \
      --config.overrides='("data.data_dir=/data/tensorflow_datasets",
      "data.vocab_file=/models/bert-base-uncased/vocab.txt",
      "model.checkpoint=/models/bert-base-uncased/model.safetensors")'
  python -m benchmarks.report --workdir=/data/sweeps/sst2

Cells: configs/sst2_bert.py (its docstring gives the protocol, the files it needs and which settings
are the project's) with budgets around `fedjax_intrinsic.config.LARGE_MODEL_BUDGETS` (d and
k = 2^17, sketches 5 x 2^20; project's choice, untuned), 3 seeds (SST-2 runs are short next to
PersonaChat's). sketched_sgd keeps client error for each of the 100 clients (100 x 2 x 438 MB) and
may be refused (recorded as failed) by `check_client_memory` on a small host.
Expected runtime and results: not measured here (no SST-2 data on the machines that wrote this, GPU
or CPU); benchmarks.report puts the per-cell wall time next to every row.
"""
from benchmarks import sweep

GRID = (
    'method=uncompressed',
    'method=fedavg',
    'method=intrinsic_static,d=32768',
    'method=intrinsic_static,d=131072',
    'method=intrinsic_static,d=524288',
    'method=intrinsic_k_subspace,d=131072',
    'method=intrinsic_time_varying,d=32768',
    'method=intrinsic_time_varying,d=131072',
    'method=local_topk,k=131072',
    'method=true_topk,k=131072',
    'method=random_k,k=131072',
    'method=fetchsgd,rows=5,cols=1048576,k=131072',
    'method=fetchsgd,rows=5,cols=1048576,k=131072,masking=buckets',
    'method=sketched_sgd,rows=5,cols=1048576,k=131072',
    'method=sign_sgd',
    'method=powersgd,rank=4',
)


def get_config():
  return sweep.sweep_config(
      name='paper_table_sst2', experiment='configs/sst2_bert.py', grid=GRID, seeds=(0, 1, 2),
      metric='test_accuracy', reference='sst2_bert')
