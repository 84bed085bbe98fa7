"""Errors that are part of geodet's interface.

`InputError` is raised for anything the user can fix (a missing scene, a model that
does not fit the scene, an output that already exists). Its message is one line that
says what is wrong and what to do; the CLI prints it and exits with code 2.
"""

from __future__ import annotations


def one_line(what: str, error: BaseException, limit: int = 500) -> str:
    """``"<what>: <Type>: <first line of the message>"``, for tile failure reasons."""
    return f"{what}: {type(error).__name__}: {error}".splitlines()[0][:limit]


class GeodetError(Exception):
    """Base class of geodet's own errors."""

    exit_code = 1


class InputError(GeodetError):
    """Bad input given by the user: nothing has been written."""

    exit_code = 2


class PartialRunError(GeodetError):
    """The run finished and wrote its output, but some tiles failed (raised by the
    CLI; the Python API reports them in ``result.attrs["geodet"]["tiles_failed"]``)."""

    exit_code = 3
