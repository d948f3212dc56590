"""The exp-lr study and its library: the schedule against brute force, the same function on a tiny run, refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cli_helpers import assert_refused, run_main
from fitscope.dynamics import (
    check_scale_invariant,
    equivalent_exp_schedule,
    is_scale_invariant,
    lr_schedule,
    predict_with_fresh_statistics,
)
from fitscope.errors import ConfigError
from fitscope.experiments import get_study
from fitscope.experiments.dynamics_exp_lr import (
    STUDY,
    dynamics_exp_lr,
    make_config,
    plan_pairs,
    prepare,
    scale_invariant_net,
    train_pair,
)

#: a tiny pair of runs: the MLP on 200 digits rows, 60 steps of a step schedule with momentum and a large weight decay
TINY = dict(rows=200, nets=["mlp:16x1"], steps=60, every=10, batch_size=32, weight_decay=0.02)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- the schedule against brute force


def test_without_momentum_at_a_constant_rate_the_schedule_is_the_closed_form():
    eta, lam = 0.3, 0.05
    s = equivalent_exp_schedule(np.full(50, eta), lam, 0.0)
    t = np.arange(50)
    np.testing.assert_allclose(s.lrs, eta * (1 - eta * lam) ** (-2 * t - 1), rtol=1e-12)
    np.testing.assert_allclose(s.scale, (1 - eta * lam) ** -np.arange(51), rtol=1e-12)


def test_with_momentum_the_growth_converges_to_the_papers_root():
    # Li & Arora: eta~_t = eta beta^(-2t-1), beta the larger root of x^2 - (1 + gamma - lambda eta) x + gamma = 0
    eta, lam, gamma = 0.1, 5e-3, 0.9
    s = equivalent_exp_schedule(np.full(3000, eta), lam, gamma)
    beta = max(np.roots([1.0, -(1 + gamma - lam * eta), gamma]).real)
    np.testing.assert_allclose(s.growth[-1], 1 / beta, rtol=1e-12)
    np.testing.assert_allclose(s.lrs[-1] / s.lrs[-2], beta ** -2, rtol=1e-10)
    assert abs(s.growth[0] - 1 / (1 - eta * lam)) < 1e-15  # the first step has no momentum yet


def _scale_invariant_loss(a: np.ndarray, b: np.ndarray):
    """L(w) = log(1 + exp(a.u)) + (b.u)^2 with u = w / |w|: invariant to w's scale; its gradient by hand."""
    def grad(w):
        norm = np.linalg.norm(w)
        u = w / norm
        du = a / (1 + np.exp(-a @ u)) + 2 * (b @ u) * b  # dL/du
        return (du - (du @ u) * u) / norm  # the chain rule through u = w/|w| (projection, then 1/|w|)
    return grad


def test_the_schedule_reproduces_weight_decay_step_by_step_by_hand():
    """Brute force: both recursions of torch.optim.SGD written out by hand on a scale-invariant loss."""
    rng = np.random.default_rng(0)
    a, b, w0 = rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)
    grad = _scale_invariant_loss(a, b)
    lam, gamma = 0.05, 0.8
    lrs = lr_schedule("step", 0.4, 40, milestones=(0.5, 0.75), decay=0.1)
    assert list(lrs[[0, 19, 20, 29, 30, 39]]) == pytest.approx([0.4, 0.4, 0.04, 0.04, 0.004, 0.004])
    s = equivalent_exp_schedule(lrs, lam, gamma)
    w, v, wt, vt = w0.copy(), np.zeros(5), w0.copy(), np.zeros(5)
    for t in range(40):
        v = gamma * v + grad(w) + lam * w  # weight decay, step schedule
        w = w - lrs[t] * v
        vt = gamma * vt + grad(wt)  # no weight decay, the equivalent rates
        wt = wt - s.lrs[t] * vt
        np.testing.assert_allclose(wt, s.scale[t + 1] * w, rtol=1e-10)  # the same direction, scaled by c_{t+1}
    assert s.scale[-1] > 1.5  # the weights of the exp-lr run grew
    # the same rates without weight decay (no exponential growth) do not follow the weight-decay run
    w2, v2 = w0.copy(), np.zeros(5)
    for t in range(40):
        v2 = gamma * v2 + grad(w2)
        w2 = w2 - lrs[t] * v2
    assert np.abs(w2 / np.linalg.norm(w2) - w / np.linalg.norm(w)).max() > 1e-3


