"""Client partitions for federated training: IID and McMahan's non-IID label shards."""

from __future__ import annotations

import numpy as np
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.privacy.partition import iid_partition, shard_partition


def _check_disjoint_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))  # each example exactly once
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)


@pytest.mark.parametrize("n,k", [(1437, 100), (10, 10), (7, 3), (5, 1)])
def test_iid_parts_are_disjoint_cover_everything_and_differ_in_size_by_at_most_one(n, k):
    parts = iid_partition(n, k, seed=0)
    assert len(parts) == k
    _check_disjoint_cover(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n


def test_iid_parts_are_seeded_and_shuffled():
    a, b, c = iid_partition(100, 4, seed=1), iid_partition(100, 4, seed=1), iid_partition(100, 4, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0], np.arange(25))  # not the first 25 in order


def test_iid_clients_see_most_labels():
    labels = np.repeat(np.arange(10), 60)
    parts = iid_partition(len(labels), 10, seed=0)
    assert min(len(np.unique(labels[p])) for p in parts) >= 8


def test_mcmahan_shards_give_each_client_two_labels():
    # McMahan et al.: sorted by label, 200 shards of 300, 2 per client; here 10 labels x 60, 20 shards of 30
    labels = np.repeat(np.arange(10), 60)
    np.random.default_rng(0).shuffle(labels)
    parts = shard_partition(labels, n_clients=10, shards_per_client=2, seed=0)
    _check_disjoint_cover(parts, len(labels))
    assert [len(p) for p in parts] == [60] * 10
    # every shard lies inside one label (30 divides 60), so a client sees at most 2 labels
    assert max(len(np.unique(labels[p])) for p in parts) <= 2
    # and the split is far from IID: on average well under 3 labels per client
    assert np.mean([len(np.unique(labels[p])) for p in parts]) <= 2


def test_uneven_shards_straddle_at_most_two_labels_each():
    # digits-like: 1437 examples in 200 shards of 7 or 8, 2 shards per client
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, size=1437)
    parts = shard_partition(labels, n_clients=100, shards_per_client=2, seed=5)
    _check_disjoint_cover(parts, 1437)
    assert {len(p) for p in parts} <= {14, 15, 16}
    assert max(len(np.unique(labels[p])) for p in parts) <= 4  # 2 shards x at most 2 labels each
    iid = iid_partition(1437, 100, seed=5)
    assert (np.mean([len(np.unique(labels[p])) for p in parts])
            < np.mean([len(np.unique(labels[p])) for p in iid]) - 3)


def test_shards_are_seeded():
    labels = np.repeat(np.arange(4), 25)
    a = shard_partition(labels, 5, 2, seed=0)
    b = shard_partition(labels, 5, 2, seed=0)
    c = shard_partition(labels, 5, 2, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_more_shards_per_client_gives_more_labels():
    labels = np.repeat(np.arange(10), 100)
    two = shard_partition(labels, 10, 2, seed=0)
    ten = shard_partition(labels, 10, 10, seed=0)
    assert np.mean([len(np.unique(labels[p])) for p in ten]) > np.mean([len(np.unique(labels[p])) for p in two])


@pytest.mark.parametrize("call,match", [
    (lambda: iid_partition(5, 6, seed=0), "n_clients: expected at most the 5"),
    (lambda: iid_partition(5, 0, seed=0), "n_clients: expected an integer >= 1, got 0"),
    (lambda: shard_partition(np.arange(10), 3, 4, seed=0),
     r"shards_per_client: expected at most 3 with 3 clients .*, got 4 \(12 shards\)"),
    (lambda: shard_partition(np.arange(10), 2, 0, seed=0), "shards_per_client: expected an integer >= 1, got 0"),
    (lambda: shard_partition(np.zeros((3, 2), int), 1, 1, seed=0), "labels: expected a non-empty 1-D"),
    (lambda: shard_partition(np.array([0.5, 1.0]), 1, 1, seed=0), "labels: expected integer"),
])
def test_bad_input_is_a_one_line_error(call, match):
    with pytest.raises((ConfigError, DataError), match=match) as info:
        call()
    assert "\n" not in str(info.value)
