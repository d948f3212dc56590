"""On-tensor augmentation: shapes, seeding, and that outputs are crops/shifts of the input."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fitscope.train import Augmenter, default_crop_padding, default_max_shift


def _is_crop(out: torch.Tensor, img: torch.Tensor, pad: int) -> bool:
    """Whether ``out`` (C, H, W) is a (possibly flipped) crop of ``img`` padded by ``pad``."""
    c, h, w = img.shape
    padded = F.pad(img, (pad, pad, pad, pad))
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            crop = padded[:, oy : oy + h, ox : ox + w]
            if torch.equal(out, crop) or torch.equal(out, crop.flip(-1)):
                return True
    return False


def test_defaults():
    assert default_crop_padding(8) == 1 and default_crop_padding(32) == 4 and default_crop_padding(28) == 4
    assert default_max_shift(40) == 4 and default_max_shift(5) == 1


def test_image_crop_and_flip():
    x = torch.randn(2, 5, 3, 8, 8)
    aug = Augmenter((3, 8, 8), seeds=[1, 2])
    assert aug.pad == 1 and aug.flip and aug.active
    out = aug(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    for k in range(2):
        for b in range(5):
            assert _is_crop(out[k, b], x[k, b], 1)
    assert not torch.equal(out, x)


def test_image_seeded_and_per_model():
    x = torch.randn(2, 16, 1, 8, 8)
    a = Augmenter((1, 8, 8), seeds=[1, 2], crop_padding=2)
    b = Augmenter((1, 8, 8), seeds=[1, 2], crop_padding=2)
    single = Augmenter((1, 8, 8), seeds=[2], crop_padding=2)
    out_a, out_b, out_single = a(x), b(x), single(x[1:])
    assert torch.equal(out_a, out_b)
    assert torch.equal(out_a[1], out_single[0])  # model 2's draws do not depend on model 1
    assert not torch.equal(a(x), out_a)  # the stream moves on


def test_signal_shift():
    x = torch.randn(3, 4, 2, 40)
    aug = Augmenter((2, 40), seeds=[0, 1, 2])
    assert aug.pad == 4
    out = aug(x)
    assert out.shape == x.shape
    for k in range(3):
        for b in range(4):
            padded = F.pad(x[k, b], (4, 4))
            assert any(torch.equal(out[k, b], padded[:, o : o + 40]) for o in range(9))


def test_vectors_and_inactive_settings_are_identity():
    x = torch.randn(2, 3, 10)
    assert Augmenter((10,), seeds=[0, 1])(x) is x
    img = torch.randn(1, 3, 1, 4, 4)
    aug = Augmenter((1, 4, 4), seeds=[0], crop_padding=0, flip=False)
    assert not aug.active and aug(img) is img
