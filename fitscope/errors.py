"""Errors that reach the user.

Every problem a user can cause (a bad flag, a bad file, a bad array) raises a
subclass of :class:`FitscopeError` whose message is one line naming the
argument, what was expected and what was given. The CLI prints that line and
exits with code 2; anything else is a bug and keeps its traceback.
"""


class FitscopeError(ValueError):
    """A user-facing error: one line, names the argument, expected and got."""


class DataError(FitscopeError):
    """A data source is missing, unreadable, truncated or inconsistent."""


class ConfigError(FitscopeError):
    """A flag or configuration value is out of range or inconsistent."""


class RunError(FitscopeError):
    """A run directory cannot be created, resumed or read."""
