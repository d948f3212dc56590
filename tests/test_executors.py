"""Executors: local and Ray give (index, result) pairs, clear task errors, and the same bits."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from fitscope.errors import ConfigError, DataError
from fitscope.runs import LocalExecutor, RayExecutor, TaskError, check_task_function, make_executor
from fitscope.train import TrainConfig, train_ensemble

# ------------------------------------------------------------------ task functions (module level, pure)


def square_task(task, *, offset=0):
    """task ** 2 + offset."""
    return task * task + offset


def shared_task(task, *, x, w):
    """What a task sees of the shared arrays: a sum, their writability and the thread count."""
    return float(x.sum() * w[task]), bool(x.flags.writeable), torch.get_num_threads()


def failing_task(task):
    """Fails on task 2: a bug (ZeroDivisionError) or, with task 'data', a user error."""
    if task == "data":
        raise DataError("x: expected 2 dimensions, got 3")
    return 1 / (task - 2)


def train_task(seed, *, x, y, masks):
    """One tiny ensemble of 2 models on its rows of ``masks``: the arrays a unit of an audit stores."""
    config = TrainConfig(epochs=4, batch_size=16, optimizer="adam", lr=3e-3, record=False)
    rows = slice(2 * seed, 2 * seed + 2)
    result = train_ensemble("mlp:32x1", x, y, config=config, seeds=[10 * seed, 10 * seed + 1], masks=masks[rows])
    return {"train_logits": result.train_logits, "epochs_to_fit": result.epochs_to_fit,
            "threads": np.array(torch.get_num_threads())}


def problem(n=60, d=8, classes=3, k=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, classes, size=n)
    masks = rng.random((k, n)) < 0.7
    return x, y, masks


# ------------------------------------------------------------------ local


def test_local_yields_every_index_in_order_with_shared_arguments():
    with make_executor("local") as ex:
        assert isinstance(ex, LocalExecutor) and ex.threads_per_task == 1
        assert list(ex.map_unordered(square_task, [3, 1, 2], shared={"offset": 10})) == [(0, 19), (1, 11), (2, 14)]
        assert list(ex.map_unordered(square_task, [])) == []


def test_local_pins_threads_per_task_and_restores_them():
    before = torch.get_num_threads()
    x, w = np.ones(4), np.arange(3.0)
    with make_executor("local", threads_per_task=2) as ex:
        out = dict(ex.map_unordered(shared_task, [0, 2], shared={"x": x, "w": w}))
    assert out == {0: (0.0, False, 2), 1: (8.0, False, 2)}  # shared arrays arrive read-only, as under Ray
    assert torch.get_num_threads() == before and x.flags.writeable


def test_local_task_error_names_the_task():
    ex = make_executor("local")
    seen = []
    with pytest.raises(TaskError, match=r"task 2 of 4 \(failing_task\) failed: ZeroDivisionError") as info:
        for pair in ex.map_unordered(failing_task, [0, 1, 2, 3]):
            seen.append(pair)
    assert info.value.index == 2 and isinstance(info.value.__cause__, ZeroDivisionError)
    assert [i for i, _ in seen] == [0, 1]  # what finished before the failure was handed over
    with pytest.raises(DataError, match=r"^task 1 of 2: x: expected 2 dimensions"):
        list(ex.map_unordered(failing_task, [0, "data"]))


def test_unknown_executor_and_bad_options():
    with pytest.raises(ConfigError, match=r"^--executor: expected one of local, ray, got 'dask'$"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="only used with --executor ray"):
        make_executor("local", address="head:6379")
    with pytest.raises(ConfigError, match=r"^threads_per_task: expected an integer >= 1, got 0$"):
        make_executor("local", threads_per_task=0)


def test_threads_default_follows_environment(monkeypatch):
    monkeypatch.setenv("FITSCOPE_NUM_THREADS", "3")
    assert make_executor("local").threads_per_task == 3
    monkeypatch.setenv("FITSCOPE_NUM_THREADS", "many")
    with pytest.raises(ConfigError, match="FITSCOPE_NUM_THREADS"):
        make_executor("local")


def test_ray_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError) as info:
        make_executor("ray")
    assert str(info.value) == "executor 'ray': the ray package is not installed; pip install 'fitscope[ray]'"


def test_ray_bad_address_or_options_fail_fast():
    import ray  # a test dependency: never skipped
    assert not ray.is_initialized()  # runs before the module's Ray is started
    with pytest.raises(ConfigError, match=r"--address 127.0.0.1:1: cannot connect"):
        make_executor("ray", address="127.0.0.1:1")
    with pytest.raises(ConfigError, match="not both"):
        make_executor("ray", address="127.0.0.1:1", num_cpus=2)
    assert not ray.is_initialized()


def test_task_function_must_be_module_level():
    assert check_task_function(square_task) is square_task

    def nested(task):
        return task

    # a builtin: len, not print (once Ray has run in this process, builtins.print is Ray's module-level safe_print)
    for fn in (lambda t: t, nested, TaskError.__init__, len):
        with pytest.raises(ConfigError, match="plain module-level function"):
            check_task_function(fn)


# ------------------------------------------------------------------ ray (one Ray for the module)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray  # a test dependency: never skipped
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # The workers cannot import this test module by name: ship its task functions by value.
    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(module)
    if started:
        ray.shutdown()


def test_ray_yields_every_task_once_with_shared_arrays(ray_cluster):
    x, w = np.ones(1000, dtype=np.float32), np.arange(5.0)
    with make_executor("ray", threads_per_task=1, max_in_flight=2) as ex:
        assert isinstance(ex, RayExecutor) and ex.parallelism == 2
        pairs = list(ex.map_unordered(shared_task, range(5), shared={"x": x, "w": w}))
    assert sorted(i for i, _ in pairs) == [0, 1, 2, 3, 4]
    assert dict(pairs) == {i: (1000.0 * i, False, 1) for i in range(5)}
    assert ray_cluster.is_initialized()  # a Ray it did not start is left running


def test_ray_rejects_closures_and_lambdas(ray_cluster):
    def nested(task):
        return task

    with make_executor("ray") as ex:
        for fn in (lambda t: t, nested):
            with pytest.raises(ConfigError, match="plain module-level function"):
                ex.map_unordered(fn, [1])
        with pytest.raises(ConfigError, match="shared: expected a dict"):
            ex.map_unordered(square_task, [1], shared={"not a name": 1})


def test_ray_task_error_names_the_task(ray_cluster):
    with make_executor("ray") as ex:
        with pytest.raises(TaskError, match=r"task 2 of 3 \(failing_task\) failed: ZeroDivisionError") as info:
            list(ex.map_unordered(failing_task, [0, 1, 2]))
        assert info.value.index == 2
        with pytest.raises(DataError, match=r"^task 0 of 1: x: expected 2 dimensions"):
            list(ex.map_unordered(failing_task, ["data"]))
        assert list(ex.map_unordered(square_task, [4])) == [(0, 16)]  # still usable afterwards


def test_local_and_ray_give_the_same_bits(ray_cluster):
    x, y, masks = problem()
    shared = {"x": x, "y": y, "masks": masks}
    tasks = [0, 1, 2]
    with make_executor("local", threads_per_task=1) as ex:
        local = dict(ex.map_unordered(train_task, tasks, shared=shared))
    with make_executor("ray", threads_per_task=1) as ex:
        remote = dict(ex.map_unordered(train_task, tasks, shared=shared))
    assert sorted(remote) == tasks
    for i in tasks:
        assert local[i]["train_logits"].shape == (2, 60, 3)
        assert np.array_equal(local[i]["train_logits"], remote[i]["train_logits"])
        assert np.array_equal(local[i]["epochs_to_fit"], remote[i]["epochs_to_fit"])
        assert int(local[i]["threads"]) == int(remote[i]["threads"]) == 1
    assert not np.array_equal(local[0]["train_logits"], local[1]["train_logits"])  # different seeds and rows
