"""`ray job submit` against a real head node, and a loopback-only embedded cluster.
Every Ray process started here listens and talks on loopback. (The cluster files'
offline checks are in test_cluster_files.py.)"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyogrio
import pytest

from tests.helpers import scene_with_squares, write_tif

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
HEAD_IP = "127.0.0.4"


def test_ray_job_submit_runs_a_detection(tmp_path, ray_nodes, squares_model):
    ray_nodes.head(dashboard=True)
    address, env = ray_nodes.dashboard, ray_nodes.env
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((300, 300), [(40, 50)]))
    out = tmp_path / "out.gpkg"
    submit = [os.path.join(os.path.dirname(sys.executable), "ray"), "job", "submit",
              "--address", address, "--", sys.executable, str(CLUSTER / "submit.py"),
              str(scene), "--model", str(squares_model), "--out", str(out), "--no-progress"]
    for _ in range(30):  # the head's job agent comes up a little after its dashboard
        done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
        if "No available agent" not in done.stderr:
            break
        time.sleep(2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    assert len(pyogrio.read_dataframe(out, layer="detections")) == 1


RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "python")


def test_embedded_cluster_talks_on_loopback_only(tmp_path):
    """A laptop run's Ray: every TCP connection of its processes stays on 127.0.0.0/8."""
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    probe = textwrap.dedent("""
        import os, subprocess, ray
        from geodet.engine import ray_cluster
        with ray_cluster(None):
            @ray.remote
            def f():
                return os.getpid()
            workers = set(ray.get([f.remote() for _ in range(4)]))
            print(subprocess.run(["ss", "-tnpH", "state", "established"],
                                 capture_output=True, text=True).stdout)
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    ray_lines = [ln for ln in done.stdout.splitlines()
                 if any(f'"{p}' in ln for p in RAY_PROCESSES)]
    assert ray_lines, done.stdout
    for line in ray_lines:
        local, peer = line.split()[2:4]
        assert is_loopback(local) and is_loopback(peer), line


def is_loopback(endpoint: str) -> bool:
    """``127.0.0.2:6379``, ``[::1]:80`` or ``[::ffff:127.0.0.1]:80`` -> True."""
    ip = ipaddress.ip_address(endpoint.rsplit(":", 1)[0].strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback
