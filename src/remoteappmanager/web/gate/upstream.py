"""The gate's connections to applications: each carries one exchange at a time, then waits
in a pool for the next request to the same application.

An ``Upstream`` writes a request's head and body as the listener hands them over and passes
the answer back to the listener's side (``Downstream``) as it comes: its head read and
rewritten by the framing (``framing.read_response_head``), its body untouched, its end found
from its framing; after ``101`` the bytes are relayed (a WebSocket's frame by frame). A
connection whose answer ended cleanly goes back to the ``UpstreamPool``; one that may hold
anything more is closed. Every connection reads into the pool's one buffer; relayed bytes are
written on from it without a copy, straight to the client's socket when nothing waits before
them, and only what the socket did not take is copied for the transport to send later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Hashable
from typing import Protocol, cast

from remoteappmanager.web.gate.framing import (
    CHUNKED,
    LENGTH,
    MAX_RESPONSE_HEAD,
    NO_BODY,
    UNTIL_CLOSE,
    BadResponse,
    ChunkedBody,
    RequestHead,
    read_response_head,
)
from remoteappmanager.web.gate.relay import Buffer, Viewer, WebSocketRelay, WebSocketViolation

# An idle connection to an application is kept this long for the next request.
KEEPALIVE_TIMEOUT = 15.0
# At most this many idle connections are kept per application.
MAX_IDLE_PER_TARGET = 32
# Write buffer limits: past HIGH the other side stops being read until the buffer drains to
# LOW, so a slow reader holds at most about HIGH plus one read in memory per connection.
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024
# Reads from applications go into one buffer the listener shares (``UpstreamPool``). A
# relayed WebSocket's bytes are written on from it without a copy, up to RELAY_READ at once:
# fewer, larger reads and no bytes object per read cost the gate about a fifth less CPU per
# byte of a desktop's updates (docs/benchmarks.md). HTTP answers are read HTTP_READ at a time
# and copied out, as their parsing keeps pieces of them.
RELAY_READ = 1024 * 1024
HTTP_READ = 256 * 1024

# Upstream states: idle, reading the head, then the body as framed, or spliced after 101.
_IDLE, _HEAD, _SPLICE, _CLOSED = NO_BODY, 1, 5, 6
_LENGTH, _CHUNKED, _UNTIL_CLOSE = LENGTH, CHUNKED, UNTIL_CLOSE


class Exchange:
    """A request from the proxy and the answer it gets."""

    __slots__ = (
        "body_framing",
        "connect_timed_out",
        "cookie_path",
        "expect_continue",
        "has_body",
        "head",
        "http10",
        "is_head",
        "keep_alive",
        "key",
        "lines",
        "pending",
        "principal",
        "request",
        "request_done",
        "response_done",
        "reused",
        "rfb_activity",
        "task",
        "timer",
        "upgrade",
        "upstream",
        "url_id",
        "user",
        "viewer",
    )

    def __init__(self, head: RequestHead) -> None:
        self.lines = head.lines
        self.head = b""
        self.pending: list[bytes] = []
        self.request_done = head.request_done
        self.response_done = False
        self.expect_continue = head.expect_continue
        self.body_framing = head.body_framing  # the body is re-framed as chunks on the way
        self.has_body = head.has_body
        self.http10 = head.http10
        self.is_head = head.is_head
        self.keep_alive = head.keep_alive
        self.upgrade = head.upgrade
        self.reused = False
        self.key: tuple[str, int] = ("", 0)
        self.url_id = ""
        self.cookie_path = b"/"
        self.user: str | None = None  # counted against the cap while in progress
        self.principal: Hashable | None = None
        self.viewer: Viewer | None = None
        self.rfb_activity = False
        self.upstream: Upstream | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.connect_timed_out = False
        self.request = head.request


class Counters(Protocol):
    """The listener's counters that connections to applications add to."""

    bytes_to_apps: int


