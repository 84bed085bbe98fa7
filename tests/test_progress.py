"""What a scheduler sees: JSON lines, plain progress lines without a terminal, --quiet."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pyogrio
import pytest

from geodet.cli import main
from geodet.options import Options
from geodet.progress import Reporter
from tests.helpers import scene_with_squares, write_tif


@pytest.fixture
def scene(tmp_path):
    """36 tiles of 128 px (no overlap), nine bright squares."""
    squares = [(x, y) for x in (40, 300, 600) for y in (40, 300, 600)]
    return write_tif(tmp_path / "s.tif", scene_with_squares((768, 768), squares))


def test_json_log_every_stderr_line_is_an_event(tmp_path, scene, squares_model):
    """A real process, its own Ray: stdout stays empty, stderr is JSON lines only."""
    out = tmp_path / "o.gpkg"
    done = subprocess.run(
        [sys.executable, "-m", "geodet", "detect", str(scene), "--model", str(squares_model),
         "--out", str(out), "--overlap", "0", "--batch-size", "1", "--progress-every", "0.2",
         "--log-format", "json", "--engine", "ray"],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""
    events = [json.loads(line) for line in done.stderr.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "progress" in kinds, kinds
    assert set(kinds) == {"start", "progress", "done"}, kinds
    start, last = events[0], events[-1]
    assert start["tiles"] == start["tiles_to_run"] == 36 and start["scenes"] == [str(scene)]
    assert start["settings"]["overlap"] == {"value": 0.0, "source": "command line"}
    progress = [e for e in events if e["event"] == "progress"]
    assert all(e["tiles_total"] == 36 and 0 <= e["tiles_done"] <= 36 for e in progress)
    assert [e["tiles_done"] for e in progress] == sorted(e["tiles_done"] for e in progress)
    assert {"tiles_per_s", "detections", "eta_s", "time"} <= set(progress[-1])
    run = pyogrio.read_dataframe(out, layer="geodet_runs").iloc[0]
    assert (last["tiles_done"], last["tiles_failed"], last["detections"]) == (36, 0, 9)
    assert (run["tiles_done"], run["detections"]) == (36, 9)
    assert last["output"] == str(out) and last["seconds"] > 0


@pytest.mark.usefixtures("ray_local")
def test_without_a_terminal_progress_is_plain_lines(tmp_path, capsys, scene, squares_model):
    code = main(["detect", str(scene), "--model", str(squares_model), "--out",
                 str(tmp_path / "o.gpkg"), "--overlap", "0", "--batch-size", "1",
                 "--progress-every", "0.2"])
    captured = capsys.readouterr()
    assert code == 0 and "9 detections in 36 tiles" in captured.out
    lines = captured.err.splitlines()
    assert lines and "\r" not in captured.err
    assert all(ln.startswith("geodet: ") and "/36 tiles (" in ln and "tiles/s" in ln
               and "ETA" in ln for ln in lines), lines


@pytest.mark.usefixtures("ray_local")
def test_quiet_prints_nothing_but_errors(tmp_path, capsys, scene, squares_model):
    args = ["detect", str(scene), "--model", str(squares_model), "--out",
            str(tmp_path / "o.gpkg"), "--progress-every", "0.1", "-q"]
    assert main(args) == 0
    assert capsys.readouterr() == ("", "")
    assert main(args) == 2  # the output exists now
    assert capsys.readouterr().err.startswith("geodet: error: output exists")


def test_json_errors_and_warnings_are_events(tmp_path, capsys, squares_model):
    code = main(["detect", str(tmp_path / "none.tif"), "--model", str(squares_model),
                 "--out", str(tmp_path / "o.gpkg"), "--log-format", "json"])
    [event] = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert code == 2 and event["event"] == "exit" and event["exit_code"] == 2
    assert event["message"].startswith("scene not found")

    stream = io.StringIO()
    with Reporter(Options(log_format="json"), stream):
        logging.getLogger("geodet").warning("GPU requested but %s runs", "CPU")
    logging.getLogger("geodet").warning("after the run: not in the stream")
    [event] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (event["event"], event["message"]) == ("warning", "GPU requested but CPU runs")


def test_quiet_silences_warnings_for_the_run_only(caplog):
    log = logging.getLogger("geodet")
    with Reporter(Options(quiet=True)):
        log.warning("hidden")
        log.error("shown")
    log.warning("after")
    assert [r.getMessage() for r in caplog.records] == ["shown", "after"]
