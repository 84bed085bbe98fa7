"""GPU nodes asked for on an autoscaling cluster that has none yet: Ray's own fake
autoscaling cluster, with a "GPU" node type declared as plain resources and min 0
workers, run inside network, PID and mount namespaces (tests/autoscaling_run.py), so
that it stays on loopback and its `ray stop --force` sees only its own processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest

from tests.helpers import scene_with_squares, write_tif

ROOT = Path(__file__).resolve().parents[1]


def in_namespaces(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``command`` in fresh network (loopback only), PID and mount namespaces, with a
    private /tmp/ray; bash is the namespace's first process, reaping orphans."""
    inner = ("ip link set lo up && mkdir -p /tmp/ray && mount -t tmpfs tmpfs /tmp/ray && "
             '{ "$@" & wait $!; }')
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    return subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash",
                           "-c", inner, "bash", *command], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def namespaces():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip to keep the autoscaling cluster in its own "
                    "network and PID namespaces (its shutdown kills every Ray process)")
    probe = in_namespaces(["true"], timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot create namespaces here: {probe.stderr.strip()[-300:]}")


@pytest.mark.usefixtures("namespaces")
def test_gpu_nodes_are_added_from_zero_and_run_the_detectors(tmp_path, squares_model):
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((600, 600), [(40, 50), (400, 300)]))
    out, result = tmp_path / "o.gpkg", tmp_path / "result.json"
    done = in_namespaces([sys.executable, "-m", "tests.autoscaling_run", str(scene),
                          str(squares_model), str(out), str(result)], timeout=600)
    assert result.exists(), done.stdout[-2000:] + done.stderr[-3000:]
    got = json.loads(result.read_text())
    assert got["returncode"] == 0, got["stderr"]
    assert got["gpu_nodes_before"] == 0 and got["gpu_nodes_after"] == 2, got
    assert "the cluster has no GPU node yet; an autoscaler adds nodes" in got["stderr"]
    # The detectors asked for one GPU each: only the added "GPU" nodes could hold them.
    # Those nodes have no CUDA, so ONNX Runtime says it runs on the CPU there.
    assert "GPU requested but ONNX Runtime runs on" in got["stderr"]
    [run] = pyogrio.read_dataframe(out, layer="geodet_runs").to_dict("records")
    assert run["workers"] == 2 and json.loads(run["parameters"])["device"] == "cuda"
    assert len(pyogrio.read_dataframe(out, layer="detections")) == 2
