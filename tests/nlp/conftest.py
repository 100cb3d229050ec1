"""Fixtures: the tiny files of helpers.py, written into each test's tmp_path."""
import pytest

from tests.nlp import helpers


@pytest.fixture
def gpt2_files(tmp_path):
  return helpers.write_gpt2_files(tmp_path)


@pytest.fixture
def bert_vocab(tmp_path):
  return helpers.write_bert_vocab(tmp_path)


@pytest.fixture
def personachat_json(tmp_path):
  return helpers.write_personachat(tmp_path)
