"""--device: one resolver, the placement's device inside every unit, the same bits on CPU, recorded in run.json.

No test here needs a GPU: the CUDA cases monkeypatch ``torch.cuda.is_available``
/ ``device_count`` and check what would be used, without running CUDA code.
(The Ray side, GPUs reserved per unit, is tests/test_devices_ray.py.)
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field

import fitscope.cli.seed_agreement  # noqa: F401  (registers the command)
from cli_helpers import run_main
from fitscope.errors import ConfigError
from fitscope.experiments.study import Outcome, Prepared, Study, Unit, run_study
from fitscope.kernels import NTKClassifier, ntk
from fitscope.kernels.conv import cntk
from fitscope.runs import make_executor
from fitscope.runs.devices import DEVICE_ENV, default_device, devices_found, pinned_device, resolve_device
from fitscope.train import TrainConfig, pack_correct, per_example_stats, placement_device, train_ensemble
from fitscope.train.records import pack_correct_tensor

FORM = re.compile(r"^\S+: expected .+, got .+")
TIMES = {"seconds", "train_seconds", "eval_seconds"}


@pytest.fixture
def no_device_env(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)


@pytest.fixture
def two_gpus(monkeypatch, no_device_env):
    """torch believes it sees two CUDA GPUs (nothing here runs CUDA code)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


# --------------------------------------------------------------------------- resolving a device


def test_cpu_and_auto_resolve_to_the_cpu_without_a_gpu(no_device_env):
    assert not torch.cuda.is_available()  # the CI machine: these tests never depend on a GPU
    assert devices_found() == ["cpu"]
    assert resolve_device("cpu") == resolve_device("auto") == resolve_device(torch.device("cpu")) == "cpu"
    assert default_device() == "cpu" and placement_device() == torch.device("cpu")


@pytest.mark.parametrize("device, text", [
    ("cuda", "--device: expected one of the devices found (cpu), got cuda"),
    ("cuda:0", "--device: expected one of the devices found (cpu), got cuda:0"),
    ("tpu", "--device: expected cpu, cuda, cuda:<index> or auto, got 'tpu'"),
    ("cpu:1", "--device: expected cpu, cuda, cuda:<index> or auto, got 'cpu:1'"),
    ("CUDA", "--device: expected cpu, cuda, cuda:<index> or auto, got 'CUDA'"),
    (3, "--device: expected cpu, cuda, cuda:<index> or auto, got 3"),
    (None, "--device: expected cpu, cuda, cuda:<index> or auto, got None"),
])
def test_a_device_not_found_names_the_devices_found(no_device_env, device, text):
    with pytest.raises(ConfigError) as info:
        resolve_device(device, "--device")
    assert str(info.value) == text and FORM.match(text)


def test_with_gpus_cuda_and_auto_resolve_to_them(two_gpus):
    assert devices_found() == ["cpu", "cuda:0", "cuda:1"]
    assert resolve_device("auto") == resolve_device("cuda") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError) as info:
        resolve_device("cuda:2")
    assert str(info.value) == "device: expected one of the devices found (cpu, cuda:0, cuda:1), got cuda:2"
    assert placement_device("auto") == torch.device("cuda")  # a torch.device only: no CUDA call


def test_a_ray_clusters_gpus_decide_and_take_no_index(no_device_env):
    assert resolve_device("auto", gpus=4, cluster=True) == resolve_device("cuda", gpus=4, cluster=True) == "cuda"
    assert resolve_device("auto", gpus=0, cluster=True) == "cpu"  # a CPU-only cluster runs the same command
    with pytest.raises(ConfigError, match=r"^--device: expected one of the devices found in the Ray cluster "
                                          r"\(cpu\), got cuda$"):
        resolve_device("cuda", "--device", gpus=0, cluster=True)
    with pytest.raises(ConfigError, match=r"^--device: expected cpu, cuda or auto with --executor ray"):
        resolve_device("cuda:1", "--device", gpus=4, cluster=True)


def test_the_placement_device_is_read_at_each_call_and_restored(two_gpus):
    assert placement_device() == torch.device("cpu")
    with pinned_device("cuda"):
        assert os.environ[DEVICE_ENV] == "cuda" and placement_device() == torch.device("cuda")
        assert placement_device("cpu") == torch.device("cpu")  # an explicit device wins
    assert DEVICE_ENV not in os.environ and placement_device() == torch.device("cpu")


def test_a_bad_environment_device_names_the_variable(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(ConfigError, match=rf"^{DEVICE_ENV}: expected one of the devices found \(cpu\), got cuda$"):
        placement_device()


# --------------------------------------------------------------------------- the same bits on the CPU


def _problem(seed=0, n=70, d=6, classes=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, classes, size=n)
    x_test = rng.normal(size=(15, d)).astype(np.float32)
    y_test = rng.integers(0, classes, size=15)
    masks = rng.random((3, n)) < 0.6
    return x, y, x_test, y_test, masks


def _train(**device):
    x, y, x_test, y_test, masks = _problem()
    result = train_ensemble("mlp:12x2", x, y, config=TrainConfig(epochs=3, batch_size=16), seeds=[4, 5, 6],
                            masks=masks, x_test=x_test, y_test=y_test, dropout=0.2, **device)
    return {k: v for k, v in result.to_arrays().items() if k not in TIMES}


def test_train_ensemble_gives_the_same_bits_for_default_cpu_auto_and_the_placement(no_device_env):
    default = _train()
    with pinned_device("auto"):
        pinned = _train()
    for other in (_train(device="cpu"), _train(device="auto"), _train(device=torch.device("cpu")), pinned):
        assert other.keys() == default.keys()
        for key in default:
            assert np.array_equal(default[key], other[key]), key


def test_the_records_kept_on_the_device_are_those_numpy_would_store(no_device_env):
    x, y, x_test, y_test, _ = _problem(seed=1)
    result = train_ensemble("mlp:12x1", x, y, config=TrainConfig(epochs=2, batch_size=16, record="full"), seeds=[1, 2])
    loss, correct, margin = per_example_stats(torch.from_numpy(result.train_logits), torch.from_numpy(y))
    # the last epoch's records (every epoch's and the summary's snapshot) are the final logits' statistics
    for last in (result.records, result.summary.at):
        assert np.array_equal(last.loss[-1], loss.numpy().astype(np.float16))
        assert np.array_equal(last.margin[-1], margin.numpy().astype(np.float16))
        assert np.array_equal(last.correct[-1], pack_correct(correct.numpy()))
    bits = np.random.default_rng(0).random((2, 3, 13)) < 0.5
    assert np.array_equal(pack_correct_tensor(torch.from_numpy(bits)).numpy(), pack_correct(bits))


def test_train_ensemble_refuses_a_missing_gpu_before_training(no_device_env):
    x, y, *_ = _problem()
    with pytest.raises(ConfigError, match=r"^device: expected one of the devices found \(cpu\), got cuda$"):
        train_ensemble("mlp:4x1", x, y, config=TrainConfig(epochs=1), seeds=[0], device="cuda")


def test_kernels_give_the_same_bits_for_default_cpu_auto_and_the_placement(no_device_env):
    rng = np.random.default_rng(2)
    x, images = rng.normal(size=(9, 5)), rng.normal(size=(4, 2, 5, 5))
    fc = ntk(x, depth=2)
    conv = cntk(images, depth=2)
    with pinned_device("auto"):
        assert np.array_equal(ntk(x, depth=2), fc) and np.array_equal(cntk(images, depth=2), conv)
    for device in ("cpu", "auto"):
        assert np.array_equal(ntk(x, depth=2, device=device), fc)
        assert np.array_equal(ntk(images, arch="conv", depth=2, device=device), conv)
    with pytest.raises(ConfigError, match=r"^device: expected one of the devices found \(cpu\), got cuda$"):
        ntk(x, device="cuda")
    y = np.arange(9) % 2
    assert np.array_equal(NTKClassifier(depth=2).fit(x, y).predict(x), NTKClassifier(depth=2, device="auto")
                          .fit(x, y).predict(x))
    with pytest.raises(ConfigError, match=r"^device: expected cpu, cuda, cuda:<index> or auto, got 'gpu'$"):
        NTKClassifier(device="gpu").fit(x, y)


# --------------------------------------------------------------------------- the local executor


def device_task(task):
    """What a unit sees: the placement variable and the device a call given none would use."""
    return os.environ.get(DEVICE_ENV), str(placement_device())


def test_the_local_executor_pins_its_device_in_every_task(no_device_env):
    with make_executor("local", device="auto") as ex:
        assert ex.device == "cpu" and ex.info["device"] == "cpu"
        assert list(ex.map_unordered(device_task, [0])) == [(0, ("cpu", "cpu"))]
    assert DEVICE_ENV not in os.environ
    with pytest.raises(ConfigError, match=r"^--gpus-per-task: expected none with --executor local"):
        make_executor("local", gpus_per_task=0.5)
    with pytest.raises(ConfigError, match=r"^--device: expected one of the devices found \(cpu\), got cuda$"):
        make_executor("local", device="cuda")


def test_with_a_gpu_the_local_executor_runs_its_tasks_on_it(two_gpus):
    with make_executor("local", device="cuda:1") as ex:
        assert ex.info["device"] == "cuda:1"
        assert list(ex.map_unordered(device_task, [0])) == [(0, ("cuda:1", "cuda:1"))]


# --------------------------------------------------------------------------- the runner and run.json


class TinyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    units: int = Field(2, ge=1)


def _prepare(cfg):
    return Prepared(seeds={"seed": 0})


def _plan(cfg, prepared):
    return [Unit(f"u{i}", device_unit, i) for i in range(cfg.units)]


def device_unit(task):
    """Unit ``task``: the device a computation given none would use."""
    return {"device": np.array(str(placement_device()))}


def _estimate(cfg, prepared, units):
    return Outcome(summary={"devices": sorted({str(units[k]["device"]) for k in units})})


TINY = Study(kind="tiny", command="fitscope tiny", config=TinyConfig, prepare=_prepare, plan=_plan,
             estimate=_estimate)


def test_the_device_is_placement_recorded_per_attempt_and_per_unit(tmp_path, two_gpus):
    out = tmp_path / "run"
    first = run_study(TINY, {"units": 2}, out, threads=1, device="cpu")
    assert first.outcome.summary == {"devices": ["cpu"]}
    (out / "units" / "u1.npz").unlink()  # as if killed while u1 trained
    again = run_study(TINY, {}, out, resume=True, threads=1, device="auto")  # a GPU (believed) now
    assert again.trained == ["u1"] and again.outcome.summary == {"devices": ["cpu", "cuda"]}
    meta = json.loads((out / "run.json").read_text())
    assert [a["executor"]["device"] for a in meta["attempts"]] == ["cpu", "cuda"]
    assert {k: u["device"] for k, u in meta["units"].items()} == {"u0": "cpu", "u1": "cuda"}
    assert meta["config_hash"] == first.run.meta["config_hash"]  # the device is not in the config


def test_a_missing_gpu_is_refused_before_anything_is_written(tmp_path, no_device_env):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^--device: expected one of the devices found \(cpu\), got cuda$"):
        run_study(TINY, {}, out, device="cuda")
    assert not out.exists()


# --------------------------------------------------------------------------- the CLI

ARGS = ["seed-agreement", "--data", "iris", "--model", "mlp:8x1", "--models", "2", "--chunk", "1", "--epochs", "1",
        "--threads", "1"]


def test_cli_device_cuda_without_a_gpu_is_one_line_and_exit_2(tmp_path, capsys, no_device_env):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--device", "cuda", "--out", str(out)], capsys)
    lines = [line for line in captured.err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, captured.err
    assert "--device: expected one of the devices found (cpu), got cuda" in lines[0]
    assert not out.exists()


def test_cli_records_the_device_and_resumes_on_another(tmp_path, capsys, no_device_env):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--device", "auto", "--out", str(out)], capsys)
    assert code in (0, None), captured.err
    code, captured = run_main(["seed-agreement", "--out", str(out), "--resume", "--device", "cpu"], capsys)
    assert code in (0, None) and "reused 2 finished units" in captured.err
    meta = json.loads((out / "run.json").read_text())
    assert [a["executor"]["device"] for a in meta["attempts"]] == ["cpu", "cpu"]
    assert {u["device"] for u in meta["units"].values()} == {"cpu"}


def test_every_study_command_takes_the_device_flags():
    import typer.main

    from fitscope.cli import app, main
    from fitscope.experiments import STUDIES, get_study

    with pytest.raises(SystemExit):  # registers every command, as the fitscope script does
        main(["--help"])
    group, missing = typer.main.get_command(app), []
    for kind in STUDIES:
        command = group
        for part in get_study(kind).command.split()[1:]:
            command = command.commands[part]
        flags = {opt for param in command.params for opt in param.opts}
        if not {"--device", "--gpus-per-task"} <= flags:
            missing.append(get_study(kind).command)
    assert not missing, f"add device: DeviceOpt and gpus_per_task: GpusPerTaskOpt to {missing}"
