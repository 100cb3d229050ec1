"""Rates for MiniLM-L6 trained from random init (configs/tweets_minilm.py:model=minilm_l6_scratch),
chosen on the VALIDATION split (metric val_accuracy).

  python -m benchmarks.sweep --config=configs/sweeps/tweets_minilm_scratch_protocol.py
  python -m benchmarks.report --workdir=benchmarks/results/tweets_minilm_scratch_protocol

At the fine-tuning rate (server Adam 3e-4) random init stays at the majority class after 30 rounds
(benchmarks/results/tweets_minilm_scratch_dint/), so its d_int90 is degenerate. This asks whether a
higher server rate lets the from-scratch network learn in the same protocol (one local step, 10
clients a round, 40 rounds, one evaluation at round 40, validation split only), one seed.
"""
from benchmarks import sweep

GRID = tuple(f'method=uncompressed,server_lr={lr}'
             for lr in (3e-4, 1e-3, 3e-3, 1e-2))


def get_config():
  return sweep.sweep_config(
      name='tweets_minilm_scratch_protocol', experiment='configs/tweets_minilm.py', grid=GRID,
      experiment_arg='model=minilm_l6_scratch', seeds=(0,), overrides=('eval_every=40', 'eval_splits=validation'), metric='val_accuracy',
      reference='tweets_minilm')
