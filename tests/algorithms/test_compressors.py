"""The compressor layer (fedjax_intrinsic/compressors.py) and the config options it gives every
method (`method.quantize`, `method.error_feedback`): numpy oracles, exact identities, bytes equal to
the real payload's arrays, and a quantised method that still learns (with a control that does not).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_intrinsic import compressors, experiment
from fedjax_intrinsic.config import ConfigError
from fedjax_intrinsic.preflight import validate
from tests.algorithms.helpers import run
from tests.conftest import digits_config

D = 650   # digits logistic regression


def test_int8_round_trip_error_bound_and_unbiased_against_numpy():
  x = np.random.default_rng(0).normal(0, 1, 300).astype(np.float32)
  x[7] = 0.0
  q = jax.jit(compressors.int8_encode)(jnp.asarray(x), jax.random.PRNGKey(0))
  assert q.q.dtype == np.int8 and q.scale.dtype == np.float32 and q.scale.shape == ()
  scale = np.abs(x).max() / 127.0                                     # the numpy oracle
  np.testing.assert_allclose(float(q.scale), scale, rtol=1e-6)
  qi = np.asarray(q.q, np.int64)
  low = np.floor(x / scale)
  assert np.all((qi == low) | (qi == low + 1)) and qi[7] == 0          # rounded down or up, one step
  decoded = np.asarray(jax.jit(compressors.int8().decode)(q))
  assert np.all(np.abs(decoded - x) <= scale * (1 + 1e-5))            # |error| < one step
  keys = jax.random.split(jax.random.PRNGKey(1), 2000)
  mean = np.asarray(jax.jit(jax.vmap(lambda k: compressors.int8().decode(
      compressors.int8_encode(jnp.asarray(x), k))))(keys).mean(0))
  assert np.all(np.abs(mean - x) < 5 * scale / np.sqrt(len(keys)) + 1e-6)   # unbiased


def test_packed_sign_bits_equal_numpy_packbits():
  x = np.random.default_rng(1).normal(0, 1, 29).astype(np.float32)
  c = compressors.sign(29, 'mean', scaled=True)
  payload, _ = c.encode(jnp.asarray(x), (), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(np.asarray(payload['signs']), np.packbits(x > 0))
  assert payload['signs'].dtype == np.uint8 and payload['signs'].shape == (4,)
  np.testing.assert_allclose(float(payload['scale']), np.abs(x).mean(), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(c.decode(payload)),
                                np.float32(np.abs(x).mean()) * np.where(x > 0, 1.0, -1.0))


def test_chain_top_k_int8_payload_and_linear_aggregate():
  """top-k then int8: int8 values, int32 indices, one float32 scale; the aggregate is the weighted
  sum of the clients' decoded payloads (a dense oracle), and splits over chunks of clients."""
  k, n = 20, 5
  c = compressors.chain(compressors.top_k(D, k), compressors.int8())
  xs = np.random.default_rng(2).normal(0, 1, (n, D)).astype(np.float32)
  keys = jax.random.split(jax.random.PRNGKey(3), n)
  w = jnp.asarray(np.random.default_rng(4).dirichlet(np.ones(n)), jnp.float32)

  @jax.jit
  def encode_decode_aggregate(xs, keys, w):
    """The clients' payloads, each decoded on its own, the aggregate of all and of two parts:
    one program (each piece is called as the engine calls it)."""
    payloads, _ = jax.vmap(lambda x, key: c.encode(x, c.init(), key))(xs, keys)
    decoded = [c.decode(jax.tree.map(lambda a: a[i], payloads)) for i in range(n)]
    part = lambda s: c.aggregate(jax.tree.map(lambda a: a[s], payloads), w[s])
    return payloads, decoded, c.aggregate(payloads, w), (part(slice(0, 2)), part(slice(2, n)))

  payloads, decoded, got, parts = encode_decode_aggregate(jnp.asarray(xs), keys, w)
  one = jax.tree.map(lambda a: a[0], payloads)
  assert {str(a.dtype) for a in jax.tree.leaves(one)} == {'int8', 'int32', 'float32'}
  assert sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(one)) == k + 4 * k + 4
  decoded = np.stack([np.asarray(x) for x in decoded])
  want = np.einsum('c,cd->d', np.asarray(w), decoded)
  got = np.asarray(got)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(parts[0]) + np.asarray(parts[1]), got,
                             rtol=1e-5, atol=1e-6)
  # Each decoded payload is the int8-rounded top-k of x: k nonzeros, within one step of x there.
  for i in range(n):
    idx = np.argsort(-np.abs(xs[i]))[:k]
    assert set(np.flatnonzero(decoded[i])) <= set(idx.tolist())
    step = np.abs(xs[i][idx]).max() / 127
    assert np.all(np.abs(decoded[i][idx] - xs[i][idx]) <= step * (1 + 1e-5))


