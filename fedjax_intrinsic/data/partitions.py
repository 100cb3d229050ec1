"""Seeded partitions of a labelled training set into clients.

Every function takes `labels: int[N]`, `num_clients` and a numpy Generator (made from the run's
data key with `keys.numpy_rng`), and returns a list of `num_clients` int64 index arrays into the N
examples: disjoint, each client's non-empty. Same rng state, same partition.

- `iid`: a random permutation cut into num_clients near-equal parts (sizes differ by at most 1).
  Covers every example.
- `dirichlet(alpha)`: label skew after Hsu, Qi and Brown (2019): client sizes as for `iid`; client c
  draws class proportions q_c ~ Dir(alpha * p) (p = the class frequencies), then its examples class
  by class from q_c renormalised over the classes not yet used up, without replacement. alpha → ∞
  approaches `iid`, alpha → 0 one class per client. Covers every example.
- `shards`: FetchSGD / McMahan et al. (2017) style: the examples sorted by label (stable, so the
  order within a class is the data set's order), cut into num_clients * shards_per_client contiguous
  shards of near-equal size, the shards dealt to clients by a random permutation. Covers every
  example. (Digits: 1,437 training examples → 100 shards of 14–15, mostly one class each.)
- `single_class(examples_per_client)`: each client holds n examples of a single class (FetchSGD's
  CIFAR-10 setting: 10,000 clients × 5 images). Each class's examples are shuffled and cut into
  chunks of n (a remainder < n is unused); num_clients chunks are drawn without replacement.
  Covers every example exactly when every class count is a multiple of n and the chunks number
  num_clients.

`FIELDS` declares the partition options a loader takes (config `data.*`; `options` picks a
loader's, with its default partition); the bounds that need the labels (num_clients <= N, ...) are
checked here and by preflight against the data set's metadata.
"""
from typing import Optional

import numpy as np

from fedjax_intrinsic import fields

PARTITIONS = ('iid', 'dirichlet', 'shards', 'single_class')

FIELDS = {
    'partition': fields.Choice('shards', PARTITIONS, doc='how the training examples are dealt '
                                                         'to the clients (data/partitions.py)'),
    'num_clients': fields.Int(100, lo=1, note='<= the training examples', doc='clients'),
    'alpha': fields.Number(0.5, lo=0, lo_open=True,
                           doc='Dirichlet concentration (partition dirichlet)'),
    'shards_per_client': fields.Int(1, lo=1, note='(num_clients * shards_per_client <= the '
                                                  'training examples)',
                                    doc='shards a client holds (partition shards)'),
    'examples_per_client': fields.Int(None, lo=1, also=(None,), note='<= the training examples',
                                      doc='examples a client holds (partition single_class; '
                                          'None: N // num_clients)'),
}


def options(partition: str, names=tuple(FIELDS)) -> dict:
  """The partition fields `names` of a loader whose default partition is `partition`."""
  out = {k: FIELDS[k] for k in names}
  if 'partition' in out:
    out['partition'] = out['partition']._replace(default=partition)
  return out


def _check_common(labels: np.ndarray, num_clients: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels with shape {labels.shape} and dtype {labels.dtype} are invalid; '
                     'allowed: a 1-D integer array')
  if not fields.is_int(num_clients, 1, len(labels)):
    raise ValueError(f'num_clients={num_clients!r} is invalid; allowed: 1 .. the {len(labels)} '
                     'training examples')
  return labels


