"""A run killed with SIGKILL mid-way resumes from its progress file to the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyogrio
import pytest

import geodet
from geodet.errors import InputError
from tests.helpers import scene_with_squares, squares_everywhere, tiles_recorded, write_tif


def cli(*args):
    return [sys.executable, "-m", "geodet", "detect", *map(str, args), "--no-progress"]


def test_sigkilled_run_resumes_to_the_same_detections(tmp_path, squares_model):
    scene = squares_everywhere(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = tmp_path / "resumed.gpkg"
    progress = tmp_path / "resumed.gpkg.progress"
    args = [scene, "--model", squares_model, "--batch-size", "1", "--overlap", "0.5"]
    run = subprocess.Popen(cli(*args, "--out", out), env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while tiles_recorded(progress) < 20 and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert run.poll() is None, "the run finished before it could be killed"
    os.kill(run.pid, signal.SIGKILL)  # the driver only
    run.wait()
    time.sleep(1)
    if _group_alive(run.pid):  # Ray's own processes of the killed driver, if any remain
        os.killpg(run.pid, signal.SIGKILL)
    partial = tiles_recorded(progress)
    assert partial >= 20 and not out.exists()

    done = subprocess.run(cli(*args, "--out", out, "--resume"), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not progress.exists(), "the progress file goes once the output is complete"
    reference = tmp_path / "reference.gpkg"
    geodet.detect(scene, squares_model, reference, batch_size=1, overlap=0.5,
                  progress=False)

    got = pyogrio.read_dataframe(out, layer="detections")
    want = pyogrio.read_dataframe(reference, layer="detections")
    assert len(got) == len(want) > 100
    assert got.drop(columns="geometry").equals(want.drop(columns="geometry"))
    assert all(a.equals_exact(b, 0) for a, b in zip(got.geometry, want.geometry, strict=True))
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert tiles["tile_id"].is_unique and (tiles["status"] == "done").all()
    assert tiles["n_detections"].sum() == pyogrio.read_dataframe(
        reference, layer="tiles")["n_detections"].sum()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.usefixtures("ray_local")
def test_resume_refuses_a_different_run(tmp_path, squares_model):
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((100, 100), [(5, 5)]))
    out = tmp_path / "o.gpkg"
    from geodet.resume import ResumeRecord

    with ResumeRecord(out, {"something": "else"}, resume=False):
        pass
    with pytest.raises(InputError, match="belongs to a run with other inputs"):
        geodet.detect(scene, squares_model, out, resume=True, progress=False)
    geodet.detect(scene, squares_model, out, progress=False)  # without --resume: afresh
    assert out.exists() and not (tmp_path / "o.gpkg.progress").exists()
