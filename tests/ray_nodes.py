"""A real multi-node Ray cluster for fault and cluster tests: separate `ray start`
processes on loopback addresses, started one after another and stopped at the end.

Ray's gRPC servers listen on every interface whatever the node address, so the
cluster keeps Ray's token authentication on, with a fresh random token per cluster
given to its nodes and drivers through the environment (``RAY_AUTH_TOKEN``), and
its unauthenticated metrics servers off, as geodet's own embedded cluster does."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time

from geodet.engine import LOCAL_CLUSTER, NO_METRICS_SERVERS


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RayNodes:
    """Ray nodes started as separate `ray start --block` processes on loopback
    addresses (a head on 127.0.0.4, workers on 127.0.0.5...), token auth on: pass
    `env` to every process that talks to the cluster."""

    HEAD_IP = "127.0.0.4"

    def __init__(self) -> None:
        self.ray = os.path.join(os.path.dirname(sys.executable), "ray")
        self.env = {**os.environ, **NO_METRICS_SERVERS, "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.procs: list[subprocess.Popen] = []
        self.address = self.dashboard = ""
        self.cpus = 0

    def _start(self, args: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen([self.ray, "start", "--block", "--disable-usage-stats", *args],
                                env=self.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def head(self, num_cpus: int = 2, dashboard: bool = False) -> str:
        ip = self.HEAD_IP
        port = free_port(ip)
        # Ray's fixed default for the agent's HTTP port (52365) may be taken by another
        # cluster on this machine (the tests' own): give every port explicitly.
        args = ["--head", "--node-ip-address", ip, "--port", str(port),
                "--system-config", json.dumps(LOCAL_CLUSTER["_system_config"]),
                "--dashboard-agent-listen-port", str(free_port(ip)),
                "--num-cpus", str(num_cpus), "--num-gpus", "0"]
        if dashboard:
            dash = free_port(ip)
            args += ["--include-dashboard", "true", "--dashboard-host", ip,
                     "--dashboard-port", str(dash)]
            self.dashboard = f"http://{ip}:{dash}"
        else:
            args += ["--include-dashboard", "false"]
        proc = self._start(args)
        self.address, self.cpus = f"{ip}:{port}", num_cpus
        self._wait_port(ip, dash if dashboard else port, proc)
        return self.address

    def worker(self, ip: str, num_cpus: int, num_gpus: int = 0) -> subprocess.Popen:
        """Start a worker node and wait until it has joined (one at a time: on two
        cores, nodes started together can time out during start-up; then retry)."""
        for attempt in range(2):
            proc = self._start(["--address", self.address, "--node-ip-address", ip,
                                "--dashboard-agent-listen-port", str(free_port(ip)),
                                "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus)])
            try:
                self.wait_for(self.cpus + num_cpus, proc=proc)
                self.cpus += num_cpus
                return proc
            except AssertionError:
                self.kill(proc)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def wait_for(self, cpus: float, timeout: float = 90,
                 proc: subprocess.Popen | None = None) -> None:
        """Until the cluster reports ``cpus`` CPUs (or ``proc`` has died)."""
        deadline, out = time.time() + timeout, ""
        while time.time() < deadline and (proc is None or proc.poll() is None):
            done = subprocess.run([self.ray, "status", "--address", self.address],
                                  env=self.env, capture_output=True, text=True)
            out = done.stdout + done.stderr
            found = re.search(r"/([0-9.]+) CPU", out)
            if found and float(found.group(1)) >= cpus:
                return
            time.sleep(1)
        errors = [p.stderr.read()[-1500:] for p in self.procs if p.poll() is not None]
        raise AssertionError(f"the cluster never reached {cpus} CPUs: {out[-1500:]} "
                             f"{errors}")

    @staticmethod
    def _wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with socket.create_connection((host, port), timeout=1):
                    return
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"ray start failed: {proc.stderr.read()[-2000:]}") from None
                time.sleep(0.5)
        raise AssertionError("ray start did not open its port in time")

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 8  # a graceful stop takes ~30 s a node: not worth it
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self.kill(proc)  # the whole process group: raylet, GCS, workers
