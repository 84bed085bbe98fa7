"""Errors that are part of geodet's interface.

`InputError` is raised for anything the user can fix (a missing scene, a model that
does not fit the scene, an output that already exists). Its message is one line that
says what is wrong and what to do; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

#: Below this many free bytes, a failed write is put down to a full disk.
FULL_DISK_BYTES = 1 << 20


def one_line(what: str, error: BaseException, limit: int = 500) -> str:
    """``"<what>: <Type>: <first line of the message>"``, for tile failure reasons."""
    return f"{what}: {type(error).__name__}: {error}".splitlines()[0][:limit]


class GeodetError(Exception):
    """Base class of geodet's own errors."""

    exit_code = 1


class InputError(GeodetError):
    """Bad input given by the user: nothing has been written."""

    exit_code = 2


class OutputError(GeodetError):
    """The output or the progress record could not be written (full disk, read-only
    file system, permission denied): the previous output is intact and the progress
    record is kept for ``--resume``."""

    exit_code = 4

    @classmethod
    def writing(cls, path: Path, error: BaseException) -> OutputError:
        """``cannot write PATH: CAUSE``, the cause in words a user can act on: the
        system's own for an `OSError`, else what the file system says now (GDAL and
        SQLite report a full disk in words of their own), else the library's message."""
        return cls(f"cannot write {path}: {_cause(path, error)}")


def _cause(path: Path, error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno).lower()
    try:
        fs = os.statvfs(path.parent)
        if fs.f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS).lower()
        if fs.f_bavail * fs.f_frsize < FULL_DISK_BYTES:
            return os.strerror(errno.ENOSPC).lower()
    except OSError:
        pass
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class Stopped(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT or SIGTERM); it unwinds like Ctrl-C, so
    everything started is stopped and the progress record is kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


class PartialRunError(GeodetError):
    """The run finished and wrote its output, but some tiles failed (raised by the
    CLI; the Python API reports them in ``result.attrs["geodet"]["tiles_failed"]``)."""

    exit_code = 3
