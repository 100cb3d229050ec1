"""benchmarks.memory on a Llama-shaped model (the smollm2 preset's code path, tiny) and the check of
a saved formula against compiled rounds (`formula_check`)."""
import json

import pytest

from benchmarks import memory as bench
from fedjax_intrinsic.models import llama


def test_tiny_llama_rounds_and_formula_check(tmp_path, monkeypatch):
  s = bench.MODELS['tiny_llama']
  assert bench.MODELS['smollm2_135m'].family == 'llama'
  ref = {'preset': 'x', 'models': [{'name': 'm'}],
         'formula': [{'method': 'intrinsic_static', 'a0': 1000.0, 'alpha': 2.0, 'beta': 1.0}]}
  (tmp_path / 'ref.json').write_text(json.dumps(ref))
  monkeypatch.setattr(bench.common, 'RESULTS_DIR', str(tmp_path))
  # The smollm2 preset's plan (chunked rounds only, chunks 1 and 4) on the tiny Llama: vmap and the
  # cohort check are the GPT-2 path's, in test_memory_bench.py.
  cfg = bench.make_config('test', models=('tiny_llama',), chunks=(1, 4), vmap_models=(),
                          cohort_sizes=(), formula_from='ref.json')
  assert cfg.chunks == bench.PRESETS['smollm2'].chunks and not bench.PRESETS['smollm2'].vmap_models
  res = bench.run(cfg, log=lambda *a: None)
  (m,) = res['models']
  assert m['D'] == llama.num_params(s.vocab, s.n_layer, s.n_embd, s.ffn, s.n_head, s.kv_heads)
  rows = res['formula_check']['rows']
  assert [r['clients_per_chunk'] for r in rows] == list(cfg.chunks)
  for r in rows:
    want = 1000.0 + 2.0 * 4 * m['D'] + r['clients_per_chunk'] * (m['act'] + 4 * m['D'])
    assert r['predicted'] == pytest.approx(want)
    assert r['rel_err'] == pytest.approx((want - r['peak']) / r['peak'])
  assert 'The formula fitted on `ref.json`' in bench.render(res)
