"""The gate's listener: an HTTP/1.1 reverse proxy that asks a gatekeeper about every request.

The contract with the gatekeeper (``GateRequest`` in, a ``Forward`` or an ``Answer`` out) and
the connections from the proxy (``_Downstream``, one ``asyncio.Protocol`` each). Requests
are read by the framing (``framing.RequestReader``); a forwarded one is written to a pooled
connection to the application (``upstream``), whose answer comes back through here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import secrets
import socket
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal, Protocol, cast

import structlog

from remoteappmanager.web.gate.framing import (
    MAX_REQUEST_HEAD,
    GateRequest,
    Refusal,
    Refused,
    RequestHead,
    RequestReader,
)
from remoteappmanager.web.gate.relay import LegDead, WebSocketRelay, WebSocketViolation
from remoteappmanager.web.gate.upstream import (
    KEEPALIVE_TIMEOUT,
    WRITE_HIGH,
    WRITE_LOW,
    Exchange,
    Upstream,
    UpstreamPool,
)

log = structlog.get_logger(__name__)

# A request head must arrive within this time once it has begun (a trickling client holds a
# connection for nothing).
HEAD_TIMEOUT = 30.0
# A connection from the proxy with no request in progress is closed after this; longer than
# the proxy's own keep-alive, so that it is the proxy that closes (closing under a client
# that is reusing the connection makes it fail a request).
IDLE_TIMEOUT = 75.0
# Seconds to reach an application's port; answers have no limit (long polls, streams).
CONNECT_TIMEOUT = 10.0
# How often timeouts are looked at: one timer for the whole listener, none per request.
SWEEP_INTERVAL = 1.0
# Requests in progress and open WebSockets one user may have through the gate at once.
MAX_CONNECTIONS_PER_USER = 64
# Every this many seconds an open WebSocket's legs are pinged; a leg that has not answered by
# the next ping is closed (0: no pings).
WEBSOCKET_PING_INTERVAL = 25.0
# The gatekeeper hears of a client's input on an open WebSocket at most this often.
CLIENT_INPUT_INTERVAL = 1.0
# TCP keepalive on a WebSocket's sockets: probes after this long idle, this often, this many.
TCP_KEEPALIVE = (30, 10, 3)
# Connections the kernel keeps until the gate accepts them, as for the service
# (``web.admission.LISTEN_BACKLOG``): a crowd connecting at once is queued, not dropped.
_BACKLOG = 1024


# ---------------------------------------------------------------------------- the contract
@dataclass(slots=True)
class ViewerInput:
    """What a viewer (not the owner) may send through an open WebSocket; mutable.

    The relay looks at ``input_allowed`` for every message from the viewer to the
    application, so that changing it takes effect on the next message, without reconnecting.
    With ``protocol="vnc"`` a viewer without input may send only what asks for the picture
    (RFB pixel format, encodings, update requests); its keyboard, mouse and clipboard never
    reach the desktop. With ``protocol="web"`` it may send no data frames at all.
    """

    input_allowed: bool
    protocol: Literal["vnc", "web"]
    clipboard_in: bool = True
    """With ``vnc``: whether clipboard text (ClientCutText) passes along with the other
    input. Off where the site keeps the browser's clipboard out of desktops; then the owner
    gets a ``ViewerInput`` too, with input allowed and this off."""


@dataclass(frozen=True, slots=True)
class Forward:
    """Let the request through to ``host:port`` with these credentials (None: none).

    The application's ``Set-Cookie`` answers are confined to ``cookie_path``. ``user`` is
    counted against the per-user cap while the request is in progress (for a WebSocket,
    while it is open); ``principal`` is what let the request in, by which open WebSockets
    and answers under way are found again (``GateServer.holders``, ``close_held``).
    ``viewer`` is None for the owner (a WebSocket is relayed unfiltered) and otherwise
    says what the viewer may send (``ViewerInput``).
    """

    url_id: str
    host: str
    port: int
    cookie: str | None
    authorization: str | None
    cookie_path: str
    user: str | None = None
    principal: Hashable | None = None
    viewer: ViewerInput | None = None
    rfb_activity: bool = False
    """The WebSocket carries a VNC desktop (RFB): only keyboard, mouse and clipboard input
    counts as client input (``Gatekeeper.client_input``), not noVNC's update requests."""


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer here; no application is reached."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"