class Downstream(Protocol):
    """What an ``Upstream`` needs of the connection from the proxy it answers."""

    transport: asyncio.Transport | None
    closed: bool

    @property
    def eof(self) -> bool:
        """The proxy closed its side: the answer under way is the last."""

    def is_active(self, exchange: Exchange) -> bool:
        """Whether ``exchange`` is the request being answered."""

    def upstream_full(self) -> None:
        """The application reads the request body slower than it comes: stop reading it."""

    def upstream_drained(self) -> None:
        """The application caught up."""

    def retry(self, exchange: Exchange) -> None:
        """The kept connection had been closed by the application: try a new one, once."""

    def upstream_failed(self, exchange: Exchange, *, started: bool) -> None:
        """The answer broke off (``started``: after part of it was passed on)."""

    def response_done(self, exchange: Exchange, *, close: bool) -> None:
        """The answer ended; ``close``: the connection from the proxy must close too."""

    def upgraded(self, upstream: Upstream, head: bytes, rest: bytes, websocket: bool) -> None:
        """The application switched protocols (101)."""

    def websocket_violation(self, exc: Exception, *, from_client: bool) -> None:
        """A WebSocket frame broke the protocol."""

    def close(self) -> None:
        """Close once what is written has been sent."""


class Upstream(asyncio.BufferedProtocol):
    """A connection to an application; carries one exchange at a time, then waits in the pool."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self._pool = pool
        self._stats = pool.stats
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._down: Downstream | None = None
        self._down_transport: asyncio.Transport | None = None
        self._down_fd = -1  # the client's socket, once relaying after 101
        self._exchange: Exchange | None = None
        self._state = _IDLE
        self._buffer: bytearray | None = None
        self._remaining = 0
        self._chunks = ChunkedBody()
        self._received = False
        self._reusable = False
        self._close_down = False
        self._reading_paused = False
        self.relay: WebSocketRelay | None = None
        self.idle_since = 0.0

    # ------------------------------------------------------------------ connection events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)

    def connection_lost(self, exc: Exception | None) -> None:
        state, self._state = self._state, _CLOSED
        if state == _IDLE:
            self._pool.forget(self)
            return
        down, exchange = self._down, self._exchange
        self._down = self._exchange = None
        if state == _SPLICE and down is not None:
            down.close()
        if down is None or exchange is None:
            return
        if state == _UNTIL_CLOSE:
            down.response_done(exchange, close=True)
        elif state == _HEAD:
            if (
                not self._received
                and exchange.reused
                and not exchange.has_body
                and not down.closed
                and down.is_active(exchange)
            ):
                down.retry(exchange)
            else:
                down.upstream_failed(exchange, started=False)
        else:
            down.upstream_failed(exchange, started=True)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        if self._down is not None:
            self._down.upstream_full()

    def resume_writing(self) -> None:
        if self._down is not None:
            self._down.upstream_drained()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def write(self, data: Buffer) -> None:
        if self.transport is not None and self._state != _CLOSED:
            self._stats.bytes_to_apps += len(data)
            self.transport.write(data)

    def abandon(self) -> None:
        """The proxy's side went away: this connection's state is unknown, close it."""
        self._down = self._exchange = None
        if self._state != _CLOSED:
            self._state = _CLOSED
            if self.transport is not None:
                self.transport.close()

    def close(self) -> None:
        self._state = _CLOSED
        if self.transport is not None:
            self.transport.close()

    @property
    def idle(self) -> bool:
        return self._state == _IDLE

    # ------------------------------------------------------------------ one exchange
    def begin(self, down: Downstream, exchange: Exchange) -> None:
        self._down = down
        self._down_transport = down.transport
        self._exchange = exchange
        self._state = _HEAD
        self._received = False
        self._buffer = None

    # ------------------------------------------------------------------ reading
    # The event loop reads into the pool's buffer (``asyncio.BufferedProtocol``); whatever
    # is kept past ``buffer_updated`` must be a copy, as the next read overwrites it.
    def get_buffer(self, sizehint: int) -> memoryview:
        buffer = self._pool.read_buffer()
        return buffer if self._state == _SPLICE else buffer[:HTTP_READ]

    def buffer_updated(self, nbytes: int) -> None:
        view = self._pool.read_buffer()[:nbytes]
        if self._state == _SPLICE:
            self._relay_on(view)
        else:
            self.data_received(bytes(view))

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _SPLICE:
            self._relay_on(data)
        elif state == _LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                self._send(data)
            else:
                if len(data) > remaining:
                    # More than the answer said it had: never passed on, nor the connection reused.
                    self._reusable = False
                    data = data[:remaining]
                self._send(data)
                self._complete()
        elif state == _HEAD:
            self._received = True
            self._on_head_data(data)
        elif state == _CHUNKED:
            self._on_chunked(data)
        elif state == _UNTIL_CLOSE:
            self._send(data)
        elif state == _IDLE:
            # Nobody asked: the application is confused, or it is not an application.
            self.close()

    def _relay_on(self, data: Buffer) -> None:
        """After 101: what the application sent, on to the client (a WebSocket's frames
        through the relay). ``data`` may be a view of the read buffer."""
        relay = self.relay
        if relay is not None:
            try:
                data = relay.to_client.feed(data)  # keeps nothing of data
            except WebSocketViolation as exc:
                if self._down is not None:
                    self._down.websocket_violation(exc, from_client=False)
                return
        transport = self._down_transport
        if not data or transport is None:
            return
        if not isinstance(data, memoryview):
            transport.write(data)
            return
        sent = 0
        if not transport.get_write_buffer_size() and not transport.is_closing():
            sent = self._write_now(data)
        if sent < len(data):
            # A transport keeps what it is given until it is sent (uvloop does not copy it),
            # so it gets a copy of the rest: the read buffer is the next read's.
            transport.write(bytes(data[sent:]))

    def _write_now(self, data: memoryview) -> int:
        """Write to the client's socket what it takes now, with nothing queued before it in
        the transport (so the order holds); errors are left to the transport's own write."""
        fd = self._down_fd
        if fd < 0:
            return 0
        try:
            return os.write(fd, data)
        except OSError:
            return 0

    def _send(self, data: bytes) -> None:
        transport = self._down_transport
        if transport is not None:
            transport.write(data)

    # The states of an answer's head (100-continue, 101, HEAD, 204/304, errors).
    def _on_head_data(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer is not None:
            start = max(0, len(buffer) - 3)
            buffer += data
            data = bytes(buffer)
            end = data.find(b"\r\n\r\n", start)
        else:
            end = data.find(b"\r\n\r\n")
        if end < 0:
            if buffer is None:
                self._buffer = bytearray(data)
            if len(data) > MAX_RESPONSE_HEAD:
                self._refuse()
            return
        self._buffer = None
        if end > MAX_RESPONSE_HEAD:
            self._refuse()
            return
        exchange, down = self._exchange, self._down
        assert exchange is not None
        assert down is not None
        try:
            status, head, framing, length = self._parse_head(data[:end], exchange)
        except BadResponse:
            self._refuse()
            return
        rest = data[end + 4 :]
        if status < 200 and status != 101:
            # Informational answers are dropped (the gate answered Expect itself): the final
            # answer follows.
            if rest:
                self._on_head_data(rest)
            return
        if status == 101:
            if not exchange.upgrade:
                self._refuse()
                return
            self._state = _SPLICE
            self._exchange = None
            sock = down.transport.get_extra_info("socket") if down.transport else None
            self._down_fd = sock.fileno() if sock is not None else -1
            request = exchange.request
            down.upgraded(self, head, rest, request is not None and request.websocket)
            return
        self._start_body(head, framing, length, rest)

    def _start_body(self, head: bytes, framing: int, length: int, rest: bytes) -> None:
        """Pass the head on, with what came of the body after it, as the answer is framed."""
        if framing == _LENGTH:
            if len(rest) >= length:
                if len(rest) > length:
                    self._reusable = False
                self._send(head + rest[:length])
                self._complete()
                return
            self._remaining = length - len(rest)
            self._state = _LENGTH
            self._send(head + rest if rest else head)
        elif framing == _CHUNKED:
            self._state = _CHUNKED
            self._chunks = ChunkedBody()
            self._send(head)
            if rest:
                self._on_chunked(rest)
        elif framing == _UNTIL_CLOSE:
            self._state = _UNTIL_CLOSE
            self._send(head + rest if rest else head)
        else:
            if rest:
                self._reusable = False
            self._send(head)
            self._complete()

    def _parse_head(self, head: bytes, exchange: Exchange) -> tuple[int, bytes, int, int]:
        """(status, the head to send on, framing, length); raises ``BadResponse``."""
        answer = read_response_head(head, exchange.cookie_path, head_request=exchange.is_head)
        status, head, framing, close = answer.status, answer.head, answer.framing, answer.close
        switching = status == 101
        down = self._down
        self._reusable = (
            not close and framing != _UNTIL_CLOSE and not exchange.upgrade and not exchange.http10
        )
        self._close_down = (
            framing == _UNTIL_CLOSE
            or not exchange.keep_alive
            or (exchange.upgrade and not switching)
            or (down is not None and down.eof)
        )
        if self._close_down and not switching:
            head += b"\r\nConnection: close"
        return status, head + b"\r\n\r\n", framing, answer.length

    def _on_chunked(self, data: bytes) -> None:
        try:
            end = self._chunks.scan(data)
        except BadResponse:
            # Part of the answer went out already: cut the connection, never guess.
            self._fail_started()
            return
        if end < 0:
            self._send(data)
            return
        if end < len(data):
            self._reusable = False
            data = data[:end]
        self._send(data)
        self._complete()

    def _refuse(self) -> None:
        """An answer that cannot be passed on, before any of it was: 502, and close."""
        down, exchange = self._down, self._exchange
        self.abandon()
        if down is not None and exchange is not None:
            down.upstream_failed(exchange, started=False)

    def _fail_started(self) -> None:
        down, exchange = self._down, self._exchange
        self.abandon()
        if down is not None and exchange is not None:
            down.upstream_failed(exchange, started=True)

    def _complete(self) -> None:
        down, exchange = self._down, self._exchange
        self._down = self._exchange = None
        self._down_transport = None
        assert down is not None
        assert exchange is not None
        if self._reusable and exchange.request_done:
            self._state = _IDLE
            self.resume_reading()
            self._pool.release(self)
        else:
            self.close()
        down.response_done(exchange, close=self._close_down)


class UpstreamPool:
    """Idle connections to applications, by (host, port), newest taken first."""

    def __init__(
        self,
        stats: Counters,
        *,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        max_idle: int = MAX_IDLE_PER_TARGET,
    ) -> None:
        self.stats = stats
        self.keepalive_timeout = keepalive_timeout
        self.max_idle = max_idle
        self.clock: Callable[[], float] | None = None
        """The event loop's clock, while the listener runs: None, and nothing is kept."""
        self._idle: dict[tuple[str, int], list[Upstream]] = {}
        self._read_buffer: memoryview | None = None

    def read_buffer(self) -> memoryview:
        """The buffer the connections to applications read into, one at a time."""
        buffer = self._read_buffer
        if buffer is None:
            buffer = self._read_buffer = memoryview(bytearray(RELAY_READ))
        return buffer

    def connection(self, key: tuple[str, int]) -> Callable[[], Upstream]:
        """The protocol factory of a new connection to ``key``."""
        return lambda: Upstream(self, key)

    def take(self, key: tuple[str, int]) -> Upstream | None:
        idle = self._idle.get(key)
        while idle:
            upstream = idle.pop()
            transport = upstream.transport
            if upstream.idle and transport is not None and not transport.is_closing():
                return upstream
        return None

    def release(self, upstream: Upstream) -> None:
        idle = self._idle.setdefault(upstream.key, [])
        if len(idle) >= self.max_idle or self.clock is None:
            upstream.close()
            return
        upstream.idle_since = self.clock()
        idle.append(upstream)

    def forget(self, upstream: Upstream) -> None:
        idle = self._idle.get(upstream.key)
        if idle is not None:
            with contextlib.suppress(ValueError):
                idle.remove(upstream)
            if not idle:
                del self._idle[upstream.key]

    def sweep(self, now: float) -> None:
        """Close the connections idle for longer than ``keepalive_timeout``."""
        for key, idle in list(self._idle.items()):
            # Oldest first: connections are taken from the end.
            while idle and now - idle[0].idle_since > self.keepalive_timeout:
                idle.pop(0).close()
            if not idle:
                self._idle.pop(key, None)

    def close(self) -> None:
        """Close every idle connection; keep none from now on."""
        self.clock = None
        for idle in self._idle.values():
            for upstream in idle:
                upstream.close()
        self._idle.clear()
