"""Model specs: the short strings that name an architecture (``mlp:512x2``).

A spec is ``FAMILY:SHAPE[,OPTION=VALUE...]``. :func:`parse_spec` turns it into
a frozen :class:`ModelSpec`; :func:`check_input_shape` says whether a family
fits an input (vectors, 1-D signals, images). Every bad spec raises a
one-line :class:`~fitscope.errors.ConfigError` in the one message form
(``spec: expected <the grammar>, got '<spec>' (<what is wrong>)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fitscope.errors import ConfigError
from fitscope.validation import check_int, message, shorten

FAMILIES = ("mlp", "cnn", "resnet", "cnn1d")

SPEC_HELP = """\
Model spec grammar:  FAMILY:SHAPE[,OPTION=VALUE ...]

  mlp:WIDTHxDEPTH     fully connected ReLU net: DEPTH hidden layers of WIDTH
  mlp:W1-W2-...       hidden widths one by one; any input is flattened
  cnn:W1-W2-...       conv3x3-norm-ReLU blocks, 2x2 max-pool after each while
                      the image is >= 2x2, global average pool, linear;
                      cnn:32x3 repeats one width; images (C, H, W) only
  resnet:WIDTHxSTAGES small ResNet: stem conv3x3, STAGES stages of basic
                      residual blocks of widths WIDTH, 2*WIDTH, 4*WIDTH ...
                      (stride 2 between stages), BN, global average pool,
                      linear; resnet:16-32-64 lists the stage widths;
                      images (C, H, W) only
  cnn1d:WIDTHxDEPTH   1-D conv-norm-ReLU blocks with max-pool 2, global
                      average pool, linear, for signals (C, L) such as
                      mnist1d; cnn1d:32-64 lists the widths

Options, after commas:
  dropout=P  drop probability in [0, 1): after every hidden ReLU (mlp),
             before the final linear layer (cnn, resnet, cnn1d); default 0
  blocks=N   residual blocks per stage (resnet); default 1
  kernel=N   odd kernel size (cnn1d); default 5

Normalisation (cnn, cnn1d) is not part of the spec: the ensemble studies
build BatchNorm (norm=batch), the plain models of the privacy defenses
GroupNorm (norm=group, what Opacus needs); the same spec and norm give the
same network in every study (see the norm table of `fitscope models list`).

Examples:
  mlp:512x2   mlp:256-128   mlp:512x2,dropout=0.5   cnn:32-64
  cnn:32-64,dropout=0.25   resnet:16x3   resnet:16x3,blocks=2   cnn1d:32x3"""

_GRAMMAR = (
    "FAMILY:SHAPE[,OPTION=VALUE], e.g. mlp:512x2, mlp:256-128, cnn:32-64, resnet:16x3, "
    "cnn1d:32x3, mlp:512x2,dropout=0.5 (see `fitscope models list`)"
)

_OPTIONS = {
    "mlp": ("dropout",),
    "cnn": ("dropout",),
    "resnet": ("dropout", "blocks"),
    "cnn1d": ("dropout", "kernel"),
}

_REPEAT = re.compile(r"^(\d+)x(\d+)$")
_LIST = re.compile(r"^\d+(-\d+)*$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        family: ``"mlp"``, ``"cnn"``, ``"resnet"`` or ``"cnn1d"``.
        widths: hidden widths (mlp), block widths (cnn, cnn1d) or stage
            widths (resnet), first to last.
        dropout: dropout probability in ``[0, 1)``.
        blocks: residual blocks per stage (resnet; 1 elsewhere).
        kernel: 1-D convolution kernel size (cnn1d; 3 elsewhere).
    """

    family: str
    widths: tuple[int, ...]
    dropout: float = 0.0
    blocks: int = 1
    kernel: int = 3

    def __str__(self) -> str:
        """The canonical spec string (``mlp:512-512,dropout=0.5``)."""
        text = f"{self.family}:{'-'.join(map(str, self.widths))}"
        if self.dropout:
            text += f",dropout={self.dropout:g}"
        if self.family == "resnet" and self.blocks != 1:
            text += f",blocks={self.blocks}"
        if self.family == "cnn1d" and self.kernel != 5:
            text += f",kernel={self.kernel}"
        return text

    def with_dropout(self, dropout: float | None) -> "ModelSpec":
        """This spec with its dropout replaced (``None`` keeps it)."""
        if dropout is None:
            return self
        _check_dropout(dropout, str(self))
        return ModelSpec(self.family, self.widths, float(dropout), self.blocks, self.kernel)


def _bad(spec: str, reason: str) -> ConfigError:
    return ConfigError(message("spec", _GRAMMAR, f"{spec!r} ({reason})"))


def _check_dropout(value: float, spec: str) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise _bad(spec, f"dropout must be in [0, 1), got {value}")


