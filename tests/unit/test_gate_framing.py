"""The gate's HTTP/1.1 framing against a reference parser (h11), for random messages split anywhere.

The gate's listener is fed bytes through a stand-in transport, at split points hypothesis
chooses (pausing when the gate pauses reading, as a socket would). The application behind it
is a real loopback server that parses what it receives with h11. For requests: every request
the application receives must be, in order, the one h11 reads from the client's bytes (method,
target, body), and where the two would disagree the gate must refuse instead (an error answer,
then the end of the connection). For answers: the client must read, with h11, the status and
body h11 reads from the application's bytes, or get 502, or see the connection cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remoteappmanager.web.gate.framing import GateRequest
from remoteappmanager.web.gate.listener import Answer, Forward, GateServer, _Downstream

APP = "/user/alice/containers/app"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ harness
@dataclass
class Received:
    """Requests as the application's h11 read them, and whether h11 ever refused one."""

    requests: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PassAll:
    """A gatekeeper letting everything through to one port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inputs: list[str] = []

    def check(self, request: GateRequest) -> Forward:
        return Forward("app", "127.0.0.1", self.port, None, None, APP + "/")

    async def decide(self, request: GateRequest) -> Forward | Answer:
        return self.check(request)

    def unreachable(self, url_id: str) -> None:
        pass

    def client_input(self, url_id: str) -> None:
        self.inputs.append(url_id)


class FakeTransport:
    """What ``_Downstream`` needs of a socket transport; closing ends the connection."""

    def __init__(self, protocol: _Downstream) -> None:
        self.protocol = protocol
        self.written = bytearray()
        self.readable = asyncio.Event()  # clear while the gate pauses reading
        self.readable.set()
        self.closed = False

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def pause_reading(self) -> None:
        self.readable.clear()

    def resume_reading(self) -> None:
        self.readable.set()

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.readable.set()
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close


async def h11_application(
    received: Received, answer: Callable[[int], bytes] | None = None
) -> asyncio.Server:
    """A loopback application reading requests with h11; answers ``answer(n)`` or a default."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        current: list[Any] = []
        with contextlib.suppress(ConnectionError):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    received.errors.append(str(exc))
                    break
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        break  # cut short by the gate: allowed, and not a framing error
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    current = [event.method, event.target, bytearray()]
                elif isinstance(event, h11.Data):
                    current[2] += event.data
                elif isinstance(event, h11.EndOfMessage):
                    number = len(received.requests)
                    received.requests.append((current[0], current[1], bytes(current[2])))
                    if answer is not None:
                        writer.write(answer(number))
                    else:
                        body = b"answer %d" % number
                        writer.write(
                            conn.send(
                                h11.Response(
                                    status_code=200, headers=[("Content-Length", str(len(body)))]
                                )
                            )
                            or b""
                        )
                        writer.write(conn.send(h11.Data(data=body)) or b"")
                        writer.write(conn.send(h11.EndOfMessage()) or b"")
                    await writer.drain()
                    if answer is not None:
                        break
                    if conn.our_state is h11.MUST_CLOSE:
                        break
                    conn.start_next_cycle()
                else:
                    break
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def through_the_gate(
    pieces: list[bytes],
    port: int,
    *,
    answers: int = 0,
    quiet: float = 0.15,
    limit: float = 10.0,
    keeper: PassAll | None = None,
) -> tuple[bytes, bool]:
    """Feed ``pieces`` to a gate connection; (what the client got, whether it was closed).

    Waits until the connection ends, or nothing happens for ``quiet`` seconds (a tenth of
    that once ``answers`` whole answers have come).
    """
    server = GateServer(keeper or PassAll(port))
    await server.start("127.0.0.1", 0)
    try:
        down = _Downstream(server)
        transport = FakeTransport(down)
        down.connection_made(transport)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        for piece in pieces:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(transport.readable.wait(), deadline - loop.time())
            if transport.closed or not transport.readable.is_set():
                break
            down.data_received(piece)
            await asyncio.sleep(0)
        # Then wait until nothing more happens for a while (or the connection ends).
        size, still = -1, loop.time()
        while not transport.closed and loop.time() < deadline:
            await asyncio.sleep(0.01)
            if len(transport.written) != size:
                size, still = len(transport.written), loop.time()
                if answers and len(gate_answers(bytes(transport.written), False)) >= answers:
                    quiet /= 10
                    answers = 0
            elif loop.time() - still > quiet:
                break
        return bytes(transport.written), transport.closed
    finally:
        await server.close()


