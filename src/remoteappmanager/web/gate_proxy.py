"""The gate's listener: an HTTP/1.1 reverse proxy that asks a gatekeeper about every request."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import re
import secrets
import socket
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal, Protocol, cast

import httptools
import structlog

from remoteappmanager.web.gate_rules import confine_set_cookie, connection_options, pins_a_header
from remoteappmanager.web.gate_ws import LegDead, WebSocketRelay, WebSocketViolation

log = structlog.get_logger(__name__)

# A request head larger than this is answered 431 (the proxy in front refuses 16 KiB already).
MAX_REQUEST_HEAD = 64 * 1024
# An application's answer whose head is larger than this is refused (502).
MAX_RESPONSE_HEAD = 64 * 1024
# A request head must arrive within this time once it has begun (a trickling client holds a
# connection for nothing).
HEAD_TIMEOUT = 30.0
# A connection from the proxy with no request in progress is closed after this; longer than
# the proxy's own keep-alive, so that it is the proxy that closes (closing under a client
# that is reusing the connection makes it fail a request).
IDLE_TIMEOUT = 75.0
# An idle connection to an application is kept this long for the next request.
KEEPALIVE_TIMEOUT = 15.0
# Seconds to reach an application's port; answers have no limit (long polls, streams).
CONNECT_TIMEOUT = 10.0
# How often timeouts are looked at: one timer for the whole listener, none per request.
SWEEP_INTERVAL = 1.0
MAX_IDLE_PER_TARGET = 32
# Requests in progress and open WebSockets one user may have through the gate at once.
MAX_CONNECTIONS_PER_USER = 64
# Write buffer limits: past HIGH the other side stops being read until the buffer drains to
# LOW, so a slow reader holds at most about HIGH plus one read in memory per connection.
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024
# Every this many seconds an open WebSocket's legs are pinged; a leg that has not answered by
# the next ping is closed (0: no pings).
WEBSOCKET_PING_INTERVAL = 25.0
# The gatekeeper hears of a client's input on an open WebSocket at most this often.
CLIENT_INPUT_INTERVAL = 1.0
# TCP keepalive on a WebSocket's sockets: probes after this long idle, this often, this many.
TCP_KEEPALIVE = (30, 10, 3)
_MAX_CHUNK_LINE = 4096
_MAX_TRAILERS = 16 * 1024


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


@dataclass(slots=True)
class GateRequest:
    """What the gatekeeper sees of a request; header values decoded as Latin-1."""

    method: str
    target: str
    """As sent: the path and query, still percent-encoded."""
    cookies: list[str]
    authorization: str | None
    websocket: bool
    origin: str | None = None
    host: str | None = None
    """The ``Host`` header (where the browser thinks it is), None if none came."""
    forwarded_proto: str | None = None
    """``X-Forwarded-Proto`` as the proxy set it."""
    accept_encoding: str | None = None
    """``Accept-Encoding``, for what the gate answers itself (the desktop viewer)."""
    if_none_match: str | None = None
    """``If-None-Match``, likewise."""


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


# ---------------------------------------------------------------------------- wire details
_CRLF = b"\r\n"
_CONNECTION_OPTIONS = frozenset({b"", b"close", b"keep-alive", b"upgrade"})
# How each header is handled, by lower-case name (absent: copied as it came). Hop-by-hop
# headers (RFC 9110 7.6.1) are dropped, or replaced by what this hop needs.
_DROP, _COOKIE, _AUTHORIZATION, _XFF, _XFPROTO, _XFHOST, _HOST, _REQUEST_ID = range(8)
_UPGRADE, _CONNECTION, _EXPECT, _TRANSFER_ENCODING, _CONTENT_LENGTH, _SET_COOKIE = range(8, 14)
_ORIGIN, _ACCEPT_ENCODING, _IF_NONE_MATCH = range(14, 17)
_HOP_BY_HOP = {
    b"connection": _CONNECTION,
    b"keep-alive": _DROP,
    b"proxy-authenticate": _DROP,
    b"proxy-authorization": _DROP,
    b"proxy-connection": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"upgrade": _UPGRADE,
}
_REQUEST_HEADERS = {
    **_HOP_BY_HOP,
    b"cookie": _COOKIE,
    b"authorization": _AUTHORIZATION,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFPROTO,
    b"x-forwarded-host": _XFHOST,
    b"host": _HOST,
    b"x-request-id": _REQUEST_ID,
    b"origin": _ORIGIN,
    b"accept-encoding": _ACCEPT_ENCODING,
    b"if-none-match": _IF_NONE_MATCH,
    b"content-length": _CONTENT_LENGTH,
    # Answered here when the request is let through; the application must not wait for it.
    b"expect": _EXPECT,
}
_RESPONSE_HEADERS = {
    **_HOP_BY_HOP,
    b"content-length": _CONTENT_LENGTH,
    b"set-cookie": _SET_COOKIE,
    # An application may not widen its service worker's scope beyond its own path (where
    # it would see the service's pages when they share an origin).
    b"service-worker-allowed": _DROP,
}
# A response head as we pass it on: a status line and header lines with token names, no
# bare CR or LF anywhere, no obsolete line folding. Anything else is refused.
_RESPONSE_HEAD = re.compile(
    rb"HTTP/1\.[01] [0-9]{3}(?: [^\r\n\x00]*)?"
    rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*)*"
)
# The lines of a (checked) response head that ``_RESPONSE_HEADERS`` names: (name, value).
_RESPONSE_LINE = re.compile(
    rb"\r\n(" + b"|".join(re.escape(name) for name in _RESPONSE_HEADERS) + rb"):([^\r\n]*)",
    re.IGNORECASE,
)
_INCOMING_ID = re.compile(rb"[A-Za-z0-9._-]{8,64}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n\x00]*)?")
_TRAILER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*")
_NO_BODY_STATUSES = frozenset({204, 304})

# Downstream reading is paused while any of these holds.
_QUEUED = 1  # a pipelined request waits for the one before it
_DECIDING = 2  # the gatekeeper is looking something up
_CONNECTING = 4  # a connection to the application is being opened
_UPSTREAM_FULL = 8  # the application reads the request body slower than it comes
_HOLDING = 16  # an upgrade was asked for: what follows is not HTTP
_BROKEN = 32  # unreadable input: nothing more is read

# Upstream states.
_IDLE, _HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE, _SPLICE, _CLOSED = range(7)
# Chunked body phases.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


def _joined(before: bytes | None, value: bytes) -> bytes:
    """A list header's values, however many lines it came in (RFC 9110 5.3)."""
    return value if before is None else before + b", " + value


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


