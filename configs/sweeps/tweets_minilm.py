"""Offline sweep: every method fine-tuning pretrained MiniLM-L6 (D = 22,713,986) on tweet sentiment.

  python -m benchmarks.sweep --config=configs/sweeps/tweets_minilm.py    # -> benchmarks/results/tweets_minilm
  python -m benchmarks.report --workdir=benchmarks/results/tweets_minilm
  python -m benchmarks.sweep --config=configs/sweeps/tweets_minilm.py \\
      --config.experiment_arg=model=minilm_l6_scratch --workdir=benchmarks/results/tweets_minilm_scratch

The paper's regime (docs/paper.md §5: compressing the updates of a pretrained model being
fine-tuned), offline: the protocol of configs/tweets_minilm.py (100 Dirichlet(0.5) clients, 10 per
round, one gradient step of 8 tweets per client, server Adam; FedAvg: 2 local SGD steps), shortened
to 30 rounds and evaluated at rounds 15 and 30, to fit the CPU budget below. Budgets (project's
choice) for D = 22.7M, upload compression in brackets:
- intrinsic methods at d = 2^10 (22,182x), 2^12, 2^14, 2^17 (173x);
- local and true top-k at k = 2^14 (693x: values and indices) and 2^17 (87x);
- random-k at 2^16 and 2^18 (seeded indices: values only, 347x and 87x);
- FetchSGD (bucket masking, as in FetchSGD's released code) and sketched SGD, 5 rows of 2^17 or
  2^19 columns (35x, 9x) with k = 2^14 or 2^16;
- signSGD with majority vote (Bernstein et al.: unscaled signs, no client state) and EF-SignSGD
  (sign_sgd's default: the scaled mean, with error feedback, so each of the 100 clients keeps a
  91 MB error memory: the cell's peak resident memory was 16.1 GiB), 1 bit a parameter (32x);
  PowerSGD rank 1 and 4. local_topk and powersgd run without client state (see
  configs/tweets_minilm.py).
28 entries x 3 seeds = 84 cells.
Cost, measured on two 2-core AMD EPYC machines (sweep.json: machines; cell.json:
load_average_at_start, peak_rss_mib). On a quiet Zen 5 (CPU family 26, 32 MiB of L3), 2026-12-02:
53 s (true top-k) to 304 s (sketched SGD) a cell, within the 6-minute cell budget (one cell took
351 s while the test suite ran beside it); FedAvg's 2 local steps 84-90 s; the 84 cells about 2.5
hours from each entry's mean cell time (34 committed cells, plus seed 0 of the other 11 entries
rerun there for the timing), within the 4-hour CPU budget. A round there is the cohort's
gradient (80 tweets x 32 tokens: 0.76 s at 222 GFLOP/s against 331 GFLOP/s for a bare float32
matmul; benchmarks.round_breakdown, benchmarks/README.md) plus the method's own work. On the
earlier machine (Zen 1, 8 MiB of L3, shared: load average 3 to 13 from other jobs) the 28 cells of
seed 0 took 216 s to 4,031 s (5.96 h in all), and a nearly idle one-gradient cell 180-285 s.
Peak resident memory per cell is up to 16.1 GiB (EF-SignSGD's per-client error memories); the
other cells peaked at 2.4 to 7.0 GiB.
Resumable (benchmarks/sweep.py): a killed sweep continues with the first cell not done, so it may
span sessions. Not run on a GPU; there `--config.overrides='("rounds=200", "data.seq_len=64")'` is
the full-size variant.
"""
from benchmarks import sweep

D_VALUES = (2**10, 2**12, 2**14, 2**17)
GRID = (
    'method=uncompressed',
    'method=fedavg',
    *(f'method={m},d={d}' for m in ('intrinsic_static', 'intrinsic_k_subspace',
                                    'intrinsic_time_varying') for d in D_VALUES),
    'method=local_topk,k=16384',
    'method=local_topk,k=131072',
    'method=true_topk,k=16384',
    'method=true_topk,k=131072',
    'method=random_k,k=65536',
    'method=random_k,k=262144',
    'method=fetchsgd,rows=5,cols=131072,k=16384,masking=buckets',
    'method=fetchsgd,rows=5,cols=524288,k=65536,masking=buckets',
    'method=sketched_sgd,rows=5,cols=131072,k=16384',
    'method=sketched_sgd,rows=5,cols=524288,k=65536',
    'method=sign_sgd',
    'method=sign_sgd,vote=majority,scaled=False,error_feedback=False',
    'method=powersgd,rank=1',
    'method=powersgd,rank=4',
)


def get_config():
  return sweep.sweep_config(
      name='tweets_minilm', experiment='configs/tweets_minilm.py', grid=GRID, seeds=(0, 1, 2),
      overrides=('rounds=30', 'eval_every=15', 'eval_splits=test'), metric='test_accuracy',
      reference='tweets_minilm')