def split(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p for p in points if 0 < p < len(data)})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# ------------------------------------------------------------------------------ references
def h11_requests(data: bytes) -> tuple[list[tuple[bytes, bytes, bytes]], bool]:
    """(the requests h11 reads from a client's bytes, whether it found them faulty).

    Bytes that merely stop short of a whole request are not faulty: both wait for more.
    """
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    requests: list[tuple[bytes, bytes, bytes]] = []
    current: list[Any] = []
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return requests, False
            if isinstance(event, h11.Request):
                current = [event.method, event.target, bytearray()]
            elif isinstance(event, h11.Data):
                current[2] += event.data
            elif isinstance(event, h11.EndOfMessage):
                requests.append((current[0], current[1], bytes(current[2])))
                current = []
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE:
                    return requests, False
                conn.start_next_cycle()
            else:
                return requests, False
    except h11.RemoteProtocolError:
        return requests, True


def h11_responses(data: bytes, methods: list[bytes]) -> list[tuple[int, bytes]]:
    """The complete answers (status, body) h11 reads, as a client, from ``data``."""
    conn = h11.Connection(h11.CLIENT)
    answers: list[tuple[int, bytes]] = []
    status, body = 0, bytearray()
    try:
        for method in methods:
            conn.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
            conn.send(h11.EndOfMessage())
            if not answers and data:
                conn.receive_data(data)
                conn.receive_data(b"")
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                    return answers
                if isinstance(event, h11.Response):
                    status, body = event.status_code, bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    answers.append((status, bytes(body)))
                    break
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return answers
            conn.start_next_cycle()
    except h11.RemoteProtocolError:
        pass
    return answers


# ------------------------------------------------------------------------------ strategies
_NL = st.sampled_from([b"\r\n"] * 12 + [b"\n"])


@st.composite
def raw_request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT"]))
    target = APP.encode() + b"/" + draw(st.sampled_from([b"", b"a", b"b?x=1", b"c%20d"]))
    version = draw(st.sampled_from([b"1.1"] * 6 + [b"1.0"]))
    body = draw(st.binary(min_size=draw(st.sampled_from([0, 1, 1])), max_size=24))
    lines: list[bytes] = [b"%b %b HTTP/%b" % (method, target, version)]
    hosts = draw(st.sampled_from([1] * 8 + [0, 2]))
    lines += [b"Host: gate.test"] * hosts
    framing = draw(st.sampled_from(["none", "length", "chunked", "chunked", "both", "twice", "te"]))
    payload = b""
    if framing in ("length", "both", "twice"):
        length = draw(st.sampled_from([len(body)] * 4 + [len(body) + 1, max(0, len(body) - 1)]))
        lines.append(b"Content-Length: %d" % length)
        if framing == "twice":
            lines.append(b"Content-Length: %d" % draw(st.sampled_from([length, length + 2])))
        payload = body
    if framing in ("chunked", "both", "te"):
        coding = b"chunked" if framing != "te" else draw(st.sampled_from([b"gzip, chunked", b"x"]))
        lines.append(b"Transfer-Encoding: " + coding)
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        size_of = draw(st.sampled_from(["hex"] * 8 + ["ext", "bad", "space"]))
        for piece in pieces:
            if not piece:
                continue
            size = b"%x" % len(piece)
            size = {"hex": size, "ext": size + b";a=b", "bad": b"z" + size, "space": size + b" "}[
                size_of
            ]
            payload += size + b"\r\n" + piece + b"\r\n"
        payload += b"0\r\n\r\n"
    connection = draw(
        st.sampled_from(
            [None] * 4
            + [b"keep-alive", b"close", b"x-hop", b"x-hop, Content-Length"]
            + [b"content-length", b"Transfer-Encoding", b"host", b"cookie"]
        )
    )
    if connection is not None:
        lines.append(b"Connection: " + connection)
    if draw(st.booleans()):
        lines.append(b"X-Hop: 1")
    if draw(st.sampled_from([False] * 9 + [True])):
        lines.append(b" folded")
    newline = draw(_NL)
    head = newline.join(lines) + newline + newline
    if newline == b"\n":
        head = head.replace(b"\n", b"\r\n", len(lines) - 1)  # one bare LF, near the end
    return head + payload


