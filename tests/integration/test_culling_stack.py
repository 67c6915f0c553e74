"""Culling on the real stack: the Docker engine, a real proxy, the gate, SQLite.

Sessions run in gated mode, so that what a client sends through the proxy reaches the gate,
which counts it as input. The culler passes every second here. Only the hub is a stand-in
(``tests/support/fake_hub.py``). Every test has a realm of its own, force-removed
afterwards; all traffic goes to 127.0.0.1.

The desktops are the demo image (``remoteapp-demo/vncapp``: Xvnc with a clock that ticks
every second, websockify); the test speaks RFB to them over WebSockets through the proxy and
the gate, as noVNC does.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from remoteappmanager import bootstrap
from remoteappmanager.domain.models import Policy
from remoteappmanager.services import catalogue
from remoteappmanager.settings import Settings
from remoteappmanager.web.app import create_app
from tests.support.fake_hub import FakeHub, running_fake_hub
from tests.support.services import Proxy, ServiceMissing, free_port, skip_or_fail
from tests.support.session_images import (
    WEB_IMAGE,
    ensure_session_images,
    ensure_vnc_image,
    remove_realm,
)

pytestmark = [pytest.mark.docker, pytest.mark.proxy, pytest.mark.timeout(300)]

PREFIX = "/services/remoteapp/"
CONTAINERS = PREFIX + "api/v1/containers/"


@pytest.fixture(scope="module")
def session_images(docker_engine: None) -> None:
    try:
        ensure_session_images()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))


@pytest.fixture(scope="module")
def vncapp_image(docker_engine: None) -> str:
    """The demo desktop, built from ``images/`` if the engine does not have it."""
    try:
        return ensure_vnc_image()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))
        raise


async def _grants(
    database_url: str, policies: dict[str, Policy], image: str = WEB_IMAGE
) -> dict[str, str]:
    await bootstrap.upgrade_database(database_url)
    async with bootstrap.build_database(database_url) as database:
        uow = database.unit_of_work
        await catalogue.create_user(uow, "alice")
        await catalogue.create_application(uow, image)
        return {
            name: (await catalogue.grant_access(uow, image, "alice", policy)).mapping_id
            for name, policy in policies.items()
        }


@contextlib.asynccontextmanager
async def serving(
    database_url: str, realm: str, proxy: Proxy, hub: FakeHub, tmp_path: Path
) -> AsyncIterator[TestClient[Any, Any]]:
    """One service process (in this loop) until the block ends."""
    port = free_port()
    settings = Settings(
        database_url=database_url,
        configproxy_api_url=proxy.api_url,
        configproxy_auth_token=proxy.token,
        realm=realm,
        container_access="gated",
        gate_url=f"http://127.0.0.1:{free_port()}",
        workspace_root=tmp_path / "workspaces",
        network_timeout=20,
        reconcile_interval=1,
        cull_interval=1,
        activity_flush_interval=1,
        jupyterhub_api_url=hub.api_url,
        jupyterhub_api_token=secrets.token_hex(16),
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_service_url=f"http://127.0.0.1:{port}",
    )
    server = TestServer(create_app(bootstrap.build(settings)), port=port)
    async with TestClient(server) as client:
        yield client


async def _start(client: TestClient[Any, Any], headers: dict[str, str], mapping_id: str) -> Any:
    async with client.post(CONTAINERS, json={"mapping_id": mapping_id}, headers=headers) as sent:
        assert sent.status == 201, await sent.text()
        location = sent.headers["Location"]
    async with client.get(location, headers=headers) as response:
        return await response.json()


async def _container(client: TestClient[Any, Any], headers: dict[str, str], url_id: str) -> Any:
    async with client.get(CONTAINERS + url_id + "/", headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_idle_sessions_go_busy_ones_stay_and_lifetime_ends_them_all(
    session_images: None, proxy: Proxy, tmp_path: Path
) -> None:
    realm = f"cull-{secrets.token_hex(4)}"
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'remoteappmanager.db'}"
    grants = await _grants(
        database_url,
        {
            "idle": Policy(idle_timeout_s=20),
            "busy": Policy(idle_timeout_s=21),
            "lifetime": Policy(idle_timeout_s=20, max_lifetime_s=30),
        },
    )
    try:
        async with (
            running_fake_hub() as hub,
            serving(database_url, realm, proxy, hub, tmp_path) as client,
            aiohttp.ClientSession() as browser,
        ):
            headers = {"Authorization": f"token {hub.issue_token('alice')}"}
            started = time.monotonic()
            sessions = {name: await _start(client, headers, grants[name]) for name in grants}
            assert sessions["idle"]["expires_at"] is not None
            gone: dict[str, float] = {}

            async def touch(name: str) -> None:
                url = proxy.public_url + sessions[name]["urlpath"] + "/"
                async with browser.get(url, headers=headers) as served:
                    # The lifetime session may have ended since the last look.
                    elapsed = time.monotonic() - started
                    assert served.status == 200 or (name == "lifetime" and elapsed >= 30), name

            while time.monotonic() - started < 60:
                for name in ("busy", "lifetime"):
                    if name not in gone:
                        await touch(name)
                for name, session in sessions.items():
                    state = await _container(client, headers, session["url_id"])
                    if name not in gone and state["state"] == "stopped":
                        gone[name] = time.monotonic() - started
                        assert state["stop_reason"] == (
                            "lifetime" if name == "lifetime" else "idle"
                        ), state
                await asyncio.sleep(5)

            assert set(gone) == {"idle", "lifetime"}, gone
            # Within a culler pass (and this loop's 5 s) of their deadlines.
            assert gone["idle"] >= 15, gone
            assert gone["idle"] <= 35, gone
            assert gone["lifetime"] >= 25, gone
            assert gone["lifetime"] <= 45, gone
            busy = await _container(client, headers, sessions["busy"]["url_id"])
            assert busy["state"] == "running"
            assert busy["last_input_at"] is not None
            async with client.get(PREFIX + "metrics") as response:
                metrics = await response.text()
            assert 'remoteapp_session_stops_total{reason="idle"} 1.0' in metrics
            assert 'remoteapp_session_stops_total{reason="lifetime"} 1.0' in metrics
    finally:
        await remove_realm(realm)


async def test_a_restarted_service_culls_an_overdue_session_with_its_reason(
    session_images: None, proxy: Proxy, tmp_path: Path
) -> None:
    realm = f"cull-{secrets.token_hex(4)}"
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'remoteappmanager.db'}"
    grants = await _grants(
        database_url,
        {"idle": Policy(idle_timeout_s=15), "kept": Policy(idle_timeout_s=600)},
    )
    try:
        async with running_fake_hub() as hub:
            headers = {"Authorization": f"token {hub.issue_token('alice')}"}
            async with serving(database_url, realm, proxy, hub, tmp_path) as client:
                idle = await _start(client, headers, grants["idle"])
                kept = await _start(client, headers, grants["kept"])
            # The service is down: nobody culls. Time passes.
            await asyncio.sleep(16)
            async with serving(database_url, realm, proxy, hub, tmp_path) as client:
                # The session nobody used is overdue: the first pass stops it.
                for _ in range(50):
                    state = await _container(client, headers, idle["url_id"])
                    if state["state"] == "stopped":
                        break
                    await asyncio.sleep(0.2)
                assert (state["state"], state["stop_reason"]) == ("stopped", "idle")
                # Keep working: input through the API counts, before the deadline.
                async with client.post(
                    CONTAINERS + kept["url_id"] + "/activity", headers=headers
                ) as response:
                    assert response.status == 200
                    body = await response.json()
                assert body["state"] == "running"
                assert body["last_input_at"] is not None
                await asyncio.sleep(3)
                assert (await _container(client, headers, kept["url_id"]))["state"] == "running"
    finally:
        await remove_realm(realm)


class Viewer:
    """A noVNC-like client of one desktop over a WebSocket through the proxy and the gate.

    It reads everything the desktop sends (counting the bytes) and asks for the picture
    every second with incremental FramebufferUpdateRequests, as noVNC does while it shows a
    desktop; ``point`` sends a PointerEvent, the input a mouse makes.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received = 0
        self.closed = asyncio.Event()
        self._buffer = b""
        self._width = self._height = 0

    async def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            message = await asyncio.wait_for(self.ws.receive(), 20)
            assert message.type is aiohttp.WSMsgType.BINARY, message
            self._buffer += message.data
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def handshake(self) -> None:
        """RFB 3.8 with security type None (RFC 6143 7.1-7.3), shared."""
        version = await self._read(12)
        assert version.startswith(b"RFB 003.00"), version
        await self.ws.send_bytes(b"RFB 003.008\n")
        (count,) = await self._read(1)
        assert 1 in await self._read(count)
        await self.ws.send_bytes(b"\x01")
        assert await self._read(4) == b"\x00\x00\x00\x00"  # SecurityResult: OK
        await self.ws.send_bytes(b"\x01")  # ClientInit: shared
        self._width, self._height = struct.unpack(">HH", await self._read(4))
        await self._read(16)  # the pixel format
        (name_length,) = struct.unpack(">I", await self._read(4))
        await self._read(name_length)
        await self._request(incremental=False)

    async def _request(self, *, incremental: bool) -> None:
        await self.ws.send_bytes(
            struct.pack(">BBHHHH", 3, incremental, 0, 0, self._width, self._height)
        )

    async def point(self, x: int) -> None:
        await self.ws.send_bytes(struct.pack(">BBHH", 5, 0, x % self._width, self._height // 2))

    async def watch(self) -> None:
        """Read and ask for updates until the desktop closes the connection."""

        async def read() -> None:
            self.received += len(self._buffer)
            self._buffer = b""
            async for message in self.ws:
                if message.type is aiohttp.WSMsgType.BINARY:
                    self.received += len(message.data)

        reading = asyncio.create_task(read())
        try:
            while not reading.done():
                await self._request(incremental=True)
                await asyncio.wait({reading}, timeout=1)
        except ConnectionResetError:
            pass
        finally:
            self.closed.set()
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading


async def test_only_input_over_a_desktop_websocket_keeps_it_busy_not_what_it_shows(
    session_images: None, vncapp_image: str, proxy: Proxy, tmp_path: Path
) -> None:
    """Two desktops showing a ticking clock to an open viewer each, nobody loading a page:
    the one whose viewer moves the mouse every 5 s lives well past its idle timeout; the one
    whose viewer only asks for the picture (and gets it, every second) is culled as idle."""
    realm = f"cull-{secrets.token_hex(4)}"
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'remoteappmanager.db'}"
    timeout = 20
    grants = await _grants(
        database_url,
        {
            "moving": Policy(idle_timeout_s=timeout),
            # A lifetime far off, so that the two grants differ.
            "watching": Policy(idle_timeout_s=timeout, max_lifetime_s=600),
        },
        vncapp_image,
    )
    try:
        async with (
            running_fake_hub() as hub,
            serving(database_url, realm, proxy, hub, tmp_path) as client,
            aiohttp.ClientSession() as browser,
        ):
            headers = {"Authorization": f"token {hub.issue_token('alice')}"}
            # One at a time: a user starts one session of an image at once.
            sessions = {name: await _start(client, headers, grants[name]) for name in grants}
            viewers: dict[str, Viewer] = {}
            for name, session in sessions.items():
                ws = await browser.ws_connect(
                    proxy.public_url + session["urlpath"] + "/websockify",
                    protocols=("binary",),
                    headers=headers,
                    autoping=True,
                )
                viewers[name] = Viewer(ws)
                await viewers[name].handshake()
            # From here on, no request reaches either desktop: only WebSocket frames.
            started = time.monotonic()
            watchers = [asyncio.create_task(viewer.watch()) for viewer in viewers.values()]
            shown: dict[str, int] = {}  # what each viewer had got 5 s in
            culled_at: float | None = None
            x = 0
            # The busy one is still running 60 s in, three idle timeouts.
            while time.monotonic() - started < 60:
                await asyncio.sleep(5)
                if not shown:
                    shown = {name: viewer.received for name, viewer in viewers.items()}
                moving = await _container(client, headers, sessions["moving"]["url_id"])
                assert moving["state"] == "running", (time.monotonic() - started, moving)
                x += 37
                await viewers["moving"].point(x)
                state = await _container(client, headers, sessions["watching"]["url_id"])
                if culled_at is None and state["state"] == "stopped":
                    culled_at = time.monotonic() - started
                    assert state["stop_reason"] == "idle", state
                    # Its viewer asked for the picture all along: that is not input.
                    assert state["last_input_at"] is None, state
                    # The clock went on ticking: its screen kept changing all along.
                    assert viewers["watching"].received > shown["watching"], shown
                    await asyncio.wait_for(viewers["watching"].closed.wait(), 10)
            moving = await _container(client, headers, sessions["moving"]["url_id"])
            assert moving["state"] == "running", moving
            assert moving["last_input_at"] is not None, moving
            assert not viewers["moving"].closed.is_set()
            assert viewers["moving"].received > shown["moving"], shown
            # Within a culler pass (and this loop's 5 s) of its deadline.
            assert culled_at is not None, "the desktop nobody used was never culled"
            assert timeout - 5 <= culled_at <= timeout + 10, culled_at
            for viewer in viewers.values():
                await viewer.ws.close()
            await asyncio.gather(*watchers)
    finally:
        await remove_realm(realm)
