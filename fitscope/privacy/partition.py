"""Split a training set among federated clients: IID, or non-IID label shards (McMahan et al. 2017).

Notation: ``n`` training examples, ``n_clients`` clients. A partition is a list of
``n_clients`` int64 index arrays into the training set, disjoint and together covering
every example once; client ``i`` holds ``x[parts[i]]``.

- :func:`iid_partition`: shuffle, then deal the examples into ``n_clients`` parts
  whose sizes differ by at most one (McMahan's IID split: 100 clients of 600
  MNIST examples each).
- :func:`shard_partition`: sort the examples by label, cut the sorted list into
  ``n_clients * shards_per_client`` shards of (nearly) equal size and give every client
  ``shards_per_client`` shards at random (McMahan's non-IID split: 200 shards of
  300 MNIST examples, 2 per client, so most clients see only two digits). A
  shard spans one label unless it straddles the boundary between two, so a
  client sees at most ``2 * shards_per_client`` labels when shards are no
  larger than the smallest class, and usually ``shards_per_client``.

Both are deterministic given ``seed`` (NumPy ``default_rng``).
"""

from __future__ import annotations

import numpy as np

from fitscope.errors import ConfigError, DataError
from fitscope.validation import check_int, check_seed, message


def iid_partition(n: int, n_clients: int, *, seed: int) -> list[np.ndarray]:
    """Deal ``n`` shuffled example indices to ``n_clients`` clients (sizes differ by at most one).

    Args:
        n: number of training examples.
        n_clients: number of clients (1 <= n_clients <= n).
        seed: seed of the shuffle.

    Returns:
        ``n_clients`` sorted int64 index arrays, disjoint, covering ``range(n)``;
        the first ``n % n_clients`` hold one example more than the others.

    Raises:
        ConfigError: ``n`` or ``n_clients`` not a positive integer, more clients than examples, or a bad seed.
    """
    n = check_int(n, "n")
    n_clients = check_int(n_clients, "n_clients")
    seed = check_seed(seed)
    if n_clients > n:
        raise ConfigError(message("n_clients", f"at most the {n} training examples (every client needs one)",
                                  str(n_clients)))
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, n_clients)]


def shard_partition(labels: np.ndarray, n_clients: int, shards_per_client: int, *, seed: int) -> list[np.ndarray]:
    """Non-IID split: sort by label, cut into ``n_clients * shards_per_client`` shards, deal them at random.

    Examples of one label are shuffled (with ``seed``) before the stable sort
    by label, so which examples of a label share a shard is random but every
    shard holds a run of consecutive labels. Shard sizes differ by at most one
    (``n`` need not be a multiple of the shard count: digits' 1437 training
    images make 200 shards of 7 or 8).

    Args:
        labels: ``(n,)`` integer class labels.
        n_clients: number of clients.
        shards_per_client: shards each client gets (McMahan: 2).
        seed: seed of the within-label shuffle and of the shard assignment.

    Returns:
        ``n_clients`` sorted int64 index arrays, disjoint, covering ``range(n)``.

    Raises:
        DataError: ``labels`` is not a non-empty 1-D integer array.
        ConfigError: a count is not a positive integer, there are more shards than examples, or a bad seed.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise DataError(message("labels", "a non-empty 1-D array", f"shape {labels.shape}"))
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(message("labels", "integer class labels", f"dtype {labels.dtype}"))
    n_clients = check_int(n_clients, "n_clients")
    shards_per_client = check_int(shards_per_client, "shards_per_client")
    seed = check_seed(seed)
    n = labels.size
    n_shards = n_clients * shards_per_client
    if n_shards > n:
        raise ConfigError(message("shards_per_client", f"at most {n // n_clients} with {n_clients} clients (no more "
                                  f"shards than the {n} training examples; use fewer clients or shards)",
                                  f"{shards_per_client} ({n_shards} shards)"))
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, n_shards)
    owner = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])).astype(np.int64) for row in owner]
