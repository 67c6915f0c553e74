"""The gate's HTTP/1.1 framing, socket-free: bytes in; request heads, bodies and ends, and
answers' heads and body boundaries, out.

The one module that imports ``httptools`` (llhttp, which reads requests). Answers are read
here too, by regular expressions: only their head is parsed, and their body is passed on as
it came, its end found from its framing (``Content-Length``, ``chunked``, or the
connection's end). Where llhttp or an application would be lenient, the gate is not: a
message that could be framed two ways is refused (``Refused``, ``BadResponse``), since the
proxy's connections carry other users' requests next.

- ``RequestReader`` is fed the proxy's bytes and tells a ``RequestEvents`` of each request's
  head (``RequestHead``: what the gatekeeper sees, and the head as the application will get
  it, without hop-by-hop headers and with ``X-Forwarded-*`` set), its body and its end.
- ``read_response_head`` reads an application's answer head and rewrites it (its
  ``Set-Cookie`` confined to the application's path; hop-by-hop headers gone);
  ``ChunkedBody`` finds where a chunked body ends.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httptools

from remoteappmanager.web.gate.credentials import (
    confine_set_cookie,
    connection_options,
    pins_a_header,
)

# Bounds on a request's head (its request line and headers) and an answer's.
MAX_REQUEST_HEAD = 64 * 1024
MAX_RESPONSE_HEAD = 64 * 1024
# Bounds on a chunk's size line (with its extensions) and on a chunked answer's trailers.
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16 * 1024

# How an answer's body is delimited.
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 2, 3, 4


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request cannot be passed on: the status to answer, and a message."""

    status: int
    message: str


BAD_REQUEST = Refusal(400, "the request could not be read")
AMBIGUOUS = Refusal(400, "the request's framing, host or credentials are ambiguous")
PINNED = Refusal(400, "the Connection header names a header that is not hop-by-hop")
UNKNOWN_CODING = Refusal(501, "the only transfer coding understood is 'chunked'")
TOO_LARGE = Refusal(431, "the request's headers are too large")


class Refused(Exception):
    """The request cannot be passed on; nothing more is read from the connection."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.status)
        self.refusal = refusal


class BadResponse(Exception):
    """The application's answer breaks HTTP/1.1 framing: it cannot be passed on safely."""


_CRLF = b"\r\n"
_CONNECTION_OPTIONS = frozenset({b"", b"close", b"keep-alive", b"upgrade"})
# How each header is handled, by lower-case name (absent: copied as it came). Hop-by-hop
# headers (RFC 9110 7.6.1) are dropped, or replaced by what this hop needs.
_DROP, _COOKIE, _AUTHORIZATION, _XFF, _XFPROTO, _XFHOST, _HOST, _REQUEST_ID = range(8)
_UPGRADE, _CONNECTION, _EXPECT, _TRANSFER_ENCODING, _CONTENT_LENGTH, _SET_COOKIE = range(8, 14)
_ORIGIN = 14
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
# Chunked body phases.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


def without(lines: list[bytes], names: set[bytes]) -> list[bytes]:
    """Header lines minus those the Connection header named (hop-by-hop by declaration)."""
    kept = lines[:1]
    for line in lines[1:]:
        if line.partition(b":")[0].lower() not in names:
            kept.append(line)
    return kept


# ---------------------------------------------------------------------------- requests
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


class RequestHead:
    """A request's head as read: what the gatekeeper sees (``request``), the head's lines as
    the application will get them (``lines``: the gatekeeper's credentials and the blank line
    are still to come), and how the message is framed."""

    __slots__ = (
        "body_framing",
        "expect_continue",
        "has_body",
        "http10",
        "is_head",
        "keep_alive",
        "lines",
        "request",
        "request_done",
        "upgrade",
    )

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.request: GateRequest | None = None
        self.body_framing = False  # the request body is re-framed as chunks on the way
        self.has_body = False
        self.request_done = False  # no body follows
        self.expect_continue = False
        self.http10 = False
        self.is_head = False
        self.keep_alive = True
        self.upgrade = False


class RequestEvents(Protocol):
    """Told by a ``RequestReader`` of what it reads, in order."""

    def head_begun(self) -> None:
        """A request's head began."""

    def head_read(self, head: RequestHead) -> None:
        """A request's head was read in full."""

    def body_read(self, data: bytes) -> None:
        """Part of its body (decoded: without chunk framing)."""

    def message_read(self) -> None:
        """Its end."""


