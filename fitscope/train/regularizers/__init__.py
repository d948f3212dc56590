"""The regularizers: parts of the training objective, one small module per method.

Every part is a :class:`~fitscope.train.regularizers.base.Regularizer` (its
formula, paper and default hyperparameters in its docstring), registered in
:data:`REGULARIZERS` by its command-line name. A training run names its parts
in ``TrainConfig(regularizers=...)``, as text in the grammar of
:func:`parse_regularizers`::

    elr:lambda=3,beta=0.7+mixup:alpha=0.2      # ELR and mixup
    ls                                         # label smoothing, default eps
    ce                                         # plain cross-entropy: no part

or as the list of dicts a run records (``[{"name": "elr", "lambda": 3.0, ...}]``).
``fitscope regularizers list`` shows every part with its hyperparameters and ranges.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Iterable

from pydantic import BeforeValidator

from fitscope.errors import ConfigError
from fitscope.train.regularizers.base import Param, Regularizer, TrainState, per_model
from fitscope.validation import message, shorten

#: the modules of the parts, in the order ``fitscope regularizers list`` shows them; each defines ``PART``
_PART_MODULES = ("weight_decay", "dropout", "augment", "label_smoothing", "mixup", "elr", "pskd", "gce", "sce", "sam",
                 "compander", "ortho", "polarize", "l1bn")
_PART_MODULES += ("pgd",)  # PGD adversarial training (fitscope robust)

#: name -> part class
REGULARIZERS: dict[str, type[Regularizer]] = {
    cls.name: cls for cls in (importlib.import_module(f"{__name__}.{m}").PART for m in _PART_MODULES)
}
#: the name of plain cross-entropy (no part) in the grammar
PLAIN = "ce"
#: what separates parts, names from hyperparameters, and hyperparameters
PART_SEP, NAME_SEP, VALUE_SEP = "+", ":", ","


def register(cls: type[Regularizer]) -> type[Regularizer]:
    """Add a part class to :data:`REGULARIZERS` (usable as a decorator); its name must be new."""
    if not cls.name or cls.name in REGULARIZERS or cls.name == PLAIN:
        raise ValueError(f"regularizer name {cls.name!r} is empty or taken")
    REGULARIZERS[cls.name] = cls
    return cls


def make_part(name: str, values: dict[str, Any] | None = None) -> Regularizer:
    """The part called ``name`` with hyperparameters ``values`` (checked against its ranges).

    Raises:
        ConfigError: an unknown name (the message lists the known ones), an
            unknown hyperparameter, or a value out of range.
    """
    cls = REGULARIZERS.get(name)
    if cls is None:
        raise ConfigError(message("regularizers", f"one of {', '.join(REGULARIZERS)} (or {PLAIN})",
                                  f"unknown {shorten(name)}"))
    return cls(**(values or {}))


def parse_regularizers(text: str) -> list[dict[str, Any]]:
    """Parse ``"elr:lambda=3,beta=0.7+mixup:alpha=0.2"`` into recorded parts (``[{"name": "elr", ...}, ...]``).

    ``ce`` (or an empty string) is plain cross-entropy, no part. Every value
    is checked; the defaults of the hyperparameters not given are filled in.

    Raises:
        ConfigError: bad grammar, an unknown part or hyperparameter, a value
            out of range, a part named twice.
    """
    if not isinstance(text, str):
        raise ConfigError(message("regularizers", "text like 'elr:lambda=3+mixup'", shorten(text)))
    parts = []
    for chunk in (c.strip() for c in text.split(PART_SEP)):
        if chunk in ("", PLAIN):
            continue
        name, _, rest = chunk.partition(NAME_SEP)
        values: dict[str, Any] = {}
        for item in (i.strip() for i in rest.split(VALUE_SEP) if i.strip()):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ConfigError(message("regularizers", f"NAME=VALUE after '{name.strip()}:' "
                                          "(e.g. elr:lambda=3,beta=0.7)", repr(item)))
            values[key.strip()] = value.strip()
        parts.append(make_part(name.strip(), values).describe())
    return check_parts(parts)


def check_parts(parts: Iterable[dict[str, Any]] | str | None) -> list[dict[str, Any]]:
    """Recorded parts (or text in the grammar) checked and normalized; one name once, one loss, one step wrapper."""
    if parts is None:
        return []
    if isinstance(parts, str):
        return parse_regularizers(parts)
    out, seen = [], set()
    for item in parts:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(message("regularizers", "parts like {'name': 'elr', 'lambda': 3}", shorten(item)))
        values = {k: v for k, v in item.items() if k != "name"}
        part = make_part(item["name"], values)
        if part.name in seen:
            raise ConfigError(message("regularizers", "each part once", f"{part.name} twice"))
        seen.add(part.name)
        out.append(part.describe())
    for flag, what in (("replaces_loss", "loss"), ("wraps_step", "step wrapper")):
        names = [p["name"] for p in out if getattr(REGULARIZERS[p["name"]], flag)]
        if len(names) > 1:
            raise ConfigError(message("regularizers", f"at most one {what} part", " and ".join(names)))
    return out


#: A config field holding parts (text in the grammar or the recorded list; stored as the checked list)::
#:
#:     class MyStudyConfig(BaseModel):
#:         regularizers: Parts = []
Parts = Annotated[list[dict[str, Any]], BeforeValidator(lambda value: check_parts(value))]


def format_regularizers(parts: Iterable[dict[str, Any]]) -> str:
    """The grammar text of recorded parts (``ce`` when there are none); :func:`parse_regularizers` reads it back."""
    text = PART_SEP.join(repr(make_part(p["name"], {k: v for k, v in p.items() if k != "name"})) for p in parts)
    return text or PLAIN


def build_parts(parts: Iterable[dict[str, Any]]) -> list[Regularizer]:
    """Part objects for recorded parts (fresh state: one list per training run)."""
    return [make_part(p["name"], {k: v for k, v in p.items() if k != "name"}) for p in parts]


def regularizers_table() -> list[dict[str, str]]:
    """One row per part: name, summary, paper, and its hyperparameters with defaults and ranges."""
    rows = []
    for name, cls in REGULARIZERS.items():
        hp = "; ".join(f"{k}={'auto' if p.default is None else f'{p.default:g}'} in {p.range_text()}"
                       for k, p in cls.params.items())
        rows.append(dict(name=name, summary=cls.summary, hyperparameters=hp or "-", paper=cls.paper))
    return rows


__all__ = [
    "PLAIN",
    "Parts",
    "Param",
    "REGULARIZERS",
    "Regularizer",
    "TrainState",
    "build_parts",
    "check_parts",
    "format_regularizers",
    "make_part",
    "parse_regularizers",
    "per_model",
    "register",
    "regularizers_table",
]
