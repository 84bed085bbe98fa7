"""Nothing left behind: the processes a run starts are stopped when it ends, however
it ends (SIGKILL included), and the folders it names are removed.

`reaped` marks the block's environment with a fresh ``GEODET_RUN_ID``, which every
process started inside inherits (Ray's GCS, raylet, agents and workers, whoever they
are reparented to), and starts a small watcher in a session of its own. The watcher
waits for the end of a pipe the run holds: when the run leaves the block, or dies,
the pipe closes; the watcher then stops every process that carries the mark, or holds
a file open in a folder it was told of (Ray's session folder: its agents rename
themselves, which can erase the mark), with SIGTERM, then SIGKILL after `GRACE_S`,
and removes those folders.

Run as a script (``python reaper.py ID``) it is the watcher; it imports only the
standard library, so it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

MARK = "GEODET_RUN_ID"
GRACE_S = 5.0
QUIET_S = 3.0  # a fork not yet exec'd shows up late on busy cores


def marked(name: str, value: str, folders: Sequence[str] = (),
           spare: int | None = None) -> list[int]:
    """The live processes (zombies excluded) whose environment holds ``name=value``,
    or that hold a file open under one of ``folders`` (but ``spare``, the run's own
    process, which goes on after its cluster stopped). (A Python process that renames
    itself with setproctitle, as Ray's agents do, overwrites the end of what
    /proc/PID/environ shows: the mark may vanish, their log files in the run's Ray
    session folder stay open.)"""
    needle = f"{name}={value}".encode()
    prefixes = tuple(os.path.join(f, "") for f in folders)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0") or (
                    prefixes and int(entry.name) != spare and _holds_open(entry, prefixes)):
                found.append(int(entry.name))
    return found


def _holds_open(proc: Path, prefixes: tuple[str, ...]) -> bool:
    """Whether the process ``/proc/PID`` has a file open under one of ``prefixes``."""
    for fd in (proc / "fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith(prefixes):
                return True
    return False


def stop(name: str, value: str, grace: float = GRACE_S, quiet: float = QUIET_S,
         folders: Sequence[str] = (), spare: int | None = None) -> None:
    """SIGTERM every process marked ``name=value`` (or holding a file open under
    ``folders``, but ``spare``); SIGKILL those alive after ``grace`` seconds. Done
    once none has been seen for ``quiet`` seconds: a process being started as the
    run died (a fork not yet exec'd) shows up a moment later."""
    deadline = time.monotonic() + grace
    last_seen = time.monotonic()
    while time.monotonic() - last_seen < quiet:
        sig = signal.SIGKILL if time.monotonic() > deadline else signal.SIGTERM
        for pid in marked(name, value, folders, spare):
            last_seen = time.monotonic()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        time.sleep(0.1)


@contextlib.contextmanager
def reaped() -> Iterator[Callable[[str], None]]:
    """Stop every process started inside the block when it ends or this process
    dies; yields ``remove(pattern)``: the watcher then deletes the folders matching
    the glob ``pattern`` that were made while it watched (known before they exist,
    so a run killed half-way through starting still has them removed)."""
    run_id = uuid.uuid4().hex
    read, write = os.pipe()
    try:
        subprocess.Popen([sys.executable, "-I", __file__, run_id, str(os.getpid())],
                         stdin=read,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)  # out of reach of the run's signals
    finally:
        os.close(read)
    previous = os.environ.get(MARK)
    os.environ[MARK] = run_id
    try:
        yield lambda pattern: os.write(write, f"{pattern}\n".encode())
    finally:
        if previous is None:
            del os.environ[MARK]
        else:
            os.environ[MARK] = previous
        os.close(write)  # the watcher takes over from here


def _watch(run_id: str, run: int) -> None:
    """The watcher: wait for the pipe to close, stop the processes of the run (whose
    own process is ``run``), remove the folders that match its patterns and were
    made since it started."""
    started = time.time() - 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    patterns = sys.stdin.read().split("\n")
    folders = []
    for folder in (f for p in patterns if p for f in glob.glob(p)):
        with contextlib.suppress(OSError):
            if os.stat(folder).st_mtime >= started:
                folders.append(folder)
    stop(MARK, run_id, folders=folders, spare=run)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    _watch(sys.argv[1], int(sys.argv[2]))
