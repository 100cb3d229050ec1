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
from benchmarks import sweep
from configs.sweeps import paper_table_sst2

GRID = paper_table_sst2.GRID   # the same methods and budgets


def get_config():
  return sweep.sweep_config(
      name='paper_table_personachat', experiment='configs/personachat_gpt2.py', grid=GRID,
      seeds=(0,), metric='test_perplexity', reference='personachat_gpt2')
