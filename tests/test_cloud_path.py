"""The cloud path: scenes, models and outputs in object storage (moto's S3 server on
loopback), a model given by URL on a multi-node loopback cluster, and detectors that
never wait forever for resources."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import boto3
import pyogrio
import pytest

import geodet
from geodet.cli import main as cli_main
from geodet.detections import ChunkResult, Detections, TileOutcome, TileStatus
from geodet.engine import describe_nodes, plan_actors
from geodet.errors import InputError
from geodet.resume import ResumeRecord
from tests.helpers import scene_with_squares, squares_everywhere, tiles_recorded, write_tif

BUCKET = "geodet-test"


@pytest.fixture
def bucket(s3_server):
    """An empty bucket on the loopback S3 server; GDAL pointed at it as well."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    gdal = {"AWS_S3_ENDPOINT": s3_server.endpoint.removeprefix("http://"),
            "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}
    return s3, {**os.environ, **s3_server.env, **gdal}


def detect_cli(*args, env: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "geodet", "detect", *map(str, args),
                           "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=300)


def test_scenes_model_and_output_all_in_the_bucket(tmp_path, bucket, squares_model):
    s3, env = bucket
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((300, 300), [(40, 50), (200, 90)]))
    s3.upload_file(str(scene), BUCKET, "scenes/s.tif")
    s3.upload_file(str(squares_model), BUCKET, "models/squares.onnx")
    out = f"s3://{BUCKET}/results/squares.gpkg"

    done = detect_cli(f"/vsis3/{BUCKET}/scenes/s.tif", "--model",
                      f"s3://{BUCKET}/models/squares.onnx", "--out", out, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {"scenes/s.tif", "models/squares.onnx", "results/squares.gpkg"}, \
        "only the finished output is left: no progress record, no temporary object"
    local = tmp_path / "downloaded.gpkg"
    s3.download_file(BUCKET, "results/squares.gpkg", str(local))
    assert len(pyogrio.read_dataframe(local, layer="detections")) == 2
    [run] = pyogrio.read_dataframe(local, layer="geodet_runs").to_dict("records")
    assert run["model"] == f"s3://{BUCKET}/models/squares.onnx"
    assert run["model_sha256"] == hashlib.sha256(squares_model.read_bytes()).hexdigest()

    again = detect_cli(f"/vsis3/{BUCKET}/scenes/s.tif", "--model", squares_model,
                       "--out", out, env=env)
    assert again.returncode == 2 and "output exists" in again.stderr
    assert "--overwrite" in again.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(("out", "model", "message"), [
    ("s3://no-such-bucket/o.gpkg", None, "bucket of s3://no-such-bucket/o.gpkg does not exist"),
    (f"s3://{BUCKET}/o.tif", None, "must be a GeoPackage"),
    ("nope://somewhere/o.gpkg", None, "Protocol not known: nope"),
    (None, f"s3://{BUCKET}/missing.onnx", f"not found: s3://{BUCKET}/missing.onnx"),
])
def test_bad_remote_locations_are_input_errors(tmp_path, bucket, squares_model, out, model,
                                               message):
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((100, 100), [(5, 5)]))
    with pytest.raises(InputError, match=message):
        geodet.detect(scene, model or squares_model, out, progress=False)
    assert "Contents" not in bucket[0].list_objects_v2(Bucket=BUCKET)


def chunk(tiles: list[int]) -> ChunkResult:
    outcomes = tuple(TileOutcome(0, t, TileStatus.DONE, 1) for t in tiles)
    dets = Detections.build([[t, t, t + 5, t + 5] for t in tiles], [0.9] * len(tiles),
                            [0] * len(tiles), [0] * len(tiles), tiles)
    return ChunkResult(dets, outcomes, "CPUExecutionProvider")


