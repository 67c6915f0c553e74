"""The whole service as separate processes, each of which a test may kill -9 and start again.

PostgreSQL (a throwaway cluster), a private Docker engine (``PrivateDocker``), JupyterHub
(which starts configurable-http-proxy and restarts it when it dies, as in production) and our
service (externally managed: ``remoteappmanager`` run with the settings an operator would
give). ``FaultStack`` knows how to kill each one, start it again, and check the invariants
that must hold once everything is back: no grant lost, no container or route orphaned, every
running session listed to its owner and reachable through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp

from remoteappmanager import bootstrap
from remoteappmanager.domain.models import Policy
from remoteappmanager.services import catalogue
from tests.support.busybox_image import TEST_IMAGE, ensure_test_image
from tests.support.hub import HubPorts, hub_environment, write_hub_config
from tests.support.private_docker import PrivateDocker
from tests.support.services import PostgresCluster, start_postgres, wait_for_port

PREFIX = "/services/remoteapp/"
PASSWORD = "faults-" + secrets.token_hex(8)
REALM_LABEL = "eu.simphony-project.docker.runinfo.realm"
URL_ID_LABEL = "eu.simphony-project.docker.runinfo.url_id"
USER_LABEL = "eu.simphony-project.docker.runinfo.user"
# Seconds between the service's reconciliations (its default).
RECONCILE_INTERVAL = 5.0

# A hub service holding the test's admin token: it creates the users and their API tokens.
_HUB_EXTRA = """
c.JupyterHub.services.append({{"name": "fault-admin", "api_token": {admin_token!r}}})
c.JupyterHub.load_roles.append(
    {{"name": "fault-admin", "services": ["fault-admin"], "scopes": ["admin:users", "tokens"]}}
)
"""


@dataclass
class Answer:
    """One HTTP answer as a client saw it: status (0: no connection), seconds, JSON body."""

    status: int
    seconds: float
    body: Any = None
    text: str = ""

    @property
    def is_error_envelope(self) -> bool:
        return (
            isinstance(self.body, dict)
            and isinstance(self.body.get("type"), str)
            and isinstance(self.body.get("message"), str)
            and set(self.body) == {"type", "message"}
        )


@dataclass
class FaultStack:
    tmp: Path
    postgres: PostgresCluster
    docker: PrivateDocker
    ports: HubPorts
    database_url: str
    realm: str
    proxy_token: str
    service_token: str
    admin_token: str
    hub_env: dict[str, str]
    users: list[str]
    mapping_ids: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    hub: subprocess.Popen[bytes] | None = None
    service: subprocess.Popen[bytes] | None = None
    client: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ set-up
    @classmethod
    async def create(cls, tmp: Path, users: int) -> FaultStack:
        postgres = start_postgres()
        docker = PrivateDocker()
        try:
            docker.start()
            await asyncio.to_thread(ensure_test_image, docker_url=docker.url)
            database_url = postgres.create_database("faults")
            names = [f"f{index:02d}" for index in range(users)]
            ports = HubPorts.free()
            stack = cls(
                tmp=tmp,
                postgres=postgres,
                docker=docker,
                ports=ports,
                database_url=database_url,
                realm="faults-" + secrets.token_hex(4),
                proxy_token=secrets.token_hex(32),
                service_token=secrets.token_hex(32),
                admin_token=secrets.token_hex(32),
                hub_env={},
                users=names,
            )
            await stack._seed()
            write_hub_config(tmp, _HUB_EXTRA.format(admin_token=stack.admin_token))
            stack.hub_env = hub_environment(
                tmp,
                ports,
                PASSWORD,
                REMOTEAPP_SERVICE_API_TOKEN=stack.service_token,
                CONFIGPROXY_AUTH_TOKEN=stack.proxy_token,
            )
            stack.client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
            stack.start_hub()
            stack.start_service()
            await stack.wait_healthy(60)
            await stack._issue_tokens()
        except BaseException:
            await cls._teardown(postgres, docker)
            raise
        return stack

    async def _seed(self) -> None:
        await bootstrap.upgrade_database(self.database_url)
        async with bootstrap.build_database(self.database_url) as database:
            uow = database.unit_of_work
            await catalogue.create_application(uow, TEST_IMAGE)
            for name in self.users:
                await catalogue.create_user(uow, name)
                grant = await catalogue.grant_access(uow, TEST_IMAGE, name, Policy())
                self.mapping_ids[name] = grant.mapping_id

    async def _issue_tokens(self) -> None:
        assert self.client is not None
        admin = {"Authorization": f"token {self.admin_token}"}
        api = f"http://127.0.0.1:{self.ports.hub}/hub/api"
        async with self.client.post(
            api + "/users", headers=admin, json={"usernames": self.users}
        ) as created:
            assert created.status in (201, 409), await created.text()
        for name in self.users:
            async with self.client.post(
                f"{api}/users/{name}/tokens", headers=admin, json={"note": "faults"}
            ) as issued:
                assert issued.status == 201, await issued.text()
                self.tokens[name] = (await issued.json())["token"]

    # ------------------------------------------------------------------ processes
    def start_hub(self) -> None:
        log = (self.tmp / "jupyterhub.log").open("ab")
        self.hub = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.tmp / "test_config.py")],
            cwd=self.tmp,
            env=self.hub_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for_port(self.ports.public, timeout=60, process=self.hub)
        wait_for_port(self.ports.hub, timeout=60, process=self.hub)

    def kill_hub(self) -> None:
        assert self.hub is not None
        self.hub.send_signal(signal.SIGKILL)
        self.hub.wait(10)
        self.hub = None

    def proxy_pid(self) -> int:
        return int((self.tmp / "jupyterhub-proxy.pid").read_text().strip())

    def kill_proxy(self) -> None:
        pid = self.proxy_pid()
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)

    def service_environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("REMOTEAPP_", "CONFIGPROXY_", "JUPYTERHUB_", "DOCKER_"))
        }
        env.update(
            REMOTEAPP_DATABASE_URL=self.database_url,
            REMOTEAPP_REALM=self.realm,
            REMOTEAPP_DOCKER_HOST=self.docker.url,
            REMOTEAPP_WORKSPACE_ROOT=str(self.tmp / "workspaces"),
            REMOTEAPP_GATE_URL=f"http://127.0.0.1:{self.ports.gate}",
            REMOTEAPP_CONTAINER_NETWORK="rf-" + self.realm,
            REMOTEAPP_RECONCILE_INTERVAL=str(RECONCILE_INTERVAL),
            REMOTEAPP_NETWORK_TIMEOUT="20",
            REMOTEAPP_START_RATE_PER_MINUTE="1000",
            REMOTEAPP_LOG_FORMAT="json",
            CONFIGPROXY_API_URL=f"http://127.0.0.1:{self.ports.proxy_api}",
            CONFIGPROXY_AUTH_TOKEN=self.proxy_token,
            JUPYTERHUB_API_URL=f"http://127.0.0.1:{self.ports.hub}/hub/api",
            JUPYTERHUB_API_TOKEN=self.service_token,
            JUPYTERHUB_SERVICE_NAME="remoteapp",
            JUPYTERHUB_SERVICE_PREFIX=PREFIX,
            JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{self.ports.service}",
            JUPYTERHUB_BASE_URL="/",
            JUPYTERHUB_PUBLIC_URL=self.ports.public_url + "/",
        )
        return env

    def start_service(self) -> None:
        log = (self.tmp / "service.log").open("ab")
        self.service = subprocess.Popen(
            [str(Path(sys.executable).with_name("remoteappmanager"))],
            cwd=self.tmp,
            env=self.service_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for_port(self.ports.service, timeout=60, process=self.service)

    def kill_service(self) -> None:
        assert self.service is not None
        self.service.send_signal(signal.SIGKILL)
        self.service.wait(10)
        self.service = None

    # ------------------------------------------------------------------ HTTP
    @property
    def public_url(self) -> str:
        return self.ports.public_url

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.service}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        user: str | None = None,
        json_body: Any = None,
        base: str | None = None,
        timeout: float = 60,  # noqa: ASYNC109 - per request, passed to aiohttp
    ) -> Answer:
        """One request (through the proxy unless ``base``); never raises for a failure."""
        assert self.client is not None
        headers = {"Authorization": f"token {self.tokens[user]}"} if user else {}
        started = time.monotonic()
        try:
            async with self.client.request(
                method,
                (base or self.public_url) + path,
                headers=headers,
                json=json_body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                text = await response.text()
                body: Any = None
                with contextlib.suppress(ValueError):
                    body = json.loads(text)
                return Answer(response.status, time.monotonic() - started, body, text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Answer(0, time.monotonic() - started, None, type(exc).__name__)

    async def start_session(self, user: str, *, base: str | None = None) -> Answer:
        return await self.call(
            "POST",
            PREFIX + "api/v1/containers/",
            user=user,
            json_body={"mapping_id": self.mapping_ids[user]},
            base=base,
        )

    async def health(self, base: str | None = None) -> Answer:
        return await self.call("GET", PREFIX + "health", base=base, timeout=10)

    async def wait_healthy(self, within: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < within:
            answer = await self.health()
            if answer.status == 200:
                return time.monotonic() - started
            await asyncio.sleep(0.1)
        raise AssertionError(f"not healthy within {within:g} s: {answer}")

    # ------------------------------------------------------------------ state
    async def engine_containers(self) -> list[dict[str, Any]]:
        async with aiodocker.Docker(url=self.docker.url) as docker:
            found = await docker.containers.list(
                all=True, filters={"label": [f"{REALM_LABEL}={self.realm}"]}
            )
            return [container._container for container in found]

    async def our_routes(self) -> dict[str, Mapping[str, Any]]:
        assert self.client is not None
        async with self.client.get(
            f"http://127.0.0.1:{self.ports.proxy_api}/api/routes",
            headers={"Authorization": f"token {self.proxy_token}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response:
            assert response.status == 200
            routes: dict[str, Mapping[str, Any]] = await response.json()
        return {
            path: route
            for path, route in routes.items()
            if route.get("remoteappmanager") and route.get("url_id")
        }

    async def problems(self) -> list[str]:
        """What breaks the invariants now (empty when every one holds)."""
        problems: list[str] = []
        try:
            containers = await self.engine_containers()
            routes = await self.our_routes()
        except Exception as exc:
            return [f"cannot look: {type(exc).__name__}: {exc}"]
        running: dict[str, str] = {}
        for container in containers:
            labels = container.get("Labels") or {}
            url_id, owner = labels.get(URL_ID_LABEL, ""), labels.get(USER_LABEL, "")
            if container.get("State") != "running":
                problems.append(f"container {url_id} of {owner} is {container.get('State')}")
                continue
            running[url_id] = owner
        routed = {route.get("url_id"): path for path, route in routes.items()}
        for url_id in running.keys() - routed.keys():
            problems.append(f"container {url_id} has no route")
        for url_id in routed.keys() - running.keys():
            problems.append(f"route {routed[url_id]} has no container")
        answers = await asyncio.gather(
            *(self.call("GET", PREFIX + "api/v1/containers/", user=user) for user in self.users),
            *(self.call("GET", PREFIX + "api/v1/applications/", user=user) for user in self.users),
        )
        listings, applications = answers[: len(self.users)], answers[len(self.users) :]
        listed: dict[str, str] = {}
        for user, answer in zip(self.users, listings, strict=True):
            if answer.status != 200:
                problems.append(f"{user}'s containers answer {answer.status}")
                continue
            for url_id in answer.body["identifiers"]:
                listed[url_id] = user
        for user, answer in zip(self.users, applications, strict=True):
            if answer.status != 200:
                problems.append(f"{user}'s applications answer {answer.status}")
            elif answer.body["identifiers"] != [self.mapping_ids[user]]:
                problems.append(f"{user}'s grant is lost: {answer.body['identifiers']}")
        if listed != running:
            problems.append(f"listed {sorted(listed.items())} != running {sorted(running.items())}")
        reached = await asyncio.gather(
            *(
                self.call("GET", routed[url_id] + "/", user=owner)
                for url_id, owner in running.items()
                if url_id in routed
            )
        )
        problems.extend(
            f"a session answers {answer.status} through the proxy: {answer.text[:80]!r}"
            for answer in reached
            if not _from_application(answer)
        )
        return problems

    async def wait_consistent(self, within: float) -> float:
        """Seconds until every invariant holds; AssertionError with what does not."""
        started = time.monotonic()
        problems = ["never looked"]
        while time.monotonic() - started < within:
            problems = await self.problems()
            if not problems:
                return time.monotonic() - started
            await asyncio.sleep(0.25)
        raise AssertionError(f"not consistent within {within:g} s: {problems[:10]}")

    async def stop_all(self, within: float = 30.0) -> None:
        """Stop every running session through the API (each by its owner).

        A start cut off by a fault may leave its grant claimed (409) until the claim is
        released or lapses (one lease, 15 s): such a stop is asked again meanwhile.
        """
        deadline = time.monotonic() + within
        while True:
            containers = await self.engine_containers()
            stops = []
            for container in containers:
                labels = container.get("Labels") or {}
                owner, url_id = labels.get(USER_LABEL), labels.get(URL_ID_LABEL)
                if owner in self.tokens and url_id:
                    path = f"{PREFIX}api/v1/containers/{url_id}/"
                    stops.append(self.call("DELETE", path, user=owner))
            answers = await asyncio.gather(*stops)
            if any(answer.status == 409 for answer in answers) and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                continue
            assert all(answer.status in (204, 404) for answer in answers), answers
            return

    # ------------------------------------------------------------------ tear-down
    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        for process in (self.service, self.hub):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        with contextlib.suppress(OSError, ValueError):
            pid = self.proxy_pid()
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)
        await self._teardown(self.postgres, self.docker)

    @staticmethod
    async def _teardown(postgres: PostgresCluster, docker: PrivateDocker) -> None:
        await asyncio.to_thread(docker.remove)
        postgres.stop()


def _from_application(answer: Answer) -> bool:
    """Whether the test application itself answered (busybox httpd serves its files at
    ``/``, so the session's own path is a 404 of its own making, not the gate's)."""
    return answer.status == 200 or (
        answer.status == 404 and "The requested URL was not found" in answer.text
    )


def _wait_gone(pid: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        # Dead but not yet reaped by its parent (the hub reaps its proxy): gone for us.
        if stat.rpartition(")")[2].split()[0] == "Z":
            return
        time.sleep(0.02)
