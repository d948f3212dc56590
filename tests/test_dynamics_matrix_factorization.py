"""Deep matrix factorization against the nuclear norm: the library against formulas, autograd and cvxpy; the study."""

from __future__ import annotations

import json
import math

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
import torch

from cli_helpers import assert_refused, run_main
from fitscope.dynamics import (
    complete_deep, complete_nuclear, deep_factorization_gradients, effective_rank, init_factors, low_rank_matrix,
    nuclear_penalized_objective, observation_mask, relative_error, soft_impute,
)
from fitscope.errors import ConfigError, DataError
from fitscope.experiments import get_study
from fitscope.experiments.dynamics_matrix_factorization import (
    STUDY, complete_unit, dynamics_matrix_factorization, make_config, plan_tasks, prepare,
)
from fitscope.seeding import derive_seed

#: a tiny study: 8 x 8 of rank 1, two counts, depths 1 and 2 and the nuclear norm
TINY = dict(size=8, rank=1, observed=[30, 50], depths=[1, 2], max_steps=3000, solver_eps=1e-6)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _orthogonal(n: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q


# --------------------------------------------------------------------------- measures


def test_effective_rank_is_exp_of_the_entropy_of_the_normalised_singular_values():
    u, v = _orthogonal(6, 0), _orthogonal(5, 1)
    sigma = np.array([3.0, 1.0, 0.5, 0.0, 0.0])
    a = u[:, :5] @ np.diag(sigma) @ v.T
    p = sigma[:3] / sigma.sum()
    assert effective_rank(a) == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-10)
    assert effective_rank(u[:, :4] @ np.diag([2.0] * 4) @ v[:, :4].T) == pytest.approx(4.0, rel=1e-10)
    assert effective_rank(np.outer(np.arange(1.0, 5), np.ones(3))) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(DataError, match="matrix: expected a matrix with a non-zero singular value"):
        effective_rank(np.zeros((3, 3)))


def test_the_ground_truth_has_its_rank_and_unit_norm_and_the_mask_its_count():
    w = low_rank_matrix(12, 9, 3, seed=4)
    sv = np.linalg.svd(w, compute_uv=False)
    assert np.linalg.norm(w) == pytest.approx(1.0) and (sv[:3] > 1e-3).all() and (sv[3:] < 1e-12).all()
    mask = observation_mask(12, 9, 40, seed=5)
    assert mask.dtype == bool and mask.sum() == 40
    np.testing.assert_array_equal(mask, observation_mask(12, 9, 40, seed=5))
    assert relative_error(2 * w, w) == pytest.approx(1.0)


# --------------------------------------------------------------------------- deep factorization


def test_the_gradient_of_every_factor_matches_autograd_and_finite_differences():
    rows, cols, depth = 5, 4, 3
    factors = init_factors(rows, cols, depth, 0.7, seed=3)
    target = torch.from_numpy(low_rank_matrix(rows, cols, 2, seed=1))
    mask = torch.from_numpy(observation_mask(rows, cols, 11, seed=2).astype(np.float64))
    target = target * mask
    loss, grads, product = deep_factorization_gradients(factors, target, mask)
    assert [g.shape for g in grads] == [(4, 4), (4, 4), (5, 4)]
    torch.testing.assert_close(product, factors[2] @ factors[1] @ factors[0])

    leaves = [f.clone().requires_grad_(True) for f in factors]
    w = leaves[2] @ leaves[1] @ leaves[0]
    auto_loss = 0.5 * torch.sum((mask * (w - target)) ** 2)
    auto = torch.autograd.grad(auto_loss, leaves)
    assert loss == pytest.approx(float(auto_loss.detach()), rel=1e-12)
    for g, a in zip(grads, auto):
        torch.testing.assert_close(g, a, rtol=1e-10, atol=1e-12)

    # central differences on a few entries of each factor
    h = 1e-6
    for j in range(depth):
        for index in [(0, 0), (1, 2), (3, 1)]:
            plus = [f.clone() for f in factors]
            minus = [f.clone() for f in factors]
            plus[j][index] += h
            minus[j][index] -= h
            numeric = (deep_factorization_gradients(plus, target, mask)[0]
                       - deep_factorization_gradients(minus, target, mask)[0]) / (2 * h)
            assert numeric == pytest.approx(float(grads[j][index]), rel=1e-5, abs=1e-9)