def test_second_upload_is_exact_or_quantised_and_sums_what_the_server_reads():
  """upload(None) sends x itself; upload(int8) sends int8 + a scale, the server reads q·scale,
  and aggregate is Σ_c w_c of what it reads (numpy oracle)."""
  rng = np.random.default_rng(3)
  xs = rng.normal(0, 1, (3, 40)).astype(np.float32)
  w = jnp.asarray([0.5, 0.25, 0.25], jnp.float32)
  key = jax.random.PRNGKey(5)
  exact = compressors.upload()
  sent, read = compressors.transmit(exact, jnp.asarray(xs[0]), key)
  assert np.array_equal(np.asarray(sent), xs[0])
  assert np.array_equal(np.asarray(read), xs[0])
  np.testing.assert_allclose(np.asarray(exact.aggregate(jnp.asarray(xs), w)),
                             np.asarray(w) @ xs, rtol=1e-6)
  q = compressors.upload(compressors.int8())
  sent = [compressors.transmit(q, jnp.asarray(x), jax.random.fold_in(key, i)) for i, x in
          enumerate(xs)]
  for (payload, read), x in zip(sent, xs):
    assert payload.q.dtype == np.int8 and payload.scale.shape == ()
    oracle = np.asarray(payload.q, np.float32) * float(payload.scale)
    np.testing.assert_allclose(np.asarray(read), oracle, rtol=1e-6)
    assert np.all(np.abs(oracle - x) <= float(payload.scale) * (1 + 1e-5))
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *[p for p, _ in sent])
  np.testing.assert_allclose(np.asarray(q.aggregate(stacked, w)),
                             np.asarray(w) @ np.stack([np.asarray(r) for _, r in sent]),
                             rtol=1e-5, atol=1e-6)


def test_error_feedback_keeps_exactly_what_was_not_sent():
  """e' + decode(payload) == e + x for a quantiser (exact up to float rounding)."""
  x = jnp.asarray(np.random.default_rng(5).normal(0, 1, D), jnp.float32)
  e0 = jnp.asarray(np.random.default_rng(6).normal(0, 0.1, D), jnp.float32)
  c = compressors.error_feedback(compressors.int8(), lambda: jnp.zeros((D,), jnp.float32))
  payload, state = c.encode(x, compressors.ErrorFeedback((), e0), jax.random.PRNGKey(0))
  np.testing.assert_allclose(np.asarray(state.error) + np.asarray(c.decode(payload)),
                             np.asarray(x + e0), rtol=0, atol=1e-6)
  assert np.abs(np.asarray(state.error)).max() <= float(payload.scale) * (1 + 1e-5)


@pytest.mark.parametrize('method,fields,per_client', [
    # local top-k: int8 values, int32 indices and one float32 scale.
    ('local_topk', {'k': 200, 'quantize': 'int8'}, 200 + 4 * 200 + 4),
    ('local_topk', {'k': 200, 'quantize': 'bf16'}, 2 * 200 + 4 * 200),
    ('random_k', {'k': 100, 'quantize': 'int8', 'index_encoding': 'seed'}, 100 + 4 + 8),
    # logistic regression: two leaves (kernel, bias), one scale each.
    ('uncompressed', {'quantize': 'int8'}, D + 2 * 4),
    ('fedavg', {'quantize': 'bf16'}, 2 * D),
    ('true_topk', {'k': 20, 'quantize': 'int8', 'client_error_feedback': True}, D + 4),
    ('fetchsgd', {'rows': 3, 'cols': 100, 'k': 20, 'quantize': 'int8'}, 300 + 4),
    ('intrinsic_static', {'d': 100, 'quantize': 'int8'}, 100 + 4),
])
def test_quantised_upload_bytes_are_the_payload_arrays(method, fields, per_client):
  c = digits_config(method, rounds=2, clients_per_round=4, **fields)
  exp, state, _, lines = run(c)
  assert exp.upload_per_client == per_client
  assert lines[0]['bytes_up'] == 4 * per_client
  batches, _ = exp.round_inputs(1, np.arange(4, dtype=np.int32))
  alg = exp.algorithm   # broadcast and client_update are jittable (base.py): one program
  payload = jax.jit(lambda s, c, b, k: alg.client_update(alg.broadcast(s), c, b, k)[0])(
      state, alg.init_client(exp.params0), jax.tree.map(lambda a: a[0], batches),
      jax.random.PRNGKey(0))
  leaves = jax.tree.leaves(payload)
  assert sum(a.size * a.dtype.itemsize for a in leaves) == per_client
  if fields['quantize'] == 'int8':
    assert any(a.dtype == np.int8 for a in leaves)


