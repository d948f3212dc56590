"""The ensemble training engine: fitting, masks, records, early stopping, determinism, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fitscope.train.ensemble as engine
from fitscope.errors import ConfigError, DataError
from fitscope.models import build, flops_per_example
from fitscope.train import EnsembleResult, EpochSampler, TrainConfig, train_ensemble
from fitscope.train.steps import AutogradStep, MLPStep


def blobs(n: int = 120, d: int = 6, seed: int = 0, classes: int = 2):
    """Well-separated Gaussian blobs: train and test."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(classes, d))
    y = rng.integers(0, classes, size=2 * n)
    x = (centers[y] + rng.normal(size=(2 * n, d))).astype(np.float32)
    return x[:n], y[:n], x[n:], y[n:]


def random_problem(n: int = 48, d: int = 10, classes: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, classes, size=n)


# ------------------------------------------------------------------ learning


def test_fits_separable_problem_and_generalizes():
    x, y, xt, yt = blobs()
    cfg = TrainConfig(epochs=15, batch_size=32, lr=0.05)
    r = train_ensemble("mlp:32", x, y, config=cfg, seeds=[0, 1], x_test=xt, y_test=yt)
    assert r.train_acc.shape == (2, 15) and r.test_acc.shape == (2, 15)
    assert (r.train_acc[:, -1] == 1.0).all()
    assert (r.test_acc[:, -1] > 0.95).all()
    assert r.train_loss[:, -1].max() < r.train_loss[:, 0].min()


def test_random_labels_are_memorized():
    x, y = random_problem(n=64, d=20, classes=10)
    cfg = TrainConfig(epochs=150, batch_size=16, optimizer="adam", lr=3e-3, early_stop="fit", record=False)
    r = train_ensemble("mlp:128x2", x, y, config=cfg, seeds=[0, 1])
    assert (r.epochs_to_fit > 0).all()
    assert r.epochs_run == r.epochs_to_fit.max()  # early_stop="fit" stops at the last model's fit
    assert (r.train_acc[:, -1] == 1.0).all()
    assert r.records is None


@pytest.mark.parametrize(
    "spec, shape",
    [("cnn:4-8", (1, 8, 8)), ("resnet:4x2", (1, 8, 8)), ("cnn1d:4x2", (1, 16)), ("mlp:16", (2, 4, 4))],
)
def test_every_family_trains(spec, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, *shape)).astype(np.float32)
    y = rng.integers(0, 3, size=40)
    cfg = TrainConfig(epochs=2, batch_size=16, augment=True, lr=0.01)
    r = train_ensemble(spec, x, y, config=cfg, seeds=[0, 1], x_test=x[:10], y_test=y[:10], dropout=0.1)
    assert r.train_logits.shape == (2, 40, 3) and r.test_logits.shape == (2, 10, 3)
    assert np.isfinite(r.train_loss).all() and np.isfinite(r.test_loss).all()
    assert r.spec.startswith(spec.split(":")[0])


# ------------------------------------------------------------------ masks and labels


def test_sampler_equal_masks_is_a_permutation_of_own_rows():
    rows = [torch.tensor([0, 2, 4, 6, 8]), torch.tensor([1, 3, 5, 7, 9])]
    sampler = EpochSampler(10, rows, seeds=[1, 2], batch_size=2)
    for _ in range(3):
        index = sampler.epoch()
        assert index.shape == (2, 5) and sampler.steps == 3
        for k in range(2):
            assert sorted(index[k].tolist()) == rows[k].tolist()
        assert [b.shape[1] for b in sampler.batches(index)] == [2, 2, 1]


def test_sampler_unequal_masks_cycles_smaller_subsets():
    rows = [torch.arange(10), torch.tensor([3, 7, 8])]
    sampler = EpochSampler(10, rows, seeds=[1, 2], batch_size=4)
    assert sampler.steps == 3
    epochs = [sampler.epoch() for _ in range(5)]
    for index in epochs:
        assert index.shape == (2, 12)
        assert set(index[1].tolist()) == {3, 7, 8}
        assert all(b.shape == (2, 4) for b in sampler.batches(index))
    # 5 epochs x 12 = 60 draws = whole permutations: every row equally often.
    counts = [np.bincount(torch.cat(epochs, 1)[k].numpy(), minlength=10) for k in range(2)]
    assert (counts[0] == 6).all()
    assert (counts[1][[3, 7, 8]] == 20).all() and counts[1].sum() == 60


