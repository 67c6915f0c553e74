"""The gate's WebSocket relay over real sockets: pings through a relay that cuts idle
connections, dead legs closed, viewers' input kept from the application, activity reported.

The gate's listener runs with a gatekeeper that lets everything through to one application
(a real aiohttp WebSocket server, or a raw socket server that speaks just enough WebSocket
to stop answering); clients are aiohttp's WebSocket client or raw sockets. Everything is on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from remoteappmanager.web.gate.framing import GateRequest
from remoteappmanager.web.gate.listener import Answer, Forward, GateServer, ViewerInput
from remoteappmanager.web.gate.relay import PING, PONG, TEXT, encode_frame
from tests.support.cutting_relay import CuttingRelay

APP = "/user/alice/containers/app"


@dataclass
class Keeper:
    """Lets every request through to ``port``, as ``viewer`` if one is set; records input."""

    port: int
    viewer: ViewerInput | None = None
    inputs: list[float] = field(default_factory=list)

    def check(self, request: GateRequest) -> Forward:
        return Forward(
            "app", "127.0.0.1", self.port, None, None, APP + "/", user="alice", viewer=self.viewer
        )

    async def decide(self, request: GateRequest) -> Forward | Answer:
        return self.check(request)

    def unreachable(self, url_id: str) -> None:
        pass

    def client_input(self, url_id: str) -> None:
        assert url_id == "app"
        self.inputs.append(time.monotonic())


@dataclass
class Application:
    """An aiohttp WebSocket echo application recording what it received."""

    server: TestServer
    received: list[str | bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


async def _application(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Application:
    app = web.Application()
    state: dict[str, Application] = {}

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        try:
            async for message in ws:
                if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    state["app"].received.append(message.data)
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await ws.send_str(message.data)
        finally:  # the handler may be cancelled when its connection is lost
            state["app"].closed.set()
        return ws

    app.router.add_get(APP + "/ws", socket)
    server = await aiohttp_server(app)
    state["app"] = Application(server)
    return state["app"]


@contextlib.asynccontextmanager
async def gate_for(keeper: Keeper, ping: float) -> AsyncIterator[GateServer]:
    gate = GateServer(keeper, ping_interval=ping, sweep_interval=0.1)
    await gate.start("127.0.0.1", 0)
    try:
        yield gate
    finally:
        await gate.close()


@pytest.fixture
async def application(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Application:
    return await _application(aiohttp_server)


# ------------------------------------------------------------------------ through a cutting relay
@pytest.mark.parametrize(("ping", "survives"), [(0.5, True), (0.0, False)])
async def test_pings_keep_a_quiet_websocket_open_through_a_relay_that_cuts_idle_ones(
    application: Application, ping: float, survives: bool
) -> None:
    keeper = Keeper(application.server.port)  # type: ignore[arg-type]
    async with gate_for(keeper, ping) as gate:
        relay = CuttingRelay("127.0.0.1", gate.port, idle_cut=1.5)
        await relay.start()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(f"http://127.0.0.1:{relay.port}{APP}/ws", autoping=True) as ws,
            ):
                # A reader must be waiting for aiohttp's client to answer pings.
                reading = asyncio.create_task(ws.receive())
                await asyncio.sleep(4.0)
                if survives:
                    assert not reading.done()
                    await ws.send_str("still here")
                    message = await asyncio.wait_for(reading, 5)
                    assert message.data == "still here"
                    assert relay.cut == 0
                else:
                    message = await asyncio.wait_for(reading, 5)
                    assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
                    assert relay.cut == 1
            assert relay.accepted == 1
        finally:
            await relay.close()


# ------------------------------------------------------------------------ dead legs
async def _silent_application() -> tuple[asyncio.Server, list[bytes], asyncio.Event]:
    """Switches to WebSocket, then reads without ever answering (a hung application)."""
    received: list[bytes] = []
    gone = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        while data := await reader.read(65536):
            received.append(data)
        gone.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, received, gone


async def test_an_application_that_stops_answering_pings_is_closed_and_the_client_told() -> None:
    server, received, gone = await _silent_application()
    port = server.sockets[0].getsockname()[1]
    keeper = Keeper(port)
    try:
        async with (
            gate_for(keeper, 0.5) as gate,
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{gate.port}{APP}/ws", autoping=True) as ws,
        ):
            started = time.monotonic()
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert time.monotonic() - started < 5
            await asyncio.wait_for(gone.wait(), 5)
            # The application saw the gate's masked pings, and nothing else.
            assert b"".join(received)[:1] == bytes((0x80 | PING,))
            assert gate.stats.ws_dead == 1
    finally:
        server.close()


async def _raw_upgrade(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET " + APP.encode() + b"/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
        + key
        + b"\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def test_a_client_that_stops_answering_pings_is_closed_and_the_application_told(
    application: Application,
) -> None:
    keeper = Keeper(application.server.port)  # type: ignore[arg-type]
    async with gate_for(keeper, 0.5) as gate:
        reader, writer = await _raw_upgrade(gate.port)
        try:
            # Pings come, unmasked; the client never answers.
            first = await asyncio.wait_for(reader.readexactly(2), 5)
            assert first == bytes((0x80 | PING, 8))
            await asyncio.wait_for(application.closed.wait(), 10)
            assert gate.stats.ws_dead == 1
        finally:
            writer.close()


async def test_a_client_answering_pings_stays(application: Application) -> None:
    keeper = Keeper(application.server.port)  # type: ignore[arg-type]
    async with gate_for(keeper, 0.3) as gate:
        reader, writer = await _raw_upgrade(gate.port)
        try:
            for _ in range(6):
                head = await asyncio.wait_for(reader.readexactly(2), 5)
                assert head == bytes((0x80 | PING, 8))
                ident = await reader.readexactly(8)
                writer.write(encode_frame(PONG, ident, masked=True))
            assert not application.closed.is_set()
            assert gate.stats.ws_dead == 0
        finally:
            writer.close()


async def test_a_protocol_violation_closes_both_legs(application: Application) -> None:
    keeper = Keeper(application.server.port)  # type: ignore[arg-type]
    async with gate_for(keeper, 0) as gate:
        reader, writer = await _raw_upgrade(gate.port)
        writer.write(encode_frame(TEXT, b"unmasked", masked=False))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await asyncio.wait_for(application.closed.wait(), 5)
        assert application.received == []
        assert gate.stats.ws_refused == 1
        writer.close()


# ------------------------------------------------------------------------ viewers
RFB_HANDSHAKE = b"RFB 003.008\n\x01\x01"
KEY_EVENT = b"\x04\x01\x00\x00\x00\x00\x00\x61"
POINTER_EVENT = b"\x05\x01\x00\x10\x00\x10"
CUT_TEXT = b"\x06\x00\x00\x00\x00\x00\x00\x05rm -r"
UPDATE_REQUEST = b"\x03\x01\x00\x00\x00\x00\x04\x00\x03\x00"


async def test_a_vnc_viewer_without_input_reaches_the_desktop_with_nothing_but_view_requests(
    application: Application,
) -> None:
    viewer = ViewerInput(input_allowed=False, protocol="vnc")
    keeper = Keeper(application.server.port, viewer)  # type: ignore[arg-type]
    async with (
        gate_for(keeper, 0) as gate,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{gate.port}{APP}/ws") as ws,
    ):
        # The attacker's input, split and packed every way websockify accepts.
        await ws.send_bytes(RFB_HANDSHAKE + KEY_EVENT[:3])
        await ws.send_bytes(KEY_EVENT[3:] + UPDATE_REQUEST + POINTER_EVENT + CUT_TEXT)
        await ws.send_bytes(UPDATE_REQUEST)
        await _until(lambda: b"".join(application.received).count(UPDATE_REQUEST) == 2)
        assert b"".join(application.received) == RFB_HANDSHAKE + UPDATE_REQUEST + UPDATE_REQUEST
        # Control handed over: from the next message on, input passes.
        viewer.input_allowed = True
        await ws.send_bytes(KEY_EVENT)
        await _until(lambda: b"".join(application.received).endswith(KEY_EVENT))
        # And taken back.
        viewer.input_allowed = False
        await ws.send_bytes(POINTER_EVENT + UPDATE_REQUEST)
        await _until(lambda: b"".join(application.received).endswith(UPDATE_REQUEST))
        assert POINTER_EVENT not in b"".join(application.received)


async def test_a_vnc_viewer_sending_an_unknown_message_is_cut_off(application: Application) -> None:
    viewer = ViewerInput(input_allowed=False, protocol="vnc")
    keeper = Keeper(application.server.port, viewer)  # type: ignore[arg-type]
    async with (
        gate_for(keeper, 0) as gate,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{gate.port}{APP}/ws") as ws,
    ):
        await ws.send_bytes(RFB_HANDSHAKE + b"\x07" + KEY_EVENT)
        message = await asyncio.wait_for(ws.receive(), 5)
        assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        await asyncio.wait_for(application.closed.wait(), 5)
        assert KEY_EVENT not in b"".join(application.received)


async def test_a_web_viewer_without_input_sends_nothing_until_allowed(
    application: Application,
) -> None:
    viewer = ViewerInput(input_allowed=False, protocol="web")
    keeper = Keeper(application.server.port, viewer)  # type: ignore[arg-type]
    async with (
        gate_for(keeper, 0) as gate,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{gate.port}{APP}/ws", autoping=False) as ws,
    ):
        await ws.send_str("delete everything")
        await ws.send_bytes(b"\x00\x01")
        # The application's pong comes back once the gate has read all of the above.
        await ws.ping(b"sync")
        pong = await asyncio.wait_for(ws.receive(), 5)
        assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"sync")
        assert keeper.inputs == []
        viewer.input_allowed = True
        await ws.send_str("hello")
        message = await asyncio.wait_for(ws.receive(), 5)
        assert message.data == "hello"
        assert application.received == ["hello"]
        assert keeper.inputs  # allowed input is activity; dropped frames were not


async def test_client_input_is_reported_at_most_once_a_second(application: Application) -> None:
    keeper = Keeper(application.server.port)  # type: ignore[arg-type]
    async with (
        gate_for(keeper, 0) as gate,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{gate.port}{APP}/ws") as ws,
    ):
        started = time.monotonic()
        for i in range(30):
            await ws.send_str(str(i))
            await ws.receive()
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        await ws.ping()  # control frames are not input
        assert 1 <= len(keeper.inputs) <= int(elapsed) + 1
        gaps = [b - a for a, b in zip(keeper.inputs, keeper.inputs[1:], strict=False)]
        assert all(gap >= 0.99 for gap in gaps)


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5.0
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
