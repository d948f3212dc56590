"""The training configuration: one validated, typed object per ensemble run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from fitscope.errors import ConfigError
from fitscope.train.regularizers import Parts
from fitscope.validation import message, shorten

_DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}
_DEFAULT_GAMMA = {"step": 0.1, "exponential": 0.95}


def _one_line(err: ValidationError, fields: list[str]) -> str:
    """pydantic's first error in the one message form: ``<field>: expected <what> (TrainConfig), got <value>``."""
    first = err.errors()[0]
    inner = (first.get("ctx") or {}).get("error")
    if isinstance(inner, ConfigError):  # a validator's own one-line message (the regularizers' checks)
        return str(inner)
    name = ".".join(str(p) for p in first["loc"]) or "config"
    if first["type"] == "extra_forbidden":
        return message("TrainConfig", f"one of its fields ({', '.join(fields)})", f"unknown field {name!r}")
    msg = first["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
    msg = msg[0].lower() + msg[1:]
    if msg.startswith(("greater", "less")):
        msg = "a value " + msg
    return message(name, f"{msg} (a TrainConfig field)", shorten(first.get("input")))


class TrainConfig(BaseModel):
    """How to train an ensemble (:func:`fitscope.train.train_ensemble`).

    Unknown fields are rejected; a bad value raises a one-line
    :class:`~fitscope.errors.ConfigError` naming the field, what was expected
    and what was given.

    Attributes:
        epochs: epoch budget (> 0).
        batch_size: examples per model per step (> 0).
        optimizer: ``"sgd"`` (momentum, no Nesterov) or ``"adam"``.
        lr: learning rate; default 0.05 for sgd, 1e-3 for adam.
        momentum: SGD momentum in ``[0, 1)`` (ignored by adam).
        weight_decay: L2 weight decay (>= 0), on every parameter.
        augment: random crop (zero padding ``crop_padding``) and horizontal
            flip for images, random shift by up to ``max_shift`` for 1-D
            signals; ignored for vectors.
        crop_padding: padding of the random crop; default ``max(1, round(H / 8))``
            (1 for 8x8, 4 for 32x32).
        flip: whether image augmentation flips horizontally.
        max_shift: largest shift of a signal; default ``max(1, L // 10)``.
        schedule: learning-rate schedule over epochs: ``"constant"``,
            ``"step"`` (times ``gamma`` every ``step_size`` epochs),
            ``"cosine"`` (to 0 over ``epochs``), ``"exponential"`` (times
            ``gamma`` every epoch).
        step_size: epochs between decays of the step schedule.
        gamma: decay factor; default 0.1 (step), 0.95 (exponential).
        early_stop: ``"none"``; ``"fit"``: stop once every model is 100%
            accurate on its own training rows; ``"patience"``: stop when the
            mean test loss over models has not improved for ``patience`` epochs.
        patience: epochs without improvement before ``"patience"`` stops.
        record: which per-example records of the training rows to keep
            (:mod:`fitscope.train.records`): ``"summary"`` (default) accumulates,
            as the epochs run, per (model, row) the epochs correct, the margin
            summed over epochs and the loss, correctness and margin at
            ``record_epochs`` (``result.summary``; memory ``O(K n)``, not
            growing with epochs); ``"full"`` also keeps loss, correctness and
            margin of every epoch (``result.records``, ``O(E K n)``);
            ``"none"`` keeps neither. ``True`` means ``"full"`` (every epoch,
            as before) and ``False`` ``"none"``.
        record_epochs: the 1-based epochs whose per-example loss, correctness
            and margin the summary keeps; ``-1`` is the last epoch run (which
            early stopping decides). Default ``[-1]``. An epoch not reached
            (early stop) is left out.
        eval_batch_size: rows per chunk in the per-epoch evaluation pass.
        regularizers: the parts of the training objective
            (:mod:`fitscope.train.regularizers`), as text in their grammar
            (``"elr:lambda=3,beta=0.7+mixup:alpha=0.2"``; ``"ce"`` or empty:
            plain cross-entropy) or as recorded (a list of
            ``{"name": ..., <hyperparameter>: value}``); stored as the list,
            every default filled in. ``weight_decay > 0`` and ``augment``
            above are the parts ``wd`` and ``augment`` (give each one way only).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, gt=0)
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float | None = Field(None, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    augment: bool = False
    crop_padding: int | None = Field(None, ge=0)
    flip: bool = True
    max_shift: int | None = Field(None, ge=0)
    schedule: Literal["constant", "step", "cosine", "exponential"] = "constant"
    step_size: int = Field(10, gt=0)
    gamma: float | None = Field(None, gt=0, le=1)
    early_stop: Literal["none", "fit", "patience"] = "none"
    patience: int = Field(10, gt=0)
    record: Literal["none", "summary", "full"] = "summary"
    record_epochs: list[int] = Field(default_factory=lambda: [-1])
    eval_batch_size: int = Field(2048, gt=0)
    regularizers: Parts = Field(default_factory=list)

    def __init__(self, **data: Any) -> None:
        """Validate ``data``; a bad value raises :class:`ConfigError` (one line)."""
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(_one_line(err, list(type(self).model_fields))) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> "TrainConfig":
        """Validate a dict (e.g. read from a config file); errors become :class:`ConfigError`."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as err:
            raise ConfigError(_one_line(err, list(cls.model_fields))) from None

    @field_validator("record", mode="before")
    @classmethod
    def _record_flag(cls, value: Any) -> Any:
        # the boolean of earlier versions: True kept every epoch, False nothing
        if isinstance(value, bool):
            return "full" if value else "none"
        return value

    @field_validator("record_epochs")
    @classmethod
    def _epochs_run_or_last(cls, value: list[int], info: ValidationInfo) -> list[int]:
        epochs = info.data.get("epochs")
        high = epochs if isinstance(epochs, int) else None
        bad = [e for e in value if not (e == -1 or (e >= 1 and (high is None or e <= high)))]
        if bad or len(set(value)) != len(value):
            raise ValueError(f"distinct epochs in [1, epochs = {high}] or -1 (the last epoch run)")
        return sorted(value, key=lambda e: (e == -1, e))

    @model_validator(mode="after")
    def _fill_defaults(self) -> "TrainConfig":
        # Defaults that depend on other fields; stored so that run.json holds the resolved values.
        if self.lr is None:
            self.lr = _DEFAULT_LR[self.optimizer]
        if self.gamma is None:
            self.gamma = _DEFAULT_GAMMA.get(self.schedule, 0.1)
        names = {p["name"] for p in self.regularizers}
        for field, given, name in (("weight_decay", self.weight_decay > 0, "wd"), ("augment", self.augment, "augment")):
            if given and name in names:
                raise ConfigError(message(field, f"either {field} or the regularizer {name!r}, not both",
                                          f"both ({field}={getattr(self, field)}, regularizers has {name!r})"))
        return self

    def parts(self) -> list[dict[str, Any]]:
        """Every part of the objective: ``weight_decay`` and ``augment`` as the parts ``wd`` / ``augment``, then
        :attr:`regularizers`."""
        out: list[dict[str, Any]] = []
        if self.weight_decay > 0:
            out.append({"name": "wd", "decay": self.weight_decay})
        if self.augment:
            out.append({"name": "augment", "padding": self.crop_padding, "flip": int(self.flip),
                        "shift": self.max_shift})
        return out + self.regularizers
