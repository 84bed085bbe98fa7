"""The command line: exit codes, one-line errors, nothing written on bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import onnx
import pyogrio
import pytest

from geodet.cli import main
from tests.helpers import (
    corrupt_block,
    run_error,
    scene_with_squares,
    write_plain_tif,
    write_tif,
)
from tools.toy_models import bright_squares


@pytest.fixture
def scene(tmp_path):
    return write_tif(tmp_path / "scene.tif", scene_with_squares((100, 100), [(20, 30)]))





def test_missing_scene(tmp_path, capsys, squares_model):
    out = tmp_path / "o.gpkg"
    msg = run_error(capsys, ["detect", tmp_path / "nope.tif", "--model", squares_model,
                             "--out", out])
    assert "scene not found" in msg and not out.exists()


def test_not_a_raster(tmp_path, capsys, squares_model):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"\x00" * 100)
    out = tmp_path / "o.gpkg"
    assert "cannot read scene as a raster" in run_error(
        capsys, ["detect", bad, "--model", squares_model, "--out", out])
    assert not out.exists()


def test_scene_without_georeferencing(tmp_path, capsys, squares_model):
    plain = write_plain_tif(tmp_path / "plain.tif")
    out = tmp_path / "o.gpkg"
    assert "no georeferencing" in run_error(
        capsys, ["detect", plain, "--model", squares_model, "--out", out])
    assert not out.exists()


def test_missing_model(tmp_path, capsys, scene):
    out = tmp_path / "o.gpkg"
    assert "model not found" in run_error(
        capsys, ["detect", scene, "--model", tmp_path / "none.onnx", "--out", out])
    assert not out.exists()


def test_model_that_is_not_onnx(tmp_path, capsys, scene):
    fake = tmp_path / "fake.onnx"
    fake.write_text("definitely not protobuf")
    out = tmp_path / "o.gpkg"
    assert "cannot load model as ONNX" in run_error(
        capsys, ["detect", scene, "--model", fake, "--out", out])
    assert not out.exists()


def test_channel_mismatch(tmp_path, capsys, scene):
    four = tmp_path / "four.onnx"
    onnx.save(bright_squares(size=64, channels=4), four)
    out = tmp_path / "o.gpkg"
    msg = run_error(capsys, ["detect", scene, "--model", four, "--out", out])
    assert "model takes 4 channels but scene" in msg and "--bands" in msg
    assert not out.exists()


def test_output_directory_missing(tmp_path, capsys, scene, squares_model):
    msg = run_error(capsys, ["detect", scene, "--model", squares_model, "--out",
                             tmp_path / "no" / "such" / "o.gpkg"])
    assert "output directory does not exist" in msg


def test_output_directory_not_writable(capsys, scene, squares_model, readonly_dir):
    msg = run_error(capsys, ["detect", scene, "--model", squares_model, "--out",
                             readonly_dir / "o.gpkg"])
    assert "not writable" in msg


def test_output_must_be_a_geopackage(tmp_path, capsys, scene, squares_model):
    msg = run_error(capsys, ["detect", scene, "--model", squares_model, "--out",
                             tmp_path / "o.shp"])
    assert ".gpkg" in msg


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys, scene, squares_model):
    out = tmp_path / "o.gpkg"
    out.write_bytes(b"precious")
    msg = run_error(capsys, ["detect", scene, "--model", squares_model, "--out", out])
    assert "--overwrite" in msg and out.read_bytes() == b"precious"


@pytest.mark.parametrize("option,value,needle", [
    ("--overlap", "1.5", "invalid overlap"),
    ("--conf", "-0.1", "invalid conf"),
    ("--iou", "0", "invalid iou"),
    ("--batch-size", "0", "invalid batch-size"),
    ("--tile-size", "3", "invalid tile-size"),
    ("--layout", "mystery", "unknown layout"),
    ("--bands", "1,2,9", "bands 1..3"),
])
def test_bad_options(tmp_path, capsys, scene, squares_model, option, value, needle):
    out = tmp_path / "o.gpkg"
    msg = run_error(capsys, ["detect", scene, "--model", squares_model, "--out", out,
                             option, value])
    assert needle in msg and not out.exists()


def test_usage_error_exit_code(capsys):
    with pytest.raises(SystemExit) as e:
        main(["detect", "--model"])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cli_end_to_end_in_a_fresh_process(tmp_path, scene, squares_model):
    """The installed entry point starts its own local Ray and writes the GeoPackage."""
    out = tmp_path / "o.gpkg"
    env = {**os.environ, "RAY_ADDRESS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "geodet", "detect", str(scene), "--model",
         str(squares_model), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 detections" in done.stdout and "CPUExecutionProvider" in done.stdout
    assert len(pyogrio.read_dataframe(out, layer="detections")) == 1
    again = subprocess.run(
        [sys.executable, "-m", "geodet", "detect", str(scene), "--model",
         str(squares_model), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip().count("\n") == 0


def test_partial_run_exits_3(tmp_path, scene, squares_model, ray_local, capsys):
    tif = write_tif(tmp_path / "t.tif", scene_with_squares((256, 256), [(5, 5)]),
                    tiled=True, blockxsize=128, blockysize=128, compress="deflate",
                    interleave="band")
    corrupt_block(tif, 0, 1)
    out = tmp_path / "o.gpkg"
    code = main(["detect", str(tif), "--model", str(squares_model), "--out", str(out),
                 "--overlap", "0", "--no-progress"])
    assert code == 3 and out.exists()
    assert "1 tiles failed" in capsys.readouterr().err


def test_readme_lists_every_option():
    from pathlib import Path

    from geodet.options import Options

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [n for n in Options.model_fields if f"`--{n.replace('_', '-')}" not in readme]
    assert missing == []
