"""The repository stands on its own: it cites only files it has, and results stay a minor part.

Reads the tracked files (`git ls-files`); skipped where the tree is not a git checkout.
"""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = 'benchmarks/results/'
TEXT_SUFFIXES = ('.py', '.md', '.toml', '.txt', '.cc', '.sh', '.cfg', '.yml', '.yaml')


@pytest.fixture(scope='module')
def tracked():
  try:
    out = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True)
  except (OSError, subprocess.CalledProcessError):
    pytest.skip('not a git checkout')
  return [p for p in out.stdout.decode().split('\0') if p and os.path.isfile(os.path.join(ROOT, p))]


def _read(path: str) -> bytes:
  with open(os.path.join(ROOT, path), 'rb') as f:
    return f.read()


def test_results_are_at_most_15_percent_of_tracked_lines(tracked):
  # Lines as `wc -l` counts them, binary plots included (the stricter count).
  lines = {p: _read(p).count(b'\n') for p in tracked}
  results = sum(n for p, n in lines.items() if p.startswith(RESULTS))
  assert results <= 0.15 * sum(lines.values()), (results, sum(lines.values()))


def test_no_citation_of_files_outside_the_repository(tracked):
  outside = re.compile(r'\.\./shared|\b(PAPER|PEERS|DESIGN)\.md\b')
  offenders = [p for p in tracked if p.endswith(TEXT_SUFFIXES) and p != 'tests/test_repository.py'
               and outside.search(_read(p).decode('utf-8', 'replace'))]
  assert offenders == []


def test_every_cited_docs_file_exists(tracked):
  cited = re.compile(r'\bdocs/([A-Za-z0-9_]+\.md)\b')
  missing = {}
  for p in tracked:
    if p.endswith(TEXT_SUFFIXES):
      for name in cited.findall(_read(p).decode('utf-8', 'replace')):
        if not os.path.isfile(os.path.join(ROOT, 'docs', name)):
          missing.setdefault(name, p)
  assert missing == {}
