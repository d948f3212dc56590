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


def parse_settings(text: str) -> list[str]:
    """Comma-separated regularizer settings, where a setting's own ``PARAM=VALUE`` list also uses commas.

    A piece with ``=`` but no ``:`` continues the setting before it:
    ``"none,elr:lambda=3,beta=0.7,wd"`` -> ``["none", "elr:lambda=3,beta=0.7", "wd"]``.
    """
    out: list[str] = []
    for piece in parse_names(text):
        last_part = out[-1].split("+")[-1] if out else ""
        if "=" in piece and ":" not in piece.split("+")[0] and ":" in last_part:
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


def deprecated_alias(flag: str, value, old_flag: str, old_value, command: str, parse=None):
    """The value of a flag that also answers to a hidden, deprecated name, parsed by ``parse(text, flag used)``.

    ``old_flag`` given alone: its value, then (once it parsed) a note on stderr; both given: ConfigError
    (one line). None if neither was given.
    """
    import typer

    if old_value is not None and value is not None:
        raise ConfigError(f"{old_flag}: expected it left out with {flag} (it is its deprecated alias), "
                          f"got {old_flag} {old_value} and {flag} {value}")
    used, text = (old_flag, old_value) if old_value is not None else (flag, value)
    if text is None:
        return None
    parsed = parse(text, used) if parse is not None else text
    if old_value is not None:
        typer.echo(f"note: {command} {old_flag} is deprecated; use {flag} (the same setting)", err=True)
    return parsed