class RequestReader:
    """Reads requests from the bytes of one connection from the proxy (llhttp).

    ``feed`` tells ``events`` of what it read, then returns None, or, once a request asked
    for an upgrade, the bytes after its head (which are not HTTP: nothing more is read).
    It raises ``Refused`` for what cannot be passed on (the events before it were told); an
    exception raised by ``events`` passes out of ``feed`` as it is. ``peer`` and
    ``request_id`` make the ``X-Forwarded-For`` and ``X-Request-Id`` headers.
    """

    def __init__(
        self,
        events: RequestEvents,
        *,
        peer: bytes,
        request_id: Callable[[], bytes],
        max_head: int = MAX_REQUEST_HEAD,
    ) -> None:
        self._events = events
        self._parser = httptools.HttpRequestParser(self)
        self.peer = peer
        self._request_id = request_id
        self._max_head = max_head
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._raw_head = 0
        self._fresh_head = False
        self.in_head = False
        """Whether a head has begun and is not read in full yet."""

    def feed(self, data: bytes) -> bytes | None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            return data[upgrade.args[0] :]
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except httptools.HttpParserError:
            raise Refused(BAD_REQUEST) from None
        if self.in_head:
            # What the parser holds of a header line it has not finished: counted from the
            # read after the one the head began in (that one may hold earlier requests).
            if self._fresh_head:
                self._fresh_head = False
            else:
                self._raw_head += len(data)
                if self._raw_head > 2 * self._max_head:
                    raise Refused(TOO_LARGE)
        return None

    # ------------------------------------------------------------------ llhttp's callbacks
    def on_message_begin(self) -> None:
        self._url = []
        self._headers = []
        self._head_size = 0
        self._raw_head = 0
        self.in_head = True
        self._fresh_head = True
        self._events.head_begun()

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._max_head:
            raise Refused(TOO_LARGE)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._raw_head = 0
        self._events.head_read(self._head_of(self._parser))

    def on_body(self, body: bytes) -> None:
        self._events.body_read(body)

    def on_message_complete(self) -> None:
        self._events.message_read()

    # One pass over the headers with a branch per header the gate rewrites; split up, it would
    # cost a call per header on every request.
    def _head_of(self, parser: httptools.HttpRequestParser) -> RequestHead:  # noqa: C901
        """The request as the application will get it, and what the gatekeeper needs;
        raises ``Refused`` where the head could be read two ways."""
        head = RequestHead()
        method: bytes = parser.get_method()
        version: str = parser.get_http_version()
        target = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        head.keep_alive = parser.should_keep_alive()
        head.upgrade = parser.should_upgrade()
        head.is_head = method == b"HEAD"
        head.http10 = version == "1.0"
        lines = head.lines
        lines.append(b"%b %b HTTP/%b\r\n" % (method, target, version.encode("latin-1")))
        cookies: list[str] = []
        authorization: str | None = None
        forwarded_for = host = upgrade = encoding = origin = proto = None
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
                head.has_body = value.strip() not in (b"0", b"")
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
                    raise Refused(PINNED)
                options -= _CONNECTION_OPTIONS
                if options:
                    listed = options if listed is None else listed | options
            elif code == _UPGRADE:
                upgrade = value
            elif code == _TRANSFER_ENCODING:
                encoding = value if encoding is None else encoding + b"," + value
                head.body_framing = head.has_body = True
            elif code == _EXPECT:
                head.expect_continue = value.strip().lower() == b"100-continue"
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
        # Where the parser is lenient, the gate is not: the application (or a proxy behind
        # it) could read these another way than llhttp did.
        if hosts > 1 or (hosts == 0 and not head.http10) or authorizations > 1:
            raise Refused(AMBIGUOUS)
        if encoding is not None:
            if head.http10:
                raise Refused(AMBIGUOUS)
            if encoding.strip().lower() != b"chunked":
                raise Refused(UNKNOWN_CODING)
        if listed:
            head.lines = lines = without(lines, listed)
        peer = self.peer
        chain = peer if forwarded_for is None else forwarded_for + b", " + peer
        lines.append(b"X-Forwarded-For: %b\r\n" % chain)
        if not has_proto:
            lines.append(b"X-Forwarded-Proto: http\r\n")
        if not has_host and host is not None:
            lines.append(b"X-Forwarded-Host: %b\r\n" % host)
        if not has_id:
            lines.append(b"X-Request-Id: %b\r\n" % self._request_id())
        if head.upgrade and upgrade is not None:
            lines.append(b"Connection: Upgrade\r\nUpgrade: %b\r\n" % upgrade)
        if head.body_framing:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if not head.has_body:
            head.request_done = True
        head.request = GateRequest(
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
        )
        return head


