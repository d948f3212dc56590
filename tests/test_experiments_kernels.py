"""The three kernel studies (UCI, small data, complexity) on tiny settings, with the real kernels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.experiments import kernels_complexity as kc
from fitscope.experiments import kernels_small_data as ksd
from fitscope.experiments import kernels_uci as ku
from fitscope.experiments.study import Progress


class Recorder(Progress):
    """Records what the runner reports: the work done after each step, and the units stored."""

    def __init__(self) -> None:
        self.total, self.done, self.units = 0, [], []

    def start(self, *, total: int, **facts) -> None:
        self.total = total

    def advance(self, done: int) -> None:
        self.done.append(done)

    def unit_done(self, key: str, *, stored: int, of: int) -> None:
        self.units.append(key)


def assert_moves_inside_units(progress: Recorder) -> None:
    """The bar moved between units (more distinct values than units), monotonically, up to the total."""
    assert progress.done == sorted(progress.done) and progress.done[-1] == progress.total
    assert len(set(progress.done)) > len(progress.units) + 1, progress.done


def write_uci_csv(path, n=48, seed=0):
    """A UCI-style table: 3 numeric features, the label (two classes, separable on feature 0) last."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 3))
    x[:, 0] += 3.0 * y
    lines = [",".join(f"{v:.5f}" for v in row) + f",{label}" for row, label in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


TINY_UCI = dict(depths=[1, 2], max_fixed=1, svm_C=[0.1, 10.0], gamma_factors=[0.5], rf_trees=10,
                rf_max_features=["sqrt"])


# --------------------------------------------------------------------------- UCI


def test_uci_splits_are_fixed_stratified_and_cover_every_row():
    y = np.repeat([0, 1, 2], 20)
    train, val = ku.validation_split(y, fraction=0.5, seed=3)
    assert len(train) == len(val) == 30 and not set(train) & set(val)
    assert np.bincount(y[val]).tolist() == [10, 10, 10]
    again = ku.validation_split(y, fraction=0.5, seed=3)
    assert np.array_equal(train, again[0])
    folds = ku.fold_splits(y, folds=4, seed=0)
    tests = np.concatenate([te for _, te in folds])
    assert len(folds) == 4 and sorted(tests.tolist()) == list(range(60))


def test_uci_summary_ranks_with_ties():
    results = pd.DataFrame(dict(
        dataset=["a", "a", "a", "b", "b", "b"],
        method=list(ku.METHODS) * 2,
        accuracy=[0.9, 0.8, 0.9, 0.5, 0.7, 0.6]))
    summary = ku.summarize(results).set_index("method")
    # a: NTK and Gaussian tie for first (1.5 each), RF third; b: RF first, Gaussian second, NTK third
    assert summary.loc["NTK-SVM", "mean_rank"] == pytest.approx((1.5 + 3) / 2)
    assert summary.loc["random forest", "mean_rank"] == pytest.approx((3 + 1) / 2)
    assert summary.loc["Gaussian SVM", "wins"] == 1 and summary.loc["NTK-SVM", "wins"] == 1
    assert summary.loc["NTK-SVM", "mean_accuracy"] == pytest.approx(0.7)
    check = ku.findings(results)[0]
    assert check["value"] == pytest.approx(0.7 - 0.75) and not check["holds"]


@pytest.mark.slow
def test_uci_study_on_a_builtin_set_and_a_csv_folder(tmp_path):
    folder = tmp_path / "uci"
    folder.mkdir()
    write_uci_csv(folder / "toy.csv")
    (folder / "notes.txt").write_text("not a table")
    cfg = ku.make_config(datasets=["iris"], csv_dir=str(folder), **TINY_UCI)
    progress = Recorder()
    run, outcome = ku.uci_study(cfg, tmp_path / "run", progress=progress)
    # one unit per data set, and the bar moves after every kernel and grid fit inside it
    assert sorted(progress.units) == ["csv-toy", "uci-iris"]
    assert progress.total == 2 * ku.evaluation_steps(cfg) == 2 * (4 + 1 + 1 + 3)
    assert_moves_inside_units(progress)
    results = pd.read_parquet(run.path / "results.parquet")
    assert "seconds" not in results  # wall times vary between runs: they go to timings.json
    timings = json.loads((run.path / "timings.json").read_text())["seconds per data set and method"]
    assert sorted(timings) == ["iris", "toy"] and sorted(timings["iris"]) == sorted(ku.METHODS)
    assert sorted(results.dataset.unique()) == ["iris", "toy"]
    assert sorted(results.method.unique()) == sorted(ku.METHODS)
    for row in results.itertuples():  # the accuracy is the mean of the fold accuracies it reports
        folds = json.loads(row.fold_accuracies)
        assert row.accuracy == pytest.approx(np.mean(folds), abs=1e-6)
        assert row.accuracy_std == pytest.approx(np.std(folds), abs=1e-6)
    # the toy set is separable on one feature: every method gets it nearly right
    assert (results[results.dataset == "toy"].accuracy > 0.85).all()
    assert (results[results.dataset == "iris"].accuracy > 0.8).all()
    ntk = results[(results.dataset == "iris") & (results.method == "NTK-SVM")].iloc[0]
    params = json.loads(ntk.params)
    assert params["depth"] in (1, 2) and params["fixed"] <= 1 and params["C"] in (0.1, 10.0)
    assert len(json.loads(ntk.fold_accuracies)) == 4
    grid = pd.read_parquet(run.path / "grid.parquet")
    # NTK: depth 1 (fixed 0, 1) + depth 2 (fixed 0, 1) = 4 kernels x 2 C; RF 1; Gaussian 1 x 2
    assert (grid[grid.dataset == "iris"].method.value_counts().to_dict()
            == {"NTK-SVM": 8, "random forest": 1, "Gaussian SVM": 2})
    html = (run.path / "report.html").read_text()
    assert "mean rank" in html.replace("_", " ") and "data:image/png;base64," in html
    assert run.meta["status"] == "done" and sorted(outcome.computed) == ["iris", "toy"]

    _, again = ku.uci_study(cfg, tmp_path / "run", resume=True)
    assert again.computed == [] and sorted(again.reused) == ["iris", "toy"]
    pd.testing.assert_frame_equal(again.results, outcome.results)


def test_uci_bad_csv_dir_and_bad_grid_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="--csv-dir .*does not exist"):
        ku.uci_study(ku.make_config(csv_dir=str(tmp_path / "missing"), **TINY_UCI), tmp_path / "a")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="at least one .csv"):
        ku.uci_study(ku.make_config(csv_dir=str(empty), **TINY_UCI), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match=r"--C \(svm_C\): expected"):
        ku.make_config(svm_C=[0.0, 1.0])
    with pytest.raises(ConfigError, match="datasets"):
        ku.make_config(datasets=["nope"])
    with pytest.raises(ConfigError, match="at least one data set"):
        ku.uci_study(ku.make_config(datasets=[], **TINY_UCI), tmp_path / "c")


