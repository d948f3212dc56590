"""Study configs from keyword values, with pydantic's validation errors as one-line ConfigErrors.

Every study (``fitscope.experiments.*``) has a pydantic config and a
``make_config(**values)``; they share this one translation so that a bad flag
reads the same in every command and in the library's one message form
(:mod:`fitscope.validation`): ``--<flag>: expected <what>, got <value>``. The
flag is ``--`` + the field with dashes unless the study names another (then
the field follows in parentheses: ``--corrupt-prob (noise_levels): ...``). A
check across fields raises with its own message, which names the flag itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from fitscope.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


def cli_flag(field: str, flags: Mapping[str, str] | None = None) -> str:
    """The CLI flag of config field ``field``: ``flags[field]`` or ``--`` + the field with dashes."""
    return (flags or {}).get(field, "--" + field.replace("_", "-"))


def flag_name(field: str, flags: Mapping[str, str] | None = None) -> str:
    """:func:`cli_flag` of ``field``'s top level, followed by the field in parentheses where they differ."""
    top = field.split(".")[0]
    flag = cli_flag(top, flags)
    return flag if flag == cli_flag(top) else f"{flag} ({top})"


def _expected(msg: str) -> str:
    """pydantic's ``Input should be ...`` as ``expected ...``; a validator's own ``expected ...`` kept."""
    if msg.startswith("Input should be "):
        return "expected " + msg.removeprefix("Input should be ")
    if msg.startswith("Field required"):
        return "expected a value"
    if msg.startswith("Extra inputs are not permitted"):
        return "expected no such setting"
    return msg if msg.startswith("expected") else f"expected a valid value ({msg})"


def one_line(err: ValidationError, flags: Mapping[str, str] | None = None) -> str:
    """The first error of ``err`` as ``<flag>: expected ..., got <value>`` (or a cross-field check's own message)."""
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
    msg = first["msg"].removeprefix("Value error, ")
    inner = (first.get("ctx") or {}).get("error")
    if field and isinstance(inner, ConfigError):  # a field checker's own one-line message (e.g. the regularizers')
        name, _, rest = str(inner).partition(": ")
        flag = flag_name(field, flags)
        return f"{flag}: {rest}" if name == field.split(".")[0] else f"{flag} {inner}"
    if not field:  # a check across fields: its message names the flag
        return msg
    text = _expected(msg)
    if "; got " in text:  # validators write "expected X; got Y"
        text = text.replace("; got ", ", got ", 1)
    elif ", got " not in text:
        text += f", got {first.get('input')!r:.120}"
    return f"{flag_name(field, flags)}: {text}"


def build_config(cls: type[C], values: dict, flags: Mapping[str, str] | None = None) -> C:
    """``cls(**values)``, or a :class:`~fitscope.errors.ConfigError` of :func:`one_line` for bad values.

    Args:
        cls: the study's pydantic config class.
        values: field -> value.
        flags: config field -> CLI flag where the flag is not ``--`` + the field with dashes.
    """
    try:
        return cls(**values)
    except ValidationError as err:
        raise ConfigError(one_line(err, flags)) from None
