"""Mode connectivity: the library against hand computations, the finding on a tiny instance, the study and its CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cli_helpers import assert_refused, run_main
from fitscope.dynamics import (
    barrier, bezier_point, check_same_architecture, dropout_forward, dropout_masks, dropout_path, dropout_stability,
    interpolate, mlp_layers, path_losses, train_bezier,
)
from fitscope.errors import ConfigError
from fitscope.experiments import get_study
from fitscope.experiments.dynamics_connectivity import STUDY, dynamics_connectivity, make_config
from fitscope.models import build_plain
from fitscope.seeding import derive_seed
from fitscope.train.plain_models import train_plain


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _params(model):
    return {k: v.detach() for k, v in model.named_parameters()}


# --------------------------------------------------------------------------- paths and the barrier


def test_interpolation_reproduces_the_endpoints_exactly_and_the_midpoint_is_the_mean():
    a, b = build_plain("mlp:8x2", (5,), 3, seed=0), build_plain("mlp:8x2", (5,), 3, seed=1)
    for name, value in interpolate(a, b, 0.0).items():
        assert torch.equal(value, _params(a)[name])
    for name, value in interpolate(a, b, 1.0).items():
        assert torch.equal(value, _params(b)[name])
    mid = interpolate(a, b, 0.5)
    torch.testing.assert_close(mid["fc1.weight"], (a.fc1.weight + b.fc1.weight).detach() / 2)


def test_the_bezier_point_is_the_quadratic_formula_by_hand():
    w_a, theta, w_b = {"w": torch.tensor([1.0, -2.0])}, {"w": torch.tensor([5.0, 0.0])}, {"w": torch.tensor([3.0, 4.0])}
    # t = 0.3: (0.7)^2 = 0.49, 2 * 0.3 * 0.7 = 0.42, 0.3^2 = 0.09
    expected = torch.tensor([0.49 * 1 + 0.42 * 5 + 0.09 * 3, 0.49 * -2 + 0.42 * 0 + 0.09 * 4])
    torch.testing.assert_close(bezier_point(w_a, theta, w_b, 0.3)["w"], expected)
    assert torch.equal(bezier_point(w_a, theta, w_b, 0.0)["w"], w_a["w"])
    assert torch.equal(bezier_point(w_a, theta, w_b, 1.0)["w"], w_b["w"])
    # at theta = the midpoint, the curve is the straight line
    mid = {"w": (w_a["w"] + w_b["w"]) / 2}
    torch.testing.assert_close(bezier_point(w_a, mid, w_b, 0.3)["w"], 0.7 * w_a["w"] + 0.3 * w_b["w"])


def test_barrier_of_known_one_dimensional_functions():
    t = np.linspace(0, 1, 101)
    # a chord from 1 to 3 plus a bump of height 2 at t = 1/2: the barrier is the bump
    assert barrier(1 + 2 * t + 2 * np.sin(np.pi * t), t) == pytest.approx(2.0, abs=1e-12)
    # a bump of height 0.5 centred at t = 0.25 on a falling chord; uneven points
    ts = np.array([0.0, 0.1, 0.25, 0.6, 1.0])
    values = 4 - 3 * ts + np.where(ts == 0.25, 0.5, 0.0)
    assert barrier(values, ts) == pytest.approx(0.5)
    # a convex loss never rises above its chord
    assert barrier((t - 0.3) ** 2, t) == 0.0
    with pytest.raises(Exception, match="ts: expected"):
        barrier([1.0, 2.0, 1.0], [0.0, 0.7, 0.5])


def test_path_losses_are_the_cross_entropy_and_error_at_each_point():
    a, b = build_plain("mlp:8x1", (5,), 3, seed=0), build_plain("mlp:8x1", (5,), 3, seed=1)
    x, y = torch.randn(40, 5, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 3
    table = path_losses(a, lambda t: interpolate(a, b, t), [0.0, 0.25, 1.0], x.numpy(), y.numpy(), batch_size=16)
    net = build_plain("mlp:8x1", (5,), 3, seed=0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(0.75 * _params(a)[name] + 0.25 * _params(b)[name])
        out = net(x)
    assert table.t.tolist() == [0.0, 0.25, 1.0]
    assert table.loss[1] == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-5)
    assert table.error[1] == pytest.approx(float((out.argmax(1) != y).float().mean()))
    with torch.no_grad():
        assert table.loss[2] == pytest.approx(float(F.cross_entropy(b(x), y)), rel=1e-5)


# --------------------------------------------------------------------------- dropout


def test_dropout_on_a_layer_equals_the_hand_computation():
    model = build_plain("mlp:8x2", (5,), 3, seed=2).eval()
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    masks = dropout_masks({"relu1": 8}, seed=3)
    mask = masks["relu1"]
    assert int(mask.sum()) == 4 and torch.equal(mask, dropout_masks({"relu1": 8}, seed=3)["relu1"])
    with torch.no_grad():
        h1 = torch.relu(x @ model.fc1.weight.T + model.fc1.bias) * (2 * mask)
        h2 = torch.relu(h1 @ model.fc2.weight.T + model.fc2.bias)
        by_hand = h2 @ model.out.weight.T + model.out.bias
    torch.testing.assert_close(dropout_forward(model, x, masks), by_hand)


def test_dropout_stability_rows_are_the_seeded_draws():
    model = build_plain("mlp:8x2", (5,), 3, seed=2).eval()
    x, y = torch.randn(30, 5, generator=torch.Generator().manual_seed(1)), torch.arange(30) % 3
    table = dropout_stability(model, x.numpy(), y.numpy(), seed=9, draws=2)
    assert table.layer.tolist() == ["none", "relu1", "relu1", "relu2", "relu2", "all", "all"]
    with torch.no_grad():
        assert table.loss[0] == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-5)
        masks = dropout_masks({"relu2": 8}, seed=derive_seed(9, "draw", 1))
        h1 = torch.relu(model.fc1(x))
        out = model.out(torch.relu(model.fc2(h1)) * 2 * masks["relu2"])
    row = table[(table.layer == "relu2") & (table.draw == 1)].iloc[0]
    assert row.loss == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-5) and row.kept == 4 and row.units == 8
    assert row.error == pytest.approx(float((out.argmax(1) != y).float().mean()))


def test_the_dropout_path_passes_through_the_dropped_networks():
    a, b = build_plain("mlp:8x2", (5,), 3, seed=0), build_plain("mlp:8x2", (5,), 3, seed=1)
    route = dropout_path(a, b, seed=4)
    # A: drop layer 2 (switch), copy and drop layer 1 (free, switch); B beside A (free, switch, free); B backwards
    assert route.kinds == ["switch", "free", "switch", "free", "switch", "free", "switch", "free", "switch"]
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(2))
    keep_a = {f"relu{i}": torch.zeros(8).index_fill(0, route.keep_a[f"fc{i}"], 1.0) for i in (1, 2)}
    keep_b = {f"relu{i}": 1.0 - keep_a[f"relu{i}"] for i in (1, 2)}

    def run(params):
        with torch.no_grad():
            return torch.func.functional_call(a, params, (x,))

    # the corners: A, A with layer 2 dropped, A with layers 1-2 dropped, ..., B (by the hooks, independently)
    torch.testing.assert_close(run(route.waypoints[1]), dropout_forward(a, x, {"relu2": keep_a["relu2"]}))
    torch.testing.assert_close(run(route.waypoints[3]), dropout_forward(a, x, keep_a))
    torch.testing.assert_close(run(route.waypoints[5]), dropout_forward(b, x, keep_b))
    torch.testing.assert_close(run(route.waypoints[8]), dropout_forward(b, x, {"relu2": keep_b["relu2"]}))
    for name in _params(a):
        assert torch.equal(route.point(0.0)[name], _params(a)[name])
        assert torch.equal(route.point(1.0)[name], _params(b)[name])
    # along a free segment the output does not move; along a switch segment it is linear in t
    for k, kind in enumerate(route.kinds):
        start, end = run(route.waypoints[k]), run(route.waypoints[k + 1])
        inside = run(route.point((k + 0.3) / route.segments))
        torch.testing.assert_close(inside, start if kind == "free" else 0.7 * start + 0.3 * end)
        if kind == "free":
            torch.testing.assert_close(end, start)


# --------------------------------------------------------------------------- the finding on a tiny instance


def test_a_trained_curve_has_a_lower_barrier_than_the_straight_line():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 10)) * 2.0
    y = rng.integers(0, 4, 400)
    x = (centres[y] + rng.normal(size=(400, 10))).astype(np.float32)
    models = []
    for seed in (1, 2):
        model = build_plain("mlp:32x2", (10,), 4, seed=seed)
        train_plain(model, x, y.astype(np.int64), epochs=15, lr=0.05, seed=seed)
        models.append(model.eval())
    a, b = models
    ts = np.linspace(0, 1, 11)
    line = path_losses(a, lambda t: interpolate(a, b, t), ts, x, y)
    curve = train_bezier(a, b, x, y, epochs=30, seed=0, lr=0.05)
    bent = path_losses(a, curve.point, ts, x, y)
    line_barrier, curve_barrier = barrier(line.loss, ts), barrier(bent.loss, ts)
    assert line_barrier > 0.05  # the line crosses a ridge ...
    assert curve_barrier < 0.1 * line_barrier, (line_barrier, curve_barrier)  # ... the curve goes round it
    assert bent.loss.iloc[0] == line.loss.iloc[0] and bent.loss.iloc[-1] == line.loss.iloc[-1]


# --------------------------------------------------------------------------- bad input to the library


def test_models_of_different_architectures_are_a_config_error_naming_the_argument():
    a = build_plain("mlp:8x2", (5,), 3, seed=0)
    wider, deeper = build_plain("mlp:16x2", (5,), 3, seed=0), build_plain("mlp:8x3", (5,), 3, seed=0)
    with pytest.raises(ConfigError, match=r"^model_b: expected the architecture of model_a \('fc1.weight' of shape "
                                          r"\(8, 5\)\), got 'fc1.weight' of shape \(16, 5\)$"):
        check_same_architecture(a, wider)
    with pytest.raises(ConfigError, match="^model_b: expected the parameter names and shapes of model_a"):
        interpolate(a, deeper, 0.5)
    with pytest.raises(ConfigError, match="^model_b: expected the architecture of model"):
        train_bezier(a, deeper, np.zeros((4, 5), np.float32), np.zeros(4, np.int64), epochs=1, seed=0)
    with pytest.raises(ConfigError, match="^model_b: expected the architecture of model"):
        dropout_path(a, wider, seed=0)


def test_the_dropout_path_needs_an_mlp_with_even_widths():
    conv = build_plain("cnn:4-4", (1, 8, 8), 3, seed=0)
    with pytest.raises(ConfigError, match=r"^model: expected an MLP .* got a Conv2d at 'conv1'$"):
        dropout_path(conv, conv, seed=0)
    odd = build_plain("mlp:7x1", (5,), 3, seed=0)
    with pytest.raises(ConfigError, match="^model: expected hidden layers of even width .* got 'fc1' of width 7$"):
        mlp_layers(odd)
    norm = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="BatchNorm1d"):
        mlp_layers(norm)
    with pytest.raises(ConfigError, match="^bn_x: expected inputs"):
        path_losses(norm, lambda t: _params(norm), [0.0], np.zeros((3, 4), np.float32), np.zeros(3, np.int64))


def test_batch_norm_statistics_are_recomputed_at_each_point():
    torch.manual_seed(0)
    norm = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(3)) * 3 + 1
    y = torch.arange(50) % 2
    params = _params(norm)
    table = path_losses(norm, lambda t: params, [0.0], x.numpy(), y.numpy(), bn_x=x.numpy(), batch_size=64)
    with torch.no_grad():  # by hand: the batch's mean and unbiased variance (the running estimates of one batch)
        h = norm[0](x)
        h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=True) + 1e-5) * norm[1].weight + norm[1].bias
        out = norm[3](torch.relu(h))
    assert table.loss[0] == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-4)
    assert norm[1].running_mean.abs().sum() == 0  # the caller's model is left alone


# --------------------------------------------------------------------------- the study: config, run, report, CLI

TINY = dict(data="digits", model="mlp:16x1", epochs=2, curve_epochs=2, points=3, draws=1)


@pytest.mark.parametrize(
    "values, needle",
    [
        (dict(points=2), "--points: expected"),
        (dict(epochs=0), "--epochs: expected"),
        (dict(curve_lr=float("nan")), "--curve-lr: expected"),
        (dict(draws=0), "--draws: expected"),
        (dict(threads=1), "--threads"),  # placement is not config
    ],
)
def test_bad_config_is_one_line_naming_the_flag(values, needle):
    with pytest.raises(ConfigError) as info:
        make_config(**values)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_quick_is_a_small_setting_and_the_study_is_registered():
    cfg = STUDY.make_config({}, quick=True)
    assert (cfg.data, cfg.model, cfg.epochs, cfg.curve_epochs, cfg.points, cfg.draws) == (
        "digits", "mlp:256x2", 10, 40, 11, 3)
    assert STUDY.make_config({}).model == "mlp:1024x2"
    assert get_study("dynamics-connectivity") is STUDY and STUDY.command == "fitscope dynamics connectivity"


def test_the_verdict_states_the_finding_from_the_summary():
    from fitscope.report.dynamics_connectivity import verdict

    summary = {"line barrier (train loss)": 0.348, "curve barrier (train loss)": 0.00821,
               "dropout-path barrier (train loss)": 0.242, "curve barrier / line barrier": 0.00821 / 0.348,
               "curve barrier at most a tenth of the line's": True, "test error of A": 0.036, "test error of B": 0.031,
               "test error, half of one layer dropped: lowest mean": 0.056,
               "test error, half of one layer dropped: highest mean": 0.098}
    assert verdict(summary) == (
        "The trained Bezier curve's barrier (training loss) was 0.00821, 2.4% of the straight line's 0.348: at most "
        "a tenth of it. The dropout path's barrier was 0.242. With a random half of one hidden layer's units dropped "
        "(the rest doubled) the test error was 5.6%-9.8% on average over the draws, against at most 3.6% with "
        "nothing dropped.")


ARGS = ["dynamics", "connectivity", "--data", "digits", "--model", "mlp:16x1", "--epochs", "2", "--curve-epochs", "2",
        "--points", "3", "--draws", "1", "--threads", "1"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--model-b", "mlp:32x1"],
         "--model-b: expected the architecture of --model ('fc1.weight' of shape (16, 64)), got 'fc1.weight' of "
         "shape (32, 64)"),
        (["--model-b", "mlp:16x2"], "--model-b: expected the architecture of --model"),
        (["--points", "2"], "--points: expected"),
        (["--data", "nope"], "nope"),
        (["--model", "cnn:4-4"], "--model: expected an mlp spec"),
        (["--model", "mlp:15x1", "--model-b", "mlp:15x1"], "--model: expected hidden layers of even width"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert_refused(ARGS + ["--out", str(out)] + extra, out, needle, capsys)


def test_cli_runs_writes_the_tables_and_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and "curve barrier / line barrier" in captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "dynamics-connectivity" and sorted(meta["units"]) == ["endpoint-a", "endpoint-b", "paths"]
    paths, barriers = pd.read_parquet(out / "paths.parquet"), pd.read_parquet(out / "barriers.parquet")
    dropout = pd.read_parquet(out / "dropout.parquet")
    assert barriers.path.tolist() == ["line", "curve", "dropout"]
    assert (paths.path == "line").sum() == 3 and (paths.path == "dropout").sum() == 5 * 4 + 1  # 5 segments x 4
    line = paths[paths.path == "line"].sort_values("t")
    assert barriers.train_barrier[0] == pytest.approx(barrier(line.train_loss, line.t))
    assert sorted(dropout.layer.unique()) == ["none", "relu1"]  # one hidden layer: no "all" row
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "The trained Bezier curve&#39;s barrier" in html
    code, captured = run_main(["dynamics", "connectivity", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 3 finished units, training 0" in captured.err
