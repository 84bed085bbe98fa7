"""Signals and endpoints on real process trees (issue 15): an embedded run exposes no
endpoint that answers without Ray's token, SIGTERM and SIGINT stop it cleanly at any
moment, and nothing it started outlives it by more than 15 s."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from geodet.lock import lock_path
from tests.helpers import tiles_recorded
from tests.processes import (
    answers_without_token,
    is_exposed,
    left_after,
    listening,
    marked_env,
    marked_pids,
    ray_sessions_of,
    reachable_on_loopback,
)
from tests.test_resume import cli, squares_everywhere


def start(args: list, tag_env: dict) -> subprocess.Popen:
    """The CLI in a process of its own; ``.started`` is when (for `ray_sessions_of`)."""
    run = subprocess.Popen(cli(*args), env=tag_env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    run.started = time.time()  # type: ignore[attr-defined]
    return run


def wait_until(condition, run: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert run.poll() is None, f"the run ended too early: {run.communicate()[1][-2000:]}"


def test_embedded_run_opens_no_endpoint_without_token(tmp_path, squares_model):
    scene = squares_everywhere(tmp_path, size=1200)
    env, tag = marked_env()
    run = start([scene, "--model", squares_model, "--out", tmp_path / "o.gpkg",
                 "--batch-size", "1", "--engine", "ray"], env)
    answered: dict[tuple[str, int], int | None] = {}
    while run.poll() is None:  # Ray's processes start at different moments: look often
        for _, ip, port in listening(marked_pids(tag)):
            if is_exposed(ip) and (ip, port) not in answered:
                answered[ip, port] = answers_without_token(reachable_on_loopback(ip), port)
        time.sleep(0.2)
    _, err = run.communicate()
    assert run.returncode == 0, err[-2000:]
    assert len(answered) >= 3, f"too few listeners seen to judge: {answered}"
    assert not [a for a, status in answered.items() if status == 200], answered
    assert left_after(tag) == []
    assert ray_sessions_of(run.pid, run.started) == []


@pytest.mark.parametrize("engine", ["threads", "ray"])
def test_sigterm_mid_run_while_a_second_run_is_refused(tmp_path, squares_model, engine):
    scene = squares_everywhere(tmp_path, size=4000)  # 3844 tiles: not done before the signal
    out, progress = tmp_path / "o.gpkg", tmp_path / "o.gpkg.progress"
    args = [scene, "--model", squares_model, "--out", out, "--batch-size", "1",
            "--overlap", "0.5", "--engine", engine]
    env, tag = marked_env()
    first = start(args, env)
    wait_until(lambda: tiles_recorded(progress) >= 10, first)
    second = subprocess.run(cli(*args), env=env, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 2, second.stderr
    assert f"is being written by another geodet run (PID {first.pid} on" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1

    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 143, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geodet: stopped by SIGTERM: "), err
    assert f"tiles done are kept in {progress}" in lines[0] and "--resume" in lines[0]
    assert tiles_recorded(progress) >= 10 and not out.exists()
    assert not lock_path(out).exists()
    assert left_after(tag) == []
    assert ray_sessions_of(first.pid, first.started) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_ray_startup(tmp_path, squares_model, sig):
    scene = squares_everywhere(tmp_path, size=400)
    out = tmp_path / "o.gpkg"
    env, tag = marked_env()
    run = start([scene, "--model", squares_model, "--out", out, "--engine", "ray"], env)
    # Ray is starting once its GCS runs beside the driver.
    wait_until(lambda: len(marked_pids(tag)) >= 3, run)
    run.send_signal(sig)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 128 + sig, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"geodet: stopped by {signal.Signals(sig).name}: "), err
    assert not out.exists() and not lock_path(out).exists()
    assert left_after(tag) == []
    assert ray_sessions_of(run.pid, run.started) == []


def test_reaper_stops_what_holds_the_session_folder_open_but_the_run(tmp_path):
    """A process whose environment lost the run's mark (Ray's agents rename themselves
    with setproctitle, which can erase it) is still stopped when it holds a file open
    in the run's session folder; the run itself, which does too, is spared."""
    import os
    import sys

    from geodet.reaper import MARK, reaped

    folder = tmp_path / "session_1"
    with reaped() as remove_after:
        remove_after(str(tmp_path / "session_*"))
        folder.mkdir()
        mine = open(folder / "driver.log", "w")  # noqa: SIM115 (held past the block)
        env = {k: v for k, v in os.environ.items() if k != MARK}
        agent = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                                  "f = open(sys.argv[1], 'w'); print(flush=True); "
                                  "time.sleep(120)", str(folder / "agent.log")],
                                 env=env, stdout=subprocess.PIPE)
        agent.stdout.readline()  # its file is open
    try:
        assert agent.wait(timeout=30) == -signal.SIGTERM
        deadline = time.monotonic() + 15
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not folder.exists()
    finally:
        mine.close()
        agent.kill()
