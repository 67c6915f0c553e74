"""Real services for the tests: a throwaway PostgreSQL cluster, configurable-http-proxy, the
Docker engine. Each helper either gives a working service or says exactly why it cannot."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("CI"))


class ServiceMissing(Exception):
    """A real service the test needs is not available on this machine."""


def skip_or_fail(reason: str) -> None:
    """Locally a missing service skips the test; in CI (``CI`` set) it fails it."""
    if IN_CI:
        pytest.fail(f"CI provides every service, but: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceMissing(f"process exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ServiceMissing(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


# ------------------------------------------------------------------------------ PostgreSQL
def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


@dataclass
class PostgresCluster:
    url: str  # postgresql+asyncpg://...
    port: int
    datadir: Path
    bindir: Path
    as_user: str | None

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        prefix = ["runuser", "-u", self.as_user, "--"] if self.as_user else []
        return subprocess.run([*prefix, *args], capture_output=True, check=False, timeout=60)

    def create_database(self, name: str) -> str:
        """A fresh empty database on this cluster; returns its async URL."""
        result = self._run(
            str(self.bindir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            name,
        )
        if result.returncode != 0:
            raise ServiceMissing(f"createdb failed: {result.stderr.decode().strip()}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def start(self) -> None:
        """Start the cluster (again, after ``kill``) on the same port and data; waits."""
        base = self.datadir.parent
        result = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            _pg_options(self.port, base),
            "-l",
            str(base / "log"),
            "-w",
            "-t",
            "30",
            "start",
        )
        if result.returncode != 0:
            log = (
                (base / "log").read_text(errors="replace")[-300:] if (base / "log").exists() else ""
            )
            raise ServiceMissing(f"pg_ctl start failed: {result.stderr.decode().strip()} {log}")

    def kill(self) -> None:
        """``kill -9`` of the postmaster, as a crash would; its backends go with it."""
        pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        # Backends notice their postmaster is gone on their own; none may hold the port.
        while time.monotonic() < deadline and _port_taken(self.port):
            time.sleep(0.05)

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop")
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def start_postgres() -> PostgresCluster:
    """Start a throwaway cluster (``initdb`` + ``pg_ctl``) on a free port; ≈ 1 s."""
    bindir = _pg_bindir()
    if bindir is None:
        raise ServiceMissing("PostgreSQL is not installed (run scripts/provision)")
    as_user: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServiceMissing("running as root but there is no 'postgres' user") from exc
        as_user = "postgres"
    base = Path(tempfile.mkdtemp(prefix="remoteapp-pg-"))
    if as_user:
        shutil.chown(base, as_user)
    datadir = base / "data"
    port = free_port()
    cluster = PostgresCluster(
        url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres",
        port=port,
        datadir=datadir,
        bindir=bindir,
        as_user=as_user,
    )
    result = cluster._run(
        str(bindir / "initdb"),
        "-D",
        str(datadir),
        "-U",
        "postgres",
        "-A",
        "trust",
        "--no-sync",
        "-E",
        "UTF8",
    )
    if result.returncode != 0:
        raise ServiceMissing(f"initdb failed: {result.stderr.decode().strip()[-300:]}")
    cluster.start()
    return cluster


def _pg_options(port: int, base: Path) -> str:
    return (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# ------------------------------------------------------------------------------ Docker engine
def docker_socket_problem() -> str | None:
    """None when a Docker engine answers, else why not."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        path = host.removeprefix("unix://")
        if not Path(path).exists():
            return f"no Docker engine socket at {path} (run scripts/provision)"
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(path)
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                answer = sock.recv(64)
        except OSError as exc:
            return f"the Docker engine at {path} does not answer: {exc}"
        if b" 200 " not in answer:
            return f"the Docker engine at {path} answered {answer[:40]!r}"
    return None


# ------------------------------------------------------------------------------ the proxy
def chp_command() -> list[str]:
    local = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return [str(local)]
    found = shutil.which("configurable-http-proxy")
    if found:
        return [found]
    raise ServiceMissing("configurable-http-proxy is not installed (run scripts/provision)")


@dataclass
class Proxy:
    """A running configurable-http-proxy; ``restart`` keeps its ports but loses its routes."""

    public_port: int
    api_port: int
    token: str
    default_target: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    def start(self) -> None:
        command = [
            *chp_command(),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.public_port),
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            str(self.api_port),
            "--log-level",
            "warn",
        ]
        if self.default_target:
            command += ["--default-target", self.default_target]
        env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": self.token}
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.api_port, process=self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def routes(self) -> dict[str, dict[str, object]]:
        import json

        request = urllib.request.Request(
            self.api_url + "/api/routes", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            data: dict[str, dict[str, object]] = json.load(response)
            return data


@contextlib.contextmanager
def running_proxy(default_target: str | None = None) -> Iterator[Proxy]:
    proxy = Proxy(
        public_port=free_port(),
        api_port=free_port(),
        token=os.urandom(16).hex(),
        default_target=default_target,
    )
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


__all__ = [
    "IN_CI",
    "REPO",
    "PostgresCluster",
    "Proxy",
    "ServiceMissing",
    "chp_command",
    "docker_socket_problem",
    "free_port",
    "running_proxy",
    "skip_or_fail",
    "start_postgres",
    "wait_for_port",
]