_BAD_REQUEST = _plain(400, "the request could not be read")
_AMBIGUOUS = _plain(400, "the request's framing, host or credentials are ambiguous")
_PINNED = _plain(400, "the Connection header names a header that is not hop-by-hop")
_UNKNOWN_CODING = _plain(501, "the only transfer coding understood is 'chunked'")
_CROWDED = Answer(
    429,
    (("Cache-Control", "no-store"), ("Retry-After", "5")),
    b"429 Too Many Requests: too many connections to applications at once\n",
    "text/plain; charset=utf-8",
)
_TIMEOUT = _plain(408, "the request did not arrive in time")
_TOO_LARGE = _plain(431, "the request's headers are too large")
_INTERNAL = _plain(500, "something went wrong on our side")
_UNREACHABLE = _plain(503, "the application does not answer")
_BAD_ANSWER = _plain(502, "the application did not answer properly")


class _BadResponse(Exception):
    """The application's answer breaks HTTP/1.1 framing: it cannot be passed on safely."""


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop reading an oversized head."""


class _Refused(Exception):
    """Raised from a parser callback: the request is readable but must not be passed on."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


# ---------------------------------------------------------------------------- one request
class _Exchange:
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

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.head = b""
        self.pending: list[bytes] = []
        self.request_done = False
        self.response_done = False
        self.expect_continue = False
        self.body_framing = False  # the request body is re-framed as chunks on the way
        self.has_body = False
        self.http10 = False
        self.is_head = False
        self.keep_alive = True
        self.upgrade = False
        self.reused = False
        self.key: tuple[str, int] = ("", 0)
        self.url_id = ""
        self.cookie_path = b"/"
        self.user: str | None = None  # counted against the cap while in progress
        self.principal: Hashable | None = None
        self.viewer: ViewerInput | None = None
        self.rfb_activity = False
        self.upstream: _Upstream | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.connect_timed_out = False
        self.request: GateRequest | None = None