def test_sampler_order_depends_only_on_own_seed():
    a = EpochSampler(20, None, seeds=[5, 6], batch_size=4).epoch()
    b = EpochSampler(20, None, seeds=[6], batch_size=4).epoch()
    assert torch.equal(a[1], b[0])
    assert not torch.equal(a[0], a[1])


def test_rows_outside_a_mask_never_reach_a_model(monkeypatch):
    """Instrument the step: inputs carry their row id in feature 0."""
    n = 60
    x, y = random_problem(n=n, d=4, classes=3)
    x[:, 0] = np.arange(n)
    masks = np.ones((2, n), bool)
    masks[0, y == 0] = False  # model 0 never sees class 0
    masks[1, ::2] = False  # model 1 only odd rows
    seen = [set(), set()]
    real_call = engine.Objective.__call__

    def spy(self, xb, yb, idx):
        for k in range(2):
            ids = xb[k, :, 0].round().long().tolist()
            seen[k].update(ids)
            np.testing.assert_array_equal(yb[k].numpy(), y[ids])
            np.testing.assert_array_equal(idx[k].numpy(), ids)
        real_call(self, xb, yb, idx)

    monkeypatch.setattr(engine.Objective, "__call__", spy)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.001, record="full")
    r = train_ensemble("mlp:8", x, y, config=cfg, seeds=[0, 1], masks=masks)
    assert seen[0] == set(np.flatnonzero(masks[0]))
    assert seen[1] == set(np.flatnonzero(masks[1]))
    np.testing.assert_array_equal(r.masks, masks)
    # Accuracy on own rows uses the masks.
    correct = r.records.correct_array()[-1]
    for k in range(2):
        assert r.train_acc[k, -1] == pytest.approx(correct[k, masks[k]].mean())


def test_per_model_labels_match_separate_runs():
    x, y0 = random_problem(n=40, seed=1)
    _, y1 = random_problem(n=40, seed=2)
    cfg = TrainConfig(epochs=3, batch_size=8)
    both = train_ensemble("mlp:16", x, np.stack([y0, y1]), config=cfg, seeds=[3, 4], n_classes=5)
    alone = train_ensemble("mlp:16", x, y1, config=cfg, seeds=[4], n_classes=5)
    np.testing.assert_allclose(both.train_logits[1], alone.train_logits[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(both.train_acc[1], alone.train_acc[0])


# ------------------------------------------------------------------ records and bookkeeping


def test_records_shapes_dtypes_and_consistency():
    x, y = random_problem(n=37)
    xt, yt = random_problem(n=11, seed=5)
    cfg = TrainConfig(epochs=4, batch_size=8, record="full")
    r = train_ensemble("mlp:16", x, y, config=cfg, seeds=[0, 1, 2], x_test=xt, y_test=yt, n_classes=5)
    rec = r.records
    assert rec.loss.shape == (4, 3, 37) and rec.loss.dtype == np.float16
    assert rec.margin.shape == (4, 3, 37) and rec.margin.dtype == np.float16
    assert rec.correct.shape == (4, 3, 5) and rec.correct.dtype == np.uint8
    correct = rec.correct_array()
    assert correct.shape == (4, 3, 37) and correct.dtype == bool
    # Last epoch's records agree with the final logits.
    np.testing.assert_array_equal(correct[-1], r.train_logits.argmax(-1) == y)
    np.testing.assert_allclose(r.train_acc[:, -1], correct[-1].mean(1))
    np.testing.assert_allclose(r.train_loss, rec.loss.astype(np.float64).mean(2).T, rtol=2e-3, atol=1e-3)
    assert ((rec.margin[-1] > 0) == correct[-1]).mean() > 0.95  # fp16 rounding aside
    assert r.train_logits.dtype == np.float32 and r.test_logits.shape == (3, 11, 5)
    assert r.examples_seen == 3 * 37 * 4
    assert r.flops == 3 * flops_per_example("mlp:16", (10,), 5) * r.examples_seen
    assert r.epochs_run == 4 and r.seconds >= r.train_seconds > 0 and r.eval_seconds > 0
    for k in range(3):
        fit = np.flatnonzero(r.train_acc[k] == 1.0)
        assert r.epochs_to_fit[k] == (fit[0] + 1 if len(fit) else -1)


def test_no_test_set_gives_nan_and_empty_logits():
    x, y = random_problem(n=20)
    r = train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=2, batch_size=8), seeds=[0])
    assert np.isnan(r.test_acc).all() and np.isnan(r.test_loss).all()
    assert r.test_logits.shape == (1, 0, 5)


