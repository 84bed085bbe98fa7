"""The two engines: detector threads in this process, and Ray actors, give the same
output; `auto` picks threads on a machine alone and Ray where a cluster is named."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pyogrio
import pytest
import rasterio

import geodet
from geodet.engine import choose_engine, plan_threads
from geodet.options import Options
from tests.helpers import corrupt_block, run_error, squares_everywhere, write_tif
from tests.test_resume import cli


def frame(path, layer):
    return pyogrio.read_dataframe(path, layer=layer).drop(columns="geometry", errors="ignore")


@pytest.mark.usefixtures("ray_local")
def test_threads_and_ray_actors_write_the_same_output(tmp_path, squares_model):
    with rasterio.open(squares_everywhere(tmp_path, size=900)) as ds:
        data = ds.read()
    scene = write_tif(tmp_path / "t.tif", data, tiled=True, blockxsize=256, blockysize=256,
                      compress="deflate", interleave="band")
    corrupt_block(scene, 1, 2)  # some tiles fail: their outcomes must match too
    outputs = {}
    for engine, workers in (("ray", None), ("threads", None), ("threads", 2)):
        out = tmp_path / f"{engine}{workers}.gpkg"
        geodet.detect(scene, squares_model, out, engine=engine, workers=workers,
                      batch_size=3, overlap=0.5, progress=False)
        outputs[engine, workers] = out
    ray_out = outputs["ray", None]
    assert len(frame(ray_out, "detections")) > 100
    assert (frame(ray_out, "tiles")["status"] == "failed").sum() > 0
    for (engine, workers), out in outputs.items():
        for layer in ("detections", "tiles"):
            got = pyogrio.read_dataframe(out, layer=layer)
            want = pyogrio.read_dataframe(ray_out, layer=layer)
            assert got.drop(columns="geometry").equals(want.drop(columns="geometry")), layer
            assert got.geometry.geom_equals_exact(want.geometry, 0).all(), layer
        run = frame(out, "geodet_runs").iloc[0]
        assert run["engine"] == engine and run["workers"] == (workers or 1)


@pytest.mark.usefixtures("ray_local")
def test_auto_runs_on_ray_where_a_cluster_is_named_or_connected(monkeypatch):
    assert choose_engine(Options(engine="threads")) == "threads"
    assert choose_engine(Options()) == "ray"  # this test's driver is connected
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    assert choose_engine(Options()) == "threads"
    assert choose_engine(Options(address="auto")) == "ray"
    assert choose_engine(Options(device="cuda")) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert choose_engine(Options()) == "ray"


def test_a_machine_alone_runs_on_threads_without_ray(tmp_path, squares_model):
    scene = squares_everywhere(tmp_path, size=400)
    out = tmp_path / "o.gpkg"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(cli(scene, "--model", squares_model, "--out", out), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run = frame(out, "geodet_runs").iloc[0]
    assert run["engine"] == "threads" and run["tiles_done"] == run["tiles_total"]


def test_threads_plan_follows_the_cpus():
    assert plan_threads("auto", None, 2).count == 1  # one detector, ORT on both cores
    assert (plan_threads("cpu", None, 16).count, plan_threads("cpu", None, 16).threads) \
        == (4, 4)
    gpu = plan_threads("cuda", None, 8)  # one session on the GPU, reading on 8 cores
    assert (gpu.count, gpu.device, gpu.readers) == (1, "cuda", 8)


def test_threads_engine_refuses_a_cluster_address(capsys, tmp_path, squares_model):
    scene = write_tif(tmp_path / "s.tif", np.zeros((3, 64, 64), np.uint8))
    line = run_error(capsys, ["detect", scene, "--model", squares_model, "--out",
                              tmp_path / "o.gpkg", "--engine", "threads", "--address",
                              "127.0.0.1:6379"])
    assert "--engine threads runs without Ray, but --address names a Ray cluster" in line
    assert not list(tmp_path.glob("o.gpkg*"))


def test_cuda_on_threads_without_a_gpu_warns_and_runs_on_the_cpu(tmp_path, squares_model,
                                                                   caplog):
    scene = squares_everywhere(tmp_path, size=300)
    result = geodet.detect(scene, squares_model, engine="threads", device="cuda",
                           progress=False)
    assert len(result) > 0 and result.attrs["geodet"]["engine"] == "threads"
    assert "GPU requested but ONNX Runtime runs on ['CPUExecutionProvider']" in caplog.text