Verdict = Forward | Answer


class Gatekeeper(Protocol):
    """Decides about each request; the listener only carries bytes."""

    def check(self, request: GateRequest) -> Verdict | None:
        """The verdict from what is known already (no I/O), or None to ``decide``."""

    async def decide(self, request: GateRequest) -> Verdict:
        """The verdict, looking up what ``check`` could not."""

    def unreachable(self, url_id: str) -> None:
        """The application refused a connection."""

    def client_input(self, url_id: str) -> None:
        """A client sent data to the application over an open WebSocket (activity).

        Called for data frames only (not pings, pongs or closes, nor frames the gate
        dropped), at most once a second per connection; must not block.
        """


@dataclass(slots=True)
class GateStats:
    """Plain counters, read when metrics are scraped."""

    requests: int = 0
    forwarded: int = 0
    upgraded: int = 0
    answered: int = 0
    """Answered by the gatekeeper: redirects, 401, 403, 404."""
    failed: int = 0
    """Answered 5xx by the gate: the application did not answer, or not properly."""
    malformed: int = 0
    """Requests refused as unreadable: 400, 408, 431."""
    crowded: int = 0
    """Requests refused (429) because their user had too many in progress already."""
    ws_refused: int = 0
    """WebSockets closed for a protocol violation (either side)."""
    ws_dead: int = 0
    """WebSockets closed because a leg did not answer the gate's ping."""
    connections: int = 0
    bytes_to_apps: int = 0
    """Bytes written to applications (requests and WebSocket frames, headers included)."""
    bytes_to_clients: int = 0
    """Bytes written back towards the browsers (answers and WebSocket frames)."""


_CRLF = b"\r\n"

# Downstream reading is paused while any of these holds.
_QUEUED = 1  # a pipelined request waits for the one before it
_DECIDING = 2  # the gatekeeper is looking something up
_CONNECTING = 4  # a connection to the application is being opened
_UPSTREAM_FULL = 8  # the application reads the request body slower than it comes
_HOLDING = 16  # an upgrade was asked for: what follows is not HTTP
_BROKEN = 32  # unreadable input: nothing more is read