# ---------------------------------------------------------------------------- answers
@dataclass(frozen=True, slots=True)
class ResponseHead:
    """An answer's head as it is passed on (without its final blank line), and its framing:
    ``NO_BODY``, ``LENGTH`` (``length`` bytes), ``CHUNKED`` or ``UNTIL_CLOSE``. ``close``:
    the application closes the connection after it."""

    status: int
    head: bytes
    framing: int
    length: int
    close: bool


# One pass over the answer's header lines, as ``RequestReader`` does for the request's.
def read_response_head(  # noqa: C901
    head: bytes, cookie_path: bytes, *, head_request: bool
) -> ResponseHead:
    """An answer's head (up to, not including, the blank line) as it is passed on; raises
    ``BadResponse``.

    Strict where a lenient reading could make the proxy and us disagree on where the
    answer ends (the proxy's connections carry other users' requests next). ``cookie_path``
    is the application's path (its ``Set-Cookie`` answers are confined to it);
    ``head_request``: the answer is to a HEAD request (it has no body, whatever it says).
    """
    if _RESPONSE_HEAD.fullmatch(head) is None:
        raise BadResponse
    status = int(head[9:12])
    if status < 100:
        raise BadResponse
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
                raise BadResponse
            length = int(digits)
            keep = True
        elif code == _TRANSFER_ENCODING:
            encoding = value if encoding is None else encoding + b"," + value
            keep = True
        elif code == _SET_COOKIE:
            # Always rewritten (or dropped): confined to the application's path.
            confined = confine_set_cookie(value.strip(b" \t"), cookie_path)
            pieces.append(head[start : match.start()])
            if confined is not None:
                pieces.append(b"\r\nSet-Cookie: " + confined)
            start = match.end()
            continue
        elif code == _CONNECTION:
            options = connection_options(value)
            if pins_a_header(options):
                raise BadResponse  # its framing would be read two ways
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
        head = _CRLF.join(without(head.split(_CRLF), listed))
    close = close or (http10 and not keep_alive_asked)
    if switching or head_request or status < 200 or status in _NO_BODY_STATUSES:
        framing, size = NO_BODY, 0
    elif encoding is not None:
        if length is not None:
            raise BadResponse  # both: the classic way to smuggle an answer
        last = encoding.rsplit(b",", 1)[-1].strip().lower()
        framing, size = (CHUNKED, 0) if last == b"chunked" else (UNTIL_CLOSE, 0)
    elif length is not None:
        framing, size = LENGTH, length
    else:
        framing, size = UNTIL_CLOSE, 0
    return ResponseHead(status, head, framing, size, close)


class ChunkedBody:
    """Finds where a chunked body ends, fed as it comes; strict about its syntax."""

    __slots__ = ("_line", "_phase", "_remaining", "_trailers")

    def __init__(self) -> None:
        self._phase = _SIZE
        self._remaining = 0
        self._line = bytearray()
        self._trailers = 0

    def scan(self, data: bytes) -> int:
        """Where the body ends in ``data`` (-1: not in it); raises ``BadResponse``."""
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
                if len(self._line) > MAX_CHUNK_LINE:
                    raise BadResponse
                return -1
            if self._line:
                self._line += data[position : newline + 1]
                line = bytes(self._line)
                self._line.clear()
            else:
                line = data[position : newline + 1]
            position = newline + 1
            if len(line) < 2 or line[-2] != 13 or len(line) > MAX_CHUNK_LINE:
                raise BadResponse
            content = line[:-2]
            if phase == _SIZE:
                match = _CHUNK_SIZE.fullmatch(content)
                if match is None:
                    raise BadResponse
                chunk = int(match.group(1), 16)
                if chunk:
                    self._phase, self._remaining = _DATA, chunk
                else:
                    self._phase = _TRAILER
            elif phase == _DATA_END:
                if content:
                    raise BadResponse
                self._phase = _SIZE
            else:
                if not content:
                    return position
                self._trailers += len(line)
                if self._trailers > MAX_TRAILERS or _TRAILER_LINE.fullmatch(content) is None:
                    raise BadResponse
        return -1