@st.composite
def raw_response(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([200, 200, 204, 302, 304, 404]))
    version = draw(st.sampled_from([b"1.1"] * 5 + [b"1.0"]))
    body = draw(st.binary(max_size=24))
    lines = [b"HTTP/%b %d Something" % (version, status)]
    framing = draw(st.sampled_from(["length", "length", "chunked", "both", "twice", "none"]))
    payload = body
    if framing in ("length", "both", "twice"):
        length = draw(st.sampled_from([len(body)] * 4 + [len(body) + 3]))
        lines.append(b"Content-Length: %d" % length)
        if framing == "twice":
            lines.append(b"Content-Length: %d" % draw(st.sampled_from([length, length + 1])))
    if framing in ("chunked", "both"):
        lines.append(b"Transfer-Encoding: chunked")
        bad = draw(st.sampled_from([False] * 6 + [True]))
        payload = (
            b"%x" % len(body) + (b"g" if bad else b"") + b"\r\n" + body + b"\r\n" if body else b""
        ) + b"0\r\n\r\n"
    connection = draw(
        st.sampled_from(
            [None] * 4
            + [b"close", b"keep-alive", b"x-y", b"content-length"]
            + [b"Transfer-Encoding", b"x-y, content-length"]
        )
    )
    if connection is not None:
        lines.append(b"Connection: " + connection)
    if draw(st.booleans()):
        lines.append(b"Set-Cookie: app=1; Path=/")
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head + payload


# ------------------------------------------------------------------------------ properties
def gate_answers(data: bytes, closed: bool) -> list[tuple[int, bytes]]:
    """The answers the gate sent to the client, read with h11 (as many as are complete).

    Whatever the gate sent must be valid HTTP/1.1 as far as it goes; the end of the
    connection may only cut it short.
    """
    conn = h11.Connection(h11.CLIENT)
    if data:
        conn.receive_data(data)
    answers: list[tuple[int, bytes]] = []
    at_end = False
    status, body = 0, bytearray()
    with contextlib.suppress(h11.LocalProtocolError):
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
        conn.send(h11.EndOfMessage())
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if at_end:
                return answers  # cut short
            raise AssertionError(f"the gate's answer is not HTTP/1.1: {exc}: {data!r}") from exc
        if event is h11.NEED_DATA and closed and not at_end:
            at_end = True
            conn.receive_data(b"")
            continue
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return answers
        if event is h11.PAUSED:
            return answers
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            status, body = event.status_code, bytearray()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            answers.append((status, bytes(body)))
            if conn.their_state is h11.MUST_CLOSE:
                return answers
            conn.start_next_cycle()
            with contextlib.suppress(h11.LocalProtocolError):
                conn.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
                conn.send(h11.EndOfMessage())


@SETTINGS
@given(st.lists(raw_request(), min_size=1, max_size=3), st.lists(st.integers(0, 400), max_size=6))
def test_requests_are_framed_as_h11_frames_them_or_refused(
    requests: list[bytes], points: list[int]
) -> None:
    stream = b"".join(requests)
    expected, faulty = h11_requests(stream)

    async def scenario() -> None:
        received = Received()
        app = await h11_application(received)
        try:
            port = app.sockets[0].getsockname()[1]
            written, closed = await through_the_gate(
                split(stream, points), port, answers=len(expected)
            )
        finally:
            app.close()
        assert received.errors == [], (received.errors, stream)
        got = received.requests
        answers = gate_answers(written, closed)
        refused = [status for status, _body in answers if status >= 400]
        # What reached the application is what h11 reads, in order, never more.
        assert got == expected[: len(got)], (got, expected, stream)
        if len(got) < len(expected) or faulty:
            assert refused or closed, (answers, got, expected, stream)
        if refused:
            assert closed
            assert answers[-1][0] in (400, 501)

    asyncio.run(scenario())


