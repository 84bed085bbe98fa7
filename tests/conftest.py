"""Shared fixtures: real ONNX models, one real local Ray cluster, a multi-node one."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from geodet.engine import LOCAL_CLUSTER, NO_METRICS_SERVERS
from tests.ray_nodes import RayNodes
from tools.toy_models import bright_squares

pytest_plugins = ["tests.servers"]  # http_server, s3_server

#: Loopback address for the test cluster (Ray keeps it; it rewrites 127.0.0.1).
TEST_NODE_IP = "127.0.0.3"


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the whole session, on loopback, stopped at the end;
    set up as geodet's embedded cluster is (token auth on, metrics servers off)."""
    import ray

    with pytest.MonkeyPatch.context() as env:
        for name, value in NO_METRICS_SERVERS.items():
            env.setenv(name, value)
        ray.init(**{**LOCAL_CLUSTER, "_node_ip_address": TEST_NODE_IP}, num_cpus=2,
                 num_gpus=0, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def squares_model(model_dir) -> Path:
    """The bright-square detector, 128 x 128 input, dynamic batch."""
    path = model_dir / "squares128.onnx"
    onnx.save(bright_squares(size=128), path)
    return path


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory nobody can write to (a read-only mount when running as root)."""
    path = tmp_path / "readonly"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot make a read-only directory here (not allowed to mount)")
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["umount", str(path)], check=False)


@pytest.fixture
def ray_nodes():
    if shutil.which("ray", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("the ray command is not installed beside this Python")
    nodes = RayNodes()
    yield nodes
    nodes.stop()
