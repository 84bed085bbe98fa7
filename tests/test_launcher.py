"""cluster/onprem-gpu.yaml driven by Ray's own cluster launcher, as a user would: a head
and a GPU-less worker "workstation" reached over SSH, all on loopback addresses inside a
private network namespace (tests/loopback_sandbox.py), with token authentication on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pyogrio
import pytest
import yaml

from tests.helpers import scene_with_squares, write_tif
from tests.loopback_sandbox import HOME
from tools.toy_models import bright_squares

ROOT = Path(__file__).resolve().parents[1]
HEAD, WORKER, SSH_PORT = "127.0.0.5", "127.0.0.6", 2222
NAMESPACES = ["unshare", "--net", "--pid", "--mount", "--fork", "--mount-proc"]
TOOLS = ("unshare", "ip", "ssh", "ssh-keygen", "rsync", "ps")


def sandbox_unavailable() -> str | None:
    """Why the sandbox cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network, PID and mount namespaces)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not os.access("/usr/sbin/sshd", os.X_OK):
        missing.append("/usr/sbin/sshd (openssh-server)")
    if missing:
        return f"missing {', '.join(missing)} (.ci/run installs openssh-server and rsync)"
    probe = subprocess.run([*NAMESPACES, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create namespaces here: {probe.stderr.strip()}"
    return None


def cluster_file(home: Path) -> Path:
    """cluster/onprem-gpu.yaml with this site's addresses and login, nothing else changed."""
    config = yaml.safe_load((ROOT / "cluster" / "onprem-gpu.yaml").read_text())
    config["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    config["auth"] = {"ssh_user": "root", "ssh_private_key": "~/.ssh/id_ed25519"}
    path = home / "onprem.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


#: Asks the job API for the job list without, then with, the cluster's token.
DASHBOARD_AUTH = f"""
import pathlib, urllib.error, urllib.request
def status(headers):
    request = urllib.request.Request("http://{HEAD}:8265/api/jobs/", headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=30).status
    except urllib.error.HTTPError as e:
        return e.code
token = (pathlib.Path.home() / ".ray" / "auth_token").read_text().strip()
print("without token", status({{}}), "with token",
      status({{"Authorization": "Bearer " + token}}))
"""


def prepare_home(home: Path) -> None:
    """Keys, an ssh config with the port (the local provider has no port setting), an
    empty ~/.bashrc, and ~/geodet-venv: this test's environment, so that the cluster
    file's setup commands find geodet installed."""
    ssh, sshd = home / ".ssh", home / ".sshd"
    ssh.mkdir(parents=True)
    sshd.mkdir()
    for key in (ssh / "id_ed25519", sshd / "host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
    shutil.copy(ssh / "id_ed25519.pub", ssh / "authorized_keys")
    (ssh / "config").write_text(
        f"Host 127.0.0.*\n    Port {SSH_PORT}\n    StrictHostKeyChecking no\n"
        "    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n")
    (home / ".bashrc").write_text("")
    (home / "geodet-venv").symlink_to(sys.prefix)
    (home / "dashboard_auth.py").write_text(DASHBOARD_AUTH)




def user_steps(config: str) -> list[dict]:
    """What a user types (README / cluster file), with `-y` where ray asks to confirm."""
    h = HOME
    detect = f"{h}/scene.tif --model {h}/squares.onnx --no-progress"
    ray_status = f"RAY_AUTH_MODE=token ray status --address {HEAD}:6379"
    head_processes, worker_processes = (f"ps -eo args | grep -qE '[n]ode.ip.address=?{ip}'"
                                        for ip in (HEAD, WORKER))
    return [
        {"name": "token", "run": "ray get-auth-token --generate > /dev/null"},
        {"name": "up", "run": f"ray up -y {config}", "timeout": 240},
        {"name": "two nodes", "run": f"{head_processes} && for i in $(seq 120); do "
                                     f"{ray_status} > {h}/status 2>&1 && grep -q "
                                     f"' 2 local.cluster.node' {h}/status && exit 0; "
                                     f"sleep 1; done; cat {h}/status; exit 1", "timeout": 150},
        {"name": "submit", "run": f"ray submit {config} cluster/submit.py -- {detect} "
                                  "--out submit.gpkg", "timeout": 180},
        {"name": "rsync-down", "run": f"mkdir -p {h}/fetched && ray rsync-down {config} "
                                      f"'~/submit.gpkg' {h}/fetched/"},
        {"name": "job", "run": f"RAY_AUTH_MODE=token ray job submit --address "
                               f"http://{HEAD}:8265 -- geodet detect {detect} "
                               f"--out {h}/job.gpkg", "timeout": 180},
        {"name": "dashboard auth", "run": f"python {h}/dashboard_auth.py"},
        {"name": "down", "run": f"ray down -y {config} && sleep 1 && ! {head_processes}",
         "timeout": 120},
        {"name": "stop worker", "run": f"{worker_processes} && ssh {WORKER} "
                                       f"geodet-venv/bin/ray stop && ! {worker_processes}",
         "timeout": 120},
    ]


UNAVAILABLE = sandbox_unavailable()


@pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")
def test_onprem_cluster_file_runs_the_readme_commands(tmp_path):
    home = tmp_path / "home"
    prepare_home(home)
    write_tif(home / "scene.tif", scene_with_squares((300, 300), [(40, 50)]))
    onnx.save(bright_squares(size=128), home / "squares.onnx")
    config = cluster_file(home)
    spec = {"home": str(home), "ips": [HEAD, WORKER], "ssh_port": SSH_PORT,
            "cwd": str(ROOT), "result": "steps.json",
            "steps": user_steps(f"{HOME}/{config.name}"),
            "env": {"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG": "C.UTF-8", "RAY_USAGE_STATS_ENABLED": "0"}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([*NAMESPACES, sys.executable, str(ROOT / "tests" /
                                                            "loopback_sandbox.py"),
                           str(tmp_path / "spec.json")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = json.loads((home / "steps.json").read_text())
    report = "\n".join(f"--- {s['name']}: exit {s['rc']} in {s['seconds']} s\n"
                       f"{s['output'][-2500:]}" for s in steps if s["rc"])
    assert [s["rc"] for s in steps] == [0] * len(user_steps("")), report
    by_name = {s["name"]: s for s in steps}
    assert "succeeded" in by_name["job"]["output"]
    assert "without token 401 with token 200" in by_name["dashboard auth"]["output"]
    for out in (home / "fetched" / "submit.gpkg", home / "job.gpkg"):
        assert len(pyogrio.read_dataframe(out, layer="detections")) == 1, out