def test_progress_record_lives_beside_a_remote_output(bucket):
    s3, _ = bucket
    out = f"s3://{BUCKET}/runs/cars.gpkg"
    with ResumeRecord(out, {"run": 1}, resume=False) as record:
        record.add(chunk([0, 1]))  # the first chunk is uploaded at once
        record.add(chunk([2]))  # within UPLOAD_EVERY_S: uploaded when the run stops
    # A rerun elsewhere (a fresh head node: nothing local) finds every chunk.
    with ResumeRecord(out, {"run": 1}, resume=True) as record:
        resumed = record.done([4])
        assert resumed.done[0].tolist() == [True, True, True, False]
        assert len(resumed.detections) == 3
    with pytest.raises(InputError, match="belongs to a run with other inputs"):
        ResumeRecord(out, {"run": 2}, resume=True)
    with ResumeRecord(out, {"run": 1}, resume=True) as record:
        record.finish()
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET), "finished: record removed"


def test_killed_run_resumes_from_the_bucket(tmp_path, bucket, squares_model):
    """Killed outright after its first upload of the progress record: a rerun with
    --resume (nothing local survives a run's end) fetches it and finishes the job."""
    s3, env = bucket
    env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    scene = squares_everywhere(tmp_path)
    out = f"s3://{BUCKET}/runs/resumed.gpkg"
    args = ["-m", "geodet", "detect", str(scene), "--model", str(squares_model), "--out", out,
            "--batch-size", "1", "--overlap", "0.5", "--no-progress"]
    run = subprocess.Popen([sys.executable, *args], env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and run.poll() is None and "Contents" not in \
            s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/resumed.gpkg.progress"):
        time.sleep(0.1)
    assert run.poll() is None, "the run finished before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    run.wait()
    record = tmp_path / "uploaded.progress"
    s3.download_file(BUCKET, "runs/resumed.gpkg.progress", str(record))
    partial = tiles_recorded(record)
    assert partial > 0

    other = subprocess.run([sys.executable, *args, "--conf", "0.3", "--resume"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 2, other.stderr[-3000:]  # the record was fetched and checked
    assert f"{out}.progress belongs to a run with other inputs" in other.stderr
    done = subprocess.run([sys.executable, *args, "--resume"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {"runs/resumed.gpkg"}, "the record goes once the output is complete"
    local = tmp_path / "resumed.gpkg"
    s3.download_file(BUCKET, "runs/resumed.gpkg", str(local))
    [run_row] = pyogrio.read_dataframe(local, layer="geodet_runs").to_dict("records")
    reference = geodet.detect(scene, squares_model, batch_size=1, overlap=0.5,
                              progress=False)
    got = pyogrio.read_dataframe(local, layer="detections")
    assert len(got) == len(reference) > 100
    assert got["score"].tolist() == reference["score"].tolist()
    tiles = pyogrio.read_dataframe(local, layer="tiles")
    assert tiles["tile_id"].is_unique and (tiles["status"] == "done").all()
    assert run_row["tiles_done"] == len(tiles)


def test_model_url_reaches_every_actor_of_a_multi_node_cluster(tmp_path, ray_nodes,
                                                               http_server, squares_model):
    """The head has no CPU and the workers one each (issue 15's probe): detectors are
    sized from single nodes, so one lands on each worker, and each gets the model
    from the object store: the URL itself is never opened on a node."""
    ray_nodes.head(num_cpus=0)
    ray_nodes.worker("127.0.0.5", num_cpus=1)
    ray_nodes.worker("127.0.0.6", num_cpus=1)
    (http_server.root / "squares.onnx").write_bytes(squares_model.read_bytes())
    model = f"{http_server.url}/squares.onnx"
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((900, 900), [(40, 50), (700, 600)]))
    out = tmp_path / "o.gpkg"
    done = detect_cli(scene, "--model", model, "--out", out, "--address", ray_nodes.address,
                      "--batch-size", "1", env=ray_nodes.env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert http_server.bytes_sent("squares.onnx") == squares_model.stat().st_size, \
        "the driver reads the model once"
    [run] = pyogrio.read_dataframe(out, layer="geodet_runs").to_dict("records")
    assert run["workers"] == 2 and run["model"] == model
    assert len(pyogrio.read_dataframe(out, layer="detections")) == 2

    # A GPU that no node has and nothing adds: one line after --wait-timeout.
    stuck = detect_cli(scene, "--model", squares_model, "--out", tmp_path / "x.gpkg",
                       "--address", ray_nodes.address, "--device", "cuda",
                       "--wait-timeout", "3", env=ray_nodes.env)
    assert stuck.returncode == 1, stuck.stderr[-3000:]
    assert "waiting up to 3 s (--wait-timeout)" in stuck.stderr
    last = stuck.stderr.strip().splitlines()[-1]
    assert last == ("geodet: failed: the Ray cluster could not place 1 detector(s) with "
                    "{GPU: 1, CPU: 1} each within 3 s (0 started); its nodes have "
                    "1 x {CPU: 0, GPU: 0}, 2 x {CPU: 1, GPU: 0}: give --workers, --device "
                    "or a longer --wait-timeout, or add nodes"), last
    assert not (tmp_path / "x.gpkg").exists()


CPU0, CPU1 = {"CPU": 0.0}, {"CPU": 1.0}
GPU_NODE = {"CPU": 4.0, "GPU": 1.0}


@pytest.mark.parametrize(("device", "workers", "nodes", "can_add", "want"), [
    # (count, resources, device, threads, waits)
    ("auto", None, [CPU0, CPU1, CPU1], None, (2, {"num_cpus": 1}, "cpu", 1, False)),
    ("auto", None, [{"CPU": 8.0}, {"CPU": 2.0}], None, (5, {"num_cpus": 2}, "cpu", 2, False)),
    ("cpu", 2, [{"CPU": 3.0}, CPU1], None, (2, {"num_cpus": 1.5}, "cpu", 1, False)),
    ("cpu", 3, [CPU1, CPU1], None, (3, {"num_cpus": 0.5}, "cpu", 1, False)),
    ("auto", 3, [GPU_NODE, GPU_NODE], None,
     (3, {"num_gpus": 0.5, "num_cpus": 2.0}, "cuda", 2, False)),
    ("cuda", None, [CPU1], None, (1, {"num_gpus": 1, "num_cpus": 1}, "cuda", 2, True)),
    ("auto", 2, [CPU1], True, (2, {"num_gpus": 1, "num_cpus": 1}, "cuda", 2, True)),
    ("auto", 2, [{"CPU": 2.0}], None, (2, {"num_cpus": 1.0}, "cpu", 1, False)),
    ("cpu", None, [CPU0], None, (1, {"num_cpus": 1}, "cpu", 1, True)),
])
def test_actors_are_sized_from_single_nodes(device, workers, nodes, can_add, want):
    plan = plan_actors(device, workers, nodes, can_add)
    assert (plan.count, plan.resources, plan.device, plan.threads, bool(plan.waits_for)) \
        == want
    # a GPU detector reads tiles on the CPUs it has; a CPU one infers on them
    assert plan.readers == (max(1, int(plan.resources["num_cpus"]))
                            if plan.device == "cuda" else 1)


def test_cuda_on_a_cluster_that_cannot_add_gpus_fails_at_once():
    with pytest.raises(InputError, match="has no GPU and cannot add GPU nodes"):
        plan_actors("cuda", None, [CPU1], can_add_gpus=False)


def test_nodes_are_described_by_shape():
    assert describe_nodes([CPU0, GPU_NODE, GPU_NODE]) == \
        "1 x {CPU: 0, GPU: 0}, 2 x {CPU: 4, GPU: 1}"
    assert describe_nodes([]) == "no node"


@pytest.mark.usefixtures("ray_local")
def test_cuda_on_a_local_cluster_without_gpu_fails_at_once(tmp_path, squares_model):
    """A cluster this process started cannot grow: no waiting for GPUs there."""
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((100, 100), [(5, 5)]))
    with pytest.raises(InputError, match="--device cuda, but the Ray cluster has no GPU"):
        geodet.detect(scene, squares_model, device="cuda", wait_timeout=600, progress=False)


def test_model_info_reads_a_model_url(http_server, squares_model, capsys):
    (http_server.root / "m.onnx").write_bytes(squares_model.read_bytes())
    assert cli_main(["model-info", f"{http_server.url}/m.onnx"]) == 0
    shown = capsys.readouterr().out
    assert f"model      {http_server.url}/m.onnx" in shown
    assert hashlib.sha256(squares_model.read_bytes()).hexdigest() in shown
    assert cli_main(["model-info", f"{http_server.url}/missing.onnx"]) == 2
    assert f"not found: {http_server.url}/missing.onnx" in capsys.readouterr().err
