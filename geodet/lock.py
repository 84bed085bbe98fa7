"""One writer per output: an exclusive OS lock on a file beside it, held for the run.

``OUT.gpkg`` is guarded by ``.OUT.gpkg.lock`` in the same directory, locked with
``flock`` and holding the owner's PID, host and start time. A second run on the same
output fails at once (`InputError`, naming the owner). The kernel releases the lock
when its process dies however it dies, so a lock file left by a dead run is simply
taken over (with a warning). The owner removes the file when it is done.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from geodet.errors import InputError, OutputError

log = logging.getLogger("geodet")
_BAD_DIRECTORY = {errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS}


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


def _describe(owner: str) -> str:
    try:
        o = json.loads(owner)
        return f"PID {o['pid']} on {o['host']}, started {o['started']}"
    except (ValueError, TypeError, KeyError):
        return "owner unknown"


def _acquire(out: Path) -> int:
    """Open and lock the lock file of ``out``; retry when its owner removed it
    meanwhile (the lock would then be on a file nobody else can see)."""
    path = lock_path(out)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 4096).decode(errors="replace")
            os.close(fd)
            raise InputError(
                f"{out} is being written by another geodet run ({_describe(owner)}): wait "
                "for it to finish or stop it, or choose another --out") from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)


@contextlib.contextmanager
def output_lock(out: Path | None) -> Iterator[None]:
    """Hold the output's lock for the duration of the block (nothing if ``out`` is
    None: no output, or one in object storage, where an OS lock means nothing).
    Raises `InputError` at once if another live run holds it."""
    if out is None:
        yield
        return
    path = lock_path(out)
    try:
        fd = _acquire(out)
    except OSError as e:
        if e.errno not in _BAD_DIRECTORY:  # those, check_output reports as input errors
            log.warning("cannot lock %s (%s): nothing stops another run from writing "
                        "the same output", path, e.strerror)
        yield
        return
    try:
        stale = os.read(fd, 4096).decode(errors="replace")
        if stale:
            log.warning("taking over the lock of a geodet run that is no longer running "
                        "(%s)", _describe(stale))
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "started": datetime.now(UTC).isoformat(timespec="seconds")})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode(), 0)
        except OSError as e:
            raise OutputError.writing(path, e) from None
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(fd)
