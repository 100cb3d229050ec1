"""Every random key of a run, derived in this one place (docs/paper.md §2).

All keys come from ``run_key = PRNGKey(config.seed)``:

- ``subspace_key(run_key, t) = fold_in(fold_in(run_key, 0), t)``: the subspace with index t
  (t = 0 static, t = k for K-subspace, t = e for time-varying). Per-leaf operators fold
  the leaf index into it (``projections.pytree``).
- ``round_key(run_key, e) = fold_in(fold_in(run_key, 1), e)`` and
  ``client_key(round_key, client_id) = fold_in(round_key, client_id)``.
- ``init_key(run_key) = fold_in(run_key, 2)``: θ0, the same for every method of a run.
- ``sample_key(run_key, e) = fold_in(fold_in(run_key, 3), e)``: the round's cohort.
- ``data_key(run_key) = fold_in(run_key, 4)``: partitions and splits.
- ``sketch_key(run_key) = fold_in(run_key, 5)``: count-sketch hashes.
- ``subspace_choice_key(run_key, e) = fold_in(fold_in(run_key, 6), e)``: the K-subspace method's
  seeded random choice of round e's subspace (a project extension; docs/paper.md §3 names the option).
- ``compressor_key(run_key) = fold_in(run_key, 7)``: compressor state every client shares (PowerSGD's Q).
- Inside one client's compressor (`fedjax_intrinsic.compressors`), from its client key:
  ``chain_key(key, i) = fold_in(fold_in(key, 1), i)`` for the i-th piece of a chain (i >= 1; the first
  piece gets the client key itself; i = 2 also for a second exchange's quantiser) and ``leaf_key(key, j) = fold_in(fold_in(key, 2), j)`` for the j-th
  floating leaf a quantiser rounds (j >= 1; the first gets the piece's key).

A reader with the paper who finds a different convention changes it here, once.
"""
import jax
import numpy as np

_SEED, _ROUND, _INIT, _SAMPLE, _DATA, _SKETCH, _SUBSPACE_CHOICE, _COMPRESSOR = range(8)


def run_key(seed: int) -> jax.Array:
  return jax.random.PRNGKey(seed)


def subspace_key(run_key: jax.Array, t) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(run_key, _SEED), t)


def round_key(run_key: jax.Array, e) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(run_key, _ROUND), e)


def client_key(round_key: jax.Array, client_id) -> jax.Array:
  return jax.random.fold_in(round_key, client_id)


def init_key(run_key: jax.Array) -> jax.Array:
  return jax.random.fold_in(run_key, _INIT)


def sample_key(run_key: jax.Array, e) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(run_key, _SAMPLE), e)


def data_key(run_key: jax.Array) -> jax.Array:
  return jax.random.fold_in(run_key, _DATA)


def sketch_key(run_key: jax.Array) -> jax.Array:
  return jax.random.fold_in(run_key, _SKETCH)


def subspace_choice_key(run_key: jax.Array, e) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(run_key, _SUBSPACE_CHOICE), e)


def compressor_key(run_key: jax.Array) -> jax.Array:
  return jax.random.fold_in(run_key, _COMPRESSOR)


def chain_key(key: jax.Array, i) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(key, 1), i)


def leaf_key(key: jax.Array, j) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(key, 2), j)


def per_round(key_fn, run_key: jax.Array, num_rounds: int) -> np.ndarray:
  """uint32[num_rounds + 1, 2]: key_fn(run_key, e) for e = 0 … num_rounds, derived in one jitted
  call (host-side rounds then index a table instead of dispatching fold_ins every round)."""
  derive = jax.jit(jax.vmap(lambda e: jax.random.key_data(key_fn(run_key, e))))
  return np.asarray(derive(np.arange(num_rounds + 1, dtype=np.uint32)))


def numpy_rng(key) -> np.random.Generator:
  """A numpy Generator seeded by a jax key (or its raw uint32 data), for host-side draws."""
  data = key if isinstance(key, np.ndarray) else np.asarray(jax.random.key_data(key))
  return np.random.default_rng(data.astype(np.uint32).tolist())
