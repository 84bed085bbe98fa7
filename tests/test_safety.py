"""Nothing exposed, nothing lost: one writer per output, interrupted progress kept,
full disks and unexpected errors as one line, corrupt data failing fast, class names
checked (issue 15). Signals and open endpoints: tests/test_signals.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pyogrio
import pytest

import geodet
from geodet.cli import main
from geodet.detections import ChunkResult, Detections, TileOutcome, TileStatus
from geodet.errors import InputError
from geodet.lock import lock_path
from geodet.resume import ResumeRecord
from tests.helpers import scene_with_squares, write_tif
from tools.toy_models import constant_outputs


@pytest.fixture
def scene(tmp_path):
    return write_tif(tmp_path / "scene.tif", scene_with_squares((300, 300), [(40, 50)]))


def one_error_line(capsys, code: int, args: list) -> str:
    assert main([str(a) for a in args]) == code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def hold_lock(out: Path) -> subprocess.Popen:
    """Another process holding the output's lock, as a running geodet would."""
    code = ("import sys, time; from pathlib import Path; from geodet.lock import output_lock\n"
            "with output_lock(Path(sys.argv[1])):\n"
            "    print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.usefixtures("ray_local")
def test_one_writer_per_output_and_a_dead_writer_taken_over(tmp_path, scene, squares_model,
                                                            capsys, caplog):
    out = tmp_path / "o.gpkg"
    holder = hold_lock(out)
    try:
        line = one_error_line(capsys, 2, ["detect", scene, "--model", squares_model,
                                          "--out", out, "--no-progress"])
        assert f"PID {holder.pid} on " in line and "another geodet run" in line
        assert not out.exists() and lock_path(out).exists()
    finally:
        holder.kill()  # SIGKILL: its lock file stays behind, unlocked
        holder.wait()
    with caplog.at_level(logging.WARNING, logger="geodet"):
        geodet.detect(scene, squares_model, out, progress=False)
    assert f"no longer running (PID {holder.pid} on" in caplog.text
    assert out.exists() and not lock_path(out).exists()


def one_chunk(tiles: int) -> ChunkResult:
    return ChunkResult(Detections.empty(), tuple(TileOutcome(0, t, TileStatus.DONE, 0)
                                                 for t in range(tiles)), "cpu")


@pytest.mark.usefixtures("ray_local")
def test_interrupted_progress_is_never_dropped_silently(tmp_path, scene, squares_model,
                                                        caplog):
    out = tmp_path / "o.gpkg"
    with ResumeRecord(out, {"an": "interrupted run"}, resume=False) as record:
        record.add(one_chunk(3))
    progress = tmp_path / "o.gpkg.progress"
    with pytest.raises(InputError, match=r"interrupted run \(3 tiles done\): add --resume"):
        geodet.detect(scene, squares_model, out, progress=False)
    assert progress.exists()
    with pytest.raises(InputError, match="belongs to a run with other inputs"):
        geodet.detect(scene, squares_model, out, resume=True, progress=False)
    with caplog.at_level(logging.WARNING, logger="geodet"):
        geodet.detect(scene, squares_model, out, overwrite=True, progress=False)
    assert "starting afresh (--overwrite)" in caplog.text
    assert out.exists() and not progress.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system of its own (tmpfs; needs root)."""
    path = tmp_path / "disk"
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` but for ``leave`` bytes."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.mark.usefixtures("ray_local")
def test_full_disk_while_writing_the_output(tmp_path, small_disk, squares_model, capsys):
    big = write_tif(tmp_path / "big.tif", scene_with_squares(
        (600, 600), [(x, y) for x in range(8, 590, 24) for y in range(8, 590, 24)]))
    out = small_disk / "o.gpkg"
    out.write_bytes(b"the previous output")
    fill(small_disk, leave=160_000)  # room for the progress record, not the GeoPackage
    line = one_error_line(capsys, 4, ["detect", big, "--model", squares_model, "--out",
                                      out, "--overwrite", "--no-progress"])
    assert line.startswith(f"geodet: failed: cannot write {out}: no space left on device")
    assert "tiles done are kept in" in line and "--resume" in line
    assert out.read_bytes() == b"the previous output"
    assert (small_disk / "o.gpkg.progress").exists()
    assert not [p for p in small_disk.iterdir() if "partial" in p.name]


@pytest.mark.usefixtures("ray_local")
def test_full_disk_while_recording_progress(small_disk, scene, squares_model, capsys):
    out = small_disk / "o.gpkg"
    fill(small_disk, leave=4096)  # one page: the lock's
    line = one_error_line(capsys, 4, ["detect", scene, "--model", squares_model, "--out",
                                      out, "--no-progress"])
    assert line == (f"geodet: failed: cannot write {out}.progress: no space left on "
                    "device")


def test_unexpected_error_is_one_line_with_the_traceback_in_a_file(
        tmp_path, squares_model, capsys, monkeypatch):
    def broken(path):
        raise RuntimeError("something geodet did not foresee")

    monkeypatch.setattr("geodet.model.inspect_model", broken)
    line = one_error_line(capsys, 1, ["model-info", squares_model])
    assert line.startswith("geodet: internal error: RuntimeError: something geodet did not")
    report = Path(line.split("traceback in ")[1].split(";")[0])
    assert "Traceback" in report.read_text() and "broken" in report.read_text()
    report.unlink()
    assert main(["model-info", str(squares_model), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def truncated(tmp_path: Path, fraction: float = 0.6) -> Path:
    rng = np.random.default_rng(0)
    full = write_tif(tmp_path / "full.tif", rng.integers(0, 255, (3, 1024, 1024), np.uint8),
                     tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[:int(len(data) * fraction)])
    return cut


def test_truncated_file_fails_once_per_tile_with_gdal_reason(tmp_path):
    from geodet.read import TileReader
    from geodet.scene import open_scene
    from geodet.tiling import plan_tiles

    scene = open_scene(str(truncated(tmp_path)), None)
    reader = TileReader([scene])
    specs = plan_tiles(scene.width, scene.height, (256, 256), 0.0, scene=0)
    t = time.perf_counter()
    reasons = [reader.try_read(s, (256, 256), (256, 256))[1] for s in specs]
    failed = [r for r in reasons if r]
    assert 0 < len(failed) < len(specs)
    assert time.perf_counter() - t < 0.1 * len(failed), "a local error is not retried"
    for reason in failed:
        assert reason.startswith("cut.tif, band ") and "IReadBlock" in reason
        assert "See previous exception" not in reason and "expected" in reason


def test_class_names_that_outputs_cannot_produce_are_warned(tmp_path, caplog):
    from geodet.model import inspect_model
    from geodet.options import Options
    from geodet.scene import open_scene
    from geodet.settings import resolve

    path = tmp_path / "m.onnx"
    names = {i: f"class {i}" for i in range(10_000)}
    onnx.save(constant_outputs({"out": np.zeros((6, 100), np.float32)}, names=names), path)
    scene = open_scene(str(write_tif(tmp_path / "s.tif", scene_with_squares((64, 64), []))),
                       None)
    with caplog.at_level(logging.WARNING, logger="geodet"):
        resolve(Options(layout="ultralytics"), inspect_model(path), [scene])
    assert "declares 10000 class names but its output (ultralytics layout) has 2 " \
        "classes" in caplog.text
    caplog.clear()
    two = tmp_path / "two.onnx"
    onnx.save(constant_outputs({"out": np.zeros((6, 100), np.float32)},
                               names={0: "a", 1: "b"}), two)
    with caplog.at_level(logging.WARNING, logger="geodet"):
        resolve(Options(layout="ultralytics"), inspect_model(two), [scene])
    assert "class names" not in caplog.text


def test_output_written_by_a_run_reads_back(tmp_path, scene, squares_model, ray_local):
    """The lock and record changes leave a normal run as it was."""
    out = tmp_path / "o.gpkg"
    geodet.detect(scene, squares_model, out, progress=False)
    assert len(pyogrio.read_dataframe(out, layer="detections")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.gpkg", "scene.tif"]


def test_the_test_cluster_refuses_drivers_without_its_token(ray_nodes):
    ray_nodes.head(num_cpus=1)
    env = {k: v for k, v in ray_nodes.env.items() if k != "RAY_AUTH_TOKEN"}
    status = [ray_nodes.ray, "status", "--address", ray_nodes.address]
    refused = subprocess.run(status, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "auth" in (refused.stdout + refused.stderr).lower(), refused.stderr[-2000:]
    allowed = subprocess.run(status, env=ray_nodes.env, capture_output=True, text=True,
                             timeout=120)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