def test_progress_called_every_epoch():
    x, y = random_problem(n=20)
    calls = []
    train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=3, batch_size=8), seeds=[0, 1], progress=calls.append)
    assert [c["epoch"] for c in calls] == [1, 2, 3]
    for c in calls:
        assert {"epoch", "epochs", "train_acc_mean", "test_acc_mean", "seconds"} <= set(c)
        assert c["epochs"] == 3


def test_result_round_trip_through_npz(tmp_path):
    x, y = random_problem(n=30)
    masks = np.random.default_rng(0).random((2, 30)) < 0.7
    r = train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=2, batch_size=8, record="full"), seeds=[0, 1],
                       masks=masks, x_test=x[:5], y_test=y[:5])
    np.savez(tmp_path / "r.npz", **r.to_arrays())
    with np.load(tmp_path / "r.npz", allow_pickle=False) as arrays:
        back = EnsembleResult.from_arrays(arrays)
    np.testing.assert_array_equal(back.records.correct_array(), r.records.correct_array())
    np.testing.assert_array_equal(back.summary.correct_epochs, r.summary.correct_epochs)
    np.testing.assert_array_equal(back.summary.margin_sum, r.summary.margin_sum)
    np.testing.assert_array_equal(back.summary.at_epochs, [2])
    np.testing.assert_array_equal(back.summary.at.loss, r.summary.at.loss)
    np.testing.assert_array_equal(back.train_logits, r.train_logits)
    np.testing.assert_array_equal(back.masks, masks)
    assert back.config == r.config and TrainConfig(**back.config).epochs == 2


# ------------------------------------------------------------------ early stopping and schedules


def test_early_stop_patience_watches_test_loss():
    x, y = random_problem(n=40, seed=0)
    xt, yt = random_problem(n=40, seed=9)  # unrelated labels: test loss soon rises
    cfg = TrainConfig(epochs=60, batch_size=8, optimizer="adam", lr=0.01, early_stop="patience", patience=3,
                      record=False)
    r = train_ensemble("mlp:64", x, y, config=cfg, seeds=[0, 1], x_test=xt, y_test=yt)
    assert r.epochs_run < 60
    mean = r.test_loss.mean(0)
    best = int(np.argmin(mean))
    assert r.epochs_run == best + 1 + 3
    with pytest.raises(ConfigError, match="patience"):
        train_ensemble("mlp:8", x, y, config=cfg, seeds=[0])


def test_early_stop_none_runs_every_epoch():
    x, y, _, _ = blobs(n=40)
    r = train_ensemble("mlp:16", x, y, config=TrainConfig(epochs=6, batch_size=8), seeds=[0])
    assert r.epochs_run == 6 and r.epochs_to_fit[0] >= 1


def test_schedule_is_applied(monkeypatch):
    x, y = random_problem(n=16)
    seen = []
    real = engine.lr_at
    monkeypatch.setattr(engine, "lr_at", lambda cfg, e: seen.append(real(cfg, e)) or seen[-1])
    cfg = TrainConfig(epochs=4, batch_size=8, lr=1.0, schedule="step", step_size=2, gamma=0.5)
    train_ensemble("mlp:8", x, y, config=cfg, seeds=[0])
    assert seen == [1.0, 1.0, 0.5, 0.5]


# ------------------------------------------------------------------ determinism and independence


@pytest.mark.parametrize(
    "spec, shape, kwargs",
    [("mlp:32x2", (10,), dict(dropout=0.2)), ("cnn:4-8", (1, 8, 8), dict(dropout=0.2))],
)
def test_bitwise_deterministic(spec, shape, kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, *shape)).astype(np.float32)
    y = rng.integers(0, 4, size=40)
    cfg = TrainConfig(epochs=3, batch_size=8, augment=True, weight_decay=1e-4, record="full")
    a = train_ensemble(spec, x, y, config=cfg, seeds=[0, 1], x_test=x[:8], y_test=y[:8], **kwargs)
    b = train_ensemble(spec, x, y, config=cfg, seeds=[0, 1], x_test=x[:8], y_test=y[:8], **kwargs)
    for name in ("train_logits", "test_logits", "train_loss", "test_acc"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.records.loss, b.records.loss)
    np.testing.assert_array_equal(a.records.margin, b.records.margin)


