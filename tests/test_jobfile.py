"""Job files (--config), command-line overrides, --dry-run, and the examples in configs/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pyogrio
import pytest
import yaml

from geodet import jobfile
from geodet.cli import main
from geodet.options import Options
from tests.helpers import run_error, scene_with_squares, write_tif
from tools.toy_models import bright_squares

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def write_job(path: Path, **keys) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(keys))
    return path


@pytest.fixture
def scene(tmp_path):
    """Two tiles of valid pixels with two of nodata between them (128 px tiles, no
    overlap)."""
    data = scene_with_squares((128, 512), [(20, 30)])
    data[:, :, 128:384] = 0
    (tmp_path / "data").mkdir()
    return write_tif(tmp_path / "data" / "s.tif", data, nodata=0)


def test_keys_relative_paths_and_overrides(tmp_path):
    job = jobfile.load(write_job(
        tmp_path / "jobs" / "job.yaml", scenes=["../data/*.tif", "/abs/x.tif",
                                                "https://h.invalid/y.tif"],
        model="m.onnx", out="../o.gpkg", **{"batch-size": 4, "class_agnostic": True,
                                            "overlap": 0.3}))
    assert job.scenes == (str(tmp_path / "data/*.tif"), "/abs/x.tif",
                          "https://h.invalid/y.tif")
    assert (job.model, job.out) == (str(tmp_path / "jobs/m.onnx"), str(tmp_path / "o.gpkg"))
    assert job.options == {"batch_size": 4, "class_agnostic": True, "overlap": 0.3}

    req = jobfile.combine(job, [], None, "cli.gpkg", {"overlap": "0.1", "conf": "0.4"})
    assert req.scenes == job.scenes and req.model == job.model and req.out == "cli.gpkg"
    assert req.options == {"batch_size": 4, "class_agnostic": True, "overlap": "0.1",
                           "conf": "0.4"}
    assert req.origins == {"batch_size": f"job file {job.path}",
                           "class_agnostic": f"job file {job.path}",
                           "overlap": "command line", "conf": "command line"}
    assert jobfile.combine(job, ["a.tif"], "n.onnx", None, {}).scenes == ("a.tif",)


@pytest.mark.parametrize("content,needle", [
    ("model: m.onnx\nconfidence: 0.3\n", "unknown key confidence: the keys are scenes, "
     "model, out, tile-size"),
    ("overlap: lots\n", "invalid overlap"),
    ("batch-size: 0\n", "invalid batch-size"),
    ("merge: best\n", "unknown merge"),
    ("scenes: {a: 1}\n", "scenes must be"),
    ("model: [a, b]\n", "model must be a path"),
    ("- just\n- a list\n", "must be a mapping"),
    ("model: [unclosed\n", "not valid YAML (line 2)"),
])
def test_bad_job_file_is_one_line_and_exit_2(tmp_path, capsys, content, needle):
    job = tmp_path / "job.yaml"
    job.write_text(content)
    out = tmp_path / "o.gpkg"
    msg = run_error(capsys, ["detect", "--config", job, "--out", out])
    assert needle in msg and str(job) in msg and not out.exists()


def test_missing_inputs_are_named(tmp_path, capsys):
    job = write_job(tmp_path / "job.yaml", conf=0.3)
    msg = run_error(capsys, ["detect", "--config", job, "--out", tmp_path / "o.gpkg"])
    assert "missing SCENE, --model" in msg
    assert "missing SCENE, --model, --out" in run_error(capsys, ["detect"])


def test_dry_run_checks_plans_and_writes_nothing(tmp_path, capsys, scene, squares_model):
    job = write_job(tmp_path / "job.yaml", scenes=["data/s.tif"], model=str(squares_model),
                    out="o.gpkg", overlap=0.0, conf=0.3)
    assert main(["detect", "--config", str(job), "--conf", "0.4", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "1 scenes, 4 tiles: 2 to run, 2 to skip (no valid pixel)" in text
    assert f"{tmp_path / 'data/s.tif'}: 512 x 128 px, EPSG:32633" in text
    assert f"overlap = 0.0 (job file {job})" in text
    assert "conf = 0.4 (command line)" in text
    assert "tile-size = [128, 128] (model input)" in text
    assert "iou = 0.5 (default)" in text and "layout = 'ultralytics'" in text

    assert main(["detect", "--config", str(job), "--dry-run", "--log-format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["tiles"], plan["tiles_to_skip"], plan["tiles_to_run"]) == (4, 2, 2)
    assert plan["settings"]["conf"] == {"value": 0.3, "source": f"job file {job}"}
    assert plan["out"] == str(tmp_path / "o.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "job.yaml"]


def test_dry_run_refuses_what_the_run_would_refuse(tmp_path, capsys, scene, squares_model):
    (tmp_path / "o.gpkg").write_bytes(b"precious")
    job = write_job(tmp_path / "job.yaml", scenes=["data/s.tif", "data/none.tif"],
                    model=str(squares_model), out="o.gpkg", overwrite=True)
    assert "scene not found" in run_error(capsys, ["detect", "--config", job, "--dry-run"])
    assert "--overwrite" in run_error(capsys, ["detect", "data/s.tif", "--model",
                                               squares_model, "--out", tmp_path / "o.gpkg",
                                               "--dry-run"])
    assert (tmp_path / "o.gpkg").read_bytes() == b"precious"


@pytest.mark.usefixtures("ray_local")
def test_job_file_run_records_its_effective_configuration(tmp_path, capsys, scene,
                                                           squares_model):
    job = write_job(tmp_path / "job.yaml", scenes=["data/s.tif"], model=str(squares_model),
                    out="o.gpkg", overlap=0.0, conf=0.3, progress=False)
    assert main(["detect", "--config", str(job), "--conf", "0.5"]) == 0
    assert "1 detections" in capsys.readouterr().out
    [run] = pyogrio.read_dataframe(tmp_path / "o.gpkg", layer="geodet_runs").to_dict(
        "records")
    config = json.loads(run["configuration"])
    assert (config["overlap"], config["conf"], config["progress"]) == (0.0, 0.5, False)
    assert config["batch_size"] == 8 and config["merge"] == "ownership"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_examples_pass_a_dry_run(tmp_path, capsys, config):
    """Each example as a user runs it, its scenes (and a model that is not in this
    repository, and the output) swapped for generated ones."""
    job = jobfile.load(config)
    bands = Options.parse(**job.options).bands or (1, 2, 3)
    data = np.repeat(scene_with_squares((300, 400), [(50, 60)])[:1], max(bands), 0)
    scene = write_tif(tmp_path / "scene.tif", data)
    args = ["detect", "--config", str(config), str(scene), "--out", str(tmp_path / "o.gpkg"),
            "--dry-run", "--log-format", "json"]
    if not Path(job.model).exists():
        onnx.save(bright_squares(size=128, channels=len(bands)),
                  tmp_path / "model.onnx")
        args += ["--model", str(tmp_path / "model.onnx")]
    assert main(args) == 0, capsys.readouterr().err
    plan = json.loads(capsys.readouterr().out)
    assert [s["path"] for s in plan["scenes"]] == [str(scene)] and plan["tiles_to_run"]
    for name in job.options.keys() - {"log_format"}:
        assert f"job file {config}" in json.dumps(plan["settings"][name]["source"]), name