@pytest.mark.parametrize('method,fields,per_client', [
    # logreg: kernel [64, 10] (P: [64, 2], Q: [10, 2]) and bias [10] (whole), int8 + one scale each.
    ('powersgd', {'rank': 2, 'quantize': 'int8'}, (128 + 4) + (10 + 4) + (20 + 4)),
    ('powersgd', {'rank': 2, 'quantize': 'bf16', 'error_feedback': False}, 2 * (128 + 10 + 20)),
    # the sketch, then the p2·k = 20 candidates' values.
    ('sketched_sgd', {'rows': 3, 'cols': 100, 'k': 20, 'p2': 1, 'quantize': 'int8'},
     (300 + 4) + (20 + 4)),
])
def test_quantised_two_exchange_upload_bytes(method, fields, per_client):
  c = digits_config(method, rounds=2, clients_per_round=4, **fields)
  exp, _, _, lines = run(c)
  assert exp.upload_per_client == per_client
  assert lines[-1]['bytes_up'] == 4 * per_client


def test_quantize_none_is_the_method_as_before():
  """quantize='none' (the default) adds no piece: the payload is the method's own."""
  a = experiment.Experiment(digits_config('local_topk', k=50))
  b = experiment.Experiment(digits_config('local_topk', k=50, quantize='none'))
  a.init_state(), b.init_state()
  assert a.upload_per_client == b.upload_per_client == 8 * 50


def test_quantised_local_topk_learns_with_a_control():
  c = digits_config('local_topk', k=20, error_feedback=True, quantize='int8', rounds=20,
                    clients_per_round=10)
  c.server.lr = 0.5
  exp, state, _, lines = run(c)
  # The control, server lr 0.0: server SGD at rate 0 keeps θ0 round after round (exactly:
  # test_topk.py's test_zero_server_lr_control_learns_nothing), so θ0 itself.
  accuracy = {0.5: exp.evaluate(exp.algorithm.model_params(state))['test_accuracy'],
              0.0: exp.evaluate(exp.params0)['test_accuracy']}
  # Measured (20 rounds, 10 clients, k = 20): int8 values 0.700 / 0.572 (seeds 0 / 1; upload
  # 104 bytes a client), float32 values 0.706 / 0.583 (160 bytes); at rate 0, 0.078 / 0.106.
  assert accuracy[0.5] > 0.5 and accuracy[0.0] < 0.3, accuracy
  assert lines[-1]['bytes_up'] == 10 * (20 + 4 * 20 + 4)


@pytest.mark.parametrize('method,fields,field', [
    ('local_topk', {'quantize': 'fp8'}, 'method.quantize'),
    ('uncompressed', {'error_feedback': True}, 'method.error_feedback'),
    ('fedavg', {'error_feedback': 'yes', 'quantize': 'int8'}, 'method.error_feedback'),
    ('intrinsic_static', {'quantize': 'int8', 'payload_dtype': 'bfloat16'}, 'method.quantize'),
])
def test_bad_options_refused_naming_the_field(method, fields, field):
  c = digits_config(method)
  with c.method.ignore_type():
    c.method.update(fields)
  with pytest.raises(ConfigError, match=field.replace('.', r'\.')):
    validate(c)


def test_quantiser_with_the_cohort_shortcut_is_refused():
  c = digits_config('uncompressed', quantize='int8')
  c.simulation.cohort_shortcut = True
  with pytest.raises(ConfigError, match='simulation.cohort_shortcut'):
    validate(c)


def test_qsgd_levels_and_unbiased_against_numpy():
  """QSGD with s levels: |q_i| = ⌊s|x_i|/‖x‖⌋ or one more (numpy oracle), sign kept, unbiased."""
  s = 3
  x = np.random.default_rng(7).normal(0, 1, 40).astype(np.float32)
  c = compressors.qsgd(s)
  payload, _ = jax.jit(c.encode)(jnp.asarray(x), (), jax.random.PRNGKey(0))
  q = np.asarray(payload.q, np.int64)
  low = np.floor(s * np.abs(x) / np.linalg.norm(x))
  assert payload.q.dtype == np.int8 and np.all((np.abs(q) == low) | (np.abs(q) == low + 1))
  assert np.all(np.sign(q) * np.sign(x) >= 0)
  np.testing.assert_allclose(float(payload.scale), np.linalg.norm(x) / s, rtol=1e-5)
  keys = jax.random.split(jax.random.PRNGKey(1), 4000)
  draws = np.asarray(jax.jit(jax.vmap(lambda k: c.decode(c.encode(jnp.asarray(x), (), k)[0])))(
      keys))
  stderr = draws.std(0) / np.sqrt(len(keys)) + 1e-3 * np.abs(x)   # + float32 rounding of q·scale
  assert np.all(np.abs(draws.mean(0) - x) < 5 * stderr)
