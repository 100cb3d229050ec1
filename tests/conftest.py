"""Shared fixtures: small configs of the offline digits task."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def digits_config(method='uncompressed', model='logreg', rounds=3, clients_per_round=6, **method_fields):
  """A tiny digits experiment config (the project's default task), for fast tests."""
  from fedjax_intrinsic import algorithms, config as config_lib
  c = config_lib.base_config()
  c.data.name = 'digits'
  c.data.num_clients = 100
  c.data.partition = 'shards'
  c.model.name = model
  c.rounds = rounds
  c.clients_per_round = clients_per_round
  c.eval_every = rounds
  c.method = algorithms.default_config(method)
  c.method.update(method_fields)
  c.client.update({'lr': 1.0, 'batch_size': 0, 'local_steps': 1, 'local_epochs': 0})
  c.server.lr = 0.5
  return c


@pytest.fixture
def make_digits_config():
  return digits_config