def test_the_schedule_matches_torch_sgd_on_a_batch_norm_network_exactly_in_float64():
    torch.manual_seed(0)
    x, y = torch.randn(64, 6, dtype=torch.float64), torch.randint(0, 3, (64,))
    net = scale_invariant_net("mlp:8x2", (6,), 3, seed=1).double()
    twin = scale_invariant_net("mlp:8x2", (6,), 3, seed=1).double()
    lrs = lr_schedule("cosine", 0.5, 30)
    s = equivalent_exp_schedule(lrs, 0.03, 0.5)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5, momentum=0.5, weight_decay=0.03)
    opt2 = torch.optim.SGD([p for p in twin.parameters() if p.requires_grad], lr=0.5, momentum=0.5)
    for t in range(30):
        for o, m, lr in ((opt, net, lrs[t]), (opt2, twin, s.lrs[t])):
            o.param_groups[0]["lr"] = float(lr)
            o.zero_grad()
            nn.functional.cross_entropy(m(x[t % 4 * 16:(t % 4 + 1) * 16]), y[t % 4 * 16:(t % 4 + 1) * 16]).backward()
            o.step()
    torch.testing.assert_close(twin.fc1.weight, s.scale[-1] * net.fc1.weight, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(twin.fc2.weight, s.scale[-1] * net.fc2.weight, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    "lrs, wd, momentum, needle",
    [
        ([0.5], 2.0, 0.0, "--lr/--weight-decay: expected a learning rate and weight decay whose per-step shrink"),
        ([1.0], 1.0, 0.0, "a factor 0 at step 0"),
        ([0.1] * 10, 1.0, 0.95, "at step 4"),  # 1/r: 0.9, 0.794, 0.654, 0.398, < 0 (no real root with momentum)
        ([0.0], 0.1, 0.0, "lr_schedule: expected at least one finite learning rate > 0, got 0.0"),
        ([0.1], -1.0, 0.0, "--weight-decay: expected a finite weight decay >= 0, got -1.0"),
        ([0.1], 0.1, 1.0, "--momentum: expected a momentum in [0, 1), got 1.0"),
    ],
)
def test_a_schedule_out_of_range_is_refused(lrs, wd, momentum, needle):
    with pytest.raises(ConfigError) as info:
        equivalent_exp_schedule(lrs, wd, momentum)
    assert needle in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- scale invariance


def test_only_a_scale_invariant_network_passes_and_the_offenders_are_named():
    x = torch.randn(40, 6)
    good = scale_invariant_net("mlp:8x2", (6,), 3, seed=0)
    result = is_scale_invariant(good, x)
    assert result.invariant and result.max_difference < 1e-10
    assert check_scale_invariant(scale_invariant_net("cnn:4-4", (1, 8, 8), 3, seed=0), torch.randn(20, 1, 8, 8)) < 1e-10
    no_bn = scale_invariant_net("mlp:8x2", (6,), 3, seed=0, norm="none")
    assert is_scale_invariant(no_bn, x).offenders == ("fc1", "fc2")
    with pytest.raises(ConfigError, match=r"not invariant: 'out'"):
        check_scale_invariant(scale_invariant_net("mlp:8x2", (6,), 3, seed=0, head="trained"), x)
    # torch's default batch-norm eps (1e-5) breaks the invariance measurably: var + eps does not scale
    default_eps = nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8, affine=False), nn.ReLU(),
                                nn.Linear(8, 3)).requires_grad_(True)
    default_eps[3].requires_grad_(False)
    assert not is_scale_invariant(default_eps, x * 1e-2).invariant
    # a bias right before batch norm is removed by the mean: scaled together with its weight, still invariant
    with_bias = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, affine=False, eps=1e-12), nn.ReLU(), nn.Linear(8, 3))
    with_bias[3].requires_grad_(False)
    assert is_scale_invariant(with_bias, x).invariant


