"""What a run leaves on the machine: its processes (found by an environment marker
that every descendant inherits, whoever reparents it) and their listening sockets."""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import time
import uuid
from pathlib import Path

from geodet.reaper import marked

MARKER = "GEODET_TEST_RUN"


def marked_env(base: dict | None = None) -> tuple[dict, str]:
    """A copy of the environment with a fresh run marker; returns it and the marker."""
    tag = uuid.uuid4().hex
    env = {k: v for k, v in (base or os.environ).items() if k != "RAY_ADDRESS"}
    env[MARKER] = tag
    return env, tag


def marked_pids(tag: str) -> list[int]:
    """The live processes whose environment carries ``tag``."""
    return marked(MARKER, tag)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    return inodes


def _address(hex_addr: str, v6: bool) -> str:
    raw = bytes.fromhex(hex_addr)
    if not v6:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def listening(pids: list[int]) -> list[tuple[int, str, int]]:
    """``(pid, address, port)`` of every TCP socket the processes listen on."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[9]) in owner:  # 0A: LISTEN
                    addr, port = f[1].split(":")
                    found.append((owner[int(f[9])], _address(addr, v6), int(port, 16)))
    return found


def answers_without_token(host: str, port: int) -> int | None:
    """The HTTP status a plain GET /metrics gets (no token), None if not HTTP."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=3)
        conn.request("GET", "/metrics")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def reachable_on_loopback(address: str) -> str:
    """The loopback address to probe a listener on: itself when it is loopback, else
    127.0.0.1 (a wildcard listener answers there too)."""
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        return address
    return "::1" if ip.version == 6 else "127.0.0.1"


def is_exposed(address: str) -> bool:
    """A listener reachable from other machines: anything but loopback."""
    return not ipaddress.ip_address(address).is_loopback



def left_after(tag: str, seconds: float = 15) -> list[str]:
    """What is still alive ``seconds`` after a run's exit: ``"pid command"`` lines."""
    deadline = time.monotonic() + seconds
    while (pids := marked_pids(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = []
    for pid in pids:
        with contextlib.suppress(OSError):
            left.append(f"{pid} {Path(f'/proc/{pid}/cmdline').read_bytes()[:120]!r}")
    return left


def ray_sessions_of(driver: int, since: float, temp_dir: str = "/tmp/ray") -> list[str]:
    """The Ray session folders a driver started at ``since`` (a `time.time`) made: Ray
    names them after its PID, which an older, finished process may have had too."""
    found = []
    for d in Path(temp_dir).glob(f"session_*_{driver}"):
        with contextlib.suppress(OSError):
            if d.stat().st_mtime >= since - 1:
                found.append(d.name)
    return found
