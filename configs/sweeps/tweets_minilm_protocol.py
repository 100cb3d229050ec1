"""Protocol selection for configs/tweets_minilm.py on the VALIDATION split (metric val_accuracy).

  python -m benchmarks.sweep --config=configs/sweeps/tweets_minilm_protocol.py
  python -m benchmarks.report --workdir=benchmarks/results/tweets_minilm_protocol

Server Adam rates for the one-gradient methods (uncompressed; every other one-gradient method
takes the same rate), the intrinsic rate at d = 2^14 (the rule SERVER_LR * sqrt(D / d) gives
1.1e-2 at the default 3e-4), and FedAvg's client SGD rate, each a factor of about 3 apart; one
seed, the protocol's 40 rounds, one evaluation at round 40 on the validation split only. The best
validation accuracy of each group sets SERVER_LR, INTRINSIC_LR_2_14 (the best intrinsic rate)
and FEDAVG['client_lr'] in configs/tweets_minilm.py (FedAvg with its 2 local steps). 12 cells (the
intrinsic 1e-1 and 3e-1 and FedAvg's 0.3 were added while the highest rate came out best).
"""
from benchmarks import sweep

GRID = (
    *(f'method=uncompressed,server_lr={lr}' for lr in (1e-4, 3e-4, 6e-4)),
    *(f'method=intrinsic_static,d=16384,server_lr={lr}' for lr in (3.7e-3, 1.1e-2, 3.3e-2, 1e-1, 3e-1)),
    *(f'method=fedavg,client_lr={lr}' for lr in (0.01, 0.03, 0.1, 0.3)),
)


def get_config():
  # overrides: one evaluation, validation only
  return sweep.sweep_config(
      name='tweets_minilm_protocol', experiment='configs/tweets_minilm.py', grid=GRID, seeds=(0,),
      overrides=('eval_every=40', 'eval_splits=validation'), metric='val_accuracy',
      reference='tweets_minilm')