def test_depth_one_from_a_tiny_init_is_the_min_norm_interpolant():
    truth = low_rank_matrix(10, 10, 2, seed=0)
    mask = observation_mask(10, 10, 45, seed=1)
    result = complete_deep(truth, mask, depth=1, init_scale=1e-9, lr=0.9, tol=1e-300, max_steps=100, seed=2)
    interpolant = np.where(mask, truth, 0.0)  # the least-Frobenius-norm matrix that agrees on the mask
    np.testing.assert_allclose(result.matrix, interpolant, atol=1e-8)
    # the unobserved entries never move: they are exactly the initial ones
    start = init_factors(10, 10, 1, 1e-9, seed=2)[0].numpy()
    np.testing.assert_array_equal(result.matrix[~mask], start[~mask])
    # each step multiplies the observed residual by (1 - lr)
    five = complete_deep(truth, mask, depth=1, init_scale=1e-9, lr=0.9, tol=1e-300, max_steps=5, seed=2)
    assert five.steps == 5 and five.loss == pytest.approx(0.5 * np.sum((truth - start)[mask] ** 2) * 0.01 ** 5,
                                                          rel=1e-6)


def test_gradient_descent_stops_at_the_tolerance_and_flags_divergence():
    truth = low_rank_matrix(6, 6, 1, seed=0)
    mask = observation_mask(6, 6, 20, seed=1)
    done = complete_deep(truth, mask, depth=2, init_scale=1e-2, lr=0.5, tol=1e-10, max_steps=20_000, seed=0,
                         record_every=50)
    assert done.converged and not done.diverged and done.loss < 1e-10 and done.steps < 20_000
    assert done.history_step[0] == 0 and done.history_step[-1] == done.steps and len(done.history_loss) > 2
    wild = complete_deep(truth, mask, depth=3, init_scale=1.0, lr=1.0, max_steps=500, seed=0)
    assert wild.diverged and not wild.converged and wild.steps < 500


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(depth=0), "depth: expected an integer in [1, 10], got 0"),
        (dict(depth=11), "depth: expected an integer in [1, 10], got 11"),
        (dict(lr=0.0), "lr: expected a number in (0, 1], got 0.0"),
        (dict(lr=1.5), "lr: expected a number in (0, 1], got 1.5"),
        (dict(init_scale=-1e-3), "init_scale: expected a number in (0, 1]"),
    ],
)
def test_bad_arguments_of_complete_deep_are_named(kwargs, needle):
    truth = low_rank_matrix(4, 4, 1, seed=0)
    args = dict(depth=2, seed=0) | kwargs
    with pytest.raises(ConfigError) as info:
        complete_deep(truth, observation_mask(4, 4, 8, seed=0), **args)
    assert needle in str(info.value)
    with pytest.raises(DataError, match="mask: expected at least one observed entry"):
        complete_deep(truth, np.zeros((4, 4), bool), depth=2, seed=0)


# --------------------------------------------------------------------------- convex baselines


def test_nuclear_norm_completion_recovers_an_easy_rank_one_matrix():
    truth = low_rank_matrix(12, 12, 1, seed=7)
    mask = observation_mask(12, 12, 110, seed=8)
    for solver, eps in (("scs", 1e-9), ("clarabel", 1e-6)):
        x = complete_nuclear(truth, mask, solver=solver, eps=eps)
        assert np.abs(x - truth).max() < 1e-4, solver


