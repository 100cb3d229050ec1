"""Tests of the shared benchmark helpers (timing, memory stats, JSON, README sections)."""
import json
import math

import jax
import jax.numpy as jnp
import pytest

from benchmarks import common


def test_time_fn_counts_calls_and_respects_repeats():
  calls = []

  def fn(x):
    calls.append(1)
    return x + 1

  x = jnp.zeros(4)
  t = common.time_fn(fn, x, warmup=2, min_repeats=3, max_repeats=5, budget_s=0.0)
  assert t.n == 3 and len(t.times) == 3
  assert len(calls) == 1 + 2 + 3  # first call, warm-up, timed
  assert t.min_s == min(t.times) and t.min_s <= t.median_s <= max(t.times)
  calls.clear()
  t = common.time_fn(fn, x, warmup=0, min_repeats=1, max_repeats=7, budget_s=1e9)
  assert t.n == 7 and len(calls) == 8
  assert set(t.as_dict()) == {'median_s', 'min_s', 'n', 'first_s'}


def test_time_fn_carry_feeds_output_back_to_a_donating_function():
  f = jax.jit(lambda v: v * 2.0, donate_argnums=0)
  seen = []

  def fn(v):
    out = f(v)
    seen.append(out)
    return out

  t = common.time_fn(fn, jnp.ones(8), warmup=1, min_repeats=3, max_repeats=3, budget_s=0,
                     carry=True)
  assert t.n == 3
  # Five calls in a chain: the last output is 2^5 (a donated input cannot be reused).
  assert float(seen[-1][0]) == 32.0


@pytest.mark.parametrize('kwargs, arg', [
    (dict(warmup=-1), 'warmup'),
    (dict(min_repeats=0), 'min_repeats'),
    (dict(min_repeats=3, max_repeats=2), 'min_repeats'),
    (dict(budget_s=-1.0), 'budget_s'),
])
def test_time_fn_rejects_bad_settings(kwargs, arg):
  with pytest.raises(ValueError, match=arg):
    common.time_fn(lambda x: x, jnp.zeros(2), **kwargs)


def test_time_fn_carry_needs_one_argument():
  with pytest.raises(ValueError, match='carry'):
    common.time_fn(lambda x, y: x, jnp.zeros(2), jnp.zeros(2), carry=True)


def test_time_interleaved_calls_in_rounds_and_records_cpu_time():
  order = []

  def make(name):
    def fn(x):
      order.append(name)
      return x * 2
    return fn

  got = common.time_interleaved({'a': make('a'), 'b': make('b')}, jnp.ones(3), warmup=1,
                                min_repeats=2, max_repeats=4, budget_s=0.0)
  assert order == ['a', 'b'] * 4  # first calls, one warm-up round, two timed rounds
  for name in ('a', 'b'):
    wall, cpu = got[name]
    assert wall.n == cpu.n == 2 and wall.min_s <= wall.median_s
    assert cpu.median_s >= 0 and len(cpu.times) == 2
  got = common.time_interleaved({'a': make('a')}, jnp.ones(3), warmup=0, min_repeats=1,
                                max_repeats=5, budget_s=1e9)
  assert got['a'].wall.n == 5


@pytest.mark.parametrize('kwargs, arg', [
    (dict(fns={}), 'fns'),
    (dict(warmup=-1), 'warmup'),
    (dict(min_repeats=2, max_repeats=1), 'min_repeats'),
    (dict(budget_s=float('nan')), 'budget_s'),
])
def test_time_interleaved_rejects_bad_settings(kwargs, arg):
  fns = kwargs.pop('fns', {'f': lambda: jnp.zeros(1)})
  with pytest.raises(ValueError, match=arg):
    common.time_interleaved(fns, **kwargs)


def test_pooled_takes_the_median_of_all_calls():
  a = common.Timing(2.0, 1.0, 3, 9.0, (1.0, 2.0, 3.0))
  b = common.Timing(5.0, 4.0, 2, 8.0, (4.0, 6.0))
  p = common.pooled(a, b)
  assert (p.median_s, p.min_s, p.n, p.first_s) == (3.0, 1.0, 5, 9.0)
  with pytest.raises(ValueError, match='timings'):
    common.pooled()


def test_compile_fn_and_memory_stats_match_the_shapes():
  n = 1000
  compiled, secs = common.compile_fn(lambda v: v * 2.0,
                                     jax.ShapeDtypeStruct((n,), jnp.float32))
  assert secs > 0
  mem = common.memory_stats(compiled)
  assert set(mem) == {'argument', 'output', 'alias', 'temp', 'generated_code', 'peak'}
  assert mem['argument'] == 4 * n and mem['output'] == 4 * n
  assert float(compiled(jnp.ones(n))[0]) == 2.0