def test_fresh_statistics_are_the_batch_statistics_of_the_given_rows_and_the_model_is_restored():
    torch.manual_seed(0)
    net = scale_invariant_net("mlp:8x1", (6,), 3, seed=0).double()
    x_stats, x = torch.randn(50, 6, dtype=torch.float64), torch.randn(7, 6, dtype=torch.float64)
    net.norm1.running_mean.fill_(3.0)
    (got,) = predict_with_fresh_statistics(net, x_stats, [x])
    h = net.fc1(x_stats)
    mean, var = h.mean(0), h.var(0, unbiased=True)  # torch's running_var keeps the unbiased variance
    manual = net.out(torch.relu((net.fc1(x) - mean) / torch.sqrt(var + 1e-12)))
    torch.testing.assert_close(got, manual, rtol=1e-10, atol=1e-12)
    assert float(net.norm1.running_mean[0]) == 3.0 and net.training and net.norm1.momentum == 0.1


# --------------------------------------------------------------------------- the finding on a tiny run


def test_a_tiny_pair_computes_the_same_function_in_float64_and_drifts_in_float32():
    cfg = make_config(**TINY)
    prepared = prepare(cfg)
    f64, f32 = plan_pairs(cfg, prepared.state.data.input_shape, prepared.state.data.n_classes)
    assert (f64.precision, f32.precision) == ("float64", "float32") and f64.lrs[29:31] == pytest.approx((0.1, 0.01))
    out = train_pair(f64, **prepared.shared)
    assert max(out["diff_train"].max(), out["diff_test"].max()) < 1e-8  # the same function throughout
    np.testing.assert_array_equal(out["step"], [0, 10, 20, 30, 40, 50, 60])
    s = equivalent_exp_schedule(np.asarray(f64.lrs), 0.02, 0.9)
    np.testing.assert_allclose(out["norm_exp"] / out["norm_wd"], s.scale[out["step"]], rtol=1e-9)
    assert s.scale[-1] > 1.5 and out["loss_wd"][-1] < 0.75 * out["loss_wd"][0]  # weights grew, and it learned
    np.testing.assert_allclose(out["loss_exp"], out["loss_wd"], rtol=1e-9)
    assert out["diff_running"][-1] > 1e-4  # with running-average statistics the two runs differ
    # the control (the run against its copy rescaled by 3) stays at float error, like the twin
    assert 0 < out["diff_control"].max() < 1e-8
    out32 = train_pair(f32, **prepared.shared)
    assert max(out32["diff_test"].max(), out32["diff_train"].max()) > 1e3 * max(out["diff_test"].max(), 1e-16)


# --------------------------------------------------------------------------- config, report and registry


@pytest.mark.parametrize(
    "values, needle",
    [
        (dict(lr=0.0), "--lr: expected greater than 0"),
        (dict(lr=float("inf")), "--lr"),
        (dict(weight_decay=-0.1), "--weight-decay: expected greater than or equal to 0"),
        (dict(lr=1.0, weight_decay=1.0, momentum=0.0), "--lr/--weight-decay: expected a learning rate and weight decay"),
        (dict(schedule="linear"), "--schedule: expected one of step, constant, cosine, got 'linear'"),
        (dict(momentum=1.0), "--momentum"),
        (dict(nets=["resnet:8x1"]), "--nets: expected mlp or cnn specs without dropout"),
        (dict(nets=[]), "--nets: expected at least one model spec"),
        (dict(precisions=["float16"]), "--precisions"),
        (dict(milestones=[0.75, 0.5]), "--milestones: expected increasing fractions"),
        (dict(rows=10, batch_size=64), "--batch-size: expected at most --rows 10, got 64"),
    ],
)
def test_bad_config_is_one_line_naming_the_flag(values, needle):
    with pytest.raises(ConfigError) as info:
        make_config(**values)
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_quick_is_a_small_setting_and_the_study_is_registered():
    cfg = STUDY.make_config({}, quick=True)
    assert (cfg.nets, cfg.precisions, cfg.steps) == (["mlp:64x2"], ["float64", "float32"], 600)
    assert get_study("dynamics-exp-lr") is STUDY and STUDY.command == "fitscope dynamics exp-lr"