@SETTINGS
@given(raw_response(), st.lists(st.integers(0, 200), max_size=5))
def test_answers_are_framed_as_h11_frames_them_or_refused(
    response: bytes, points: list[int]
) -> None:
    expected = h11_responses(response, [b"GET"])
    request = b"GET " + APP.encode() + b"/x HTTP/1.1\r\nHost: gate.test\r\n\r\n"

    async def scenario() -> None:
        received = Received()
        pieces = split(response, points)

        def answer(_number: int) -> bytes:
            return response

        async def app_serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                await reader.readuntil(b"\r\n\r\n")
                received.requests.append((b"GET", b"", b""))
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.002)
            writer.close()

        app = await asyncio.start_server(app_serve, "127.0.0.1", 0)
        try:
            port = app.sockets[0].getsockname()[1]
            written, closed = await through_the_gate([request], port, answers=1)
        finally:
            app.close()
        answers = gate_answers(written, closed)
        if answers and answers[0][0] == 502:
            return  # refused before any of it went out
        if expected and answers:
            assert answers[0] == expected[0], (answers, expected, response)
        elif not answers:
            assert closed, (written, response)  # cut short: visibly incomplete
        else:
            # h11 would not read it, the gate passed something on: it must be cut short.
            raise AssertionError(f"passed on what h11 refuses: {response!r} -> {written!r}")

    asyncio.run(scenario())


_PIPELINE = (
    b"POST "
    + APP.encode()
    + b"/a HTTP/1.1\r\nHost: gate.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x=y\r\nabc\r\n1\r\nd\r\n0\r\nTrailer: t\r\n\r\n"
    b"PUT " + APP.encode() + b"/b HTTP/1.1\r\nHost: gate.test\r\nContent-Length: 4\r\n\r\nwxyz"
    b"GET " + APP.encode() + b"/c HTTP/1.1\r\nHost: gate.test\r\nConnection: close\r\n\r\n"
)
_ANSWERS = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1; Path=/\r\n\r\n"
    b"5;ext\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot here!",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
)


def test_a_pipeline_fed_one_byte_at_a_time_is_framed_as_h11_frames_it() -> None:
    """Every split point at once: the gate's parsing state survives any boundary."""
    expected, faulty = h11_requests(_PIPELINE)
    assert not faulty
    assert len(expected) == 3

    async def scenario() -> None:
        received = Received()
        app = await h11_application(received)
        try:
            port = app.sockets[0].getsockname()[1]
            pieces = [_PIPELINE[i : i + 1] for i in range(len(_PIPELINE))]
            written, closed = await through_the_gate(pieces, port, answers=3)
        finally:
            app.close()
        assert received.requests == expected
        assert [status for status, _body in gate_answers(written, closed)] == [200, 200, 200]
        assert closed  # the last request asked for it

    asyncio.run(scenario())


def test_every_forwarded_request_is_reported_as_client_input() -> None:
    """The idle culler's view: one input per request let through to the application."""

    async def scenario() -> None:
        received = Received()
        app = await h11_application(received)
        try:
            port = app.sockets[0].getsockname()[1]
            keeper = PassAll(port)
            await through_the_gate([_PIPELINE], port, answers=3, keeper=keeper)
        finally:
            app.close()
        assert len(received.requests) == 3
        assert keeper.inputs == ["app", "app", "app"]

    asyncio.run(scenario())


def test_answers_sent_one_byte_at_a_time_arrive_as_h11_reads_them() -> None:
    request = b"GET " + APP.encode() + b"/x HTTP/1.1\r\nHost: gate.test\r\n\r\n"

    async def scenario(answer: bytes) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                await reader.readuntil(b"\r\n\r\n")
                for i in range(len(answer)):
                    writer.write(answer[i : i + 1])
                    await writer.drain()
                    await asyncio.sleep(0.001)
            writer.close()

        app = await asyncio.start_server(serve, "127.0.0.1", 0)
        try:
            port = app.sockets[0].getsockname()[1]
            # Bytes a millisecond apart: a loaded machine may pause longer than the default.
            written, closed = await through_the_gate([request], port, answers=1, quiet=1.0)
        finally:
            app.close()
        assert gate_answers(written, closed)[:1] == h11_responses(answer, [b"GET"])[:1]

    for answer in _ANSWERS:
        asyncio.run(scenario(answer))