def render(answer: Answer, *, close: bool, head_only: bool = False) -> bytes:
    """The whole HTTP response for an ``Answer`` (its head only, for a HEAD request)."""
    try:
        reason = HTTPStatus(answer.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {answer.status} {reason}\r\n"]
    for name, value in answer.headers:
        lines.append(f"{name}: {value}\r\n")
    if answer.body:
        lines.append(f"Content-Type: {answer.content_type}\r\n")
    lines.append(f"Content-Length: {len(answer.body)}\r\n")
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head if head_only else head + answer.body


def _plain(status: int, message: str) -> Answer:
    title = f"{status} {HTTPStatus(status).phrase}"
    return Answer(
        status,
        (("Cache-Control", "no-store"),),
        f"{title}: {message}\n".encode(),
        "text/plain; charset=utf-8",
    )


_CROWDED = Answer(
    429,
    (("Cache-Control", "no-store"), ("Retry-After", "5")),
    b"429 Too Many Requests: too many connections to applications at once\n",
    "text/plain; charset=utf-8",
)
_TIMEOUT = _plain(408, "the request did not arrive in time")
_INTERNAL = _plain(500, "something went wrong on our side")
_REFUSALS: dict[Refusal, Answer] = {}


def _refused(refusal: Refusal) -> Answer:
    """The answer to a request the framing refused."""
    answer = _REFUSALS.get(refusal)
    if answer is None:
        answer = _REFUSALS[refusal] = _plain(refusal.status, refusal.message)
    return answer


_UNREACHABLE = _plain(503, "the application does not answer")
_BAD_ANSWER = _plain(502, "the application did not answer properly")


# ---------------------------------------------------------------------------- the proxy's side
class _Downstream(asyncio.Protocol):
    """One connection from the proxy: requests are answered in order, one at a time."""

    def __init__(self, server: GateServer) -> None:
        self._server = server
        self._loop = server.loop
        self._reader = RequestReader(
            self, peer=b"unknown", request_id=server.next_request_id, max_head=server.max_head
        )
        self.transport: asyncio.Transport | None = None
        self._head_started = 0.0
        self._idle_since = self._loop.time()
        self._parsing: Exchange | None = None
        self._active: Exchange | None = None
        self._queue: collections.deque[Exchange] = collections.deque()
        self._paused = 0
        self._write_paused = False
        self._upstream: Upstream | None = None
        self._upgraded: Upstream | None = None
        self._relay: WebSocketRelay | None = None
        self._url_id = ""
        self._input_frames = 0
        self._input_next = 0.0
        self._spliced_user: str | None = None
        self._holding: bytearray | None = None
        self._broken: Answer | None = None
        self._in_next = False
        self._eof = False
        self.closed = False

    # ------------------------------------------------------------------ connection events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._reader.peer = str(peer[0]).encode("latin-1")
        self._server.connections.add(self)
        self._server.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self._server
        server.connections.discard(self)
        server.stats.connections -= 1
        if server.upgrades.pop(self, None) is not None:
            server.uncount(self._spliced_user)
            self._spliced_user = None
        active, self._active = self._active, None
        if active is not None:
            server.uncount(active.user)
            active.user = None
            if active.task is not None:
                active.task.cancel()
        self._queue.clear()
        for upstream in (self._upstream, self._upgraded):
            if upstream is not None:
                upstream.abandon()
        self._upstream = self._upgraded = None

    def eof_received(self) -> bool:
        if self._upgraded is not None or self._active is None or self._reader.in_head:
            return False
        parsing = self._parsing
        if parsing is not None and not parsing.request_done:
            return False
        # Answer the request in progress, then close.
        self._eof = True
        return True

    def pause_writing(self) -> None:
        self._write_paused = True
        upstream = self._upgraded or self._upstream
        if upstream is not None:
            upstream.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        upstream = self._upgraded or self._upstream
        if upstream is not None:
            upstream.resume_reading()

    def _pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    # ------------------------------------------------------------------ for the upstream
    @property
    def eof(self) -> bool:
        return self._eof

    def is_active(self, exchange: Exchange) -> bool:
        return self._active is exchange

    def upstream_full(self) -> None:
        self._pause(_UPSTREAM_FULL)

    def upstream_drained(self) -> None:
        self._resume(_UPSTREAM_FULL)

    @property
    def forwarding(self) -> Exchange | None:
        """The request let through to an application whose answer is under way, if any."""
        active = self._active
        if active is None or active.upstream is None or active.response_done:
            return None
        return active

    def close(self) -> None:
        """Close once what is written has been sent."""
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        """Cut the connection: an answer was cut short, which must not look complete."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def timed_out(self, now: float) -> None:
        upgraded = self._upgraded
        if upgraded is not None:
            relay = self._relay
            if relay is not None and now >= relay.next_ping:
                try:
                    to_client, to_app = relay.tick(now)
                except LegDead as dead:
                    log.info("gate.websocket_dead", url_id=self._url_id, leg=str(dead))
                    self._server.stats.ws_dead += 1
                    self._end_websocket()
                    return
                if to_client:
                    self.write(to_client)
                if to_app:
                    upgraded.write(to_app)
            return
        if self._reader.in_head and now - self._head_started > self._server.head_timeout:
            self._protocol_error(_TIMEOUT)
        elif (
            self._active is None
            and not self._reader.in_head
            and now - self._idle_since > self._server.idle_timeout
        ):
            self.close()

    # ------------------------------------------------------------------ reading requests
    # The hot path of every byte from the proxy: relayed WebSocket, held, or parsed, inline.
    def data_received(self, data: bytes) -> None:
        upgraded = self._upgraded
        if upgraded is not None:
            relay = self._relay
            if relay is None:
                upgraded.write(data)
                return
            to_app = relay.to_app
            try:
                out = to_app.feed(data)
            except WebSocketViolation as exc:
                self.websocket_violation(exc, from_client=True)
                return
            if out:
                upgraded.write(out)
            frames = to_app.data_frames
            if frames != self._input_frames:
                self._input_frames = frames
                now = self._loop.time()
                if now >= self._input_next:
                    self._input_next = now + CLIENT_INPUT_INTERVAL
                    self._server.gatekeeper.client_input(self._url_id)
            return
        if self._holding is not None:
            self._holding += data
            return
        if self._broken is not None or self.closed:
            return
        try:
            rest = self._reader.feed(data)
        except Refused as refused:
            self._protocol_error(_refused(refused.refusal))
            return
        except Exception as error:
            log.error("gate.parser_callback_failed", error=repr(error))
            self._protocol_error(_INTERNAL)
            return
        if rest is not None:
            self._holding = bytearray(rest)
            self._pause(_HOLDING)

    # ------------------------------------------------------------------ what the reader read
    def head_begun(self) -> None:
        self._head_started = self._loop.time()

    def head_read(self, head: RequestHead) -> None:
        exchange = Exchange(head)
        self._parsing = exchange
        if self._active is None:
            self._begin(exchange)
        else:
            self._queue.append(exchange)
            self._pause(_QUEUED)

    def body_read(self, body: bytes) -> None:
        exchange = self._parsing
        if exchange is None or exchange.response_done:
            return
        if exchange.body_framing:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        upstream = exchange.upstream
        if upstream is not None:
            upstream.write(body)
        else:
            exchange.pending.append(body)

    def message_read(self) -> None:
        exchange = self._parsing
        if exchange is None:
            return
        exchange.request_done = True
        if exchange.body_framing and not exchange.response_done:
            if exchange.upstream is not None:
                exchange.upstream.write(b"0\r\n\r\n")
            else:
                exchange.pending.append(b"0\r\n\r\n")

    def _protocol_error(self, answer: Answer) -> None:
        """Unreadable input: answer once the requests before it are, then close."""
        if self._broken is not None or self.closed:
            return
        self._broken = answer
        self._reader.in_head = False
        self._server.stats.malformed += 1
        self._pause(_BROKEN)
        parsing = self._parsing
        if parsing is not None and not parsing.request_done:
            if parsing in self._queue:
                # Not begun yet: it is answered (refused) in its turn, and never forwarded.
                self._queue.remove(parsing)
                if not self._queue:
                    self._resume(_QUEUED)
            else:
                # The error is inside a request that is under way: it cannot be answered.
                self.abort()
                return
        if self._active is None:
            self._next()

    # ------------------------------------------------------------------ answering
    def _begin(self, exchange: Exchange) -> None:
        self._active = exchange
        self._server.stats.requests += 1
        request = exchange.request
        assert request is not None
        try:
            verdict = self._server.gatekeeper.check(request)
        except Exception:
            log.exception("gate.check_failed")
            verdict = _INTERNAL
        if verdict is None:
            self._pause(_DECIDING)
            exchange.task = self._loop.create_task(self._decide(exchange, request))
        else:
            self._apply(exchange, verdict)

    async def _decide(self, exchange: Exchange, request: GateRequest) -> None:
        try:
            verdict = await self._server.gatekeeper.decide(request)
        except Exception:
            log.exception("gate.decide_failed")
            verdict = _INTERNAL
        exchange.task = None
        if self.closed or self._active is not exchange:
            return
        self._resume(_DECIDING)
        self._apply(exchange, verdict)

    def _apply(self, exchange: Exchange, verdict: Verdict) -> None:
        if isinstance(verdict, Answer):
            self._server.stats.answered += 1
            self._answer(exchange, verdict)
            return
        server = self._server
        if verdict.user is not None:
            if not server.count(verdict.user):
                server.stats.crowded += 1
                self._answer(exchange, _CROWDED)
                return
            exchange.user = verdict.user
        exchange.principal = verdict.principal
        exchange.viewer = verdict.viewer
        exchange.rfb_activity = verdict.rfb_activity
        server.stats.forwarded += 1
        if not exchange.upgrade:
            # A request is input; a WebSocket's opening is not (a page that reconnects by
            # itself would keep its session busy): its data frames are (``relay``).
            server.gatekeeper.client_input(verdict.url_id)
        lines = exchange.lines
        if verdict.cookie:
            lines.append(b"Cookie: %b\r\n" % verdict.cookie.encode("latin-1"))
        if verdict.authorization:
            lines.append(b"Authorization: %b\r\n" % verdict.authorization.encode("latin-1"))
        lines.append(_CRLF)
        exchange.head = b"".join(lines)
        exchange.lines = []
        exchange.url_id = verdict.url_id
        exchange.cookie_path = verdict.cookie_path.encode("latin-1")
        exchange.key = (verdict.host, verdict.port)
        if exchange.expect_continue and not exchange.request_done and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        upstream = self._server.pool.take(exchange.key)
        if upstream is None:
            self._connect(exchange)
        else:
            self._attach(exchange, upstream, reused=True)

    def _connect(self, exchange: Exchange) -> None:
        self._pause(_CONNECTING)
        task = self._loop.create_task(self._open(exchange))
        exchange.task = task
        # A timer rather than asyncio.timeout: a tenth of the cost, on every new connection.
        exchange.timer = self._loop.call_later(
            self._server.connect_timeout, self._connect_timed_out, exchange, task
        )

    def _connect_timed_out(self, exchange: Exchange, task: asyncio.Task[None]) -> None:
        exchange.timer = None
        if not task.done():
            exchange.connect_timed_out = True
            task.cancel()

    async def _open(self, exchange: Exchange) -> None:
        server = self._server
        host, port = exchange.key
        upstream: Upstream | None = None
        try:
            _transport, upstream = await self._loop.create_connection(
                server.pool.connection(exchange.key), host, port
            )
        except asyncio.CancelledError:
            if not exchange.connect_timed_out:
                raise  # the proxy's side went away
        except OSError:  # refused, unreachable: the application is not where it was
            server.gatekeeper.unreachable(exchange.url_id)
        except Exception:
            log.exception("gate.connect_failed")
        finally:
            exchange.task = None
            if exchange.timer is not None:
                exchange.timer.cancel()
                exchange.timer = None
        if self.closed or self._active is not exchange:
            if upstream is not None:
                server.pool.release(upstream)
            return
        self._resume(_CONNECTING)
        if upstream is None:
            self._fail(exchange, _UNREACHABLE)
        else:
            self._attach(exchange, upstream, reused=False)

    def _attach(self, exchange: Exchange, upstream: Upstream, *, reused: bool) -> None:
        exchange.upstream = upstream
        exchange.reused = reused
        self._upstream = upstream
        upstream.begin(self, exchange)
        if exchange.pending:
            upstream.write(exchange.head + b"".join(exchange.pending))
            exchange.pending = []
        else:
            upstream.write(exchange.head)
        if self._write_paused:
            upstream.pause_reading()

    def retry(self, exchange: Exchange) -> None:
        """The kept connection had been closed by the application: try a new one, once."""
        exchange.upstream = None
        self._upstream = None
        self._connect(exchange)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self._server.stats.bytes_to_clients += len(data)
            self.transport.write(data)

    def upgraded(self, upstream: Upstream, head: bytes, rest: bytes, websocket: bool) -> None:
        """The application switched protocols: from now on bytes are relayed, a WebSocket's
        frame by frame (``relay``), anything else untouched."""
        server = self._server
        server.stats.upgraded += 1
        exchange = self._active
        viewer = None
        rfb_activity = False
        if exchange is not None:
            rfb_activity = exchange.rfb_activity
            # The user's count moves from the request to the open connection.
            self._spliced_user, exchange.user = exchange.user, None
            server.upgrades[self] = (exchange.principal, exchange.url_id)
            self._url_id = exchange.url_id
            viewer = exchange.viewer
        self._upgraded = upstream
        self._upstream = None
        self._active = None
        if websocket:
            relay = WebSocketRelay(
                viewer,
                ping_interval=server.ping_interval,
                now=self._loop.time(),
                rfb_activity=rfb_activity,
            )
            self._relay = upstream.relay = relay
            _keepalive(self.transport)
            _keepalive(upstream.transport)
        elif viewer is not None:
            # Only a WebSocket can be filtered: a viewer gets nothing else.
            self._end_websocket()
            return
        self.write(head)
        if rest:
            upstream.data_received(rest)
        holding, self._holding = self._holding, None
        if holding:
            self.data_received(bytes(holding))
        self._resume(_HOLDING)

    def websocket_violation(self, exc: Exception, *, from_client: bool) -> None:
        if self.closed:
            return
        log.info(
            "gate.websocket_refused",
            url_id=self._url_id,
            side="client" if from_client else "application",
            reason=str(exc),
        )
        self._server.stats.ws_refused += 1
        self._end_websocket()

    def _end_websocket(self) -> None:
        """Close both legs of an upgraded connection."""
        upstream = self._upgraded
        if upstream is not None:
            upstream.relay = None
            upstream.close()
        self.close()

    def response_done(self, exchange: Exchange, *, close: bool) -> None:
        self._server.uncount(exchange.user)
        exchange.user = None
        exchange.response_done = True
        exchange.upstream = None
        self._upstream = None
        self._resume(_UPSTREAM_FULL)
        if close or self._eof or not exchange.keep_alive or not exchange.request_done:
            self.close()
            return
        self._active = None
        self._idle_since = self._loop.time()
        self._next()

    def _answer(self, exchange: Exchange, answer: Answer) -> None:
        close = (
            self._eof or not exchange.keep_alive or not exchange.request_done or exchange.upgrade
        )
        self.write(render(answer, close=close, head_only=exchange.is_head))
        exchange.response_done = True
        if close:
            self.close()
            return
        self._active = None
        self._idle_since = self._loop.time()
        self._next()

    def _fail(self, exchange: Exchange, answer: Answer) -> None:
        """The gate's own error: nothing of the application's answer was sent yet."""
        self._server.stats.failed += 1
        self._server.uncount(exchange.user)
        exchange.user = None
        exchange.upstream = None
        self._upstream = None
        self._resume(_UPSTREAM_FULL)
        self._answer(exchange, answer)

    def upstream_failed(self, exchange: Exchange, *, started: bool) -> None:
        if self.closed or self._active is not exchange:
            return
        if started:
            self.abort()
        else:
            self._fail(exchange, _BAD_ANSWER)

    def _next(self) -> None:
        """Start the next pipelined request, if any (a loop: answers may come at once)."""
        if self._in_next:
            return
        self._in_next = True
        try:
            while self._active is None and not self.closed:
                if self._queue:
                    exchange = self._queue.popleft()
                    if not self._queue:
                        self._resume(_QUEUED)
                    self._begin(exchange)
                elif self._broken is not None:
                    self.write(render(self._broken, close=True))
                    self.close()
                else:
                    break
        finally:
            self._in_next = False


def _keepalive(transport: asyncio.Transport | None) -> None:
    """TCP keepalive on a long-lived connection: a peer gone silently is noticed."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    idle, interval, count = TCP_KEEPALIVE
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)


