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
    accept_encoding: str | None = None
    """``Accept-Encoding``, for what the gate answers itself (the desktop viewer)."""
    if_none_match: str | None = None
    """``If-None-Match``, likewise."""


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

    def _head_of(self, parser: httptools.HttpRequestParser) -> RequestHead:
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
        head.lines.append(b"%b %b HTTP/%b\r\n" % (method, target, version.encode("latin-1")))
        seen = _RequestLines(head)
        seen.read(self._headers)
        # Where the parser is lenient, the gate is not: the application (or a proxy behind
        # it) could read these another way than llhttp did.
        if seen.hosts > 1 or (seen.hosts == 0 and not head.http10) or seen.authorizations > 1:
            raise Refused(AMBIGUOUS)
        if seen.encoding is not None:
            if head.http10:
                raise Refused(AMBIGUOUS)
            if seen.encoding.strip().lower() != b"chunked":
                raise Refused(UNKNOWN_CODING)
        if seen.listed:
            head.lines = without(head.lines, seen.listed)
        self._add_forwarding(head, seen)
        head.request = seen.request(method, target)
        return head

    def _add_forwarding(self, head: RequestHead, seen: _RequestLines) -> None:
        """The headers this hop sets: ``X-Forwarded-*``, ``X-Request-Id``, and the framing."""
        lines = head.lines
        peer = self.peer
        forwarded_for = seen.forwarded_for
        chain = peer if forwarded_for is None else forwarded_for + b", " + peer
        lines.append(b"X-Forwarded-For: %b\r\n" % chain)
        if seen.proto is None:
            lines.append(b"X-Forwarded-Proto: http\r\n")
        if not seen.has_host and seen.host is not None:
            lines.append(b"X-Forwarded-Host: %b\r\n" % seen.host)
        if not seen.has_id:
            lines.append(b"X-Request-Id: %b\r\n" % self._request_id())
        if head.upgrade and seen.upgrade is not None:
            lines.append(b"Connection: Upgrade\r\nUpgrade: %b\r\n" % seen.upgrade)
        if head.body_framing:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if not head.has_body:
            head.request_done = True


class _RequestLines:
    """What a request's header lines say, read in one pass: the lines passed on as they are
    go to ``head.lines``, the ones the gate rewrites or checks are kept here."""

    __slots__ = (
        "accept_encoding",
        "authorization",
        "authorizations",
        "cookies",
        "encoding",
        "forwarded_for",
        "has_host",
        "has_id",
        "head",
        "host",
        "hosts",
        "if_none_match",
        "listed",
        "origin",
        "proto",
        "upgrade",
    )

    def __init__(self, head: RequestHead) -> None:
        self.head = head
        self.cookies: list[str] = []
        self.authorization: str | None = None
        self.authorizations = self.hosts = 0
        self.forwarded_for: bytes | None = None
        self.host: bytes | None = None
        self.upgrade: bytes | None = None
        self.encoding: bytes | None = None
        self.origin: bytes | None = None
        self.proto: bytes | None = None  # X-Forwarded-Proto, passed on as the proxy set it
        self.accept_encoding: bytes | None = None
        self.if_none_match: bytes | None = None
        self.has_host = self.has_id = False
        self.listed: set[bytes] | None = None

    # The common headers in the loop, the others a call away (one per such header).
    def read(self, headers: list[tuple[bytes, bytes]]) -> None:
        lines = self.head.lines
        for name, value in headers:
            code = _REQUEST_HEADERS.get(name.lower())
            if code is None:
                lines.append(b"%b: %b\r\n" % (name, value))
            elif code == _COOKIE:
                self.cookies.append(value.decode("latin-1"))
            elif code == _HOST:
                self.hosts += 1
                self.host = value
                lines.append(b"%b: %b\r\n" % (name, value))
            elif code == _CONTENT_LENGTH:
                self.head.has_body = value.strip() not in (b"0", b"")
                lines.append(b"%b: %b\r\n" % (name, value))
            elif code == _AUTHORIZATION:
                self.authorizations += 1
                self.authorization = value.decode("latin-1")
            elif code == _CONNECTION:
                self._connection(value)
            elif code != _DROP:
                self._other(code, name, value)

    def _connection(self, value: bytes) -> None:
        options = connection_options(value)
        if pins_a_header(options):
            raise Refused(PINNED)
        options -= _CONNECTION_OPTIONS
        if options:
            self.listed = options if self.listed is None else self.listed | options

    def _other(self, code: int, name: bytes, value: bytes) -> None:
        if code == _XFF:
            self.forwarded_for = _joined(self.forwarded_for, b", ", value)
        elif code == _UPGRADE:
            self.upgrade = value
        elif code == _TRANSFER_ENCODING:
            self.encoding = _joined(self.encoding, b",", value)
            self.head.body_framing = self.head.has_body = True
        elif code == _EXPECT:
            self.head.expect_continue = value.strip().lower() == b"100-continue"
        elif code == _REQUEST_ID:
            if _INCOMING_ID.fullmatch(value) is not None and not self.has_id:
                self.has_id = True
                self.head.lines.append(b"X-Request-Id: %b\r\n" % value)
        else:
            if code == _XFPROTO:
                self.proto = _joined(self.proto, b",", value)
            elif code == _ORIGIN:
                self.origin = value if self.origin is None else b"null"  # two: neither counts
            elif code == _ACCEPT_ENCODING:
                self.accept_encoding = _joined(self.accept_encoding, b", ", value)
            elif code == _IF_NONE_MATCH:
                self.if_none_match = _joined(self.if_none_match, b", ", value)
            else:
                self.has_host = True  # X-Forwarded-Host
            self.head.lines.append(b"%b: %b\r\n" % (name, value))

    def request(self, method: bytes, target: bytes) -> GateRequest:
        """What the gatekeeper sees of the request."""
        upgrade, origin, host, proto = self.upgrade, self.origin, self.host, self.proto
        return GateRequest(
            method=method.decode("latin-1"),
            target=target.decode("latin-1"),
            cookies=self.cookies,
            authorization=self.authorization,
            websocket=method == b"GET"
            and upgrade is not None
            and upgrade.strip().lower() == b"websocket",
            origin=None if origin is None else origin.decode("latin-1"),
            host=None if host is None else host.decode("latin-1"),
            forwarded_proto=None if proto is None else proto.decode("latin-1"),
            accept_encoding=_latin1(self.accept_encoding),
            if_none_match=_latin1(self.if_none_match),
        )