def parse_spec(spec: str | ModelSpec) -> ModelSpec:
    """Parse a model spec string such as ``"mlp:512x2,dropout=0.5"``.

    Args:
        spec: the spec text (see :data:`SPEC_HELP`), or an already parsed spec.

    Returns:
        The :class:`ModelSpec`.

    Raises:
        ConfigError: one line naming the spec, what is wrong and the grammar.
    """
    if isinstance(spec, ModelSpec):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(message("spec", f"a string {_GRAMMAR}", shorten(spec)))
    text = spec.strip().lower().replace(" ", "")
    if ":" not in text:
        raise _bad(spec, "missing ':' between family and shape")
    family, rest = text.split(":", 1)
    if family not in FAMILIES:
        raise _bad(spec, f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    shape, *options = rest.split(",")
    if not shape:
        raise _bad(spec, "missing shape after ':'")

    m = _REPEAT.match(shape)
    if m:
        width, count = int(m.group(1)), int(m.group(2))
        if count < 1:
            raise _bad(spec, "the count after 'x' must be >= 1")
        if family == "resnet":
            widths = tuple(width * 2**i for i in range(count))
        else:
            widths = (width,) * count
    elif _LIST.match(shape):
        widths = tuple(int(w) for w in shape.split("-"))
    else:
        raise _bad(spec, f"cannot read shape {shape!r} (use WIDTHxDEPTH or W1-W2-...)")
    if any(w < 1 for w in widths):
        raise _bad(spec, "every width must be >= 1")
    if len(widths) > 64:
        raise _bad(spec, f"at most 64 layers, got {len(widths)}")

    values: dict[str, float] = {}
    for opt in options:
        if "=" not in opt:
            raise _bad(spec, f"option {opt!r} is not NAME=VALUE")
        name, value = opt.split("=", 1)
        if name not in _OPTIONS[family]:
            raise _bad(spec, f"unknown option {name!r} for {family} (known: {', '.join(_OPTIONS[family])})")
        if name in values:
            raise _bad(spec, f"option {name!r} given twice")
        try:
            values[name] = float(value)
        except ValueError:
            raise _bad(spec, f"option {name}={value!r} is not a number") from None

    dropout = values.get("dropout", 0.0)
    _check_dropout(dropout, spec)
    blocks = values.get("blocks", 1)
    if blocks != int(blocks) or not 1 <= blocks <= 16:
        raise _bad(spec, f"blocks must be an integer in 1..16, got {blocks:g}")
    kernel = values.get("kernel", 5 if family == "cnn1d" else 3)
    if kernel != int(kernel) or kernel < 1 or int(kernel) % 2 == 0:
        raise _bad(spec, f"kernel must be an odd integer >= 1, got {kernel:g}")
    return ModelSpec(family, widths, float(dropout), int(blocks), int(kernel))


def input_shape_tuple(input_shape) -> tuple[int, ...]:
    """``input_shape`` as a tuple of ints, checked: ``(D,)``, ``(C, L)`` or ``(C, H, W)`` with positive sizes."""
    what = "a tuple of ints (D,), (C, L) or (C, H, W)"
    if isinstance(input_shape, (str, bytes)):
        raise ConfigError(message("input_shape", what, shorten(input_shape)))
    try:
        items = list(input_shape)
    except TypeError:
        raise ConfigError(message("input_shape", what, shorten(input_shape))) from None
    shape = tuple(check_int(s, f"input_shape[{i}]") for i, s in enumerate(items))
    input_kind(shape)
    return shape


def input_kind(input_shape: tuple[int, ...]) -> str:
    """``"vector"`` for ``(D,)``, ``"signal"`` for ``(C, L)``, ``"image"`` for ``(C, H, W)``."""
    kinds = {1: "vector", 2: "signal", 3: "image"}
    if len(input_shape) not in kinds or any(int(s) < 1 for s in input_shape):
        raise ConfigError(message("input_shape", "(D,), (C, L) or (C, H, W) with positive sizes",
                                  str(tuple(input_shape))))
    return kinds[len(input_shape)]


def check_input_shape(spec: ModelSpec, input_shape: tuple[int, ...]) -> None:
    """Raise :class:`ConfigError` when ``spec``'s family cannot take inputs of ``input_shape``.

    The message says which families do fit.
    """
    kind = input_kind(input_shape)
    fits = {"vector": "mlp:...", "signal": "cnn1d:... or mlp:...", "image": "cnn:..., resnet:... or mlp:..."}
    needs = {"cnn": "image", "resnet": "image", "cnn1d": "signal"}
    if spec.family in needs and needs[spec.family] != kind:
        shape = "x".join(map(str, input_shape))
        what = {"image": "images (C, H, W)", "signal": "1-D signals (C, L)"}[needs[spec.family]]
        raise ConfigError(message("spec", f"a family for {kind}s of shape {shape} (use {fits[kind]})",
                                  f"{str(spec)!r}, which needs {what}"))