# --------------------------------------------------------------------------- small data


def test_subsets_are_balanced_nested_and_seeded():
    y = np.repeat(np.arange(4), 25)
    subsets = ksd.draw_subsets(y, [4, 6, 12], 4, seeds=[0, 1])
    for seed in (0, 1):
        counts = np.bincount(y[subsets[(6, seed)]], minlength=4)
        assert counts.sum() == 6 and counts.min() == 1 and counts.max() == 2
        assert set(subsets[(4, seed)]) <= set(subsets[(6, seed)]) <= set(subsets[(12, seed)])
        assert np.bincount(y[subsets[(12, seed)]]).tolist() == [3, 3, 3, 3]
    assert not np.array_equal(subsets[(12, 0)], subsets[(12, 1)])
    again = ksd.draw_subsets(y, [4, 6, 12], 4, seeds=[0, 1])
    assert all(np.array_equal(subsets[k], again[k]) for k in subsets)
    with pytest.raises(ConfigError, match="at least one example per class"):
        ksd.draw_subsets(y, [3], 4, seeds=[0])
    with pytest.raises(ConfigError, match="has 25"):
        ksd.draw_subsets(y, [200], 4, seeds=[0])


def test_kernel_regression_on_separable_points_is_exact():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    y = np.array([0, 0, 1, 1])
    gram = x @ x.T
    cross = np.array([[1.0, 0.05], [0.05, 1.0]]) @ x.T
    acc = ksd.kernel_regression_accuracy(gram, cross, y, np.array([0, 1]), n_classes=2, ridge=1e-3)
    assert acc == 1.0


