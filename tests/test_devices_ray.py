"""--device on Ray: units reserve GPUs (num_gpus, fractions allowed), auto follows the cluster, run.json records it.

One local Ray for the module with 2 CPUs and 1 *logical* GPU (``num_gpus=1``:
Ray schedules by it and hands each GPU task ``CUDA_VISIBLE_DEVICES``; nothing
here runs CUDA code, so no GPU is needed). A CPU-only cluster is the same Ray
with its GPUs left out of ``ray.nodes()``.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from fitscope.errors import ConfigError
from fitscope.experiments.study import Outcome, Prepared, Study, Unit, run_study
from fitscope.runs import make_executor
from fitscope.runs.devices import DEVICE_ENV


@pytest.fixture(scope="module")
def gpu_ray():
    import ray  # a test dependency: never skipped

    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)  # the workers cannot import this test module by name
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(module)
    ray.shutdown()


def placement_task(task):
    """What a Ray task sees: the placement's device and the GPUs Ray gave it."""
    import ray

    return os.environ.get(DEVICE_ENV), len(ray.get_gpu_ids())


def test_auto_on_a_cluster_with_gpus_reserves_one_per_unit(gpu_ray):
    with make_executor("ray", device="auto") as ex:
        assert ex.device == "cuda" and ex.gpus_per_task == 1.0
        assert ex.task_options["num_gpus"] == 1.0 and ex.task_options["num_cpus"] == 1
        assert ex.parallelism == 1  # 2 CPUs but 1 GPU
        assert ex.info["device"] == "cuda" and ex.info["gpus_per_task"] == 1.0
        assert sorted(ex.map_unordered(placement_task, [0, 1])) == [(0, ("cuda", 1)), (1, ("cuda", 1))]


def test_a_fraction_of_a_gpu_lets_units_share_it(gpu_ray):
    with make_executor("ray", device="cuda", gpus_per_task=0.5) as ex:
        assert ex.task_options["num_gpus"] == 0.5 and ex.parallelism == 2
        assert [r for _, r in ex.map_unordered(placement_task, [0, 1])] == [("cuda", 1)] * 2


@pytest.mark.parametrize("options, needle", [
    (dict(device="cuda", gpus_per_task=0), r"^--gpus-per-task: expected a number in \(0, 1\] with --device cuda"),
    (dict(device="cuda", gpus_per_task=1.5), r"^--gpus-per-task: expected a number in \[0, 1\], got 1.5$"),
    (dict(device="cpu", gpus_per_task=0.5), r"^--gpus-per-task: expected 0 with --device cpu"),
    (dict(device="cuda:0"), r"^--device: expected cpu, cuda or auto with --executor ray"),
])
def test_placement_that_cannot_work_is_refused(gpu_ray, options, needle):
    with pytest.raises(ConfigError, match=needle):
        make_executor("ray", **options)


def test_on_a_cpu_only_cluster_auto_runs_everything_on_cpus(gpu_ray, monkeypatch):
    nodes = gpu_ray.nodes()
    without_gpus = [{**n, "Resources": {k: v for k, v in n["Resources"].items() if k != "GPU"}} for n in nodes]
    monkeypatch.setattr(gpu_ray, "nodes", lambda: without_gpus)
    with make_executor("ray", device="auto", gpus_per_task=0.25) as ex:  # the GPU command, unchanged
        assert ex.device == "cpu" and ex.gpus_per_task == 0.0 and ex.task_options["num_gpus"] == 0.0
        assert ex.parallelism == 2
        assert list(ex.map_unordered(placement_task, [0])) == [(0, ("cpu", 0))]
    with pytest.raises(ConfigError, match=r"^--device: expected one of the devices found in the Ray cluster "
                                          r"\(cpu\), got cuda$"):
        make_executor("ray", device="cuda")


class OneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


def seen_unit(task):
    """The unit's placement device."""
    return {"device": np.array(os.environ.get(DEVICE_ENV, ""))}


STUDY = Study(kind="one", command="fitscope one", config=OneConfig, prepare=lambda cfg: Prepared(seeds={"seed": 0}),
              plan=lambda cfg, prepared: [Unit("u0", seen_unit, 0)], estimate=lambda cfg, p, units: Outcome())


def test_run_json_records_the_device_and_gpus_of_a_ray_attempt(gpu_ray, tmp_path):
    result = run_study(STUDY, {}, tmp_path / "run", executor="ray", device="auto", gpus_per_task=0.5)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    executor = meta["attempts"][-1]["executor"]
    assert executor["name"] == "ray" and executor["device"] == "cuda" and executor["gpus_per_task"] == 0.5
    assert meta["units"]["u0"]["device"] == "cuda" and str(result.run.load_unit("u0")["device"]) == "cuda"
