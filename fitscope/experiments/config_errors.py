"""Study configs from keyword values, with pydantic's validation errors as one-line ConfigErrors.

Every study (``fitscope.experiments.*``) has a pydantic config and a
``make_config(**values)``; they share this one translation so that a bad flag
reads the same in every command: ``<study> config '<field>': <what was
expected> (got <value>)``, or ``<study> config: <message>`` for a check across
fields, whose message names the flag itself.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from fitscope.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


def one_line(err: ValidationError, study: str) -> str:
    """The first error of ``err`` as one line naming the study, the field, what was expected and what was given."""
    first = err.errors()[0]
    msg = first["msg"].removeprefix("Value error, ")
    field = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
    if not field:  # a check across fields: its message names the flag
        return f"{study} config: {msg}"
    return f"{study} config '{field}': {msg} (got {first.get('input')!r})"


def build_config(cls: type[C], study: str, values: dict) -> C:
    """``cls(**values)``, or a :class:`~fitscope.errors.ConfigError` of :func:`one_line` for bad values."""
    try:
        return cls(**values)
    except ValidationError as err:
        raise ConfigError(one_line(err, study)) from None
