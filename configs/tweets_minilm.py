"""Federated fine-tuning of pretrained MiniLM-L6 (22.7M) on human-labelled tweet sentiment, offline.

PROTOCOL_DOC
"""
import ml_collections

from fedjax_intrinsic import config as config_lib

# Budgets for D = 22,713,986 (2-class head): the sweep (configs/sweeps/tweets_minilm.py) spans more.
BUDGETS = {
    'intrinsic_static': {'d': 2**14},
    'intrinsic_k_subspace': {'d': 2**14},
    'intrinsic_time_varying': {'d': 2**14},
    'local_topk': {'k': 2**16},
    'true_topk': {'k': 2**16},
    'random_k': {'k': 2**16},
    'fetchsgd': {'rows': 5, 'cols': 2**18, 'k': 2**16, 'masking': 'buckets'},
    'sketched_sgd': {'rows': 5, 'cols': 2**18, 'k': 2**16},
    'powersgd': {'rank': 2},
}
# Server rates (Adam), chosen on the validation split (see the docstring).
SERVER_LR = 1e-4
INTRINSIC_SERVER_LR = 1e-2
FEDAVG = {'client_lr': 1e-3, 'server_lr': 1.0, 'local_steps': 4}
# Methods whose one-step client message is linear in the gradient, without client state.
SHORTCUT_METHODS = ('uncompressed', 'intrinsic_static', 'intrinsic_k_subspace',
                    'intrinsic_time_varying', 'true_topk', 'fetchsgd')


def get_config(arg=None):
  c = config_lib.base_config()
  c.data = ml_collections.ConfigDict({
      'name': 'tweets', 'vocab_file': '', 'seq_len': 32, 'classes': 2, 'test_fraction': 0.1,
      'validation_fraction': 0.1, 'partition': 'dirichlet', 'num_clients': 100, 'alpha': 0.5})
  c.model = ml_collections.ConfigDict({'name': 'minilm_l6', 'checkpoint': ''})
  c.clients_per_round = 10
  c.rounds = 60
  c.eval_every = 30
  c.eval_batch_size = 256
  c = config_lib.apply_arg(c, arg, budgets=BUDGETS)
  if c.model.name != 'minilm_l6':               # minilm_l6_scratch takes no checkpoint option
    c.model = ml_collections.ConfigDict({'name': c.model.name})
  set_protocol(c)
  return c


def set_protocol(c):
  """The client/server protocol that goes with c.method.name (see the module docstring)."""
  if c.method.name == 'fedavg':
    c.client.update({'lr': FEDAVG['client_lr'], 'batch_size': 8,
                     'local_steps': FEDAVG['local_steps'], 'local_epochs': 0})
    c.server.update({'optimizer': 'sgd', 'lr': FEDAVG['server_lr']})
  else:
    c.client.update({'lr': 1.0, 'batch_size': 8, 'local_steps': 1, 'local_epochs': 0})
    lr = INTRINSIC_SERVER_LR if c.method.name.startswith('intrinsic_') else SERVER_LR
    c.server.update({'optimizer': 'adam', 'lr': lr})
  # One local step and no client state: one gradient over the cohort, compressed once.
  c.simulation.cohort_shortcut = c.method.name in SHORTCUT_METHODS
  c.simulation.client_parallelism = 'vmap'
