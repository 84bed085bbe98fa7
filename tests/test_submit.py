"""cluster/submit.py passes `geodet detect` its arguments as they are: the cluster named
by `--address` in either form, or by RAY_ADDRESS (what Ray Jobs gives a job's driver), is
the one joined, not the last one started on the machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyogrio
import pytest

from tests.helpers import scene_with_squares, write_tif
from tests.ray_nodes import RayNodes

SUBMIT = Path(__file__).resolve().parents[1] / "cluster" / "submit.py"


@pytest.fixture(scope="module")
def two_clusters():
    """The target cluster (with a dashboard, to list its jobs), and a decoy started after
    it, both with a private Ray temp directory where the decoy is recorded as the latest
    cluster: what `--address auto` joins."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray puts sockets there
    target, decoy = RayNodes(), RayNodes()
    for nodes in (target, decoy):
        nodes.env["RAY_TMPDIR"] = temp
    latest = Path(temp, "ray", "ray_current_cluster")
    try:
        target.head(dashboard=True)
        decoy.head()
        deadline = time.monotonic() + 60
        while not (latest.exists() and decoy.address in latest.read_text()):
            assert time.monotonic() < deadline, "the decoy was never recorded as latest"
            time.sleep(0.5)
        yield target
    finally:
        decoy.stop()
        target.stop()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize("form", ["--address=HOST:PORT", "--address HOST:PORT",
                                  "RAY_ADDRESS"])
def test_submit_joins_the_cluster_it_is_given(form, tmp_path, two_clusters, squares_model):
    target = two_clusters
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((300, 300), [(40, 50)]))
    out = tmp_path / "out.gpkg"
    args = [str(scene), "--model", str(squares_model), "--out", str(out), "--no-progress"]
    env = dict(target.env)
    if form == "RAY_ADDRESS":
        env["RAY_ADDRESS"] = target.address
    else:
        args += form.replace("HOST:PORT", target.address).split()
    done = subprocess.run([sys.executable, str(SUBMIT), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(pyogrio.read_dataframe(out, layer="detections")) == 1
    # Asked in a process of the target's environment: it carries the cluster's token.
    listed = subprocess.run(
        [sys.executable, "-c", "import json, sys; from ray.util.state import list_jobs; "
         "print(json.dumps([j.entrypoint for j in list_jobs(address=sys.argv[1], "
         "detail=True) if j.type == 'DRIVER']))", target.dashboard],
        env=target.env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    drivers = json.loads(listed.stdout.strip().splitlines()[-1])
    assert any(str(out) in e for e in drivers), drivers