def _latin1(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _joined(first: bytes | None, separator: bytes, value: bytes) -> bytes:
    """Repeated header values as one."""
    return value if first is None else first + separator + value


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


def read_response_head(head: bytes, cookie_path: bytes, *, head_request: bool) -> ResponseHead:
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
    http10 = head[7] == 48  # HTTP/1.0: no keep-alive unless it says so
    lines = _ResponseLines(switching=status == 101)
    head = lines.rewrite(head, cookie_path)
    if http10:
        head = b"HTTP/1.1" + head[8:]
    if lines.listed:
        head = _CRLF.join(without(head.split(_CRLF), lines.listed))
    close = lines.close or (http10 and not lines.keep_alive_asked)
    framing, size = _answer_framing(status, head_request, lines.encoding, lines.length)
    return ResponseHead(status, head, framing, size, close)


class _ResponseLines:
    """What an answer's header lines say of its framing, read in one pass over the lines
    that matter (``_RESPONSE_HEADERS``); the others pass as they are."""

    __slots__ = ("close", "encoding", "keep_alive_asked", "length", "listed", "switching")

    def __init__(self, *, switching: bool) -> None:
        self.switching = switching  # a 101 keeps its Connection and Upgrade headers
        self.length: int | None = None
        self.encoding: bytes | None = None
        self.listed: set[bytes] | None = None
        self.close = False
        self.keep_alive_asked = False

    def rewrite(self, head: bytes, cookie_path: bytes) -> bytes:
        """The head without hop-by-hop lines, its ``Set-Cookie`` lines confined."""
        pieces: list[bytes] = []
        start = 0
        for match in _RESPONSE_LINE.finditer(head):
            code = _RESPONSE_HEADERS[match.group(1).lower()]
            value = match.group(2)
            if code == _CONTENT_LENGTH:
                self._length(value)
                continue
            if code == _TRANSFER_ENCODING:
                self.encoding = value if self.encoding is None else self.encoding + b"," + value
                continue
            pieces.append(head[start : match.start()])
            start = match.end()
            if code == _SET_COOKIE:
                # Always rewritten (or dropped): confined to the application's path.
                confined = confine_set_cookie(value.strip(b" \t"), cookie_path)
                if confined is not None:
                    pieces.append(b"\r\nSet-Cookie: " + confined)
            elif code == _CONNECTION:
                self._connection(value)
                if self.switching:
                    pieces.append(match.group(0))
            elif code == _UPGRADE and self.switching:
                pieces.append(match.group(0))
        if not start:
            return head
        pieces.append(head[start:])
        return b"".join(pieces)

    def _length(self, value: bytes) -> None:
        digits = value.strip(b" \t")
        if not digits.isdigit() or (self.length is not None and self.length != int(digits)):
            raise BadResponse
        self.length = int(digits)

    def _connection(self, value: bytes) -> None:
        options = connection_options(value)
        if pins_a_header(options):
            raise BadResponse  # its framing would be read two ways
        self.close = self.close or b"close" in options
        self.keep_alive_asked = self.keep_alive_asked or b"keep-alive" in options
        options -= _CONNECTION_OPTIONS
        if options:
            self.listed = options if self.listed is None else self.listed | options


def _answer_framing(
    status: int, head_request: bool, encoding: bytes | None, length: int | None
) -> tuple[int, int]:
    """(how the answer's body is delimited, its length for ``LENGTH``)."""
    if status < 200 or head_request or status in _NO_BODY_STATUSES:
        return NO_BODY, 0  # 101 included
    if encoding is not None:
        if length is not None:
            raise BadResponse  # both: the classic way to smuggle an answer
        last = encoding.rsplit(b",", 1)[-1].strip().lower()
        return (CHUNKED, 0) if last == b"chunked" else (UNTIL_CLOSE, 0)
    if length is not None:
        return LENGTH, length
    return UNTIL_CLOSE, 0


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