def test_cvxpy_and_soft_impute_solve_the_same_penalised_problem():
    truth = low_rank_matrix(8, 8, 2, seed=3)
    mask = observation_mask(8, 8, 36, seed=4)
    penalty = 0.02
    x = cp.Variable((8, 8))
    m = mask.astype(float)
    cp.Problem(cp.Minimize(0.5 * cp.sum_squares(cp.multiply(m, x - truth)) + penalty * cp.normNuc(x))).solve(
        solver="CLARABEL")
    ours = soft_impute(truth, mask, penalty=penalty, tol=1e-13, max_iter=50_000)
    np.testing.assert_allclose(ours, x.value, atol=5e-5)
    assert nuclear_penalized_objective(ours, truth, mask, penalty) == pytest.approx(
        nuclear_penalized_objective(x.value, truth, mask, penalty), rel=1e-6)
    # as the penalty falls, soft-impute approaches the nuclear-norm interpolant of complete_nuclear (distance ~ penalty)
    exact = complete_nuclear(truth, mask, solver="clarabel")
    z, gaps = None, []
    for lam in (1e-2, 1e-3, 1e-4):
        z = soft_impute(truth, mask, penalty=lam, start=z, tol=1e-10, max_iter=20_000)
        gaps.append(float(np.abs(z - exact).max()))
    assert gaps[-1] < 3e-4 and gaps[0] > 5 * gaps[1] > 25 * gaps[2], gaps


# --------------------------------------------------------------------------- the finding on a tiny instance


def test_depth_three_finds_a_completion_of_lower_effective_rank_than_the_nuclear_norm():
    truth = low_rank_matrix(20, 20, 1, seed=11)  # 39 degrees of freedom
    mask = observation_mask(20, 20, 70, seed=12)
    deep = complete_deep(truth, mask, depth=3, init_scale=1e-3, lr=0.5, tol=1e-10, max_steps=30_000, seed=13)
    nuclear = complete_nuclear(truth, mask, solver="scs", eps=1e-8)
    assert deep.converged
    assert effective_rank(deep.matrix) < 0.8 * effective_rank(nuclear)
    assert relative_error(deep.matrix, truth) < 0.5 * relative_error(nuclear, truth)


# --------------------------------------------------------------------------- the study


def test_a_unit_is_the_library_call_with_the_derived_seeds():
    cfg = make_config(**TINY)
    prepared = prepare(cfg)
    tasks = {t.key: t for t in plan_tasks(cfg)}
    assert sorted(tasks) == ["m000030-t0-d1-i0.001", "m000030-t0-d2-i0.001", "m000030-t0-nuclear",
                             "m000050-t0-d1-i0.001", "m000050-t0-d2-i0.001", "m000050-t0-nuclear"]
    task = tasks["m000030-t0-d2-i0.001"]
    out = complete_unit(task, **prepared.shared)
    truth = low_rank_matrix(8, 8, 1, seed=derive_seed(0, "truth"))
    np.testing.assert_array_equal(prepared.shared["truth"], truth)
    mask = observation_mask(8, 8, 30, seed=derive_seed(0, "mask", 30, 0))
    direct = complete_deep(truth, mask, depth=2, init_scale=1e-3, lr=0.5, tol=1e-8, max_steps=3000,
                           record_every=250, seed=derive_seed(0, "init", 2, "0.001", 0))
    np.testing.assert_array_equal(out["matrix"], direct.matrix)
    assert int(out["steps"]) == direct.steps


@pytest.mark.parametrize(
    "values, needle",
    [
        (dict(depths=[0]), "--depths: expected depths in [1, 10], got 0"),
        (dict(depths=[2, 11]), "--depths: expected depths in [1, 10], got 11"),
        (dict(size=10, rank=11), "--rank: expected at most --size = 10, got 11"),
        (dict(size=10, observed=[50, 101]), "--observed: expected counts in [1, 100] (size^2 entries), got 101"),
        (dict(observed=[0]), "--observed: expected counts of observed entries >= 1, got 0"),
        (dict(lr=0), "--lr: expected greater than 0, got 0"),
        (dict(lr=1.5), "--lr: expected less than or equal to 1, got 1.5"),
        (dict(init_scales=[0.0]), "--init-scales: expected initialisation scales in (0, 1], got 0.0"),
        (dict(solver="mosek"), "--solver"),
        (dict(threads=1), "--threads"),  # placement is not config
    ],
)
def test_bad_config_is_one_line_naming_the_flag(values, needle):
    with pytest.raises(ConfigError) as info:
        make_config(**values)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_quick_is_a_small_setting_and_the_study_is_registered():
    cfg = STUDY.make_config({}, quick=True)
    assert (cfg.size, cfg.rank, cfg.observed, cfg.depths) == (40, 2, [240, 320, 400, 560], [1, 2, 3])
    assert get_study("dynamics-matrix-factorization") is STUDY
    assert STUDY.command == "fitscope dynamics matrix-factorization"


