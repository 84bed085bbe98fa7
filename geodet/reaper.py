"""Nothing left behind: the processes a run starts are stopped when it ends, however
it ends (SIGKILL included), and the folders it names are removed.

`reaped` marks the block's environment with a fresh ``GEODET_RUN_ID``, which every
process started inside inherits (Ray's GCS, raylet, agents and workers, whoever they
are reparented to), and starts a small watcher in a session of its own. The watcher
waits for the end of a pipe the run holds: when the run leaves the block, or dies,
the pipe closes; the watcher then stops every process that carries the mark (SIGTERM,
then SIGKILL after `GRACE_S`) and removes the folders it was given.

Run as a script (``python reaper.py ID``) it is the watcher; it imports only the
standard library, so it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

MARK = "GEODET_RUN_ID"
GRACE_S = 5.0


def marked(name: str, value: str) -> list[int]:
    """The live processes (zombies excluded) whose environment holds ``name=value``."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def stop(name: str, value: str, grace: float = GRACE_S) -> None:
    """SIGTERM every process marked ``name=value``; SIGKILL those alive after
    ``grace`` seconds."""
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while pids := marked(name, value):
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        time.sleep(0.2)


@contextlib.contextmanager
def reaped() -> Iterator[Callable[[str], None]]:
    """Stop every process started inside the block when it ends or this process
    dies; yields ``remove(folder)``, which has the watcher delete ``folder`` after."""
    run_id = uuid.uuid4().hex
    read, write = os.pipe()
    try:
        subprocess.Popen([sys.executable, "-I", __file__, run_id], stdin=read,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)  # out of reach of the run's signals
    finally:
        os.close(read)
    previous = os.environ.get(MARK)
    os.environ[MARK] = run_id
    try:
        yield lambda folder: os.write(write, f"{folder}\n".encode())
    finally:
        if previous is None:
            del os.environ[MARK]
        else:
            os.environ[MARK] = previous
        os.close(write)  # the watcher takes over from here


def session_dirs(pids: list[int]) -> set[str]:
    """The Ray session folders named on the processes' command lines
    (``--session-dir=...``): a run stopped during Ray's start-up never learnt its own."""
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0"):
                if arg.startswith("--session-dir="):
                    found.add(arg.removeprefix("--session-dir="))
    return found


def _watch(run_id: str) -> None:
    """The watcher: wait for the pipe to close, stop the run's processes, remove its
    folders."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    folders = {*sys.stdin.read().split("\n"), *session_dirs(marked(MARK, run_id))}
    stop(MARK, run_id)
    for folder in filter(None, folders):
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    _watch(sys.argv[1])
