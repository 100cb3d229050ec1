"""Every class of bad input is refused up front: exit 2, one line naming the field, nothing
loaded or compiled; the workdir lock; resume after a corrupt checkpoint or a torn metrics line.

The table is run in-process through run.py's own parser and main (fast: one import of JAX);
a few cases go through the real command line in a subprocess. Compiles are counted with
jax.monitoring's backend-compile duration events; data loading is made to fail the test.
"""
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys

import jax
import pytest
from absl import flags

from fedjax_intrinsic import config as config_lib, data as data_lib, experiment, workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CNN = 'configs/digits_cnn.py'
D_CNN = 53098
COMPILES = [0]


def _count(name, secs=None, **kwargs):
  # A compile, or an executable read back from the session's compilation cache (tests/conftest.py)
  # in place of one.
  if name in ('/jax/core/compile/backend_compile_duration', '/jax/compilation_cache/cache_hits'):
    COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count)
jax.monitoring.register_event_listener(_count)


def _run_module():
  spec = importlib.util.spec_from_file_location('_run_py_under_test', os.path.join(ROOT, 'run.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


RUN = _run_module()


def run_cli(argv, capsys):
  """(exit code, stderr) of `python run.py *argv` run in-process (SystemExit caught)."""
  flags.FLAGS.unparse_flags()
  capsys.readouterr()
  try:
    args = RUN.cli.flags_parser('config')(['run.py', *argv])
    RUN.main(args)
    code = 0
  except SystemExit as e:
    code = e.code
  return code, capsys.readouterr().err


def _syntax_error_file(tmp):
  path = os.path.join(tmp, 'broken.py')
  open(path, 'w').write('def get_config(arg=None:\n  return None\n')
  return path


def _no_get_config_file(tmp):
  path = os.path.join(tmp, 'empty.py')
  open(path, 'w').write('X = 1\n')
  return path


# (case id, arguments, the dotted field the line must name). `{tmp}` is a scratch directory,
# `{bad}` / `{empty}` config files with a syntax error / without get_config.
CASES = [
    # The config argument.
    ('arg_method_unknown', [f'--config={CNN}:method=nope'], 'method.name'),
    ('arg_key_unknown', [f'--config={CNN}:foo=1'], "'foo'"),
    ('arg_no_value', [f'--config={CNN}:method'], "'method'"),
    ('arg_no_key', [f'--config={CNN}:=3'], "'=3'"),
    ('arg_text_for_int', [f'--config={CNN}:method=intrinsic_static,d=abc'], 'method.d'),
    ('arg_float_for_int_seed', [f'--config={CNN}:seed=1.5'], 'seed'),
    ('arg_float_for_int_d', [f'--config={CNN}:method=intrinsic_static,d=100.7'], 'method.d'),
    ('arg_rounds_zero', [f'--config={CNN}:rounds=0'], 'rounds'),
    ('arg_too_many_clients', [f'--config={CNN}:clients_per_round=101'], 'clients_per_round'),
    ('arg_model_unknown', [f'--config={CNN}:model=nope'], 'model.name'),
    ('arg_bool_bad', [f'--config={CNN}:method=intrinsic_static,d=64,projection=maybe'],
     'method.projection'),
    # The config file.
    ('file_missing', ['--config=configs/nope.py'], '--config'),
    ('file_syntax_error', ['--config={bad}'], '--config'),
    ('file_without_get_config', ['--config={empty}'], '--config'),
    ('file_empty_path', ['--config='], '--config'),
    # Unknown fields and type errors in --config.a.b=value.
    ('field_unknown', ['--config.nope=1'], 'nope'),
    ('field_unknown_nested', ['--config.server.nope=1'], 'server.nope'),
    ('group_unknown', ['--config.nope.x=1'], 'nope'),
    ('field_is_group', ['--config.server=1'], 'server'),
    ('method_field_unknown', ['--config.method.nope=1'], 'method.nope'),
    ('data_option_unknown', ['--config.data.nope=1'], 'data.nope'),
    ('model_option_bad', ['--config.model.features=abc'], 'model.features'),
    ('model_option_unknown', ['--config.model.nope=1'], 'model.nope'),
    ('type_float_for_int', ['--config.rounds=2.5'], 'rounds'),
    ('type_text_for_int', ['--config.seed=abc'], 'seed'),
    ('type_text_for_float', ['--config.server.lr=abc'], 'server.lr'),
    ('type_text_for_bool', ['--config.time_client_cost=maybe'], 'time_client_cost'),
    ('eval_splits_unknown', ['--config.eval_splits=train'], 'eval_splits'),
    ('type_float_for_int_nested', ['--config.client.batch_size=1.5'], 'client.batch_size'),
    ('method_fields_of_another', ['--config.method.name=intrinsic_static'], 'method.'),
    # Non-finite and out-of-range numbers.
    ('server_lr_inf', ['--config.server.lr=inf'], 'server.lr'),
    ('server_lr_nan', ['--config.server.lr=nan'], 'server.lr'),
    ('server_lr_negative', ['--config.server.lr=-1'], 'server.lr'),
    ('client_lr_inf', ['--config.client.lr=inf'], 'client.lr'),
    ('client_lr_negative', ['--config.client.lr=-0.5'], 'client.lr'),
    ('adam_b1', ['--config.server.optimizer=adam', '--config.server.b1=5'], 'server.b1'),
    ('adam_b2', ['--config.server.optimizer=adam', '--config.server.b2=1'], 'server.b2'),
    ('adam_eps', ['--config.server.optimizer=adam', '--config.server.eps=-1'], 'server.eps'),
    ('momentum_range', ['--config.server.momentum=1.5'], 'server.momentum'),
    ('weight_decay_inf', ['--config.server.weight_decay=inf'], 'server.weight_decay'),
    ('warmup_fraction', ['--config.server.warmup_fraction=1'], 'server.warmup_fraction'),
    ('seed_negative', ['--config.seed=-1'], 'seed'),
    ('seed_2_70', [f'--config.seed={2**70}'], 'seed'),
    ('seed_2_32', [f'--config.seed={2**32}'], 'seed'),
    ('rounds_10_12', [f'--config.rounds={10**12}'], 'rounds'),
    ('rounds_negative', ['--config.rounds=-3'], 'rounds'),
    ('eval_every_zero', ['--config.eval_every=0'], 'eval_every'),
    ('eval_batch_zero', ['--config.eval_batch_size=0'], 'eval_batch_size'),
    ('checkpoint_every_negative', ['--config.checkpoint_every=-1'], 'checkpoint_every'),
    ('local_steps_negative', ['--config.client.local_steps=-1'], 'client.local_steps'),
    # Choices.
    ('optimizer_unknown', ['--config.server.optimizer=nope'], 'server.optimizer'),
    ('schedule_unknown', ['--config.server.schedule=nope'], 'server.schedule'),
    ('weighting_unknown', ['--config.server.weighting=nope'], 'server.weighting'),
    ('parallelism_unknown', ['--config.simulation.client_parallelism=threads'],
     'simulation.client_parallelism'),
    ('data_unknown', ['--config.data.name=nope'], 'data.name'),
    # Sizes that need D (from jax.eval_shape of the model's init).
    ('d_above_D', [f'--config={CNN}:method=intrinsic_static,d={D_CNN + 1}'], 'method.d'),
    ('d_above_D_k_subspace', [f'--config={CNN}:method=intrinsic_k_subspace,d=60000'], 'method.d'),
    ('d_above_D_time_varying', [f'--config={CNN}:method=intrinsic_time_varying,d=60000'],
     'method.d'),
    ('k_above_D', [f'--config={CNN}:method=local_topk,k={D_CNN + 1}'], 'method.k'),
    ('k_equals_D_local_error', [f'--config={CNN}:method=local_topk,k={D_CNN},error_feedback=True'],
     'method.error_feedback'),
    # A renamed field: the line names the old field and its replacement (argument and override).
    ('error_type_renamed', [f'--config={CNN}:method=local_topk,error_type=local'],
     'method.error_type was renamed; allowed: method.error_feedback=True|False'),
    ('error_type_renamed_override', [f'--config={CNN}:method=true_topk',
                                     '--config.method.error_type=virtual'],
     'method.error_type was renamed; allowed: method.error_feedback=True|False'),
    ('k_above_D_true_topk', [f'--config={CNN}:method=true_topk,k=60000'], 'method.k'),
    ('k_above_D_fetchsgd', [f'--config={CNN}:method=fetchsgd,k=60000,cols=70000'], 'method.k'),
    ('rank_compresses_nothing', [f'--config={CNN}:method=powersgd,rank=1000'], 'method.rank'),
    ('eval_batch_too_big', [f'--config.eval_batch_size={10**12}'], 'eval_batch_size'),
    ('train_batches_too_big', [f'--config={CNN}:method=fedavg', '--config.client.local_epochs=0',
                               '--config.client.batch_size=100000000',
                               '--config.client.local_steps=1000'], 'client.batch_size'),
    ('local_steps_too_many', [f'--config={CNN}:method=fedavg', '--config.client.local_epochs=0',
                              '--config.client.batch_size=0',
                              f'--config.client.local_steps={10**12}'], 'client.local_steps'),
    # Data, from metadata.
    ('partition_unknown', ['--config.data.partition=nope'], 'data.partition'),
    ('dirichlet_alpha_zero', ['--config.data.partition=dirichlet', '--config.data.alpha=0'],
     'data.alpha'),
    ('num_clients_zero', ['--config.data.num_clients=0'], 'data.num_clients'),
    ('num_clients_above_examples', ['--config.data.num_clients=5000'], 'data.num_clients'),
    ('tfds_data_dir_missing', ['--config.data.name=mnist', '--config.data.data_dir={tmp}/none'],
     'data.data_dir'),
    # Data and model options against their declarations (docs/options.md), before any file is read.
    ('alpha_negative_any_partition', ['--config.data.alpha=-1'], 'data.alpha'),
    ('pysource_seq_len_zero', ['--config.data.name=pysource', '--config.model.name=transformer_lm',
                               '--config.data.seq_len=0'], 'data.seq_len'),
    ('model_option_out_of_range', [f'--config={CNN}', '--config.model.num_groups=0'],
     'model.num_groups'),
    ('model_option_wrong_kind', [f'--config={CNN}', '--config.model.norm=batch'], 'model.norm'),
    # Devices.
    ('devices_more_than_exist', [f'--config.simulation.num_devices={jax.device_count() + 3}'],
     'simulation.num_devices'),
    ('model_devices', ['--config.simulation.model_devices=2'], 'simulation.model_devices'),
    # The workdir.
    ('workdir_is_a_file', ['--workdir={tmp}/afile'], '--workdir'),
    ('workdir_under_a_file', ['--workdir={tmp}/afile/sub'], '--workdir'),
    # Flags.
    ('flag_unknown', ['--nope=1'], 'nope'),
    ('flag_bad_bool', ['--quiet=abc'], 'quiet'),
    ('positional_argument', ['stray'], 'stray'),
]


@pytest.fixture
def no_data_loading(monkeypatch):
  def boom(*args, **kwargs):
    raise AssertionError('data were loaded before the input was refused')
  monkeypatch.setattr(data_lib, 'get', boom)


def _fill(args, tmp):
  return [a.format(tmp=tmp, bad=_syntax_error_file(tmp), empty=_no_get_config_file(tmp))
          for a in args]


def test_the_table_covers_every_class():
  assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize('case,args,field', CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_up_front(case, args, field, tmp_path, capsys, no_data_loading):
  tmp = str(tmp_path)
  open(os.path.join(tmp, 'afile'), 'w').write('x')
  argv = _fill(args, tmp)
  if not any(a.startswith('--workdir') for a in argv):
    argv.append(f'--workdir={tmp}/work')
  before = COMPILES[0]
  code, err = run_cli(argv, capsys)
  lines = err.strip().splitlines()
  assert code == 2, err
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  assert field in lines[0], lines[0]
  assert COMPILES[0] == before, f'{COMPILES[0] - before} compiles before the refusal'
  assert not os.path.exists(os.path.join(tmp, 'work'))


def test_workdir_not_writable(tmp_path, capsys, no_data_loading):
  if os.geteuid() == 0:
    pytest.skip('root writes anywhere')
  ro = tmp_path / 'ro'
  ro.mkdir()
  ro.chmod(0o500)
  code, err = run_cli([f'--workdir={ro}'], capsys)
  assert code == 2 and len(err.strip().splitlines()) == 1 and '--workdir' in err


def test_a_genuine_bug_keeps_its_traceback(monkeypatch, tmp_path, make_digits_config):
  """A ValueError inside a method's build is a bug: it propagates (exit 1, traceback)."""
  from fedjax_intrinsic import algorithms

  def broken(*args, **kwargs):
    raise ValueError('method.k=3 is invalid (a bug pretending to be a config error)')
  monkeypatch.setattr(algorithms, 'get', broken)
  with pytest.raises(ValueError) as info:
    experiment.run(make_digits_config('local_topk', k=3), str(tmp_path))
  assert not isinstance(info.value, config_lib.ConfigError)


def _cli(*args, module=None, timeout=120):
  cmd = [sys.executable, '-m', module] if module else [sys.executable, os.path.join(ROOT, 'run.py')]
  return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize('args,field', [
    ([f'--config={CNN}:method=nope'], 'method.name'),
    (['--config.rounds=2.5'], 'rounds'),
    (['--nope=1'], 'nope'),
])
def test_command_line(args, field, tmp_path):
  out = _cli(*args, f'--workdir={tmp_path}/w')
  assert out.returncode == 2, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and field in lines[0], out.stderr
  assert out.stdout == ''


def test_sweep_with_a_bad_cell_is_refused_before_any_runs(tmp_path):
  sweep = tmp_path / 'bad_sweep.py'
  sweep.write_text(
      'import ml_collections\n'
      'def get_config():\n'
      '  c = ml_collections.ConfigDict()\n'
      "  c.name = 'bad'\n  c.experiment = 'configs/digits_cnn.py'\n  c.experiment_arg = 'model=logreg'\n"
      "  c.grid = ('method=uncompressed', 'method=intrinsic_static,d=100000')\n"
      "  c.seeds = (0,)\n  c.overrides = ('rounds=2',)\n  c.metric = 'test_accuracy'\n"
      "  c.reference = ''\n  return c\n")
  out = _cli(f'--config={sweep}', f'--workdir={tmp_path}/w', module='benchmarks.sweep')
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2 and len(lines) == 1, out.stderr
  assert 'method.d=100000' in lines[0] and 'intrinsic_static__d=100000__seed=0' in lines[0]
  assert not os.path.exists(tmp_path / 'w' / 'uncompressed__seed=0')


# ------------------------------------------------------------------------------ lock, resume


def test_a_second_run_on_a_workdir_in_use_is_refused(tmp_path, capsys, no_data_loading):
  work = str(tmp_path / 'w')
  with workdir_lib.Lock(work):
    code, err = run_cli([f'--config={CNN}:model=logreg,rounds=2', f'--workdir={work}'], capsys)
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1, err
  assert f'pid {os.getpid()}' in lines[0] and '--workdir' in lines[0]
  with workdir_lib.Lock(work):      # released: it can be taken again
    pass


def _untimed(lines):
  return [{k: v for k, v in line.items() if not k.startswith('time_')} for line in lines]


def _metrics(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _checkpointed(make_digits_config):
  c = make_digits_config('local_topk', rounds=4, k=50)
  c.checkpoint_every = 2
  return c


def _strict(path):
  """The file parsed with NaN / Infinity refused (strict JSON)."""
  def refuse(name):
    raise AssertionError(f'{path} holds {name}')
  with open(path) as f:
    text = f.read()
  if path.endswith('.jsonl'):
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]
  return json.loads(text, parse_constant=refuse)


def test_resume_survives_a_corrupt_latest_checkpoint(make_digits_config, tmp_path, capfd):
  c = _checkpointed(make_digits_config)
  ref_dir, work = str(tmp_path / 'ref'), str(tmp_path / 'w')
  experiment.run(c, ref_dir)
  experiment.run(c, work)
  reference = _untimed(_metrics(os.path.join(ref_dir, 'metrics.jsonl')))
  # Corrupt every file of the round-4 checkpoint (truncated to half), as a crash mid-write would.
  latest = os.path.join(work, 'checkpoints', '4')
  for dirpath, _, files in os.walk(latest):
    for name in files:
      path = os.path.join(dirpath, name)
      os.truncate(path, os.path.getsize(path) // 2)
  capfd.readouterr()
  summary = experiment.run(c, work)
  err = capfd.readouterr().err
  said = [l for l in err.splitlines() if 'unreadable' in l]
  assert len(said) == 1 and 'round 4' in said[0] and 'round 2' in said[0], err
  assert summary['resumed_from_round'] == 2
  assert _untimed(_metrics(os.path.join(work, 'metrics.jsonl'))) == reference
  _strict(os.path.join(work, 'metrics.jsonl'))
  _strict(os.path.join(work, 'summary.json'))


def test_torn_last_line_is_dropped_and_lines_are_appended(make_digits_config, tmp_path, capfd):
  c = _checkpointed(make_digits_config)
  ref_dir, work = str(tmp_path / 'ref'), str(tmp_path / 'w')
  experiment.run(c, ref_dir)
  reference = _untimed(_metrics(os.path.join(ref_dir, 'metrics.jsonl')))
  experiment.run(c, work)
  # An interruption during round 3's line: checkpoint 4 never written, line 3 cut in half.
  shutil.rmtree(os.path.join(work, 'checkpoints', '4'))
  path = os.path.join(work, 'metrics.jsonl')
  raw = open(path, 'rb').read().splitlines(keepends=True)
  kept = b''.join(raw[:2])
  with open(path, 'wb') as f:
    f.write(kept + raw[2][:len(raw[2]) // 2])
  inode = os.stat(path).st_ino
  capfd.readouterr()
  experiment.run(c, work)
  err = capfd.readouterr().err
  assert sum('torn line' in l for l in err.splitlines()) == 1, err
  assert os.stat(path).st_ino == inode             # the same file, appended to
  assert open(path, 'rb').read().startswith(kept)  # the kept lines byte for byte
  assert _untimed(_metrics(path)) == reference


def test_json_files_are_strict(make_digits_config, tmp_path):
  """Round 1's download ratio has no bytes under it yet for some methods, and a diverged run has
  NaN losses: they are written as null, never as NaN / Infinity."""
  c = make_digits_config('uncompressed', rounds=3)
  c.server.lr = 1e38
  summary = experiment.run(c, str(tmp_path))
  assert summary['status'] == 'diverged'
  lines = _strict(os.path.join(tmp_path, 'metrics.jsonl'))
  assert any(v is None for line in lines for v in line.values())
  final = _strict(os.path.join(tmp_path, 'summary.json'))
  assert final['status'] == 'diverged' and final['final']['train_loss'] is None
  _strict(os.path.join(tmp_path, 'config.json'))


def test_strict_and_write_json(tmp_path):
  import numpy as np
  obj = {'a': float('inf'), 'b': [float('nan'), 1.5, np.float32(2.0)], 'c': np.int64(3),
         'd': (1, 2), 'e': None}
  path = str(tmp_path / 'x.json')
  workdir_lib.write_json(path, obj)
  assert _strict(path) == {'a': None, 'b': [None, 1.5, 2.0], 'c': 3, 'd': [1, 2], 'e': None}
  assert os.listdir(tmp_path) == ['x.json']     # no temporary file left


@pytest.mark.parametrize('module,args,field', [
    ('benchmarks.report', ['--workdir={tmp}/nope'], '--workdir'),
    ('benchmarks.intrinsic_dim', ['--fraction=2', '--workdir={tmp}/w'], '--fraction'),
    ('benchmarks.main_job', ['--config.seeds=0,-1', '--workdir={tmp}/w'], 'seeds'),
    ('benchmarks.projections', ['--log2_D=x', '--out_json={tmp}/p.json'], 'log2_D'),
    ('benchmarks.projections', ['extra', '--out_json={tmp}/p.json'], 'unexpected arguments'),
    ('benchmarks.projections', ['--wht_log2_L=40', '--out_json={tmp}/p.json'], 'wht_log2_L'),
    ('benchmarks.simulation', ['--chunks=a', '--out_json={tmp}/s.json'], 'chunks'),
    ('benchmarks.memory', ['--preset=nope', '--out_json={tmp}/m.json'], 'preset'),
    ('benchmarks.fedjax_peer', ['--cohorts=a', '--out_json={tmp}/f.json'], 'cohorts'),
])
def test_benchmark_command_lines(module, args, field, tmp_path):
  out = _cli(*[a.format(tmp=tmp_path) for a in args], module=module)
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2 and len(lines) == 1 and field in lines[0], out.stderr


def test_sweep_exit_code_counts_failed_cells_not_diverged_ones(tmp_path):
  import ml_collections
  from benchmarks import sweep as sweep_lib
  s = ml_collections.ConfigDict({
      'name': 'codes', 'experiment': CNN, 'experiment_arg': 'model=logreg,rounds=2',
      'grid': ('method=uncompressed',), 'seeds': (0,), 'overrides': ('server.lr=1e38',),
      'metric': 'test_accuracy', 'reference': ''})
  states = sweep_lib.run_sweep(s, str(tmp_path), log=lambda line: None)
  assert [v['status'] for v in states.values()] == ['diverged']
  assert sweep_lib.exit_code(states) == 0
  assert sweep_lib.exit_code({**states, 'x': {'status': 'failed', 'error': 'E: boom'}}) == 1