# ---------------------------------------------------------------------------- the listener
class GateServer:
    """Listens for the proxy, and keeps idle connections to applications for reuse.

    Every request is put to the ``gatekeeper``: an ``Answer`` is sent as it is; a
    ``Forward`` goes to ``host:port`` with our cookies and tokens replaced by the verdict's,
    hop-by-hop headers removed and ``X-Forwarded-*`` set. Answers are passed back as they
    come (the head is checked and rewritten, bodies are not touched); after a ``101`` both
    directions are spliced until either side closes. A request's answer ends before the next
    request on that connection starts; a slow reader pauses the application, a slow
    application pauses the proxy.
    """

    def __init__(
        self,
        gatekeeper: Gatekeeper,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        head_timeout: float = HEAD_TIMEOUT,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        sweep_interval: float = SWEEP_INTERVAL,
        max_head: int = MAX_REQUEST_HEAD,
        max_per_user: int = MAX_CONNECTIONS_PER_USER,
        ping_interval: float = WEBSOCKET_PING_INTERVAL,
    ) -> None:
        self.gatekeeper = gatekeeper
        self.idle_timeout = idle_timeout
        self.head_timeout = head_timeout
        self.connect_timeout = connect_timeout
        self.sweep_interval = sweep_interval
        self.max_head = max_head
        self.max_per_user = max_per_user
        self.ping_interval = ping_interval
        self.stats = GateStats()
        self.pool = UpstreamPool(self.stats, keepalive_timeout=keepalive_timeout)
        self.connections: set[_Downstream] = set()
        # Open WebSockets (spliced connections): connection -> (principal, url id).
        self.upgrades: dict[_Downstream, tuple[Hashable | None, str]] = {}
        self._per_user: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(6)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the gate is not listening"
        return self._loop

    @property
    def port(self) -> int:
        """The port listened on (the one asked for, or the one picked for port 0)."""
        assert self._server is not None, "the gate is not listening"
        return self._port

    async def start(self, host: str, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        server = await self._loop.create_server(
            lambda: _Downstream(self), host, port, reuse_address=True, backlog=_BACKLOG
        )
        self._port = int(server.sockets[0].getsockname()[1])
        self._server = server
        self.pool.clock = self._loop.time
        self._sweeper = self._loop.call_later(self.sweep_interval, self._sweep)

    async def close(self) -> None:
        """Stop listening and close every connection (open WebSockets included)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self.connections):
            connection.abort()
        self.pool.close()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await server.wait_closed()

    # ------------------------------------------------------------------ users
    def count(self, user: str) -> bool:
        """Count one more request or connection of ``user``; False if over the cap."""
        current = self._per_user.get(user, 0)
        if current >= self.max_per_user:
            return False
        self._per_user[user] = current + 1
        return True

    def uncount(self, user: str | None) -> None:
        if user is None:
            return
        current = self._per_user.get(user, 0) - 1
        if current > 0:
            self._per_user[user] = current
        else:
            self._per_user.pop(user, None)

    def in_use(self, user: str) -> int:
        """Requests in progress and open WebSockets of ``user``."""
        return self._per_user.get(user, 0)

    def holders(self) -> set[tuple[Hashable | None, str]]:
        """(principal, url id) of every open WebSocket and every answer under way."""
        held = set(self.upgrades.values())
        for down in self.connections:
            exchange = down.forwarding
            if exchange is not None:
                held.add((exchange.principal, exchange.url_id))
        return held

    def close_held(self, doomed: Callable[[Hashable | None, str], bool]) -> int:
        """Cut every open WebSocket and answer under way for which ``doomed(principal,
        url_id)``; how many connections were cut.

        Connections from the proxy carry one request at a time, so cutting one under way
        ends that request only (the proxy opens another connection for the next).
        """
        closing = [down for down, (who, url_id) in self.upgrades.items() if doomed(who, url_id)]
        for down in self.connections:
            exchange = down.forwarding
            if exchange is not None and doomed(exchange.principal, exchange.url_id):
                closing.append(down)
        for down in closing:
            down.abort()
        return len(closing)

    def next_request_id(self) -> bytes:
        return b"%s%x" % (self._id_prefix.encode("ascii"), next(self._ids))

    # ------------------------------------------------------------------ timeouts
    def _sweep(self) -> None:
        now = self.loop.time()
        self.pool.sweep(now)
        for connection in list(self.connections):
            connection.timed_out(now)
        if self._server is not None:
            self._sweeper = self.loop.call_later(self.sweep_interval, self._sweep)
