"""Large WebSocket frames from an application through the gate, over real sockets: whole
and in order among small and control frames, with the gate's pings between frames, through a
client slow enough that the gate's writes do not all go at once (what the socket did not take
must be copied out of the read buffer before the next read), a violation after large frames,
a slow client holding the application back, and no descriptor left behind.

On uvloop, as the service runs, and on asyncio's loop. The application is a raw socket
server that upgrades and then writes the frames a test gives it; the client is aiohttp's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from remoteappmanager.web.gate.listener import GateServer
from remoteappmanager.web.gate.relay import BINARY, CLOSE, PING, PONG, TEXT, encode_frame, mask
from remoteappmanager.web.gate.upstream import Upstream
from tests.integration.test_gate_websocket import APP, Keeper

EVENT_LOOPS = ("uvloop", "asyncio")
LARGE = 64 * 1024  # websockify's frames are up to this size


@dataclass
class RawApplication:
    """Upgrades, then runs ``script`` with the connection's writer; records what came."""

    script: Callable[[asyncio.StreamWriter], Awaitable[None]]
    received: bytearray = field(default_factory=bytearray)
    whole_frames: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by a script while it writes one frame in pieces: pongs wait for its end."""
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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

        async def read() -> None:
            # The client's frames (masked): the gate's pings are answered, as a live
            # application's WebSocket library would.
            pending = b""
            while data := await reader.read(65536):
                self.received += data
                pending += data
                while len(pending) >= 6 and len(pending) >= 6 + (pending[1] & 0x7F) < 126:
                    size = pending[1] & 0x7F
                    if size >= 126:
                        break  # large client frames are not answered; kept as received
                    frame, pending = pending[: 6 + size], pending[6 + size :]
                    if frame[0] & 0x0F == PING:
                        async with self.whole_frames:
                            writer.write(
                                encode_frame(PONG, mask(frame[6:], frame[2:6]), masked=False)
                            )

        # The script writes until it ends or is cut short by the gate closing this leg.
        script = asyncio.create_task(self.script(writer))
        try:
            await read()
        except ConnectionError:
            pass
        finally:
            script.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await script
            writer.close()
            self.gone.set()


@contextlib.asynccontextmanager
async def running(application: RawApplication, *, ping: float = 0.0) -> AsyncIterator[GateServer]:
    application.server = await asyncio.start_server(application.serve, "127.0.0.1", 0)
    gate = GateServer(Keeper(application.port), ping_interval=ping, sweep_interval=0.05)
    await gate.start("127.0.0.1", 0)
    try:
        yield gate
    finally:
        await gate.close()
        application.server.close()


def _descriptors() -> int:
    """Open sockets and pipes (libuv keeps a reserve descriptor on /dev/null of its own)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{name}").startswith(("socket:", "pipe:"))
    return count


def _mixed_frames(seed: int) -> list[tuple[int, bytes]]:
    """Large and small binary frames, text frames and the application's pings, shuffled."""
    rng = random.Random(seed)
    frames: list[tuple[int, bytes]] = []
    for index in range(40):
        kind = rng.random()
        if kind < 0.5:
            frames.append((BINARY, rng.randbytes(rng.randint(LARGE, 1_500_000))))
        elif kind < 0.8:
            frames.append((BINARY, rng.randbytes(rng.randint(1, LARGE))))
        elif kind < 0.9:
            frames.append((TEXT, f"message {index}".encode()))
        else:
            frames.append((PING, f"app {index}".encode()))
    return frames