# ---------------------------------------------------------------------------- the proxy's side
class _Downstream(asyncio.Protocol):
    """One connection from the proxy: requests are answered in order, one at a time."""

    def __init__(self, server: GateServer) -> None:
        self._server = server
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._peer = b"unknown"
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._raw_head = 0
        self._in_head = False
        self._fresh_head = False
        self._head_started = 0.0
        self._idle_since = self._loop.time()
        self._parsing: _Exchange | None = None
        self._active: _Exchange | None = None
        self._queue: collections.deque[_Exchange] = collections.deque()
        self._paused = 0
        self._write_paused = False
        self._upstream: _Upstream | None = None
        self._upgraded: _Upstream | None = None
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
            self._peer = str(peer[0]).encode("latin-1")
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
        if self._upgraded is not None or self._active is None or self._in_head:
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

    @property
    def forwarding(self) -> _Exchange | None:
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
        if self._in_head and now - self._head_started > self._server.head_timeout:
            self._protocol_error(_TIMEOUT)
        elif (
            self._active is None
            and not self._in_head
            and now - self._idle_since > self._server.idle_timeout
        ):
            self.close()

    # ------------------------------------------------------------------ reading requests
    # The hot path of every byte from the proxy: relayed WebSocket, held, or parsed, inline.
    def data_received(self, data: bytes) -> None:  # noqa: C901
        upgraded = self._upgraded
        if upgraded is not None:
            relay = self._relay
            if relay is None:
                upgraded.write(data)
                return
            to_app = relay.to_app
            try:
                data = to_app.feed(data)
            except WebSocketViolation as exc:
                self.websocket_violation(exc, from_client=True)
                return
            if data:
                upgraded.write(data)
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
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._holding = bytearray(data[upgrade.args[0] :])
            self._pause(_HOLDING)
            return
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadTooLarge):
                self._protocol_error(_TOO_LARGE)
            elif isinstance(error.__context__, _Refused):
                self._protocol_error(error.__context__.answer)
            else:
                log.error("gate.parser_callback_failed", error=repr(error.__context__))
                self._protocol_error(_INTERNAL)
            return
        except httptools.HttpParserError:
            self._protocol_error(_BAD_REQUEST)
            return
        if self._in_head:
            # What the parser holds of a header line it has not finished: counted from the
            # read after the one the head began in (that one may hold earlier requests).
            if self._fresh_head:
                self._fresh_head = False
            else:
                self._raw_head += len(data)
                if self._raw_head > 2 * self._server.max_head:
                    self._protocol_error(_TOO_LARGE)

    def on_message_begin(self) -> None:
        self._url = []
        self._headers = []
        self._head_size = 0
        self._raw_head = 0
        self._in_head = True
        self._fresh_head = True
        self._head_started = self._loop.time()

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._server.max_head:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head = 0
        exchange = self._exchange_of(self._parser)
        self._parsing = exchange
        if self._active is None:
            self._begin(exchange)
        else:
            self._queue.append(exchange)
            self._pause(_QUEUED)

    def on_body(self, body: bytes) -> None:
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

    def on_message_complete(self) -> None:
        exchange = self._parsing
        if exchange is None:
            return
        exchange.request_done = True
        if exchange.body_framing and not exchange.response_done:
            if exchange.upstream is not None:
                exchange.upstream.write(b"0\r\n\r\n")
            else:
                exchange.pending.append(b"0\r\n\r\n")

    # One pass over the headers with a branch per header the gate rewrites; split up, it would
    # cost a call per header on every request.
    def _exchange_of(self, parser: httptools.HttpRequestParser) -> _Exchange:  # noqa: C901
        """The request as the application will get it, and what the gatekeeper needs."""
        exchange = _Exchange()
        method: bytes = parser.get_method()
        version: str = parser.get_http_version()
        target = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        exchange.keep_alive = parser.should_keep_alive()
        exchange.upgrade = parser.should_upgrade()
        exchange.is_head = method == b"HEAD"
        exchange.http10 = version == "1.0"
        lines = exchange.lines
        lines.append(b"%b %b HTTP/%b\r\n" % (method, target, version.encode("latin-1")))
        cookies: list[str] = []
        authorization: str | None = None
        forwarded_for = host = upgrade = encoding = origin = proto = None
        accept_encoding = if_none_match = None
        has_proto = has_host = has_id = False
        hosts = authorizations = 0
        listed: set[bytes] | None = None
        for name, value in self._headers:
            code = _REQUEST_HEADERS.get(name.lower())
            if code is None:
                lines.append(b"%b: %b\r\n" % (name, value))
            elif code == _COOKIE:
                cookies.append(value.decode("latin-1"))
            elif code == _CONTENT_LENGTH:
                exchange.has_body = value.strip() not in (b"0", b"")
                lines.append(b"%b: %b\r\n" % (name, value))
            elif code == _AUTHORIZATION:
                authorizations += 1
                authorization = value.decode("latin-1")
            elif code == _XFF:
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            elif code == _HOST:
                hosts += 1
                host = value
                lines.append(b"%b: %b\r\n" % (name, value))
            elif code == _CONNECTION:
                options = connection_options(value)
                if pins_a_header(options):
                    raise _Refused(_PINNED)
                options -= _CONNECTION_OPTIONS
                if options:
                    listed = options if listed is None else listed | options
            elif code == _UPGRADE:
                upgrade = value
            elif code == _TRANSFER_ENCODING:
                encoding = value if encoding is None else encoding + b"," + value
                exchange.body_framing = exchange.has_body = True
            elif code == _EXPECT:
                exchange.expect_continue = value.strip().lower() == b"100-continue"
            elif code == _REQUEST_ID:
                if _INCOMING_ID.fullmatch(value) is not None and not has_id:
                    has_id = True
                    lines.append(b"X-Request-Id: %b\r\n" % value)
            elif code == _XFPROTO:  # passed on as the proxy set it
                has_proto = True
                proto = value if proto is None else proto + b"," + value
                lines.append(b"%b: %b\r\n" % (name, value))
            elif code == _ORIGIN:
                origin = value if origin is None else b"null"  # two: neither counts
                lines.append(b"%b: %b\r\n" % (name, value))
            elif code == _XFHOST:
                has_host = True
                lines.append(b"%b: %b\r\n" % (name, value))
            elif code == _ACCEPT_ENCODING:
                accept_encoding = _joined(accept_encoding, value)
                lines.append(b"%b: %b\r\n" % (name, value))
            elif code == _IF_NONE_MATCH:
                if_none_match = _joined(if_none_match, value)
                lines.append(b"%b: %b\r\n" % (name, value))
        # Where the parser is lenient, the gate is not: the application (or a proxy behind
        # it) could read these another way than llhttp did.
        if hosts > 1 or (hosts == 0 and not exchange.http10) or authorizations > 1:
            raise _Refused(_AMBIGUOUS)
        if encoding is not None:
            if exchange.http10:
                raise _Refused(_AMBIGUOUS)
            if encoding.strip().lower() != b"chunked":
                raise _Refused(_UNKNOWN_CODING)
        if listed:
            exchange.lines = lines = _without(lines, listed)
        peer = self._peer
        chain = peer if forwarded_for is None else forwarded_for + b", " + peer
        lines.append(b"X-Forwarded-For: %b\r\n" % chain)
        if not has_proto:
            lines.append(b"X-Forwarded-Proto: http\r\n")
        if not has_host and host is not None:
            lines.append(b"X-Forwarded-Host: %b\r\n" % host)
        if not has_id:
            lines.append(b"X-Request-Id: %b\r\n" % self._server.next_request_id())
        if exchange.upgrade and upgrade is not None:
            lines.append(b"Connection: Upgrade\r\nUpgrade: %b\r\n" % upgrade)
        if exchange.body_framing:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if not exchange.has_body:
            exchange.request_done = True
        exchange.request = GateRequest(
            method=method.decode("latin-1"),
            target=target.decode("latin-1"),
            cookies=cookies,
            authorization=authorization,
            websocket=method == b"GET"
            and upgrade is not None
            and upgrade.strip().lower() == b"websocket",
            origin=None if origin is None else origin.decode("latin-1"),
            host=None if host is None else host.decode("latin-1"),
            forwarded_proto=None if proto is None else proto.decode("latin-1"),
            accept_encoding=None if accept_encoding is None else accept_encoding.decode("latin-1"),
            if_none_match=None if if_none_match is None else if_none_match.decode("latin-1"),
        )
        return exchange

    def _protocol_error(self, answer: Answer) -> None:
        """Unreadable input: answer once the requests before it are, then close."""
        if self._broken is not None or self.closed:
            return
        self._broken = answer
        self._in_head = False
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
    def _begin(self, exchange: _Exchange) -> None:
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

    async def _decide(self, exchange: _Exchange, request: GateRequest) -> None:
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

    def _apply(self, exchange: _Exchange, verdict: Verdict) -> None:
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
            # itself would keep its session busy): its data frames are (``gate_ws``).
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
        upstream = self._server.take_idle(exchange.key)
        if upstream is None:
            self._connect(exchange)
        else:
            self._attach(exchange, upstream, reused=True)

    def _connect(self, exchange: _Exchange) -> None:
        self._pause(_CONNECTING)
        task = self._loop.create_task(self._open(exchange))
        exchange.task = task
        # A timer rather than asyncio.timeout: a tenth of the cost, on every new connection.
        exchange.timer = self._loop.call_later(
            self._server.connect_timeout, self._connect_timed_out, exchange, task
        )

    def _connect_timed_out(self, exchange: _Exchange, task: asyncio.Task[None]) -> None:
        exchange.timer = None
        if not task.done():
            exchange.connect_timed_out = True
            task.cancel()

    async def _open(self, exchange: _Exchange) -> None:
        server = self._server
        host, port = exchange.key
        upstream: _Upstream | None = None
        try:
            _transport, upstream = await self._loop.create_connection(
                lambda: _Upstream(server, exchange.key), host, port
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
                server.release(upstream)
            return
        self._resume(_CONNECTING)
        if upstream is None:
            self._fail(exchange, _UNREACHABLE)
        else:
            self._attach(exchange, upstream, reused=False)

    def _attach(self, exchange: _Exchange, upstream: _Upstream, *, reused: bool) -> None:
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

    def retry(self, exchange: _Exchange) -> None:
        """The kept connection had been closed by the application: try a new one, once."""
        exchange.upstream = None
        self._upstream = None
        self._connect(exchange)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self._server.stats.bytes_to_clients += len(data)
            self.transport.write(data)

    def upgraded(self, upstream: _Upstream, head: bytes, rest: bytes, websocket: bool) -> None:
        """The application switched protocols: from now on bytes are relayed, a WebSocket's
        frame by frame (``gate_ws``), anything else untouched."""
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

    def response_done(self, exchange: _Exchange, *, close: bool) -> None:
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

    def _answer(self, exchange: _Exchange, answer: Answer) -> None:
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

    def _fail(self, exchange: _Exchange, answer: Answer) -> None:
        """The gate's own error: nothing of the application's answer was sent yet."""
        self._server.stats.failed += 1
        self._server.uncount(exchange.user)
        exchange.user = None
        exchange.upstream = None
        self._upstream = None
        self._resume(_UPSTREAM_FULL)
        self._answer(exchange, answer)

    def upstream_failed(self, exchange: _Exchange, *, started: bool) -> None:
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


def _without(lines: list[bytes], names: set[bytes]) -> list[bytes]:
    """Header lines minus those the Connection header named (hop-by-hop by declaration)."""
    kept = lines[:1]
    for line in lines[1:]:
        if line.partition(b":")[0].lower() not in names:
            kept.append(line)
    return kept


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


# ------------------------------------------------------------------------- the application side
class _Upstream(asyncio.Protocol):
    """A connection to an application; carries one exchange at a time, then waits in the pool."""

    def __init__(self, server: GateServer, key: tuple[str, int]) -> None:
        self._server = server
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._down: _Downstream | None = None
        self._down_transport: asyncio.Transport | None = None
        self._exchange: _Exchange | None = None
        self._state = _IDLE
        self._buffer: bytearray | None = None
        self._remaining = 0
        self._phase = _SIZE
        self._line = bytearray()
        self._trailers = 0
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
            self._server.forget_idle(self)
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
                and down._active is exchange
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
            self._down._pause(_UPSTREAM_FULL)

    def resume_writing(self) -> None:
        if self._down is not None:
            self._down._resume(_UPSTREAM_FULL)

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and self._state != _CLOSED:
            self._server.stats.bytes_to_apps += len(data)
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
    def begin(self, down: _Downstream, exchange: _Exchange) -> None:
        self._down = down
        self._down_transport = down.transport
        self._exchange = exchange
        self._state = _HEAD
        self._received = False
        self._buffer = None

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _SPLICE:
            relay = self.relay
            if relay is not None:
                try:
                    data = relay.to_client.feed(data)
                except WebSocketViolation as exc:
                    if self._down is not None:
                        self._down.websocket_violation(exc, from_client=False)
                    return
                if not data:
                    return
            self._send(data)
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

    def _send(self, data: bytes) -> None:
        transport = self._down_transport
        if transport is not None:
            transport.write(data)

    # The states of an answer's head (100-continue, 101, HEAD, 204/304, errors) in one place.
    def _on_head_data(self, data: bytes) -> None:  # noqa: C901
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
        except _BadResponse:
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
            request = exchange.request
            down.upgraded(self, head, rest, request is not None and request.websocket)
            return
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
            self._phase = _SIZE
            self._line.clear()
            self._trailers = 0
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

    # One pass over the answer's header lines, as _exchange_of does for the request's.
    def _parse_head(  # noqa: C901
        self, head: bytes, exchange: _Exchange
    ) -> tuple[int, bytes, int, int]:
        """(status, the head to send on, framing, length); raises ``_BadResponse``.

        Strict where a lenient reading could make the proxy and us disagree on where the
        answer ends (the proxy's connections carry other users' requests next).
        """
        if _RESPONSE_HEAD.fullmatch(head) is None:
            raise _BadResponse
        status = int(head[9:12])
        if status < 100:
            raise _BadResponse
        switching = status == 101
        http10 = head[7] == 48  # HTTP/1.0: no keep-alive unless it says so
        close = keep_alive_asked = False
        length: int | None = None
        encoding: bytes | None = None
        listed: set[bytes] | None = None
        # Only the lines that matter are looked at; the others pass as they are.
        pieces: list[bytes] = []
        start = 0
        for match in _RESPONSE_LINE.finditer(head):
            code = _RESPONSE_HEADERS[match.group(1).lower()]
            value = match.group(2)
            keep = False
            if code == _CONTENT_LENGTH:
                digits = value.strip(b" \t")
                if not digits.isdigit() or (length is not None and length != int(digits)):
                    raise _BadResponse
                length = int(digits)
                keep = True
            elif code == _TRANSFER_ENCODING:
                encoding = value if encoding is None else encoding + b"," + value
                keep = True
            elif code == _SET_COOKIE:
                # Always rewritten (or dropped): confined to the application's path.
                confined = confine_set_cookie(value.strip(b" \t"), exchange.cookie_path)
                pieces.append(head[start : match.start()])
                if confined is not None:
                    pieces.append(b"\r\nSet-Cookie: " + confined)
                start = match.end()
                continue
            elif code == _CONNECTION:
                options = connection_options(value)
                if pins_a_header(options):
                    raise _BadResponse  # its framing would be read two ways
                close = close or b"close" in options
                keep_alive_asked = keep_alive_asked or b"keep-alive" in options
                options -= _CONNECTION_OPTIONS
                if options:
                    listed = options if listed is None else listed | options
                keep = switching
            elif code == _UPGRADE:
                keep = switching
            if not keep:
                pieces.append(head[start : match.start()])
                start = match.end()
        if start:
            pieces.append(head[start:])
            head = b"".join(pieces)
        if http10:
            head = b"HTTP/1.1" + head[8:]
        if listed:
            head = _CRLF.join(_without(head.split(_CRLF), listed))
        close = close or (http10 and not keep_alive_asked)
        if switching or exchange.is_head or status < 200 or status in _NO_BODY_STATUSES:
            framing, size = _IDLE, 0
        elif encoding is not None:
            if length is not None:
                raise _BadResponse  # both: the classic way to smuggle an answer
            last = encoding.rsplit(b",", 1)[-1].strip().lower()
            framing, size = (_CHUNKED, 0) if last == b"chunked" else (_UNTIL_CLOSE, 0)
        elif length is not None:
            framing, size = _LENGTH, length
        else:
            framing, size = _UNTIL_CLOSE, 0
        down = self._down
        self._reusable = (
            not close and framing != _UNTIL_CLOSE and not exchange.upgrade and not exchange.http10
        )
        self._close_down = (
            framing == _UNTIL_CLOSE
            or not exchange.keep_alive
            or (exchange.upgrade and not switching)
            or (down is not None and down._eof)
        )
        if self._close_down and not switching:
            head += b"\r\nConnection: close"
        return status, head + b"\r\n\r\n", framing, size

    def _on_chunked(self, data: bytes) -> None:
        try:
            end = self._scan_chunks(data)
        except _BadResponse:
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

    def _scan_chunks(self, data: bytes) -> int:
        """Where the chunked body ends in ``data`` (-1: not in it); raises ``_BadResponse``."""
        size = len(data)
        position = 0
        while position < size:
            phase = self._phase
            if phase == _DATA:
                available = size - position
                if available < self._remaining:
                    self._remaining -= available
                    return -1
                position += self._remaining
                self._remaining = 0
                self._phase = _DATA_END
                continue
            newline = data.find(b"\n", position)
            if newline < 0:
                self._line += data[position:]
                if len(self._line) > _MAX_CHUNK_LINE:
                    raise _BadResponse
                return -1
            if self._line:
                self._line += data[position : newline + 1]
                line = bytes(self._line)
                self._line.clear()
            else:
                line = data[position : newline + 1]
            position = newline + 1
            if len(line) < 2 or line[-2] != 13 or len(line) > _MAX_CHUNK_LINE:
                raise _BadResponse
            content = line[:-2]
            if phase == _SIZE:
                match = _CHUNK_SIZE.fullmatch(content)
                if match is None:
                    raise _BadResponse
                chunk = int(match.group(1), 16)
                if chunk:
                    self._phase, self._remaining = _DATA, chunk
                else:
                    self._phase = _TRAILER
            elif phase == _DATA_END:
                if content:
                    raise _BadResponse
                self._phase = _SIZE
            else:
                if not content:
                    return position
                self._trailers += len(line)
                if self._trailers > _MAX_TRAILERS or _TRAILER_LINE.fullmatch(content) is None:
                    raise _BadResponse
        return -1

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
            self._server.release(self)
        else:
            self.close()
        down.response_done(exchange, close=self._close_down)


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
        self.keepalive_timeout = keepalive_timeout
        self.connect_timeout = connect_timeout
        self.sweep_interval = sweep_interval
        self.max_head = max_head
        self.max_per_user = max_per_user
        self.ping_interval = ping_interval
        self.stats = GateStats()
        self.connections: set[_Downstream] = set()
        # Open WebSockets (spliced connections): connection -> (principal, url id).
        self.upgrades: dict[_Downstream, tuple[Hashable | None, str]] = {}
        self._per_user: dict[str, int] = {}
        self._idle: dict[tuple[str, int], list[_Upstream]] = {}
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
            lambda: _Downstream(self), host, port, reuse_address=True, backlog=1024
        )
        self._port = int(server.sockets[0].getsockname()[1])
        self._server = server
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
        for idle in self._idle.values():
            for upstream in idle:
                upstream.close()
        self._idle.clear()
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

    # ------------------------------------------------------------------ the pool
    def take_idle(self, key: tuple[str, int]) -> _Upstream | None:
        idle = self._idle.get(key)
        while idle:
            upstream = idle.pop()
            transport = upstream.transport
            if upstream.idle and transport is not None and not transport.is_closing():
                return upstream
        return None

    def release(self, upstream: _Upstream) -> None:
        idle = self._idle.setdefault(upstream.key, [])
        if len(idle) >= MAX_IDLE_PER_TARGET or self._server is None:
            upstream.close()
            return
        upstream.idle_since = self.loop.time()
        idle.append(upstream)

    def forget_idle(self, upstream: _Upstream) -> None:
        idle = self._idle.get(upstream.key)
        if idle is not None:
            with contextlib.suppress(ValueError):
                idle.remove(upstream)
            if not idle:
                del self._idle[upstream.key]

    def _sweep(self) -> None:
        now = self.loop.time()
        for key, idle in list(self._idle.items()):
            # Oldest first: connections are taken from the end.
            while idle and now - idle[0].idle_since > self.keepalive_timeout:
                idle.pop(0).close()
            if not idle:
                self._idle.pop(key, None)
        for connection in list(self.connections):
            connection.timed_out(now)
        if self._server is not None:
            self._sweeper = self.loop.call_later(self.sweep_interval, self._sweep)
