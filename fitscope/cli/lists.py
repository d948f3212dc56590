"""Comma-separated flag values (``--noise 0,0.5,1``, ``--seeds 0,1,2``), parsed with one-line errors."""

from __future__ import annotations

from fitscope.errors import ConfigError


def parse_floats(text: str, name: str, example: str = "0,0.5,1") -> list[float]:
    """Numbers from ``text``; ConfigError naming the flag ``name`` if one is not a number."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{name}: expected comma-separated numbers like {example}; got {text!r}") from None


def parse_ints(text: str, name: str, example: str = "0,1,2") -> list[int]:
    """Integers from ``text``; ConfigError naming the flag ``name`` if one is not an integer."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{name}: expected comma-separated integers like {example}; got {text!r}") from None


def parse_names(text: str) -> list[str]:
    """Non-empty, stripped names from ``text``."""
    return [v.strip() for v in text.split(",") if v.strip()]
