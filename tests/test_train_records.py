"""Per-example records, bit packing and storing results as arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitscope.errors import DataError
from fitscope.train import EnsembleResult, PerExampleRecords, pack_correct, per_example_stats, unpack_correct


def test_pack_round_trip_odd_length():
    rng = np.random.default_rng(0)
    correct = rng.random((3, 2, 13)) < 0.5
    packed = pack_correct(correct)
    assert packed.dtype == np.uint8 and packed.shape == (3, 2, 2)
    np.testing.assert_array_equal(unpack_correct(packed, 13), correct)


def test_records_put_and_trim():
    rec = PerExampleRecords.empty(5, 2, 11)
    loss = np.arange(22, dtype=np.float32).reshape(2, 11)
    correct = np.zeros((2, 11), bool)
    correct[1, ::3] = True
    rec.put(0, loss, correct, -loss)
    rec = rec.trimmed(1)
    assert rec.loss.shape == (1, 2, 11) and rec.loss.dtype == np.float16
    assert rec.margin.dtype == np.float16 and rec.correct.shape == (1, 2, 2)
    np.testing.assert_array_equal(rec.correct_array()[0], correct)
    assert rec.epochs == 1


def test_per_example_stats_by_hand():
    logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]])  # K=1, n=2, C=3
    labels = torch.tensor([0, 2])
    loss, correct, margin = per_example_stats(logits, labels)
    expected = torch.logsumexp(logits[0], 1) - logits[0, [0, 1], [0, 2]]
    torch.testing.assert_close(loss[0], expected)
    assert correct.tolist() == [[True, False]]
    torch.testing.assert_close(margin[0], torch.tensor([1.0, -2.0]))
    # Per-model labels (K, n).
    loss2, correct2, _ = per_example_stats(logits.expand(2, 2, 3), torch.tensor([[0, 2], [1, 1]]))
    assert correct2.tolist() == [[True, False], [False, True]]


def _result(with_records: bool, with_masks: bool) -> EnsembleResult:
    rng = np.random.default_rng(1)
    k, e, n, c = 2, 3, 10, 4
    rec = None
    if with_records:
        rec = PerExampleRecords.empty(e, k, n)
        for ep in range(e):
            rec.put(ep, rng.random((k, n)), rng.random((k, n)) < 0.5, rng.normal(size=(k, n)))
    return EnsembleResult(
        seeds=np.array([3, 4]), train_acc=rng.random((k, e)), train_loss=rng.random((k, e)),
        test_acc=np.full((k, e), np.nan), test_loss=np.full((k, e), np.nan),
        epochs_to_fit=np.array([2, -1]), records=rec,
        train_logits=rng.normal(size=(k, n, c)).astype(np.float32),
        test_logits=np.zeros((k, 0, c), np.float32), epochs_run=e, seconds=1.5, examples_seen=60,
        flops=1e6, train_seconds=1.0, eval_seconds=0.5,
        masks=rng.random((k, n)) < 0.7 if with_masks else None, spec="mlp:8", config={"epochs": 3},
    )


@pytest.mark.parametrize("with_records, with_masks", [(True, True), (False, False)])
def test_result_npz_round_trip(tmp_path, with_records, with_masks):
    result = _result(with_records, with_masks)
    path = tmp_path / "r.npz"
    np.savez(path, **result.to_arrays())
    with np.load(path, allow_pickle=False) as arrays:
        back = EnsembleResult.from_arrays(arrays)
    for name in ("seeds", "train_acc", "train_loss", "test_acc", "test_loss", "epochs_to_fit",
                 "train_logits", "test_logits"):
        np.testing.assert_array_equal(getattr(back, name), getattr(result, name))
    assert (back.epochs_run, back.seconds, back.examples_seen, back.flops) == (3, 1.5, 60, 1e6)
    assert back.spec == "mlp:8" and back.config == {"epochs": 3}
    if with_records:
        np.testing.assert_array_equal(back.records.correct_array(), result.records.correct_array())
        np.testing.assert_array_equal(back.records.loss, result.records.loss)
        np.testing.assert_array_equal(back.records.margin, result.records.margin)
        np.testing.assert_array_equal(back.masks, result.masks)
    else:
        assert back.records is None and back.masks is None


def test_from_arrays_missing_key():
    arrays = _result(False, False).to_arrays()
    del arrays["train_acc"]
    with pytest.raises(DataError, match="train_acc"):
        EnsembleResult.from_arrays(arrays)


def test_device_summary_accumulates_like_a_loop_over_epochs():
    """Counts, margin sums and snapshots against a brute-force loop over random epochs (K=3, n=21, E=6)."""
    from fitscope.train.records import DeviceSummary

    rng = np.random.default_rng(4)
    k, n, e = 3, 21, 6
    loss = rng.random((e, k, n)).astype(np.float32) * 3
    correct = rng.random((e, k, n)) < 0.6
    margin = rng.normal(size=(e, k, n)).astype(np.float32)
    acc = DeviceSummary(k, n, torch.device("cpu"), at=(2, 5), last=True)
    for epoch in range(e):
        acc.add(epoch, torch.from_numpy(loss[epoch]), torch.from_numpy(correct[epoch]), torch.from_numpy(margin[epoch]))
    s = acc.to_summary()
    counts = np.zeros((k, n), np.int64)
    total = np.zeros((k, n))
    for epoch in range(e):
        counts += correct[epoch]
        total += margin[epoch].astype(np.float64)
    np.testing.assert_array_equal(s.correct_epochs, counts)
    np.testing.assert_array_equal(s.margin_sum, total)  # the same additions in the same order
    np.testing.assert_array_equal(s.margin_mean(), (total / e).astype(np.float32))
    assert s.epochs == e and s.at_epochs.tolist() == [2, 5, 6]
    for i, epoch in enumerate((2, 5, 6)):
        np.testing.assert_array_equal(s.at.loss[i], loss[epoch - 1].astype(np.float16))
        np.testing.assert_array_equal(s.at.margin[i], margin[epoch - 1].astype(np.float16))
        np.testing.assert_array_equal(s.at.correct_array()[i], correct[epoch - 1])
        got = s.snapshot(epoch)
        np.testing.assert_array_equal(got[1], correct[epoch - 1])
    # the last epoch is not snapshotted twice when it is also asked for by number
    again = DeviceSummary(k, n, torch.device("cpu"), at=(6,), last=True)
    for epoch in range(e):
        again.add(epoch, *(torch.from_numpy(a[epoch]) for a in (loss, correct, margin)))
    assert again.to_summary().at_epochs.tolist() == [6]


def test_result_round_trip_keeps_the_summary(tmp_path):
    from fitscope.train.records import RecordSummary

    result = _result(False, True)
    rng = np.random.default_rng(7)
    at = PerExampleRecords.empty(2, 2, 10)
    at.put(0, rng.random((2, 10)), rng.random((2, 10)) < 0.5, rng.normal(size=(2, 10)))
    result.summary = RecordSummary(correct_epochs=rng.integers(0, 4, (2, 10)).astype(np.int32),
                                   margin_sum=rng.normal(size=(2, 10)), epochs=3,
                                   at_epochs=np.array([1, 3]), at=at)
    np.savez(tmp_path / "r.npz", **result.to_arrays())
    with np.load(tmp_path / "r.npz", allow_pickle=False) as arrays:
        back = EnsembleResult.from_arrays(arrays)
    assert back.records is None and back.summary.epochs == 3
    for name in ("correct_epochs", "margin_sum", "at_epochs"):
        np.testing.assert_array_equal(getattr(back.summary, name), getattr(result.summary, name))
    np.testing.assert_array_equal(back.summary.at.correct_array(), at.correct_array())
    np.testing.assert_array_equal(back.summary.at.loss, at.loss)
