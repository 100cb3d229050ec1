"""Download accounting for methods whose server applies sparse updates (top-k, sketches, random-k).

The server records, per coordinate of the raveled θ: f32[D], the last round in which it changed
(`last_changed: i32[D]`, 0 = never, so θ0 still holds). A client holding round h's broadcast
downloads the coordinates that changed in rounds h … e−1 as float32 values + int32 indices, or
θ itself (4·D bytes) when that is smaller (docs/paper.md §4: "changed coordinates since last sync").
"""
import jax
import jax.numpy as jnp
import numpy as np


def init_last_changed(D: int) -> jax.Array:
  return jnp.zeros((D,), jnp.int32)


def update_last_changed(last_changed: jax.Array, old: jax.Array, new: jax.Array,
                        round_num: jax.Array) -> jax.Array:
  """Marks the coordinates where θ changed in this round. old, new: f32[D]."""
  return jnp.where(new != old, round_num.astype(jnp.int32), last_changed)


_histogram = jax.jit(lambda last_changed, n: jnp.bincount(last_changed, length=n),
                     static_argnums=1)


def changed_counts(last_changed: jax.Array, held_rounds: np.ndarray, num_rounds: int) -> np.ndarray:
  """int64[C]: how many coordinates changed in rounds held_rounds[c] or later.

  A device-side histogram over rounds (length num_rounds + 2, static, so it compiles once), then
  suffix sums on the host: O(D) work per round, no D-sized transfer.
  """
  hist = np.asarray(_histogram(last_changed, num_rounds + 2), np.int64)
  at_least = np.cumsum(hist[::-1])[::-1]          # at_least[h] = #coords with last_changed >= h
  return at_least[np.clip(np.asarray(held_rounds), 0, num_rounds + 1)]


def download_bytes(last_changed: jax.Array, held_rounds: np.ndarray, num_rounds: int) -> np.ndarray:
  """int64[C]: min(8 · changed, 4 · D) bytes per client."""
  D = int(last_changed.shape[0])
  n = changed_counts(last_changed, held_rounds, num_rounds)
  return np.minimum(8 * n, 4 * D).astype(np.int64)


def catch_up(theta: jax.Array, last_changed: jax.Array, held_round: int) -> dict:
  """{'values': f32[n], 'indices': i32[n]} of the changed coordinates, or {'theta': f32[D]}.

  Host-side (numpy) indexing: n differs from call to call, and a device gather would compile one
  XLA program per n.
  """
  D = int(theta.shape[0])
  changed = np.flatnonzero(np.asarray(last_changed) >= held_round).astype(np.int32)
  if 8 * len(changed) >= 4 * D:
    return {'theta': theta}
  return {'values': jnp.asarray(np.asarray(theta)[changed]), 'indices': jnp.asarray(changed)}


def rebuild(held_theta: jax.Array, payload: dict) -> jax.Array:
  """The client's θ: f32[D] from what it held and what it downloaded (a host-side patch, like
  `catch_up`: no XLA program per payload size)."""
  if 'theta' in payload:
    return payload['theta']
  theta = np.array(held_theta)    # a copy: the held θ is left as it was
  theta[np.asarray(payload['indices'])] = np.asarray(payload['values'])
  return jnp.asarray(theta)
