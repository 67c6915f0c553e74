"""A real JupyterHub for the tests: started from a config file, reached and signed into."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.support.services import (
    REPO,
    ServiceMissing,
    chp_command,
    free_port,
    skip_or_fail,
    wait_for_port,
)

ROUTE_TIMEOUT = 30.0


def require_hub() -> None:
    """Skip (locally) or fail (CI) unless JupyterHub and configurable-http-proxy are there."""
    if importlib.util.find_spec("jupyterhub") is None:
        skip_or_fail("JupyterHub is not installed (pip install jupyterhub)")
    try:
        chp_command()
    except ServiceMissing as exc:
        skip_or_fail(f"configurable-http-proxy: {exc}")


def clean_environment(*, also: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment without our, the proxy's or the hub's settings (nor those
    starting with ``also``): a hub or command started with it sees only what the test sets."""
    dropped = ("REMOTEAPP_", "CONFIGPROXY_", "JUPYTERHUB_", *also)
    return {key: value for key, value in os.environ.items() if not key.startswith(dropped)}


@dataclass(frozen=True)
class HubPorts:
    """The ports of one hub: public (its proxy), the proxy's API, the hub's own, our service's
    and its gate's (chosen too: the port after the service's may be taken)."""

    public: int
    proxy_api: int
    hub: int
    service: int
    gate: int

    @classmethod
    def free(cls) -> HubPorts:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port())

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.public}"


def write_hub_config(tmp: Path, extra: str = "") -> None:
    """``tmp/test_config.py``, which ``running_hub`` starts: the repository's
    config/jupyterhub_config.py, then the Python in ``extra``; the hub logs warnings only."""
    repo_config = str(REPO / "config" / "jupyterhub_config.py")
    (tmp / "test_config.py").write_text(
        "c = get_config()  # noqa\n"
        f"load_subconfig({repo_config!r})  # noqa\n"
        f"{extra}"
        'c.JupyterHub.log_level = "WARN"\n'
    )


def admin_password(password: str) -> str:
    """The demo password of the hub admins in tests that sign in with ``password``: another
    one, 32 characters or more as the hub requires."""
    return hashlib.sha256(password.encode()).hexdigest()


def hub_environment(tmp: Path, ports: HubPorts, password: str, **settings: str) -> dict[str, str]:
    """The environment for ``running_hub``: the repository's config on ``ports``, data in
    ``tmp``, every demo account signing in with ``password`` (hub admins with
    ``admin_password(password)``), and ``settings`` on top."""
    env = clean_environment()
    env.update(
        REMOTEAPP_DEMO_PASSWORD=password,
        REMOTEAPP_DEMO_ADMIN_PASSWORD=admin_password(password),
        REMOTEAPP_HUB_PORT=str(ports.public),
        REMOTEAPP_HUB_INTERNAL_PORT=str(ports.hub),
        REMOTEAPP_HUB_DATA_DIR=str(tmp),
        REMOTEAPP_SERVICE_PORT=str(ports.service),
        REMOTEAPP_GATE_URL=f"http://127.0.0.1:{ports.gate}",
        CONFIGPROXY_API_URL=f"http://127.0.0.1:{ports.proxy_api}",
    )
    env.update(settings)
    return env


@contextlib.contextmanager
def running_hub(tmp: Path, env: dict[str, str], public_port: int) -> Iterator[None]:
    """``jupyterhub -f tmp/test_config.py`` in ``tmp`` until the block ends (log in tmp)."""
    log = (tmp / "jupyterhub.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(tmp / "test_config.py")],
        cwd=tmp,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_for_port(public_port, timeout=60, process=process)
        except ServiceMissing as exc:
            log.flush()
            tail = (tmp / "jupyterhub.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"JupyterHub did not start: {exc}\n{tail}") from None
        yield
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def wait_until_routed(url: str, within: float = ROUTE_TIMEOUT) -> None:
    """The hub adds a service's proxy route shortly after the service starts listening."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered 200 through the proxy")


async def wait_until_managed_service_healthy(tmp: Path, health_url: str) -> None:
    """The hub starts a managed service itself: wait until it answers through the proxy, with
    the tail of the hub's log (where the service's output goes) if it never does."""
    try:
        await wait_until_routed(health_url, within=60)
    except AssertionError:
        log = (tmp / "jupyterhub.log").read_text(errors="replace")[-4000:]
        raise AssertionError(f"the managed service never became healthy:\n{log}") from None


def new_browser() -> aiohttp.ClientSession:
    # 127.0.0.1 is an IP address: aiohttp keeps cookies for it only in an "unsafe" jar.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(
    session: aiohttp.ClientSession, page_url: str, name: str, password: str
) -> aiohttp.ClientResponse:
    """Open ``page_url`` anonymously, sign in on the hub's form, follow the OAuth dance back."""
    async with session.get(page_url) as login_page:
        assert login_page.status == 200
        assert login_page.url.path.endswith("/hub/login")
        html = await login_page.text()
        action = login_page.url
    match = re.search(r'name="_xsrf" value="([^"]+)"', html)
    assert match, html[:2000]
    form = {"username": name, "password": password, "_xsrf": match.group(1)}
    async with session.post(action, data=form) as landed:
        await landed.read()
        return landed
