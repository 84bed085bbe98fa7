"""Faults on a real multi-process Ray cluster: separate `ray start` nodes on loopback,
one declaring a GPU (so the GPU path is scheduled; ONNX Runtime falls back to the CPU
without CUDA), and a worker node killed mid-run."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pyogrio

import geodet
from tests.helpers import scene_with_squares, tiles_recorded, write_tif


def busy_scene(tmp_path, size=1800):
    rng = np.random.default_rng(2)
    corners = sorted({(int(x), int(y))
                      for x, y in rng.integers(0, size - 20, (1000, 2)) // 16 * 16})
    return write_tif(tmp_path / "s.tif", scene_with_squares((size, size), corners))


def test_gpu_node_is_scheduled_and_falls_back_to_cpu(tmp_path, ray_nodes, squares_model):
    ray_nodes.head(num_cpus=1)
    ray_nodes.worker("127.0.0.5", num_cpus=1, num_gpus=1)
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((300, 300), [(40, 50)]))
    out = tmp_path / "o.gpkg"
    done = subprocess.run(
        [sys.executable, "-m", "geodet", "detect", str(scene), "--model", str(squares_model),
         "--out", str(out), "--address", ray_nodes.address, "--no-progress"],
        env=ray_nodes.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GPU requested but ONNX Runtime runs on" in done.stderr
    [run] = pyogrio.read_dataframe(out, layer="geodet_runs").to_dict("records")
    assert run["workers"] == 1 and "CPUExecutionProvider" in run["execution_providers"]
    assert len(pyogrio.read_dataframe(out, layer="detections")) == 1


def test_killed_worker_node_loses_nothing(tmp_path, ray_nodes, squares_model, ray_local):
    ray_nodes.head(num_cpus=0)
    ray_nodes.worker("127.0.0.5", num_cpus=2)
    doomed = ray_nodes.worker("127.0.0.6", num_cpus=2)
    scene = busy_scene(tmp_path)
    out, progress = tmp_path / "o.gpkg", tmp_path / "o.gpkg.progress"
    run = subprocess.Popen(
        [sys.executable, "-m", "geodet", "detect", str(scene), "--model", str(squares_model),
         "--out", str(out), "--address", ray_nodes.address, "--device", "cpu",
         "--workers", "2", "--batch-size", "1", "--overlap", "0.5", "--no-progress"],
        env=ray_nodes.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while tiles_recorded(progress) < 40 and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert run.poll() is None, "the run finished before a node could be killed"
    ray_nodes.kill(doomed)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]

    reference = geodet.detect(scene, squares_model, batch_size=1, overlap=0.5,
                              progress=False)
    got = pyogrio.read_dataframe(out, layer="detections")
    assert len(got) == len(reference) > 100
    np.testing.assert_array_equal(got["score"], reference["score"])
    assert all(a.equals_exact(b, 1e-9) for a, b in zip(got.geometry, reference.geometry,
                                                       strict=True))
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert tiles["tile_id"].is_unique and (tiles["status"] == "done").all()
