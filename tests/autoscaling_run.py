"""Run `geodet detect --device cuda` on Ray's fake autoscaling cluster, whose "GPU"
node type (plain resources {"CPU": 1, "GPU": 1}) starts with no node, and write what
happened as JSON. Run by tests/test_autoscaling.py inside its own network, PID and
mount namespaces only: the cluster's start and shutdown run `ray stop --force`.

    python -m tests.autoscaling_run SCENE MODEL OUT RESULT.json
"""

from __future__ import annotations

import json
import subprocess
import sys

import ray
from ray.cluster_utils import AutoscalingCluster

GPU_TYPE = {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0,
            "max_workers": 2}


class FakeGpuCluster(AutoscalingCluster):
    """`AutoscalingCluster` with its whole config written here: the Ray wheel does not
    ship the example config it starts from (fake_multi_node/example.yaml)."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False,
                         **config_kwargs):
        return {
            "cluster_name": "fake_multinode", "max_workers": 4,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                         "disable_node_updaters": True, "disable_launch_config_check": True},
            "available_node_types": {**worker_node_types, "ray.head.default": {
                "resources": dict(head_resources), "node_config": {}, "max_workers": 0}},
            "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0,
            "idle_timeout_minutes": 10, "docker": {}, "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": [],
            "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
            **config_kwargs}


def gpu_nodes() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) >= 1)


def main(scene: str, model: str, out: str, result: str) -> None:
    cluster = FakeGpuCluster(head_resources={"CPU": 1}, worker_node_types={"gpu": GPU_TYPE})
    cluster.start()
    try:
        ray.init("auto", logging_level="ERROR")
        before = gpu_nodes()
        ray.shutdown()
        done = subprocess.run(
            [sys.executable, "-m", "geodet", "detect", scene, "--model", model, "--out", out,
             "--address", "auto", "--device", "cuda", "--workers", "2",
             "--wait-timeout", "180", "--no-progress"],
            capture_output=True, text=True, timeout=400)
        ray.init("auto", logging_level="ERROR")
        after = gpu_nodes()
        ray.shutdown()
    finally:
        cluster.shutdown()
    with open(result, "w") as f:
        json.dump({"gpu_nodes_before": before, "gpu_nodes_after": after,
                   "returncode": done.returncode, "stderr": done.stderr[-4000:]}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
