"""The sharpness study: the edge of stability on a tiny instance, units against dense Hessians, report and CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cli_helpers import assert_refused, run_main
from fitscope.errors import ConfigError
from fitscope.experiments import get_study
from fitscope.experiments.dynamics_sharpness import (
    STUDY,
    dynamics_sharpness,
    make_config,
    measurement_steps,
    plan_runs,
    prepare,
    sgd_steps,
    train_run,
)
from fitscope.models import build_plain
from fitscope.seeding import derive_seed

#: GD at a learning rate whose 2/lr (4) the network reaches within 200 steps, and at one whose 2/lr (40) it never
#: approaches (its sharpness starts near 3 and rises slowly)
EDGE = dict(data="mnist1d", rows=200, model="mlp:32x2", gd_lrs=[0.05, 0.5], gd_steps=200, every=20, sgd_lrs=[])
#: a tiny run with every kind of unit, for the report and the CLI
TINY = dict(data="mnist1d", rows=100, model="mlp:8x1", gd_lrs=[0.1, 0.5], gd_steps=20, every=10, sgd_lrs=[0.5],
            batch_sizes=[16], sgd_time=5.0, sgd_measurements=2, probes=4)


def eigvalsh(h: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the symmetric ``h``, by torch (one thread; NumPy's BLAS spins on a busy machine)."""
    return torch.linalg.eigvalsh(torch.from_numpy(np.ascontiguousarray(h))).numpy()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dense(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The dense Hessian of the square loss (half the squared error to one-hot, mean over rows), in float64."""
    model = model.double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    xd, target = torch.from_numpy(x).double(), F.one_hot(torch.from_numpy(y).long(), 10).double()

    def loss(theta):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return 0.5 * ((torch.func.functional_call(model, params, (xd,)) - target) ** 2).sum(1).mean()

    h = torch.func.hessian(loss)(flat).numpy()
    model.float()
    return (h + h.T) / 2


# --------------------------------------------------------------------------- the finding


def test_gd_sharpness_rises_to_two_over_lr_and_stays_there_but_not_at_a_small_lr():
    cfg = make_config(**EDGE)
    prepared = prepare(cfg)
    small, edge = plan_runs(cfg, prepared.state.data.input_shape, prepared.state.data.n_classes)
    at_edge = train_run(edge, **prepared.shared)
    below = train_run(small, **prepared.shared)
    threshold = 2 / 0.5
    sharp = at_edge["sharpness"]
    assert sharp[0] < 0.9 * threshold  # it starts below the edge ...
    last = sharp[-len(sharp) // 4:]  # ... and over the last quarter of the run sits at 2/lr
    assert np.all(np.abs(last / threshold - 1) < 0.2), last
    assert at_edge["converged"].all() and at_edge["diverged_at"] == -1
    # at lr 0.05 (2/lr = 40) the sharpness only creeps up, far below its threshold
    assert below["sharpness"][-1] > below["sharpness"][1] and below["sharpness"].max() < 0.2 * (2 / 0.05)
    # the loss still falls at the edge of stability, though not monotonically
    assert at_edge["loss"][-1] < 0.5 * at_edge["loss"][0]


# --------------------------------------------------------------------------- units against independent computations


def test_a_gd_unit_is_plain_gradient_descent_and_its_sharpness_is_the_dense_top_eigenvalue():
    cfg = make_config(data="mnist1d", rows=100, model="mlp:8x1", gd_lrs=[0.5], gd_steps=15, every=10, sgd_lrs=[],
                      probes=30)
    prepared = prepare(cfg)
    (task,) = plan_runs(cfg, prepared.state.data.input_shape, prepared.state.data.n_classes)
    out = train_run(task, **prepared.shared)
    x, y = prepared.shared["x_train"], prepared.shared["y_train"]
    assert len(x) == 100 and abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-4
    np.testing.assert_array_equal(out["step"], measurement_steps(15, 10))
    assert measurement_steps(15, 10) == [0, 10, 15]
    # the same network, trained by torch.optim.SGD on the whole batch (no momentum), measured densely
    model = build_plain("mlp:8x1", (1, 40), 10, seed=derive_seed(0, "model"), norm="group")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    target = F.one_hot(torch.from_numpy(y).long(), 10).float()
    for step in range(16):
        if step in (0, 15):
            h = _dense(model, x, y)
            top = eigvalsh(h)[-1]
            np.testing.assert_allclose(out["sharpness"][0 if step == 0 else -1], top, rtol=1e-2)
        if step == 15:
            break
        opt.zero_grad()
        (0.5 * ((model(torch.from_numpy(x)) - target) ** 2).sum(1).mean()).backward()
        opt.step()
    # GD's trace and Frobenius norm at the end: Hutchinson within 3 standard errors of the dense ones
    assert abs(out["trace"][-1] - np.trace(h)) <= 3 * out["trace_se"][-1]
    assert abs(out["frobenius"][-1] - np.linalg.norm(h)) <= 3 * out["frobenius_se"][-1]
    assert np.isnan(out["trace"][:-1]).all()  # GD measures the trace at the end only


def test_an_sgd_unit_draws_its_batches_from_its_seed_and_runs_for_time_over_lr_steps():
    cfg = make_config(data="mnist1d", rows=100, model="mlp:8x1", gd_lrs=[0.1], gd_steps=1, sgd_lrs=[0.25, 0.5],
                      batch_sizes=[30], sgd_time=5.0, sgd_measurements=2, probes=3)
    prepared = prepare(cfg)
    tasks = {t.key: t for t in plan_runs(cfg, prepared.state.data.input_shape, prepared.state.data.n_classes)}
    assert sorted(tasks) == ["gd-lr0.1", "sgd-lr0.25-b30", "sgd-lr0.5-b30"]
    task = tasks["sgd-lr0.5-b30"]
    assert task.steps == sgd_steps(5.0, 0.5) == 10 and tasks["sgd-lr0.25-b30"].steps == 20 and task.every == 5
    out = train_run(task, **prepared.shared)
    x, y = prepared.shared["x_train"], prepared.shared["y_train"]
    model = build_plain("mlp:8x1", (1, 40), 10, seed=derive_seed(0, "model"), norm="group")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(derive_seed(0, "batches", 30))
    target = F.one_hot(torch.from_numpy(y).long(), 10).float()
    order = torch.empty(0, dtype=torch.long)
    for _ in range(10):  # 3 batches of 30 per epoch; the last 10 rows of each permutation are dropped
        if len(order) < 30:
            order = torch.randperm(100, generator=gen)
        rows, order = order[:30], order[30:]
        opt.zero_grad()
        (0.5 * ((model(torch.from_numpy(x)[rows]) - target[rows]) ** 2).sum(1).mean()).backward()
        opt.step()
    h = _dense(model, x, y)
    np.testing.assert_allclose(out["sharpness"][-1], eigvalsh(h)[-1], rtol=1e-2)
    assert np.isfinite(out["trace"]).all()  # SGD measures the trace at every measurement


# --------------------------------------------------------------------------- config, report and registry


@pytest.mark.parametrize(
    "values, needle",
    [
        (dict(gd_lrs=[0.0]), "--gd-lrs: expected finite learning rates > 0, got 0.0"),
        (dict(gd_lrs=[0.1, -1.0]), "--gd-lrs: expected finite learning rates > 0, got -1.0"),
        (dict(gd_lrs=[float("inf")]), "--gd-lrs: expected finite learning rates > 0, got inf"),
        (dict(gd_lrs=[float("nan")]), "--gd-lrs: expected finite learning rates > 0, got nan"),
        (dict(gd_lrs=[]), "--gd-lrs: expected at least one learning rate"),
        (dict(sgd_lrs=[0.1, float("nan")]), "--sgd-lrs: expected finite learning rates > 0, got nan"),
        (dict(batch_sizes=[0]), "--batch-sizes: expected distinct batch sizes >= 1"),
        (dict(rows=100, batch_sizes=[16, 128]), "--batch-sizes: expected batch sizes in [1, 100] (--rows), got 128"),
        (dict(sgd_lrs=[1e-6]), "--sgd-time: expected at most 1,000,000 steps"),
        (dict(memory_limit=0), "--memory-limit"),
        (dict(tol=1.5), "--tol"),
        (dict(loss="hinge"), "--loss"),
        (dict(threads=1), "--threads"),  # placement is not config
    ],
)
def test_bad_config_is_one_line_naming_the_flag(values, needle):
    with pytest.raises(ConfigError) as info:
        make_config(**values)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_quick_is_a_small_setting_and_the_study_is_registered():
    cfg = STUDY.make_config({}, quick=True)
    assert (cfg.rows, cfg.gd_lrs, cfg.gd_steps, cfg.sgd_lrs, cfg.batch_sizes) == (500, [0.05, 0.3, 0.4], 400,
                                                                                  [0.1, 0.4], [16, 64])
    assert get_study("dynamics-sharpness") is STUDY and STUDY.command == "fitscope dynamics sharpness"


def test_a_tiny_run_writes_tables_and_a_report_with_the_figures(tmp_path):
    run, outcome = dynamics_sharpness(make_config(**TINY), tmp_path / "run", threads=1)
    runs = pd.read_parquet(run.path / "runs.parquet")
    trajectory = pd.read_parquet(run.path / "trajectory.parquet")
    assert runs.unit.tolist() == ["gd-lr0.1", "gd-lr0.5", "sgd-lr0.5-b16"]
    assert len(trajectory) == 3 + 3 + 3  # steps 0, 10, 20 (GD); 0, 5, 10 (SGD: 10 steps, 2 measurements)
    np.testing.assert_allclose(runs.threshold, [20, 4, 4])
    assert (runs.final_over_threshold == runs.final_sharpness / runs.threshold).all()
    html = (run.path / "report.html").read_text()
    assert outcome.summary["GD runs"] == 2 and run.meta["status"] == "done"
    assert "Under full-batch gradient descent the sharpness" in html
    assert html.count("data:image/png;base64,") == 6  # GD sharpness, loss, ratio; SGD trace, Frobenius, sharpness
    assert len(re.findall(r"<td[^>]*>GD</td>", html)) == 2 and len(re.findall(r"<td[^>]*>SGD</td>", html)) == 1


def test_the_verdict_states_the_finding_from_the_runs_table():
    from fitscope.report.dynamics_sharpness import verdict

    def row(optimizer, lr, batch, peak, final, trace=float("nan"), diverged=-1):
        threshold = 2 / lr
        return dict(optimizer=optimizer, lr=lr, batch_size=batch, threshold=threshold, peak_sharpness=peak,
                    final_sharpness=final, final_over_threshold=final / threshold,
                    reached_threshold=peak >= 0.9 * threshold, final_trace=trace, diverged_at=diverged)

    runs = pd.DataFrame([row("gd", 0.05, 1000, 5.6, 5.4), row("gd", 0.2, 1000, 10.4, 10.0),
                         row("gd", 0.4, 1000, 6.4, 5.8), row("sgd", 0.1, 16, 11, 11, trace=289),
                         row("sgd", 0.1, 64, 19, 18.5, trace=469)])
    assert verdict(dict(runs=runs)) == (
        "Under full-batch gradient descent the sharpness rose until it reached 2/lr and then stayed near it in 2 of "
        "3 runs (it ended at 100% to 116% of 2/lr, at lr 0.2 and 0.4); at lr 0.05 it only rose to 5.6, 14% of "
        "2/lr = 40. Under SGD the Hessian's trace at the end was lowest at lr 0.1 with batch 16 (289) and highest "
        "at lr 0.1 with batch 64 (469).")
    none = pd.DataFrame([row("gd", 0.05, 1000, 5.6, 5.4), row("gd", 2.0, 1000, 1e3, 1e3, diverged=40)])
    text = verdict(dict(runs=none))
    assert text.startswith("Under full-batch gradient descent the sharpness did not reach 2/lr in any of the 2 runs")
    assert "1 run(s) diverged (lr 2)" in text


# --------------------------------------------------------------------------- command line

ARGS = ["dynamics", "sharpness", "--data", "mnist1d", "--rows", "100", "--model", "mlp:8x1", "--gd-lrs", "0.1,0.5",
        "--gd-steps", "10", "--every", "5", "--sgd-lrs", "none", "--threads", "1"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--gd-lrs", "0"], "--gd-lrs: expected finite learning rates > 0, got 0.0"),
        (["--gd-lrs", "0.1,-0.5"], "--gd-lrs: expected finite learning rates > 0, got -0.5"),
        (["--gd-lrs", "inf"], "--gd-lrs: expected finite learning rates > 0, got inf"),
        (["--gd-lrs", "nan"], "--gd-lrs: expected finite learning rates > 0, got nan"),
        (["--gd-lrs", "fast"], "--gd-lrs: expected comma-separated numbers"),
        (["--sgd-lrs", "0.1", "--batch-sizes", "0"], "--batch-sizes: expected distinct batch sizes >= 1"),
        (["--sgd-lrs", "0.1", "--batch-sizes", "500"], "--batch-sizes: expected batch sizes in [1, 100]"),
        (["--model", "mlp:4096x8", "--memory-limit", "1"],
         "--model: expected a Hessian computation within the memory limit of 1 GiB, got 117,678,090 parameters"),
        (["--model", "mlp:16x1,dropout=0.5"], "--model: expected a spec without dropout"),
        (["--rows", "100000"], "--rows: expected at most the 4000 training rows of mnist1d"),
        (["--data", "nope"], "nope"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert_refused(ARGS + ["--out", str(out)] + extra, out, needle, capsys)


def test_cli_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and "GD runs that reached 2/lr" in captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "dynamics-sharpness" and sorted(meta["units"]) == ["gd-lr0.1", "gd-lr0.5"]
    assert all((out / name).is_file() for name in ("runs.parquet", "trajectory.parquet", "report.html"))
    code, captured = run_main(["dynamics", "sharpness", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 2 finished units, training 0" in captured.err
    code, captured = run_main(["dynamics", "sharpness", "--out", str(out), "--resume", "--gd-steps", "12"], capsys)
    assert code == 2 and "--gd-steps 12 differs from the run's 10" in captured.err
