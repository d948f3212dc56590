"""Fast training of K models at once, with per-example records.

Example (``x``: ``(n, *input_shape)`` float32, ``y``: ``(n,)`` int labels)::

    from fitscope.train import TrainConfig, train_ensemble
    result = train_ensemble("mlp:512x2", x, y, config=TrainConfig(epochs=20), seeds=range(16))
    result.train_acc.shape        # (16, epochs run)
    result.summary.correct_epochs   # (16, n): epochs each model got each row right
    full = train_ensemble("mlp:512x2", x, y, config=TrainConfig(epochs=20, record="full"), seeds=range(16))
    full.records.correct_array()    # (epochs run, 16, n) bool
"""

from fitscope.train.regularizers.augment_images import Augmenter, default_crop_padding, default_max_shift
from fitscope.train.config import TrainConfig
from fitscope.train.device import placement_device
from fitscope.train.ensemble import EpochSampler, predict_logits, train_ensemble
from fitscope.train.records import PerExampleRecords, RecordSummary, pack_correct, per_example_stats, unpack_correct
from fitscope.train.result import EnsembleResult
from fitscope.train.schedules import lr_at, lr_schedule
from fitscope.train.sklearn_oof import OOF_FAMILIES, OutOfFoldProbs, auto_families, sklearn_oof_probs
from fitscope.train.threads import configure_threads

__all__ = [
    "Augmenter",
    "EnsembleResult",
    "EpochSampler",
    "OOF_FAMILIES",
    "OutOfFoldProbs",
    "PerExampleRecords",
    "RecordSummary",
    "TrainConfig",
    "configure_threads",
    "default_crop_padding",
    "default_max_shift",
    "lr_at",
    "lr_schedule",
    "pack_correct",
    "per_example_stats",
    "placement_device",
    "predict_logits",
    "auto_families",
    "sklearn_oof_probs",
    "train_ensemble",
    "unpack_correct",
]