def test_a_tiny_run_writes_tables_and_a_report_with_the_figures(tmp_path):
    run, outcome = dynamics_matrix_factorization(make_config(**TINY), tmp_path / "run", threads=1)
    completions = pd.read_parquet(run.path / "completions.parquet")
    curves = pd.read_parquet(run.path / "curves.parquet")
    assert completions.method.tolist() == ["depth 1", "depth 2", "nuclear norm"] * 2
    truth = prepare(make_config(**TINY)).shared["truth"]
    for key, error in zip(completions.unit, completions.error):  # the errors from the stored completions
        matrix = np.load(run.path / "units" / f"{key}.npz")["matrix"]
        assert error == pytest.approx(np.linalg.norm(matrix - truth) / np.linalg.norm(truth), rel=1e-12)
    assert len(curves) == 6 and run.meta["status"] == "done"
    html = (run.path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # error, effective rank, history, spectrum
    assert "observed entries" in html and outcome.summary["rank"] == 1


def test_the_verdict_states_the_finding_from_the_curves():
    from fitscope.report.dynamics_matrix_factorization import verdict

    def row(m, method, depth, error, rank):
        return dict(observed=m, method=method, depth=depth, error=error, effective_rank=rank)

    curves = pd.DataFrame([row(1000, "depth 2", 2, 0.6, 17.0), row(1000, "depth 3", 3, 0.01, 4.9),
                           row(1000, "nuclear norm", 0, 0.5, 11.0), row(2000, "depth 3", 3, 0.002, 4.9),
                           row(2000, "nuclear norm", 0, 0.005, 5.0)])
    assert verdict(dict(curves=curves)) == (
        "Depth 2 did not beat the nuclear norm on both error and effective rank at any of the 1 counts (at 1000: "
        "error 0.6 against 0.5, effective rank 17 against 11). Depth 3 found completions of lower reconstruction "
        "error and lower effective rank than the nuclear norm at 2 of 2 counts of observed entries (1000 and 2000; "
        "at 1000: error 0.01 against 0.5, effective rank 4.9 against 11). The fewest observed entries that gave an "
        "error below 1%: depth 3: 2000; nuclear norm: 2000.")
    assert verdict(dict(curves=curves[curves.method != "nuclear norm"])) == (
        "The fewest observed entries that gave an error below 1%: depth 3: 2000.")


# --------------------------------------------------------------------------- command line

ARGS = ["dynamics", "matrix-factorization", "--size", "6", "--rank", "1", "--observed", "20,30", "--depths", "1,2",
        "--max-steps", "200", "--solver", "none", "--threads", "1"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--depths", "0"], "--depths: expected depths in [1, 10], got 0"),
        (["--depths", "1,11"], "--depths: expected depths in [1, 10], got 11"),
        (["--rank", "7"], "--rank: expected at most --size = 6, got 7"),
        (["--observed", "37"], "--observed: expected counts in [1, 36] (size^2 entries), got 37"),
        (["--observed", "0,10"], "--observed: expected counts of observed entries >= 1, got 0"),
        (["--observed", "many"], "--observed: expected comma-separated integers"),
        (["--lr", "0"], "--lr: expected greater than 0, got 0.0"),
        (["--lr", "2"], "--lr: expected less than or equal to 1, got 2.0"),
        (["--init-scales", "2"], "--init-scales: expected initialisation scales in (0, 1], got 2.0"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert_refused(ARGS + ["--out", str(out)] + extra, out, needle, capsys)


def test_cli_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and "deep runs converged" in captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "dynamics-matrix-factorization" and len(meta["units"]) == 4
    code, captured = run_main(["dynamics", "matrix-factorization", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 4 finished units, training 0" in captured.err
    code, captured = run_main(["dynamics", "matrix-factorization", "--out", str(out), "--resume", "--lr", "0.25"],
                              capsys)
    assert code == 2 and "--lr 0.25 differs from the run's 0.5" in captured.err
