"""A Docker engine of the test's own: its own dockerd and containerd, sockets, data and bridge.

The fault-injection tests kill the engine with ``kill -9``; they must never touch the
machine's engine, which others use. This daemon shares nothing with it: ``--data-root``,
``--exec-root`` (where dockerd starts its own containerd), ``--pidfile`` and its API socket
live in a fresh directory; its default bridge is an interface of its own (never
``--bridge=none``: a dockerd without a bridge deletes the host's ``docker0``, the machine
engine's), the networks it creates come from a pool of its own, and it leaves the host's
iptables alone (published ports go through ``docker-proxy``). ``--live-restore`` keeps
containers running while the daemon is down. ``remove`` stops it and removes every
container, mount and file it made.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.services import ServiceMissing

# Networks of a private engine come from a /16 of its own in 10.200-10.249: away from
# Docker's default pools (172.17-31, 192.168) and from another private engine's.
POOL_SECOND_OCTETS = range(200, 250)
START_TIMEOUT = 30.0
RESTART_DELAY = 3.0


class PrivateDocker:
    def __init__(self) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise ServiceMissing("dockerd is not installed (run scripts/provision)")
        if os.geteuid() != 0:
            raise ServiceMissing("a private dockerd needs root")
        self._dockerd = dockerd
        # Short: unix socket paths (containerd's lives under exec-root) hold 107 bytes at most.
        self.root = Path(tempfile.mkdtemp(prefix="rf-dockerd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.pidfile = self.root / "docker.pid"
        self.log = self.root / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None
        octet = secrets.choice(POOL_SECOND_OCTETS)
        self.address_pool = f"base=10.{octet}.0.0/16,size=24"
        # Its default bridge, made here; and the bridges of the networks it made ("br-" +
        # the network id's first 12 digits), deleted at the end should it leave them.
        self.bridge = "rfd" + secrets.token_hex(5)
        self.bridge_address = f"10.{octet}.255.1/24"
        self.bridges: set[str] = {self.bridge}

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        """Start the daemon (again, after ``kill``) and wait until its API answers."""
        if not Path("/sys/class/net", self.bridge).exists():
            for step in (
                ["ip", "link", "add", self.bridge, "type", "bridge"],
                ["ip", "addr", "add", self.bridge_address, "dev", self.bridge],
                ["ip", "link", "set", self.bridge, "up"],
            ):
                subprocess.run(step, check=True, capture_output=True)
        command = [
            self._dockerd,
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.pidfile),
            "--host", self.url,
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--live-restore",
            "--default-address-pool", self.address_pool,
            "--storage-driver=overlay2",
            "--log-level=warn",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise ServiceMissing(f"the private dockerd exited: {tail}")
            if self.answers():
                return
            time.sleep(0.1)
        raise ServiceMissing(f"the private dockerd did not answer within {START_TIMEOUT:g} s")

    def answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in sock.recv(64)
        except OSError:
            return False

    def kill(self) -> None:
        """``kill -9`` of dockerd, as a crash would (its containerd and proxies go with it;
        the containers, under their shims, keep running)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None
        # containerd gets SIGKILL when dockerd dies, but a new one cannot start before the
        # old one is gone (it holds its database's lock).
        deadline = time.monotonic() + 10
        while (leftover := self._processes(b"containerd", b"--config")) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        for pid in leftover:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # A containerd started at once after a crash may hang reconnecting to the running
        # containers' shims; restarting a few seconds later (as systemd's RestartSec would)
        # does not.
        time.sleep(RESTART_DELAY)

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The ``docker`` command against this engine."""
        env = {**os.environ, "DOCKER_HOST": self.url}
        return subprocess.run(
            ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def remove(self) -> None:
        """Remove its containers and networks, stop it, unmount what it left, delete it all."""
        if self.process is None and not self.answers():
            with contextlib.suppress(ServiceMissing):
                self.start()
        if self.answers():
            ids = self.docker("ps", "-aq").stdout.split()
            if ids:
                self.docker("rm", "-f", *ids)
            networks = self.docker("network", "ls", "-q", "--no-trunc", "-f", "driver=bridge")
            self.bridges.update("br-" + net[:12] for net in networks.stdout.split())
            self.docker("network", "prune", "-f")
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self._kill_leftovers()
        self._unmount()
        shutil.rmtree(self.root, ignore_errors=True)

    def _processes(self, *words: bytes) -> list[int]:
        """Processes whose command line names this daemon's root (and each of ``words``)."""
        marker = str(self.root).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                    continue
            except (OSError, IndexError):
                continue
            if marker in cmdline and all(word in cmdline for word in words):
                found.append(int(entry.name))
        return found

    def _container_processes(self) -> list[int]:
        """Processes in a container of this daemon (found by the container ids in cgroups)."""
        ids = {path.name for path in (self.root / "data" / "containers").glob("*")}
        if not ids:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cgroup = (entry / "cgroup").read_text()
            except OSError:
                continue
            if any(container_id in cgroup for container_id in ids):
                found.append(int(entry.name))
        return found

    def _kill_leftovers(self) -> None:
        # containerd, shims and proxies started for this daemon name its root in their
        # command lines; nothing else does. Container processes outlive a killed shim.
        for pid in [*self._processes(), *self._container_processes()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # The bridges of its networks, should it not have removed them itself; only those
        # it was seen to have (another engine's bridges look the same).
        for bridge in sorted(self.bridges):
            if Path("/sys/class/net", bridge).exists():
                delete = ["ip", "link", "delete", bridge]
                subprocess.run(delete, capture_output=True, check=False)

    def _unmount(self) -> None:
        prefix = str(self.root) + "/"
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(prefix)
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False, timeout=30)