def _equal_sizes(n: int, num_clients: int) -> np.ndarray:
  return np.full(num_clients, n // num_clients, np.int64) + (np.arange(num_clients) < n % num_clients)


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
  """A random permutation of all N examples cut into num_clients near-equal parts."""
  labels = _check_common(labels, num_clients)
  perm = rng.permutation(len(labels)).astype(np.int64)
  return np.split(perm, np.cumsum(_equal_sizes(len(labels), num_clients))[:-1])


def dirichlet(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *,
              alpha: float) -> list[np.ndarray]:
  """Label-skewed clients of near-equal size; class mix q_c ~ Dir(alpha * class frequencies)."""
  labels = _check_common(labels, num_clients)
  if not FIELDS['alpha'].ok(alpha):
    fields.fail('alpha', alpha, FIELDS['alpha'].describe('alpha'))
  classes, counts = np.unique(labels, return_counts=True)
  pools = [rng.permutation(np.flatnonzero(labels == c)).astype(np.int64) for c in classes]
  taken = np.zeros(len(classes), np.int64)
  available = counts.astype(np.int64).copy()
  prior = counts / counts.sum()
  q = rng.dirichlet(alpha * prior, size=num_clients)                    # [num_clients, K]
  parts = []
  for c, size in enumerate(_equal_sizes(len(labels), num_clients)):
    draw = np.zeros(len(classes), np.int64)
    need = int(size)
    while need > 0:
      w = np.where(available > 0, q[c], 0.0)
      if not w.sum() > 0:                     # q_c has (numerically) no mass on what is left
        w = available.astype(np.float64)
      got = np.minimum(rng.multinomial(need, w / w.sum()), available)
      draw += got
      available -= got
      need -= int(got.sum())
    parts.append(np.concatenate([pools[k][taken[k]:taken[k] + draw[k]]
                                 for k in range(len(classes))]))
    taken += draw
  return parts


def shards(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *,
           shards_per_client: int = 1) -> list[np.ndarray]:
  """Sorted-by-label contiguous shards, shards_per_client of them dealt to each client at random."""
  labels = _check_common(labels, num_clients)
  if not fields.is_int(shards_per_client) or not 1 <= shards_per_client * num_clients <= len(labels):
    raise ValueError(f'shards_per_client={shards_per_client!r} is invalid; allowed: a positive '
                     f'integer with num_clients * shards_per_client <= {len(labels)} examples')
  num_shards = num_clients * shards_per_client
  order = np.argsort(labels, kind='stable').astype(np.int64)
  pieces = np.split(order, np.cumsum(_equal_sizes(len(labels), num_shards))[:-1])
  deal = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
  return [np.concatenate([pieces[s] for s in row]) for row in deal]


def single_class(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *,
                 examples_per_client: int) -> list[np.ndarray]:
  """num_clients chunks of examples_per_client examples, each chunk from a single class."""
  labels = _check_common(labels, num_clients)
  n = examples_per_client
  if not fields.is_int(n, 1, len(labels)):
    raise ValueError(f'examples_per_client={n!r} is invalid; allowed: 1 .. {len(labels)}')
  chunks = []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c)).astype(np.int64)
    k = len(idx) // n
    chunks.append(idx[:k * n].reshape(k, n))
  chunks = np.concatenate(chunks)
  if len(chunks) < num_clients:
    raise ValueError(f'num_clients={num_clients} is invalid for single_class with '
                     f'examples_per_client={n}; allowed: at most {len(chunks)} (whole chunks per class)')
  return list(chunks[rng.choice(len(chunks), num_clients, replace=False)])


def make(name: str, labels: np.ndarray, num_clients: int, rng: np.random.Generator, *,
         alpha: float = 0.5, shards_per_client: int = 1,
         examples_per_client: Optional[int] = None) -> list[np.ndarray]:
  """The partition called `name` (one of PARTITIONS); unused parameters are ignored.

  examples_per_client=None means N // num_clients (single_class only).
  """
  if name == 'iid':
    return iid(labels, num_clients, rng)
  if name == 'dirichlet':
    return dirichlet(labels, num_clients, rng, alpha=alpha)
  if name == 'shards':
    return shards(labels, num_clients, rng, shards_per_client=shards_per_client)
  if name == 'single_class':
    _check_common(labels, num_clients)
    n = len(labels) // num_clients if examples_per_client is None else examples_per_client
    return single_class(labels, num_clients, rng, examples_per_client=n)
  raise ValueError(f'partition={name!r} is invalid; allowed: {", ".join(PARTITIONS)}')


def describe(name: str, *, alpha: float, shards_per_client: int,
             examples_per_client: Optional[int]) -> dict:
  """The partition's JSON-ready description for metadata (only the parameters it uses)."""
  out = {'name': name}
  if name == 'dirichlet':
    out['alpha'] = float(alpha)
  elif name == 'shards':
    out['shards_per_client'] = int(shards_per_client)
  elif name == 'single_class':
    out['examples_per_client'] = None if examples_per_client is None else int(examples_per_client)
  return out