def test_machine_info_fields():
  info = common.machine_info()
  for k in ('cpu_model', 'cpu_detail', 'cpu_cores', 'backend', 'jax', 'jaxlib', 'date_utc',
            'load_average', 'device_kind'):
    assert k in info
  assert info['backend'] == jax.default_backend() and info['jax'] == jax.__version__
  line = common.machine_line(info)
  assert info['cpu_model'] in line and f'jax {jax.__version__}' in line
  if info['cpu_detail']:
    assert f'({info["cpu_detail"]})' in line


def test_write_json_is_standard_json(tmp_path):
  path = tmp_path / 'sub' / 'r.json'
  common.write_json(str(path), {'a': float('nan'), 'b': [1.5, float('inf')], 'c': (1, 2)})
  text = path.read_text()
  assert json.loads(text) == {'a': None, 'b': [1.5, None], 'c': [1, 2]}
  assert 'NaN' not in text and 'Infinity' not in text


def test_replace_section_appends_replaces_and_keeps_the_rest():
  text = '# Benchmarks\n\nintro\n'
  once = common.replace_section(text, 'alpha', 'first body')
  assert once == '# Benchmarks\n\nintro\n\n<!-- alpha:begin -->\nfirst body\n<!-- alpha:end -->\n'
  both = common.replace_section(once, 'beta', 'B')
  again = common.replace_section(both, 'alpha', 'second\nbody\n')
  assert 'first body' not in again and '<!-- alpha:begin -->\nsecond\nbody\n<!-- alpha:end -->' \
      in again
  assert again.index('alpha:begin') < again.index('beta:begin')  # Order is kept.
  assert '<!-- beta:begin -->\nB\n<!-- beta:end -->' in again and again.startswith(text)
  assert common.replace_section('', 'x', 'y') == '<!-- x:begin -->\ny\n<!-- x:end -->\n'


@pytest.mark.parametrize('text', [
    '<!-- s:begin -->\n',                                      # no end
    '<!-- s:end -->\n<!-- s:begin -->\n',                      # wrong order
    '<!-- s:begin -->a<!-- s:end --><!-- s:begin -->b<!-- s:end -->',  # twice
])
def test_replace_section_rejects_broken_markers(text):
  with pytest.raises(ValueError, match='section'):
    common.replace_section(text, 's', 'body')


@pytest.mark.parametrize('name', ['', 'Has Space', 'UPPER', '-x', None])
def test_section_names_are_checked(name):
  with pytest.raises(ValueError, match='name'):
    common.section_markers(name)


def test_update_readme_section_creates_and_rewrites(tmp_path):
  path = str(tmp_path / 'README.md')
  common.update_readme_section('s', 'one', path)
  common.update_readme_section('t', 'two', path)
  common.update_readme_section('s', 'three', path)
  text = open(path).read()
  assert text.startswith('# Benchmarks\n') and 'one' not in text
  assert text.index('three') < text.index('two')


def test_markdown_table_pads_columns_and_checks_rows():
  table = common.markdown_table(['name', 'value'], [['a', 1], ['bbb', 22.5]])
  lines = table.split('\n')
  assert lines[0] == '| name | value |'
  assert lines[1] == '|------|------:|'
  assert lines[3] == '| bbb  |  22.5 |'
  assert len({len(l) for l in lines}) == 1
  with pytest.raises(ValueError, match='rows'):
    common.markdown_table(['a', 'b'], [[1]])
  with pytest.raises(ValueError, match='align'):
    common.markdown_table(['a', 'b'], [[1, 2]], align='lx')


def test_formatters():
  assert common.fmt_seconds(2.5e-4) == '250 us'
  assert common.fmt_seconds(0.0123) == '12.3 ms'
  assert common.fmt_seconds(2.0) == '2 s'
  assert common.fmt_seconds(None) == '-'
  assert common.fmt_ratio(0.5) == '0.5x' and common.fmt_ratio(12.34) == '12.3x'
  assert common.fmt_ratio(1530.2) == '1530x' and common.fmt_ratio(None) == '-'
  assert common.fmt_bytes(512) == '512 B' and common.fmt_bytes(3 * 2**20) == '3 MiB'
  assert common.fmt_pow2(2**20) == '2^20' and common.fmt_pow2(10**7) == '1e7'
  assert common.fmt_pow2(1000) == '1e3' and common.fmt_pow2(1234) == '1234'
  assert math.isclose(common.Timing(1.0, 1.0, 1, 1.0, (1.0,)).median_s, 1.0)
