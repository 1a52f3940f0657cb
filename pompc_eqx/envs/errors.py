"""Exceptions raised when a task cannot be made."""


class UnknownTaskError(ValueError):
    """The task name matches no known task; the message names valid prefixes and close
    matches."""


class MissingDependencyError(ImportError):
    """The task needs an optional package that is not installed; the message is one line
    saying how to install it."""