def test_a_tiny_run_writes_tables_and_a_report_with_the_figures(tmp_path):
    cfg = make_config(**{**TINY, "steps": 20, "nets": ["mlp:8x1", "cnn:4"], "precisions": ["float64"]})
    run, outcome = dynamics_exp_lr(cfg, tmp_path / "run", threads=1)
    runs = pd.read_parquet(run.path / "runs.parquet")
    trajectory = pd.read_parquet(run.path / "trajectory.parquet")
    assert runs.unit.tolist() == ["mlp-8-float64", "cnn-4-float64"] and runs.same_function.all()
    assert len(trajectory) == 2 * 3
    html = (run.path / "report.html").read_text()
    assert "computed the same function up to float error" in html and run.meta["status"] == "done"
    assert html.count("data:image/png;base64,") == 7  # difference, 2 x (loss, accuracy), norms, learning rates
    assert outcome.summary["float64: units below 1e-8"] == "2 of 2" and outcome.summary["float64: units within 10x their control"] == "2 of 2"


def test_the_verdict_states_the_finding_from_the_runs_table():
    from fitscope.report.dynamics_exp_lr import verdict

    def row(precision, diff, control, disagree=0.0):
        return dict(precision=precision, max_diff_train=diff / 2, max_diff_test=diff, max_diff_control=control,
                    within_float_error=diff <= 10 * control, max_disagree_test=disagree, final_scale=241.8)

    runs = pd.DataFrame([row("float64", 9e-11, 2e-11), row("float64", 1.5e-8, 1.2e-8), row("float32", 0.13, 0.1, 0.047)])
    assert verdict(dict(runs=runs)) == (
        "The weight-decay run and its exponential-learning-rate twin computed the same function up to float error: "
        "their softmax outputs on the training and test rows differed in float64 by at most 1.5e-08 (control "
        "1.2e-08); in float32 by at most 0.13 (control 0.1), classifying up to 4.7% of test rows differently. The "
        "control is the weight-decay run against its copy rescaled by 3, the same function in exact arithmetic. The "
        "exp-lr run's weights grew 241.8-fold.")
    far = pd.DataFrame([row("float64", 1e-3, 1e-12)])
    assert verdict(dict(runs=far)).startswith(
        "The softmax outputs of the weight-decay run and its exponential-learning-rate twin differed in float64 by up "
        "to 0.001, more than 10 times the control (1e-12) in 1 of 1 units.")


# --------------------------------------------------------------------------- command line

ARGS = ["dynamics", "exp-lr", "--rows", "100", "--nets", "mlp:8x1", "--steps", "8", "--every", "4",
        "--batch-size", "16", "--precisions", "float64", "--threads", "1"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--lr", "0"], "--lr: expected greater than 0, got 0.0"),
        (["--lr", "nan"], "--lr"),
        (["--weight-decay", "-1"], "--weight-decay: expected greater than or equal to 0, got -1.0"),
        (["--lr", "1", "--weight-decay", "1", "--momentum", "0"],
         "--lr/--weight-decay: expected a learning rate and weight decay whose per-step shrink factor stays > 0"),
        (["--schedule", "linear"], "--schedule: expected one of step, constant, cosine, got 'linear'"),
        (["--milestones", "soon"], "--milestones: expected comma-separated numbers"),
        (["--norm", "none"], "--norm (mlp:8x1): expected a scale-invariant network"),
        (["--head", "trained"], "not invariant: 'out'"),
        (["--rows", "100000"], "--rows: expected at most the 1437 training rows of digits"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert_refused(ARGS + ["--out", str(out)] + extra, out, needle, capsys)


def test_cli_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and "float64: largest prediction difference" in captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "dynamics-exp-lr" and sorted(meta["units"]) == ["mlp-8-float64"]
    assert all((out / name).is_file() for name in ("runs.parquet", "trajectory.parquet", "report.html"))
    code, captured = run_main(["dynamics", "exp-lr", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 1 finished units, training 0" in captured.err
    assert re.search(r"--steps 12 differs from the run's 8",
                     run_main(["dynamics", "exp-lr", "--out", str(out), "--resume", "--steps", "12"], capsys)[1].err)
