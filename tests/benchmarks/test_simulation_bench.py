"""The simulation benchmark's core on a tiny setting: every strategy gives the loop's round.

No speed is asserted anywhere: only that the strategies agree, that the check can fail, and that
the JSON and the README section come out whole.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common
from benchmarks import simulation as bench
from fedjax_intrinsic import models, simulation
from fedjax_intrinsic.models import cnn


@pytest.fixture(scope='module')
def result():
  """One run of the 'test' preset: mlp, 3 clients x 2 examples (chunk 2 pads the cohort to 4)."""
  return bench.run(bench.make_config('test'), log=lambda *_: None)


def test_every_strategy_gives_the_loops_round(result):
  assert [(r['model'], r['method']) for r in result['strategies']] == [
      ('mlp', 'uncompressed'), ('mlp', 'fedavg')]
  for rec in result['strategies']:
    labels = set(rec['results'])
    assert {'loop', 'vmap', 'chunked_vmap:2', 'map', 'floor'} <= labels
    assert ('shortcut' in labels) == (rec['method'] == 'uncompressed')
    for label, r in rec['results'].items():
      if label.startswith('floor'):
        continue
      assert r['rel_err'] <= 1e-5, (rec['method'], label, r['rel_err'])
      assert r['loss_err'] <= 1e-5, (rec['method'], label, r['loss_err'])
      assert r['median_s'] > 0 and r['cpu_median_s'] >= 0 and r['n'] == 1
    assert rec['auto'] in labels
  assert bench.bad_rounds(result) == []


def test_round_errors_catch_a_different_round():
  """The check is not vacuous: a round with a perturbed update is reported."""
  inputs = bench.make_inputs(bench.Case('logreg', 'uncompressed', 2, 2))
  out = simulation.build_round(inputs.alg, 'vmap')(*inputs.args)
  state = out.server_state
  wrong = out._replace(server_state=state._replace(
      theta=state.theta * 1.001))
  errors = bench.round_errors(inputs, {'loop': out, 'vmap': out, 'wrong': wrong})
  assert errors['vmap']['rel_err'] == 0.0
  assert errors['wrong']['rel_err'] > 1e-3
  res = {'strategies': [{'model': 'logreg', 'method': 'uncompressed',
                         'results': {k: dict(v) for k, v in errors.items()}}]}
  assert bench.bad_rounds(res) == ['logreg/uncompressed/wrong (rel_err '
                                   f'{errors["wrong"]["rel_err"]:.2e})']


def test_floor_is_the_cohort_gradient():
  """floor_fn: the gradient over all C*B examples = the weighted mean of per-client gradients."""
  inputs = bench.make_inputs(bench.Case('logreg', 'uncompressed', 3, 4, 'random'))
  fn, (params, merged) = bench.floor_fn(inputs)
  assert merged['x'].shape == (12, 8, 8, 1)
  shortcut = simulation.build_round(inputs.alg, 'vmap', cohort_shortcut=True)(*inputs.args)
  # uncompressed: server SGD on the weighted mean gradient; random inputs: equal client weights.
  lr = 0.1  # base_config().server.lr, what make_inputs uses
  expected = jax.tree.map(lambda p, g: p - lr * g, params, fn(params, merged))
  got = inputs.alg.model_params(shortcut.server_state)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sweep_rows_and_render(result):
  rows = result['sweep']
  assert {r['strategy'] for r in rows} == {'chunked_vmap:2', 'map', 'vmap', 'shortcut', 'floor'}
  for r in rows:
    assert r['clients'] == 3 and r['rounds_per_s'] > 0
    assert r['memory'] is None or r['memory']['argument'] > 0
  text = bench.render_section([result])
  assert 'RANDOM inputs' in text and '**' in text and 'auto' in text
  readme = common.replace_section('# Benchmarks\n', bench.README_SECTION, text)
  assert readme.count('<!-- simulation:begin -->') == 1


def test_config_and_inputs_errors():
  with pytest.raises(ValueError, match='preset'):
    bench.make_config('huge')
  with pytest.raises(ValueError, match='sections'):
    bench.make_config('test', sections=('speed',))
  with pytest.raises(ValueError, match='clients=101'):
    bench.make_inputs(bench.Case('mlp', 'uncompressed', 101))
  with pytest.raises(ValueError, match='inputs'):
    bench.make_inputs(bench.Case('mlp', 'uncompressed', 2, 2, 'cifar'))
  with pytest.raises(ValueError, match="models='vit' is invalid.*allowed: cnn, mlp, resnet9"):
    bench.make_config('gpu', models=('vit',))


def test_models_override_keeps_only_those_cases():
  cfg = bench.make_config('gpu', models=('resnet9',), chunks=(10,))
  assert cfg.cases and {c.model for c in cfg.cases} == {'resnet9'}
  assert cfg.sweep_models == () and cfg.chunks == (10,)
  assert bench.make_config('gpu').cases == bench.PRESETS['gpu'].cases


def test_targets_add_the_accelerator_target():
  def rec(model, loop, vmap):
    r = {k: {'median_s': v} for k, v in (('loop', loop), ('vmap', vmap), ('floor', vmap))}
    return {'model': model, 'method': 'fedavg', 'auto': 'vmap', 'results': r}
  recs = [rec('mlp', 0.1, 0.001), rec('resnet9', 0.1, 0.03)]
  cpu, gpu = bench.targets(recs, 'cpu'), bench.targets(recs, 'gpu')
  assert gpu[:-1] == cpu
  assert gpu[-1] == '`vmap` >= 20x `loop`: missed by resnet9/fedavg'
  assert bench.targets(recs[:1], 'gpu')[-1] == '`vmap` >= 20x `loop`: met'


def test_default_strategy():
  assert simulation.default_strategy('gpu', 'small_conv') == 'vmap'
  assert simulation.default_strategy('tpu') == 'vmap'
  assert models.FAMILIES == tuple(simulation.CPU_DEFAULTS)
  for name in models.MODELS:     # every model declares a family the engine knows
    assert models.family(name) in models.FAMILIES
    assert simulation.default_strategy('cpu', models.family(name)) in simulation.STRATEGIES
  assert simulation.resolve_strategy('map', 'small_conv') == 'map'
  assert simulation.resolve_strategy('auto', 'dense', backend='gpu') == 'vmap'
  assert simulation.default_strategy('cpu', models.family('mlp')) == 'chunked_vmap'  # fastest
  assert simulation.default_strategy('cpu', models.family('resnet9')) == 'map'
  assert simulation.default_strategy('cpu', None) == 'map'     # undeclared: the backend's
  with pytest.raises(ValueError, match='client_parallelism'):
    simulation.resolve_strategy('threads')


def test_time_interleaved_counts_calls():
  calls = {'a': 0, 'b': 0}

  def make(name):
    def fn(x):
      calls[name] += 1
      return x + 1
    return fn

  out = common.time_interleaved({'a': make('a'), 'b': make('b')}, jnp.zeros(3), warmup=1,
                                min_repeats=2, max_repeats=2, budget_s=0.0)
  assert calls == {'a': 4, 'b': 4}          # first + warmup + 2 timed
  assert out['a'].wall.n == 2 and out['b'].cpu.n == 2
  with pytest.raises(ValueError, match='fns'):
    common.time_interleaved({})


@pytest.mark.parametrize('shape,groups', [((3, 4, 4, 16), 4), ((2, 5, 6), 3)])
def test_group_norm_equals_flax(shape, groups):
  """cnn.GroupNorm (the models' faster-on-CPU GroupNorm) = flax's nn.GroupNorm, same params."""
  x = jax.random.normal(jax.random.PRNGKey(1), shape) * 3 + 1
  ref = nn.GroupNorm(num_groups=groups)
  params = ref.init(jax.random.PRNGKey(0), x)
  params = jax.tree.map(lambda v: v + jax.random.normal(jax.random.PRNGKey(2), v.shape), params)
  mine = cnn.GroupNorm(num_groups=groups)
  assert jax.tree.structure(mine.init(jax.random.PRNGKey(0), x)) == jax.tree.structure(params)
  np.testing.assert_allclose(mine.apply(params, x), ref.apply(params, x), atol=1e-5)