@pytest.mark.parametrize("client", ["fast", "slow"])
async def test_large_frames_reach_the_client_whole_in_order_with_the_gates_pings_between(
    client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = _mixed_frames(seed=16)
    # The slow client reads nothing for its first 1.5 s: the sockets between fill up, the
    # gate's writes go in part, and more is read while the rest waits. It answers a ping
    # only once it has read what came before it.
    ping, pause = (0.02, 0.3) if client == "fast" else (2.0, 2.5)

    async def script(writer: asyncio.StreamWriter) -> None:
        for opcode, payload in frames:
            data = encode_frame(opcode, payload, masked=False)
            # Written in uneven pieces with pauses, so frames straddle reads, the gate's pings
            # fall due in the middle of frames, and, to a slow client, writes that did not
            # all go are still under way when the next piece is read.
            async with application.whole_frames:
                at = 0
                while at < len(data):
                    step = random.randint(1, 100_000)
                    writer.write(data[at : at + step])
                    at += step
                    await writer.drain()
                    await asyncio.sleep(0.001)
        await asyncio.sleep(pause)  # a few more pings, answered
        writer.write(encode_frame(CLOSE, (1000).to_bytes(2, "big"), masked=False))
        await writer.drain()

    application = RawApplication(script)
    before = _descriptors()
    # Writes to the client's socket that did not take all (the rest is copied for the
    # transport): counted to know that this test went that way.
    partial = 0
    write_now = Upstream._write_now

    def counted(self: Upstream, data: memoryview) -> int:
        nonlocal partial
        sent = write_now(self, data)
        partial += sent < len(data)
        return sent

    monkeypatch.setattr(Upstream, "_write_now", counted)
    async with running(application, ping=ping) as gate:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"http://127.0.0.1:{gate.port}{APP}/ws", autoping=False, max_msg_size=0
            ) as ws,
        ):
            seen: list[tuple[int, bytes]] = []
            gate_pings = 0
            if client == "slow":
                await asyncio.sleep(1.5)
            while True:
                message = await asyncio.wait_for(ws.receive(), 20)
                if message.type is aiohttp.WSMsgType.PING:
                    if message.data.startswith(b"app "):
                        seen.append((PING, message.data))
                    else:
                        gate_pings += 1
                    await ws.pong(message.data)
                elif message.type is aiohttp.WSMsgType.BINARY:
                    seen.append((BINARY, message.data))
                elif message.type is aiohttp.WSMsgType.TEXT:
                    seen.append((TEXT, message.data.encode()))
                else:
                    assert message.type is aiohttp.WSMsgType.CLOSE, message
                    break
            assert seen == frames
            # Each between two frames, or the client could not have read on.
            assert gate_pings >= (5 if client == "fast" else 1)
            assert gate.stats.ws_dead == gate.stats.ws_refused == 0
            if client == "slow":
                assert partial > 0
        await asyncio.wait_for(application.gone.wait(), 5)
    await _until(lambda: _descriptors() <= before)


async def test_a_masked_frame_after_large_ones_closes_both_legs() -> None:
    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(encode_frame(BINARY, b"x" * 200_000, masked=False))
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(encode_frame(BINARY, b"from a client?", masked=True))
        await writer.drain()
        await asyncio.sleep(10)

    application = RawApplication(script)
    async with (
        running(application) as gate,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{gate.port}{APP}/ws", max_msg_size=0) as ws,
    ):
        first = await asyncio.wait_for(ws.receive(), 5)
        assert first.type is aiohttp.WSMsgType.BINARY
        assert first.data == b"x" * 200_000
        ended = await asyncio.wait_for(ws.receive(), 5)
        assert ended.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        await asyncio.wait_for(application.gone.wait(), 5)
        assert gate.stats.ws_refused == 1


async def test_a_client_that_stops_reading_holds_the_application_back() -> None:
    written = 0
    frame = encode_frame(BINARY, os.urandom(64 * 1024), masked=False)

    async def script(writer: asyncio.StreamWriter) -> None:
        nonlocal written
        while True:
            writer.write(frame)
            await writer.drain()
            written += len(frame)

    application = RawApplication(script)
    before = _descriptors()
    async with running(application) as gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET " + APP.encode() + b"/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        await reader.read(1)  # the first frame has come; nothing more is read
        await asyncio.sleep(1.0)
        held = written
        await asyncio.sleep(1.0)
        # Socket buffers fill, then the application waits: nothing grows without bound.
        assert written == held
        assert written < 64 * 1024 * 1024
        writer.close()
        await asyncio.wait_for(application.gone.wait(), 5)
    await _until(lambda: _descriptors() <= before)


async def test_the_application_closing_after_large_frames_closes_the_client_after_them() -> None:
    payloads = [os.urandom(n) for n in (300_000, 70_000, 5, 1_000_000)]

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(b"".join(encode_frame(BINARY, p, masked=False) for p in payloads))
        await writer.drain()
        writer.close()  # no close frame: the connection just ends

    application = RawApplication(script)
    async with (
        running(application) as gate,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{gate.port}{APP}/ws", max_msg_size=0) as ws,
    ):
        got = []
        while (message := await asyncio.wait_for(ws.receive(), 5)).type is (
            aiohttp.WSMsgType.BINARY
        ):
            got.append(message.data)
        assert got == payloads
        assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.05)
    assert condition()