def write_bars_npz(path, n=24, seed=0):
    """Tiny 6x6 images: class 0 a horizontal bar, class 1 a vertical bar, at random rows/columns, plus noise."""
    rng = np.random.default_rng(seed)

    def draw(m):
        y = np.arange(m) % 2
        x = 0.1 * rng.random((m, 1, 6, 6))
        for i, label in enumerate(y):
            j = rng.integers(1, 5)
            if label == 0:
                x[i, 0, j, :] += 1.0
            else:
                x[i, 0, :, j] += 1.0
        return x.astype(np.float32), y

    x_train, y_train = draw(n)
    x_test, y_test = draw(n)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.mark.slow
def test_small_data_study_with_real_cntk_and_a_network(tmp_path):
    data = write_bars_npz(tmp_path / "bars.npz")
    cfg = ksd.make_config(data=str(data), sizes=[2, 6], seeds=[0, 1], kernels=["cntk", "cntk-lap+patches"], depth=1,
                          lap_window=2, patches=8, models=["cnn:8"], steps=30)
    progress = Recorder()
    run, outcome = ksd.small_data_study(cfg, tmp_path / "sd", progress=progress)
    assert_moves_inside_units(progress)
    results = pd.read_parquet(run.path / "results.parquet")
    assert len(results) == 3 * 2 * 2  # (2 kernels + 1 network) x 2 sizes x 2 seeds: one row per network
    assert set(results.kind) == {"kernel", "network"}
    kernels = results[(results.kind == "kernel") & (results.seed == 0)]
    # bars are told apart from 6 examples well above chance (0.5); the LAP + patches kernel, which sees
    # bars at every position alike, best
    at6 = kernels[kernels["size"] == 6].set_index("method").test_acc
    assert (at6 > 0.6).all() and at6.filter(like="patches").iloc[0] >= 0.75
    # a test accuracy is a count of the 24 test images over 24
    np.testing.assert_allclose(results.test_acc * 24, np.round(results.test_acc * 24), atol=1e-9)
    # one unit per readout, one per (model, size): the seeds of a size train as one batched ensemble
    assert sorted(outcome.computed) == ["kernel-lap", "kernel-none", "train-cnn_8-n2", "train-cnn_8-n6"]
    assert progress.units.count("train-cnn_8-n6") == 1
    nets = results[results.kind == "network"]
    assert sorted(zip(nets["size"], nets.seed)) == [(2, 0), (2, 1), (6, 0), (6, 1)]
    assert (nets[nets["size"] == 6].epochs == ksd.train_config(cfg, 6).epochs).all()  # one step per epoch
    assert ksd.train_config(cfg, 6).epochs == 30  # the step budget
    stored = run.load_unit("train-cnn_8-n6")
    assert stored["seeds"].tolist() == [0, 1] and stored["test_acc"].shape == stored["epochs_to_fit"].shape == (2,)
    at = nets.set_index(["size", "seed"])
    assert [at.loc[(6, s), "test_acc"] for s in (0, 1)] == stored["test_acc"].tolist()  # each network its own
    assert "seconds" not in results
    timings = json.loads((run.path / "timings.json").read_text())["seconds per unit"]
    assert sorted(timings) == sorted(outcome.computed) and all(v > 0 for v in timings.values())
    fit = ksd.fit_table(outcome.results, outcome.seconds)
    assert fit.models.tolist() == [2, 2] and fit.seconds.tolist() == [timings["train-cnn_8-n2"],
                                                                       timings["train-cnn_8-n6"]]
    html = (run.path / "report.html").read_text()
    assert "data:image/png;base64," in html and "n = 2" in html
    _, again = ksd.small_data_study(cfg, tmp_path / "sd", resume=True)
    assert again.computed == [] and len(again.reused) == 4
    pd.testing.assert_frame_equal(again.results, outcome.results)


