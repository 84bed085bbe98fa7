"""Run shell steps as a user would, from a "laptop" against "machines" that are loopback
addresses of one private network namespace.

A test starts it as root::

    unshare --net --pid --mount --fork --mount-proc python tests/loopback_sandbox.py SPEC

The network there has nothing but ``lo``. The laptop gets private tmpfs over /run, /tmp
and /dev/shm, and ``home`` as root's home directory, at ``HOME``, through a private copy
of /etc/passwd (ssh takes the home directory from the password database, not from
$HOME). Each address in ``ips`` is a machine: an sshd on ``ssh_port`` in a nested PID and
mount namespace with its own /proc, /tmp and /dev/shm, so that ``ray stop`` on one
machine sees only that machine's processes, and Ray's session files stay apart. All
share the home directory, as with a network home. Each namespace's first process is this
module, which reaps orphans (Ray daemonises its servers); when the outer one exits, the
kernel kills everything left inside.

SPEC, a JSON file: ``{"home": dir, "ips": [...], "ssh_port": int, "cwd": dir,
"env": {...}, "steps": [{"name": str, "run": shell command, "timeout": s}],
"result": file name}``. ``home`` holds ``.ssh/`` and ``.sshd/host_key``. Steps run in
order with ``cwd`` and ``env``, until one fails; the last one runs in any case (it tears
down). Their exit codes, durations and output tails go to ``home/result`` as JSON.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

#: Where ``home`` appears inside the namespace: root's home directory there.
HOME = "/run/home"
OUTPUT_TAIL = 6000
SSHD_CONFIG = (
    f"HostKey {HOME}/.sshd/host_key\nAuthorizedKeysFile {HOME}/.ssh/authorized_keys\n"
    "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
    "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n")


def tmpfs(path: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", path], check=True)


def private_tmp() -> None:
    """A fresh tmpfs over /tmp, with the checkout and the Python environment bound back
    in where they lie under /tmp (a CI clone may): the machines run both."""
    keep = [str(Path(__file__).resolve().parents[1]), sys.prefix]
    hold = tempfile.mkdtemp(prefix="host-tmp-", dir="/run")  # PIDs repeat across namespaces
    subprocess.run(["mount", "--rbind", "/tmp", hold], check=True)
    tmpfs("/tmp")
    for path in keep:
        inside = os.path.relpath(path, "/tmp")
        if not inside.startswith(".."):
            os.makedirs(os.path.join("/tmp", inside), exist_ok=True)
            subprocess.run(["mount", "--rbind", os.path.join(hold, inside),
                            os.path.join("/tmp", inside)], check=True)


def reap_until(child: int) -> int:
    """As a namespace's first process: reap every orphan until ``child`` exits."""
    while True:
        pid, status = os.wait()
        if pid == child:
            return os.waitstatus_to_exitcode(status)


def enter_laptop(home: str) -> None:
    """Loopback up, private /run, /tmp and /dev/shm, ``home`` as root's home."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tmpfs("/run")
    os.mkdir("/run/sshd", 0o755)
    os.mkdir(HOME, 0o700)
    subprocess.run(["mount", "--bind", home, HOME], check=True)  # before /tmp is covered
    private_tmp()
    tmpfs("/dev/shm")
    sshd = Path(HOME, ".sshd")
    users = [line.split(":") for line in Path("/etc/passwd").read_text().splitlines()]
    for user in users:
        if user[2] == "0":
            user[5] = HOME
    (sshd / "passwd").write_text("".join(":".join(user) + "\n" for user in users))
    subprocess.run(["mount", "--bind", str(sshd / "passwd"), "/etc/passwd"], check=True)
    (sshd / "sshd_config").write_text(SSHD_CONFIG)


def start_machine(ip: str, port: int) -> None:
    """A machine at ``ip``: this module in machine mode, in its own PID and mount
    namespace; returns once its sshd accepts connections."""
    subprocess.Popen(["unshare", "--pid", "--mount", "--fork", "--mount-proc",
                      sys.executable, __file__, "--machine", ip, str(port)],
                     stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 90  # minutes-long waits seen on 2 busy cores
    while True:
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                log = Path(f"{HOME}/.sshd/{ip}.log")
                raise AssertionError(f"sshd on {ip}:{port} never answered: "
                                     f"{log.read_text()[-1500:] if log.exists() else ''}"
                                     ) from None
            time.sleep(0.1)


def machine(ip: str, port: int) -> int:
    """Machine mode: own /tmp and /dev/shm, sshd in the foreground, reap."""
    private_tmp()
    tmpfs("/dev/shm")
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", f"{HOME}/.sshd/sshd_config",
                             "-E", f"{HOME}/.sshd/{ip}.log", "-o", f"ListenAddress={ip}:{port}"])
    return reap_until(sshd.pid)


def run_steps(spec: dict) -> list[dict]:
    env = {**spec["env"], "HOME": HOME}
    results: list[dict] = []
    steps = spec["steps"]
    for i, step in enumerate(steps):
        if results and results[-1]["rc"] != 0 and i != len(steps) - 1:
            continue
        start = time.monotonic()
        try:
            done = subprocess.run(["bash", "-c", step["run"]], cwd=spec["cwd"], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  timeout=step.get("timeout", 120))
            rc, out = done.returncode, done.stdout
        except subprocess.TimeoutExpired as e:
            rc, out = 124, (e.stdout or b"").decode(errors="replace") + "\n[timed out]"
        results.append({"name": step["name"], "rc": rc, "output": out[-OUTPUT_TAIL:],
                        "seconds": round(time.monotonic() - start, 1)})
    return results


def laptop(spec: dict) -> int:
    enter_laptop(spec["home"])
    for ip in spec["ips"]:
        start_machine(ip, spec["ssh_port"])
    results = run_steps(spec)
    Path(HOME, spec["result"]).write_text(json.dumps(results, indent=1))
    return 0


def main() -> None:
    if sys.argv[1] == "--machine":
        sys.exit(machine(sys.argv[2], int(sys.argv[3])))
    spec = json.loads(Path(sys.argv[1]).read_text())
    child = os.fork()
    if child == 0:
        try:
            code = laptop(spec)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    sys.exit(reap_until(child))


if __name__ == "__main__":
    main()
