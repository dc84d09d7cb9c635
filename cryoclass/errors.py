"""Exception types raised by cryoclass for bad input.

Every user-facing problem (a malformed file, an impossible parameter) is raised as a
:class:`CryoclassError` subclass whose message names the file/parameter and the problem, so the
CLI can print one clear line and widgets can show it beside the field.
"""

from __future__ import annotations

__all__ = ["CryoclassError", "InputFileError", "ParameterError", "JobCancelled"]


class CryoclassError(Exception):
    """Base class of every error cryoclass raises on purpose."""


class InputFileError(CryoclassError, ValueError):
    """An input file is missing, unreadable, malformed or inconsistent.

    Parameters
    ----------
    path : str
        The file at fault (shown first in the message).
    problem : str
        What is wrong with it, in one sentence.
    """

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ParameterError(CryoclassError, ValueError):
    """A parameter value is invalid; ``name`` is the parameter's API name."""

    def __init__(self, name: str, problem: str):
        self.name = name
        self.problem = problem
        super().__init__(f"parameter {name!r}: {problem}")


class JobCancelled(CryoclassError):
    """Raised inside a job when its cancel token is set."""