def test_networks_of_a_size_train_as_one_ensemble_each_on_its_own_subset():
    # The batched unit gives every network what it would get alone (up to float summation order): its own
    # subset, seed and batch order; test accuracy is each network's own.
    import torch

    from fitscope.train import predict_logits, train_ensemble

    rng = np.random.default_rng(3)
    x_union = rng.random((30, 1, 6, 6))
    y_union = np.arange(30) % 3
    x_test, y_test = rng.random((40, 1, 6, 6)), rng.integers(0, 3, 40)
    x_union[np.arange(30), 0, y_union, :] += 1.0  # class c: a bright row c
    x_test[np.arange(40), 0, y_test, :] += 1.0
    cfg = ksd.make_config(models=["cnn:4"], steps=12, batch_size=4)
    subsets = [np.array([0, 1, 2, 4, 9, 13]), np.array([3, 5, 7, 8, 20, 29]), np.array([1, 2, 6, 10, 11, 27])]
    rows = np.unique(np.concatenate(subsets))
    job = ksd.EnsembleJob("train-cnn_4-n6", "cnn:4", 6, (0, 1, 2), (11, 12, 13), rows,
                          np.stack([np.isin(rows, s) for s in subsets]), 3, cfg)
    seen = []
    out = ksd.ensemble_task(job, x_union=x_union, y_union=y_union, x_test=x_test, y_test=y_test,
                            progress=seen.append)
    epochs, steps = ksd.train_config(cfg, 6).epochs, ksd.steps_per_epoch(cfg, 6)
    assert seen == [3 * steps * e for e in range(1, epochs + 1)] and int(out["epochs"]) == epochs == 6
    assert out["seeds"].tolist() == [0, 1, 2] and out["test_acc"].shape == out["train_acc"].shape == (3,)
    tests = torch.from_numpy(x_test.astype(np.float32))
    for k, subset in enumerate(subsets):
        alone = train_ensemble("cnn:4", x_union[subset].astype(np.float32), y_union[subset], seeds=[11 + k],
                               config=ksd.train_config(cfg, 6), n_classes=3, keep_model=True)
        logits = predict_logits(alone.model.eval(), tests, 512).numpy()[0]
        assert out["test_acc"][k] == pytest.approx(float((logits.argmax(1) == y_test).mean()), abs=1.5 / 40)
        assert out["train_acc"][k] == pytest.approx(alone.train_acc[0, -1])
        assert out["epochs_to_fit"][k] == alone.epochs_to_fit[0]


def test_base_kernel_in_pieces_matches_whole_matrices_and_reports_progress(monkeypatch):
    from fitscope.kernels import ntk

    rng = np.random.default_rng(0)
    x_union, x_test = rng.random((5, 1, 6, 6)), rng.random((7, 1, 6, 6))
    cfg = ksd.make_config(depth=1, models=[])
    monkeypatch.setattr(ksd, "CROSS_ROWS", 3)  # 3 pieces of the cross matrix: 3 + 3 + 1 test rows
    seen = []
    base = ksd.base_kernel("gap", x_union, x_test, cfg, progress=seen.append)
    assert seen == [15, 30, 45, 50, 57] and seen[-1] == ksd.kernel_work(5, 7)
    whole = ntk(x_test, x_union, arch="conv", depth=1, pool="gap", filter_size=3)
    np.testing.assert_allclose(base["cross"], whole, rtol=1e-12)
    np.testing.assert_allclose(base["gram"], ntk(x_union, arch="conv", depth=1, pool="gap"), rtol=1e-12)
    assert base["test_diag"].shape == (7,)
    np.testing.assert_allclose(base["test_diag"], np.diag(ntk(x_test, arch="conv", depth=1, pool="gap")), rtol=1e-10)


