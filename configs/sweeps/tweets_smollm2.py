"""Sweep (not run here): federated next-token fine-tuning of pretrained SmolLM2-135M on tweets.

  python -m benchmarks.sweep --config=configs/sweeps/tweets_smollm2.py   # -> benchmarks/results/tweets_smollm2
  python -m benchmarks.report --workdir=benchmarks/results/tweets_smollm2

The protocol of configs/tweets_smollm2.py (data `tweets_lm`: 100 Dirichlet sentiment-skewed clients
of tweets joined by EOS, 4 x 64 BPE tokens each; 4 clients per round, 25 rounds; one gradient step
per client, server Adam at 1e-4; FedAvg: one local epoch, batch 2, server SGD at 1.0) on the
134.5M-parameter model; the metric is test perplexity. Every compressing method at two budgets
(project's choice, untuned; sign_sgd has no size knob, so its two entries are its two votes),
uncompressed and FedAvg once; one seed. Methods that keep a D-sized state per client run without
it (local_topk error_feedback=False, sign_sgd and powersgd without error feedback): 100 clients x
538 MB do not fit a 24 GB host. sketched_sgd always keeps client error and momentum, so it is left
out (config.check_client_memory refuses it). Cost: the sweep was not run; one round of
configs/tweets_smollm2.py (intrinsic_static) took 285 s and its evaluation 193 s on the shared
2-core CPU, both including compilation, and a cell is 25 rounds and 5 evaluations, so the grid
(20 cells) is for a GPU (3 seeds there: add `--config.seeds=0,1,2`).
"""
from benchmarks import sweep
from configs.sweeps.pysource_smollm2 import GRID   # the same entries


def get_config():
  return sweep.sweep_config(
      name='tweets_smollm2', experiment='configs/tweets_smollm2.py', grid=GRID, seeds=(0,),
      overrides=('eval_every=5',), metric='test_perplexity', reference='tweets_smollm2')