@pytest.mark.parametrize(
    "spec, shape, kwargs",
    [("mlp:32x2", (10,), dict(dropout=0.2)), ("cnn:4-8", (1, 8, 8), dict(dropout=0.2))],
)
def test_model_does_not_depend_on_its_neighbours(spec, shape, kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, *shape)).astype(np.float32)
    y = rng.integers(0, 4, size=40)
    cfg = TrainConfig(epochs=3, batch_size=8, augment=True)
    pair = train_ensemble(spec, x, y, config=cfg, seeds=[1, 2], n_classes=4, **kwargs)
    alone = train_ensemble(spec, x, y, config=cfg, seeds=[2], n_classes=4, **kwargs)
    np.testing.assert_allclose(pair.train_logits[1], alone.train_logits[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pair.train_loss[1], alone.train_loss[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ hand-written MLP step


@pytest.mark.parametrize("spec, classes", [("mlp:32x2,dropout=0.3", 5), ("mlp:16-24-8", 70), ("mlp:8", 3)])
def test_hand_written_mlp_gradients_match_autograd(spec, classes):
    a = build(spec, (6,), classes, seeds=[0, 1, 2])
    b = build(spec, (6,), classes, seeds=[0, 1, 2])
    a.train()
    b.train()
    x = torch.randn(3, 100, 6)
    y = torch.randint(0, classes, (3, 100))
    MLPStep(a)(x, y)
    AutogradStep(b)(x, y)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_hand_written_and_autograd_training_agree(monkeypatch):
    x, y = random_problem(n=40)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.01, weight_decay=1e-3)
    fast = train_ensemble("mlp:16x2", x, y, config=cfg, seeds=[0, 1])
    monkeypatch.setattr(engine, "HAND_WRITTEN_MLP", False)
    slow = train_ensemble("mlp:16x2", x, y, config=cfg, seeds=[0, 1])
    np.testing.assert_allclose(fast.train_logits, slow.train_logits, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "change, error, words",
    [
        (dict(y=np.full(20, 7)), DataError, "n_classes"),
        (dict(y=-np.ones(20, int)), DataError, "y: expected non-negative integer class labels, got -1 at [0]"),
        (dict(y=np.zeros(19, int)), DataError, "shape"),
        (dict(y=np.zeros((3, 20), int)), DataError, "per model"),
        (dict(y=np.full(20, 0.5)), DataError, "integer"),
        (dict(x=np.zeros(20, np.float32)), DataError, "(n, *input_shape)"),
        (dict(x=np.full((20, 4), np.nan, np.float32)), DataError, "x: expected finite values, got nan at [0, 0]"),
        (dict(masks=np.ones((2, 19), bool)), ConfigError, "masks"),
        (dict(masks=np.stack([np.ones(20, bool), np.zeros(20, bool)])), ConfigError, "empty"),
        (dict(x_test=np.zeros((5, 4), np.float32)), DataError, "both"),
        (dict(x_test=np.zeros((5, 3), np.float32), y_test=np.zeros(5, int)), DataError, "x_test"),
        (dict(x_test=np.zeros((5, 4), np.float32), y_test=np.zeros(4, int)), DataError, "y_test"),
        (dict(seeds=[]), ConfigError, "seeds: expected at least one seed, got an empty sequence"),
        (dict(seeds=[0, -1]), ConfigError, "seeds[1]: expected an integer in [0, 2**32), got -1"),
        (dict(seeds=[0, 1.5]), ConfigError, "seeds[1]: expected an integer in [0, 2**32), got 1.5"),
        (dict(masks=np.full((2, 20), 2)), ConfigError, "masks: expected bool or 0/1 values, got 2 at [0, 0]"),
        (dict(config={"epochs": 2}), ConfigError, "TrainConfig"),
        (dict(spec="cnn:8"), ConfigError, "mlp"),
    ],
)
def test_validation_errors_are_one_line(change, error, words):
    kwargs = dict(spec="mlp:8", x=np.zeros((20, 4), np.float32), y=np.zeros(20, int),
                  config=TrainConfig(epochs=1), seeds=[0, 1], n_classes=3)
    kwargs.update(change)
    with pytest.raises(error) as info:
        train_ensemble(kwargs.pop("spec"), kwargs.pop("x"), kwargs.pop("y"), **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_keep_model_returns_the_trained_ensemble():
    x, y = random_problem(n=30)
    r = train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=2, batch_size=8), seeds=[0, 1], keep_model=True)
    assert r.model is not None and not r.model.training
    with torch.no_grad():
        logits = r.model.forward_shared(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, r.train_logits, rtol=1e-5, atol=1e-6)
    assert "model" not in r.to_arrays()


# ------------------------------------------------------------------ the records summary


def test_summary_is_the_default_and_keeps_no_epoch_records(monkeypatch):
    x, y = random_problem(n=30)

    def no_full_records(*args, **kwargs):
        raise AssertionError("every epoch's records were allocated without record='full'")

    monkeypatch.setattr(engine, "DeviceRecords", no_full_records)  # only "full" may store every epoch
    r = train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=7, batch_size=8), seeds=[0, 1])
    assert r.records is None and r.config["record"] == "summary"
    s = r.summary
    assert s.correct_epochs.shape == (2, 30) and s.correct_epochs.dtype == np.int32
    assert s.margin_sum.shape == (2, 30) and s.margin_sum.dtype == np.float64
    assert s.epochs == 7 and s.at_epochs.tolist() == [7] and s.at.loss.shape == (1, 2, 30)
    # the last epoch's snapshot is the final logits' statistics
    np.testing.assert_array_equal(s.snapshot(7)[1], r.train_logits.argmax(-1) == y)
    with pytest.raises(DataError, match=r"^epoch: expected one of the recorded epochs \(7\), got 3$"):
        s.snapshot(3)
    none = train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=2, batch_size=8, record="none"), seeds=[0])
    assert none.records is None and none.summary is None


