"""The paper's language-modelling table: PersonaChat + pretrained GPT-2 small, every method.

  python -m benchmarks.sweep --config=configs/sweeps/paper_table_personachat.py \
      --workdir=/data/sweeps/personachat --config.overrides='("data.path=/data/personachat_self_original.json",
      "data.vocab_file=/models/gpt2/vocab.json", "data.merges_file=/models/gpt2/merges.txt",
      "model.checkpoint=/models/gpt2/model.safetensors")'
  python -m benchmarks.report --workdir=/data/sweeps/personachat

Cells: configs/personachat_gpt2.py (its docstring gives the protocol, the files it needs and which
settings are the project's) with budgets around its `LARGE_MODEL_BUDGETS` (d and k = 2^17, sketches
5 x 2^20; project's choice, untuned), one seed (a cell is a full pass over 17,568 clients; add seeds
with --config.seeds='(0,1,2)' for mean ± std). sketched_sgd keeps client error for every client and
is refused (recorded as failed) by `check_client_memory` unless data.max_clients is small.
Expected runtime and results: not measured here (no PersonaChat data on the machines that wrote
this, GPU or CPU); benchmarks.report puts the per-cell wall time next to every row.
"""
import ml_collections

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
  c = ml_collections.ConfigDict()
  c.name = 'paper_table_personachat'
  c.experiment = 'configs/personachat_gpt2.py'
  c.experiment_arg = ''
  c.grid = GRID
  c.seeds = (0,)
  c.overrides = ()
  c.metric = 'test_perplexity'
  c.reference = 'personachat_gpt2'
  return c
