"""Sweep: federated next-token fine-tuning of pretrained SmolLM2-135M (D = 134.5M) on tweets.

  python -m benchmarks.sweep --config=configs/sweeps/tweets_smollm2.py   # -> benchmarks/results/tweets_smollm2
  python -m benchmarks.report --workdir=benchmarks/results/tweets_smollm2
  # the full size, for a GPU (3 seeds, 25 rounds, evaluations every 5 on test and validation):
  python -m benchmarks.sweep --config=configs/sweeps/tweets_smollm2.py --config.seeds=0,1,2 \\
      --config.overrides='("eval_every=5", "eval_initial=True")' \\
      --workdir=benchmarks/results/tweets_smollm2_gpu

The protocol of configs/tweets_smollm2.py (data `tweets_lm`: 100 Dirichlet sentiment-skewed clients
of tweets joined by EOS, 4 x 64 BPE tokens each; 4 clients per round; one gradient step per client,
server Adam at 1e-4, the intrinsic methods at 1e-4 * sqrt(D / d); FedAvg: one local epoch, batch
2, server SGD at 1.0) on the 134.5M-parameter model; the metric is test perplexity. Every
compressing method at two budgets (project's choice, untuned; sign_sgd has no size knob, so its two
entries are its two votes: the scaled mean, and signSGD's majority vote of unscaled signs), uncompressed and FedAvg; one seed.

The committed sweep is the CPU smoke size (overrides below): 4 rounds (16 of the 100 clients,
16,384 training tokens), one evaluation on the test split after round 4, and θ0's test perplexity
(the pretrained model before any round, `eval_initial`) scored once, in the uncompressed cell: it is
the same θ0 and test split for every entry of a seed. Four rounds show whether and how fast each
method moves the pretrained model, not where it converges.
Measured (seed 0; 2-core AMD EPYC CPU, 24 GiB, shared with another sweep at nice 19 and, for the
first cells, a FedAvg protocol run: load average 2.8 to 5.8 at the cells' starts): the 20 cells took
1.41 hours of machine time (152 s to 438 s a cell; intrinsic_k_subspace the slowest), under the
4-hour budget; peak resident memory 5.2 to 14.6 GiB a cell (intrinsic_k_subspace's K sparse
operators the largest). Test perplexity of θ0 274.6; after 4 rounds uncompressed 120.0, FedAvg
139.9, signSGD (majority vote) 123.1 and (scaled mean) 126.3 at 1.94x overall, intrinsic_time_varying
126.7 at d = 2^18 (411x) and 155.8 at 2^16 (1,642x), intrinsic_static 200.4 (513x) and 222.6
(2,053x), random-k 262.7 and 271.5 (benchmarks/results/tweets_smollm2/report.md).
Methods that keep a D-sized state per client run without it (local_topk error_feedback=False,
sign_sgd and powersgd without error feedback): 100 clients x 538 MB do not fit a 24 GB host.
sketched_sgd always keeps client error and momentum, so it is left out
(config.check_client_memory refuses it).
"""
from benchmarks import sweep
from configs.sweeps.pysource_smollm2 import GRID   # the same entries; uncompressed first

CPU_GRID = ('method=uncompressed,eval_initial=True',) + GRID[1:]


def get_config():
  return sweep.sweep_config(
      name='tweets_smollm2', experiment='configs/tweets_smollm2.py', grid=CPU_GRID, seeds=(0,),
      overrides=('rounds=4', 'eval_every=4', 'eval_splits=test'), metric='test_perplexity',
      reference='tweets_smollm2')