def test_small_data_rejects_vectors_and_bad_sizes(tmp_path):
    with pytest.raises(ConfigError, match="images"):
        ksd.small_data_study(ksd.make_config(data="iris", models=["mlp:8"]), tmp_path / "a")
    with pytest.raises(ConfigError, match="sizes"):
        ksd.make_config(sizes=[0, 10])
    with pytest.raises(ConfigError, match="at least one example per class"):
        ksd.small_data_study(ksd.make_config(sizes=[5], seeds=[0], models=["cnn:8"]), tmp_path / "b")
    with pytest.raises(ConfigError, match="kernels"):
        ksd.make_config(kernels=["rbf"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- complexity


def test_complexity_data_is_binary_unit_norm_and_subsampled():
    from fitscope.data import load

    cfg = kc.make_config(classes=[3, 8], max_examples=100)
    data = kc.prepare_data(load("digits", seed=0), cfg)
    assert data.n_classes == 2 and len(data.y_train) == 100 and set(data.y_test) == {0, 1}
    assert np.allclose(np.linalg.norm(data.x_train, axis=1), 1.0, atol=1e-5)
    rows, labels = kc.noisy_labels(data, kc.make_config(classes=[3, 8], noise_levels=[0, 1], seeds=[0, 1]))
    assert labels.shape == (4, 100) and np.array_equal(labels[0], data.y_train)
    assert 0.3 < rows[-1]["labels_changed"] < 0.7  # random binary labels: about half change
    with pytest.raises(ConfigError, match="classes"):
        kc.prepare_data(load("digits", seed=0), kc.make_config(classes=[0, 12]))


@pytest.mark.slow
def test_complexity_study_measure_grows_with_noise(tmp_path):
    cfg = kc.make_config(max_examples=120, noise_levels=[0.0, 1.0], seeds=[0], model="mlp:128x1", epochs=150)
    progress = Recorder()
    run, outcome = kc.complexity_study(cfg, tmp_path / "c", progress=progress)
    # the measure, then one ensemble per noise level; the bar moves per label vector and per epoch
    assert progress.units == ["measure", "train-p0", "train-p1"]
    assert_moves_inside_units(progress)
    results = pd.read_parquet(run.path / "results.parquet")
    assert list(results.noise) == [0.0, 1.0]
    true, rand = results.measure.to_numpy()
    assert rand > true > 0  # random labels are harder to fit with a small-norm solution
    assert results.test_error.iloc[0] < 0.1 and results.test_error.iloc[1] > results.test_error.iloc[0] + 0.1
    html = (run.path / "report.html").read_text()
    assert "data:image/png;base64," in html and "Measure, test error" in html
    # each level stops once its own models fit: true labels fit sooner than random ones
    fit = results.set_index("noise").epochs_to_fit
    assert fit[0.0] > 0 and (fit[1.0] == -1 or fit[1.0] > fit[0.0]), fit.to_dict()
    assert (results.epochs_run >= results.epochs_to_fit).all()
    _, again = kc.complexity_study(cfg, tmp_path / "c", resume=True)
    assert again.computed == [] and sorted(again.reused) == ["measure", "train-p0", "train-p1"]
    pd.testing.assert_frame_equal(again.results, outcome.results)


def test_complexity_noise_outside_unit_interval_is_rejected():
    with pytest.raises(ConfigError, match="noise_levels"):
        kc.make_config(noise_levels=[0.0, 1.5])
    with pytest.raises(ConfigError, match="classes"):
        kc.make_config(classes=[1])


def test_complexity_all_classes_and_no_thread_setting_of_its_own():
    assert kc.make_config(classes="all").classes is None and kc.make_config(classes=None).classes is None
    assert kc.make_config(classes=[1, 0]).classes == [0, 1]
    # torch threads are the runner's (--threads), not a study setting
    with pytest.raises(ConfigError, match="threads"):
        kc.make_config(threads=2)
    with pytest.raises(ConfigError, match="threads"):
        ksd.make_config(threads=2)


def test_complexity_plan_splits_training_by_noise_level():
    cfg = kc.make_config(max_examples=30, noise_levels=[0.0, 0.5, 1.0], seeds=[3, 4], epochs=7)
    prepared = kc.prepare(cfg)
    units = kc.plan(cfg, prepared)
    assert [u.key for u in units] == ["measure", "train-p0", "train-p0.5", "train-p1"]
    assert units[0].work == 6 and all(u.work == 2 * 7 for u in units[1:])
    job = units[2].task
    assert [prepared.state.rows[i]["noise"] for i in job.index] == [0.5, 0.5]
    assert [prepared.state.rows[i]["seed"] for i in job.index] == [3, 4]
    assert prepared.shared["labels"].shape == (6, 30)