def test_summary_equals_a_brute_force_loop_over_the_full_records():
    """record="full" keeps every epoch; the summary's accumulators are those epochs summed, its snapshots them."""
    x, y, xt, yt = blobs(n=60, classes=3)
    masks = np.random.default_rng(2).random((3, 60)) < 0.6
    cfg = dict(epochs=5, batch_size=8, optimizer="adam", lr=0.01, record_epochs=[2, 4, -1])
    full = train_ensemble("mlp:16", x, y, config=TrainConfig(**cfg, record="full"), seeds=[5, 6, 7], masks=masks,
                          x_test=xt, y_test=yt)
    summary = train_ensemble("mlp:16", x, y, config=TrainConfig(**cfg), seeds=[5, 6, 7], masks=masks,
                             x_test=xt, y_test=yt)
    rec = full.records
    counts = np.zeros((3, 60), np.int64)
    for e in range(rec.epochs):  # brute force: one epoch at a time
        counts += rec.correct_array()[e]
    for s in (full.summary, summary.summary):  # the same bits whether or not every epoch is kept too
        np.testing.assert_array_equal(s.correct_epochs, counts)
        assert s.epochs == 5 and s.at_epochs.tolist() == [2, 4, 5]
        for i, epoch in enumerate((2, 4, 5)):
            np.testing.assert_array_equal(s.at.loss[i], rec.loss[epoch - 1])
            np.testing.assert_array_equal(s.at.margin[i], rec.margin[epoch - 1])
            np.testing.assert_array_equal(s.at.correct[i], rec.correct[epoch - 1])
        # the float16 records round the margins the sum adds in float64
        np.testing.assert_allclose(s.margin_sum, rec.margin.astype(np.float64).sum(0), rtol=5e-3, atol=5e-3)
        np.testing.assert_allclose(s.margin_mean(), rec.margin.astype(np.float64).mean(0), rtol=5e-3, atol=5e-3)
    np.testing.assert_array_equal(full.summary.margin_sum, summary.summary.margin_sum)
    np.testing.assert_array_equal(full.train_logits, summary.train_logits)


def test_the_summary_leaves_out_epochs_that_early_stopping_never_reached():
    x, y, _, _ = blobs(n=40)
    cfg = TrainConfig(epochs=200, batch_size=8, optimizer="adam", lr=0.01, early_stop="fit", record_epochs=[1, 199])
    r = train_ensemble("mlp:32", x, y, config=cfg, seeds=[0])
    assert r.epochs_run < 199 and r.summary.at_epochs.tolist() == [1] and r.summary.epochs == r.epochs_run
    assert r.summary.correct_epochs.max() <= r.epochs_run
