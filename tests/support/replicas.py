"""Several service processes on one PostgreSQL database behind HAProxy, for the tests.

Each replica is a ``remoteappmanager`` process on its own 127.0.0.1 ports (service and gate).
HAProxy listens on two more: the service's (the hub routes ``{svc}`` there, one externally
managed service) and the gates' (the proxy's application routes point there, through
``REMOTEAPP_GATE_ROUTE_URL``). Both backends check ``{svc}health`` every second; failed
connections and requests lost with a dead replica are retried on another one, GET and HEAD
only after the request reached a server.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.hub import clean_environment
from tests.support.services import ServiceMissing, free_port, skip_or_fail, wait_for_port

HAPROXY = "/usr/sbin/haproxy"
PREFIX = "/services/remoteapp/"


def require_haproxy() -> str:
    """HAProxy's executable (skipped locally, a failure in CI, when it is not installed)."""
    found = shutil.which("haproxy") or (HAPROXY if Path(HAPROXY).exists() else None)
    if found is None:
        skip_or_fail("HAProxy is not installed (apt-get install haproxy)")
    assert found is not None
    return found


def haproxy_config(
    *,
    service_port: int,
    gate_port: int,
    replicas: Sequence[tuple[int, int]],
    prefix: str = PREFIX,
) -> str:
    """HAProxy's configuration for replicas at (service port, gate port) on 127.0.0.1."""
    services = "\n".join(
        f"    server r{index} 127.0.0.1:{port} check"
        for index, (port, _gate) in enumerate(replicas)
    )
    gates = "\n".join(
        f"    server g{index} 127.0.0.1:{gate} check port {port}"
        for index, (port, gate) in enumerate(replicas)
    )
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
    retries 3
    option redispatch 1
    # Replicas share two cores with everything else in the tests: a health answer may take
    # a while under load, and a replica is taken out only after two missed checks.
    timeout check 5s
    default-server inter 1s fall 2 rise 1

frontend service
    bind 127.0.0.1:{service_port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET {prefix}health
    http-check expect status 200
    retry-on conn-failure empty-response response-timeout
    # A request that reached a replica is replayed elsewhere only if replaying is harmless.
    http-request disable-l7-retry unless METH_GET
{services}

frontend gate
    bind 127.0.0.1:{gate_port}
    default_backend gates

backend gates
    balance roundrobin
    option httpchk GET {prefix}health
    http-check expect status 200
    retry-on conn-failure empty-response response-timeout
    http-request disable-l7-retry unless METH_GET
{gates}
"""


@dataclass
class Replica:
    """One service process (started, killed, restarted by the test)."""

    index: int
    port: int
    gate_port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        command = [str(Path(sys.executable).with_name("remoteappmanager"))]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.log.parent
            )
        try:
            wait_for_port(self.port, timeout=60, process=self.process)
        except ServiceMissing as exc:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"replica {self.index} did not start: {exc}\n{tail}") from None

    def kill(self) -> None:
        """SIGKILL: the process ends at once, its connections with it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class ReplicaSet:
    replicas: list[Replica]
    service_port: int
    gate_port: int
    log: Path
    haproxy: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}"

    @property
    def gate_url(self) -> str:
        return f"http://127.0.0.1:{self.gate_port}"


@contextlib.contextmanager
def running_replicas(
    tmp: Path,
    count: int,
    settings: Mapping[str, str],
    *,
    service_port: int | None = None,
    gate_port: int | None = None,
) -> Iterator[ReplicaSet]:
    """``count`` replicas with the environment ``settings`` (the database, the hub, the
    proxy...) behind HAProxy on ``service_port`` and ``gate_port``; all stopped at the end."""
    haproxy = require_haproxy()
    service_port = service_port or free_port()
    gate_port = gate_port or free_port()
    replicas = []
    for index in range(count):
        port, gate = free_port(), free_port()
        env = clean_environment()
        env.update(settings)
        env.update(
            JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}",
            REMOTEAPP_GATE_URL=f"http://127.0.0.1:{gate}",
            REMOTEAPP_GATE_ROUTE_URL=f"http://127.0.0.1:{gate_port}",
        )
        replicas.append(Replica(index, port, gate, env, tmp / f"replica-{index}.log"))
    config = tmp / "haproxy.cfg"
    config.write_text(
        haproxy_config(
            service_port=service_port,
            gate_port=gate_port,
            replicas=[(replica.port, replica.gate_port) for replica in replicas],
        )
    )
    checked = subprocess.run(
        [haproxy, "-c", "-q", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    group = ReplicaSet(replicas, service_port, gate_port, tmp / "haproxy.log")
    log = group.log.open("wb")
    try:
        for replica in replicas:
            replica.start()
        group.haproxy = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_for_port(service_port, timeout=30, process=group.haproxy)
        yield group
    finally:
        if group.haproxy is not None:
            group.haproxy.terminate()
            try:
                group.haproxy.wait(10)
            except subprocess.TimeoutExpired:
                group.haproxy.kill()
                group.haproxy.wait()
        for replica in replicas:
            replica.stop()
        log.close()
