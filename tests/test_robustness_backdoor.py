"""BadNets poisoning and attack success: exact row and pixel counts, and attack success worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.robustness import (
    accuracy,
    additive_attack_success,
    apply_trigger,
    attack_success_rate,
    patch_mask,
    poison_rows,
    top_positions_overlap,
)


def test_patch_mask_places_the_patch_where_asked():
    mask = patch_mask((1, 8, 8), size=3)
    expected = np.zeros((8, 8))
    expected[5:, 5:] = 1
    np.testing.assert_array_equal(mask, expected)
    top_left = patch_mask((3, 8, 8), size=2, position="top-left")
    assert top_left.shape == (8, 8) and top_left[:2, :2].all() and top_left.sum() == 4
    at = patch_mask((1, 8, 8), size=2, position=(0, 5))
    assert at[0:2, 5:7].all() and at.sum() == 4
    signal = patch_mask((1, 40), size=4)  # a 1-D segment at the end of a signal
    assert signal.shape == (40,) and signal[36:].all() and signal.sum() == 4
    assert patch_mask((1, 40), size=4, position="top-left")[:4].all()


@pytest.mark.parametrize("kwargs, needle", [
    (dict(size=9), "trigger_size: expected a patch that fits the input 8x8 (at most 8), got 9"),
    (dict(size=3, position=(6, 6)), "trigger_position: expected 2 first indices with the 3-wide patch inside 8x8"),
    (dict(size=3, position=(0, -1)), "trigger_position"),
    (dict(size=3, position="middle"), "trigger_position: expected one of bottom-right"),
    (dict(size=0), "trigger_size: expected an integer >= 1, got 0"),
])
def test_a_trigger_larger_than_the_image_or_out_of_bounds_is_refused(kwargs, needle):
    with pytest.raises(ConfigError) as info:
        patch_mask((1, 8, 8), **kwargs)
    assert needle in str(info.value)


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8)).astype(np.float32) * 0.5, rng.integers(0, 4, n)


def test_poisoning_changes_exactly_the_fraction_of_rows_only_their_patch_pixels_and_labels():
    x, y = _data()
    mask = patch_mask((1, 8, 8), size=3)
    p = poison_rows(x, y, fraction=0.1, target=2, n_classes=4, mask=mask, pattern=1.0, seed=7)
    assert len(p.rows) == 20 and len(set(p.rows)) == 20  # round(0.1 x 200)
    changed_rows = np.flatnonzero((p.x != x).any(axis=(1, 2, 3)) | (p.y != y))
    np.testing.assert_array_equal(changed_rows, p.rows)
    assert (y[p.rows] != 2).all() and (p.y[p.rows] == 2).all()  # drawn among the other classes, relabelled
    changed_pixels = (p.x != x).any(axis=(0, 1))  # which positions changed anywhere
    np.testing.assert_array_equal(changed_pixels, mask.astype(bool))
    assert (p.x[p.rows][:, 0, 5:, 5:] == 1.0).all()
    # seeded: the same seed draws the same rows, another seed other rows
    again = poison_rows(x, y, fraction=0.1, target=2, n_classes=4, mask=mask, pattern=1.0, seed=7)
    np.testing.assert_array_equal(again.rows, p.rows)
    other = poison_rows(x, y, fraction=0.1, target=2, n_classes=4, mask=mask, pattern=1.0, seed=8)
    assert not np.array_equal(other.rows, p.rows)
    assert x.max() <= 0.5  # the input arrays were not touched


@pytest.mark.parametrize("kwargs, needle", [
    (dict(fraction=0.0), "poison_fraction: expected a number in (0, 1), got 0.0"),
    (dict(fraction=1.0), "poison_fraction: expected a number in (0, 1), got 1.0"),
    (dict(fraction=-0.2), "poison_fraction"),
    (dict(fraction=0.001), "poison_fraction: expected a share of the 200 rows between 1 row"),
    (dict(target=4), "target: expected an integer in [0, 3], got 4"),
])
def test_bad_poisoning_arguments_are_one_line_errors(kwargs, needle):
    x, y = _data()
    args = dict(fraction=0.1, target=1, n_classes=4, mask=patch_mask((1, 8, 8), size=2), pattern=1.0, seed=0)
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        poison_rows(x, y, **args)
    assert needle in str(info.value) and "\n" not in str(info.value)


class Toy(nn.Module):
    """Logits of a 2x2 one-channel input: class 0 = 5 x[1,1], class 1 = 2 x[0,0], class 2 = 2 x[0,1]."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([5.0, 2.0, 2.0]))

    def forward(self, x):
        return torch.stack([x[:, 0, 1, 1], x[:, 0, 0, 0], x[:, 0, 0, 1]], 1) * self.scale


def test_attack_success_by_hand_on_a_toy_classifier():
    model = Toy()
    x = np.zeros((5, 1, 2, 2), np.float32)
    x[0, 0, 0, 0] = 1.0  # class 1 logit 2
    x[1, 0, 0, 1] = 1.0  # class 2 logit 2
    x[2, 0, 0, 0] = 0.2  # class 1 logit 0.4
    x[3, 0, 1, 1] = 1.0  # already class 0
    x[4, 0, 0, 1] = 0.5  # class 2 logit 1
    y = np.array([1, 2, 1, 0, 2])
    assert accuracy(model, x, y) == 1.0
    mask = patch_mask((1, 2, 2), size=1)  # the bottom-right pixel
    # pattern 0.3: class 0's logit becomes 1.5, which beats 0.4 (row 2) and 1 (row 4) but not 2 (rows 0, 1);
    # row 3 is of the target class and does not count
    assert attack_success_rate(model, x, y, target=0, mask=mask, pattern=0.3) == pytest.approx(2 / 4)
    assert attack_success_rate(model, x, y, target=0, mask=mask, pattern=1.0) == 1.0  # 5 beats every 2
    assert attack_success_rate(model, x, y, target=0, mask=mask, pattern=0.0) == 0.0
    # additive: +0.3 on the patch pixel, then clipped to [0, 1]
    delta = np.zeros((1, 2, 2), np.float32)
    delta[0, 1, 1] = 0.3
    assert additive_attack_success(model, x, y, target=0, perturbation=delta) == pytest.approx(2 / 4)
    delta[0, 1, 1] = 5.0  # clipped to 1: logit 5
    assert additive_attack_success(model, x, y, target=0, perturbation=delta) == 1.0
    assert additive_attack_success(model, x, y, target=0, perturbation=delta, bounds=None) == 1.0
    stamped = apply_trigger(torch.from_numpy(x), mask, 0.3)
    assert isinstance(stamped, torch.Tensor) and float(stamped[0, 0, 1, 1]) == pytest.approx(0.3)


def test_top_positions_overlap_by_hand():
    mask = patch_mask((1, 4, 4), size=2)  # positions (2,2), (2,3), (3,2), (3,3)
    scores = np.zeros((4, 4))
    scores[2, 2], scores[3, 3], scores[0, 0], scores[1, 1] = 4, 3, 2, 1  # top 4: two on the patch
    out = top_positions_overlap(scores, mask)
    assert out == {"precision": 0.5, "iou": pytest.approx(2 / 6), "k": 4}
    assert top_positions_overlap(np.abs(mask[None] * 2.0), mask)["precision"] == 1.0  # input-shaped scores
