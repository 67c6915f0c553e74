"""The gate's framing module on its own (no socket, no event loop), against h11.

Bytes go in, split wherever hypothesis chooses (and one byte at a time); what comes out is
compared with what h11 reads from the same bytes:

- requests (pipelined, with ``Content-Length``, chunked, or neither, some of them malformed):
  every request the framing reads whole is the one h11 reads there (method, target, body);
  what h11 refuses, the framing refuses too; and where the framing refuses what h11 reads,
  the request has one of the features the gate refuses on purpose (``STRICTER``).
- the head the framing hands on, with the body framed as the gate frames it, is read by h11
  as the same request, without the proxy's hop-by-hop headers or our credentials.
- answers: what the framing passes on (the rewritten head, then the body up to where the
  framing says it ends) is read by h11 as the answer h11 reads from the application's
  bytes, or the framing refuses it (``BadResponse``) where h11 refuses it too or for a
  ``STRICTER`` feature.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remoteappmanager.web.gate.framing import (
    CHUNKED,
    LENGTH,
    MAX_CHUNK_LINE,
    NO_BODY,
    TOO_LARGE,
    UNTIL_CLOSE,
    BadResponse,
    ChunkedBody,
    Refusal,
    Refused,
    RequestHead,
    RequestReader,
    read_response_head,
)

from .test_gate_framing import h11_requests, h11_responses, raw_request, raw_response, split

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COOKIE_PATH = b"/user/alice/containers/app/"

# Features of a message that h11 reads and the gate refuses on purpose: two framings or two
# lengths (a proxy behind could pick the other), a ``Connection`` header naming a framing,
# routing or credential header, obsolete line folding and a bare LF (read two ways by
# different servers), a transfer coding other than ``chunked``, or any on HTTP/1.0 (which
# has none).
STRICTER = re.compile(
    rb"(?ims)(content-length:.*\r?\ncontent-length:)"
    rb"|(content-length:.*transfer-encoding:|transfer-encoding:.*content-length:)"
    rb"|(^connection:[^\r\n]*(content-length|transfer-encoding|host|cookie))"
    rb"|(\r?\n[ \t])"
    rb"|([^\r]\n)"
    rb"|(^transfer-encoding: (?!chunked\r))"
    rb"|(HTTP/1\.0\r?\n.*transfer-encoding:)"
)


# ------------------------------------------------------------------------------ requests
@dataclass
class Read:
    """What a ``RequestReader`` told of, in order."""

    heads: list[RequestHead] = field(default_factory=list)
    bodies: list[bytearray] = field(default_factory=list)
    done: int = 0
    begun: int = 0

    def head_begun(self) -> None:
        self.begun += 1

    def head_read(self, head: RequestHead) -> None:
        self.heads.append(head)
        self.bodies.append(bytearray())

    def body_read(self, data: bytes) -> None:
        self.bodies[-1] += data

    def message_read(self) -> None:
        self.done += 1

    def requests(self) -> list[tuple[bytes, bytes, bytes]]:
        whole = []
        for head, body in zip(self.heads[: self.done], self.bodies, strict=False):
            assert head.request is not None
            method = head.request.method.encode("latin-1")
            whole.append((method, head.request.target.encode("latin-1"), bytes(body)))
        return whole


def read(pieces: list[bytes]) -> tuple[Read, Refusal | None, bytes | None]:
    """Feed ``pieces`` to a reader: (what it read, its refusal, the bytes after an upgrade)."""
    events = Read()
    reader = RequestReader(events, peer=b"192.0.2.1", request_id=lambda: b"id-0123456789")
    for piece in pieces:
        try:
            rest = reader.feed(piece)
        except Refused as refused:
            return events, refused.refusal, None
        if rest is not None:
            return events, None, rest
    return events, None, None


def request_at(stream: bytes, number: int) -> bytes:
    """The bytes of request ``number`` in a pipeline, roughly (for the STRICTER check)."""
    starts = [m.start() for m in re.finditer(rb"(?:GET|POST|PUT) /user/", stream)]
    if number >= len(starts):
        return stream[starts[-1] :] if starts else stream
    end = starts[number + 1] if number + 1 < len(starts) else len(stream)
    return stream[starts[number] : end]


def check_requests(stream: bytes, pieces: list[bytes]) -> None:
    expected, faulty = h11_requests(stream)
    events, refusal, _rest = read(pieces)
    got = events.requests()
    # What the framing reads whole is what h11 reads, in order.
    assert got[: len(expected)] == expected[: len(got)], (got, expected, stream)
    if faulty:
        # h11 refuses something after ``expected``: so does the framing, never reading past.
        assert refusal is not None, (got, expected, stream)
        assert len(got) <= len(expected), (got, expected, stream)
    elif refusal is not None and len(got) < len(expected):
        # The framing refuses what h11 reads: only on purpose.
        assert STRICTER.search(request_at(stream, len(got))), (refusal, got, expected, stream)
    elif refusal is None:
        assert len(got) >= len(expected), (got, expected, stream)
    for head, (method, target, body) in zip(events.heads, got, strict=False):
        check_forwarded(head, method, target, body)


def check_forwarded(head: RequestHead, method: bytes, target: bytes, body: bytes) -> None:
    """The head as the application gets it (plus the blank line the listener adds), with the
    body framed as the listener frames it, is one request that h11 reads alike."""
    if head.body_framing:
        framed = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        framed = body
    message = b"".join(head.lines) + b"\r\n" + framed
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(message)
    request = conn.next_event()
    assert isinstance(request, h11.Request), (request, message)
    assert (request.method, request.target) == (method, target)
    names = {name.lower() for name, _value in request.headers}
    assert not names & {b"cookie", b"authorization", b"keep-alive", b"proxy-connection", b"te"}
    assert b"x-forwarded-for" in names
    assert dict(request.headers)[b"x-forwarded-for"].endswith(b"192.0.2.1")
    assert h11_requests(message) == ([(method, target, body)], False), message


@SETTINGS
@given(st.lists(raw_request(), min_size=1, max_size=3), st.lists(st.integers(0, 400), max_size=8))
def test_requests_are_read_as_h11_reads_them_or_refused(
    requests: list[bytes], points: list[int]
) -> None:
    stream = b"".join(requests)
    check_requests(stream, split(stream, points))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_request(), min_size=1, max_size=3))
def test_requests_split_at_every_byte_are_read_as_h11_reads_them(requests: list[bytes]) -> None:
    stream = b"".join(requests)
    check_requests(stream, [stream[i : i + 1] for i in range(len(stream))])


def test_one_request_read_whole_and_byte_by_byte_is_the_same() -> None:
    stream = (
        b"POST /user/alice/containers/app/a HTTP/1.1\r\nHost: gate.test\r\n"
        b"Cookie: remoteapp-gate=x; app=1\r\nAuthorization: token secret\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n1\r\nd\r\n0\r\nTrailer: t\r\n\r\n"
        b"GET /user/alice/containers/app/b HTTP/1.1\r\nHost: gate.test\r\n\r\n"
    )
    whole, refusal, _ = read([stream])
    assert refusal is None
    one_by_one, _, _ = read([stream[i : i + 1] for i in range(len(stream))])
    assert whole.requests() == one_by_one.requests() == h11_requests(stream)[0]
    first = whole.heads[0].request
    assert first is not None
    assert first.cookies == ["remoteapp-gate=x; app=1"]
    assert first.authorization == "token secret"
    assert first.host == "gate.test"
    check_forwarded(whole.heads[0], b"POST", b"/user/alice/containers/app/a", b"abcd")


@pytest.mark.parametrize(
    "head",
    [
        b"Host: a\r\nHost: b\r\n",  # which host?
        b"Host: a\r\nAuthorization: token x\r\nAuthorization: token y\r\n",  # whose?
        b"Host: a\r\nConnection: Cookie\r\n",  # drop the cookie header as hop-by-hop?
        b"Host: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n",  # smuggling
        b"Host: a\r\nTransfer-Encoding: gzip\r\n",
        b"",  # HTTP/1.1 without Host
    ],
)
def test_ambiguous_requests_are_refused_before_any_is_passed_on(head: bytes) -> None:
    stream = b"POST /user/alice/containers/app/ HTTP/1.1\r\n" + head + b"\r\n"
    events, refusal, _ = read([stream])
    assert refusal is not None
    assert refusal.status in (400, 501)
    assert events.heads == []


def feed_all(reader: RequestReader, pieces: list[bytes]) -> None:
    for piece in pieces:
        reader.feed(piece)


def scan_all(chunks: ChunkedBody, pieces: list[bytes]) -> None:
    for piece in pieces:
        chunks.scan(piece)


def test_a_head_larger_than_the_bound_is_refused_while_it_trickles_in() -> None:
    events = Read()
    reader = RequestReader(events, peer=b"p", request_id=lambda: b"i", max_head=1024)
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
    with pytest.raises(Refused) as refused:
        feed_all(reader, [b"x" * 64] * 100)
    assert refused.value.refusal == TOO_LARGE
    assert reader.in_head


def test_after_an_upgrade_request_the_rest_is_not_read_as_http() -> None:
    stream = (
        b"GET /user/alice/containers/app/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nOrigin: http://a\r\n\r\n\x81\x05hello"
    )
    events, refusal, rest = read([stream])
    assert refusal is None
    assert rest == b"\x81\x05hello"
    head = events.heads[0]
    assert head.upgrade
    assert head.request is not None
    assert head.request.websocket
    assert b"Connection: Upgrade\r\nUpgrade: websocket\r\n" in head.lines


# ------------------------------------------------------------------------------ answers
def pass_on(response: bytes, pieces: list[bytes]) -> bytes | None:
    """What the framing passes on of an answer fed as ``pieces``; None when refused."""
    data = b"".join(pieces)  # a head is looked for in what arrived, whatever the pieces
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return b""
        try:
            answer = read_response_head(data[:end], COOKIE_PATH, head_request=False)
        except BadResponse:
            return None
        rest = data[end + 4 :]
        if 100 <= answer.status < 200 and answer.status != 101:
            data = rest  # informational: the final answer follows
            continue
        head = answer.head + b"\r\n\r\n"
        if answer.framing == NO_BODY:
            return head
        if answer.framing == LENGTH:
            return head + rest[: answer.length]
        if answer.framing == UNTIL_CLOSE:
            return head + rest
        assert answer.framing == CHUNKED
        chunks = ChunkedBody()
        passed = bytearray()
        offset = len(data) - len(rest)
        for piece in split_at(rest, [len(p) for p in pieces], offset):
            try:
                ends = chunks.scan(piece)
            except BadResponse:
                return head + bytes(passed)  # cut short: the client sees it incomplete
            if ends >= 0:
                return head + bytes(passed) + piece[:ends]
            passed += piece
        return head + bytes(passed)


def split_at(data: bytes, sizes: list[int], offset: int) -> list[bytes]:
    """``data`` (which began ``offset`` bytes into the pieces) cut where the pieces were."""
    cuts, position = [], 0
    for size in sizes:
        position += size
        if offset < position < offset + len(data):
            cuts.append(position - offset)
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@SETTINGS
@given(raw_response(), st.lists(st.integers(0, 200), max_size=6))
def test_answers_are_passed_on_as_h11_reads_them_or_refused(
    response: bytes, points: list[int]
) -> None:
    expected = h11_responses(response, [b"GET"])
    passed = pass_on(response, split(response, points))
    if passed is None:
        assert not expected or STRICTER.search(response), (expected, response)
        return
    got = h11_responses(passed, [b"GET"])
    if expected and got:
        assert got[0] == expected[0], (got, expected, response, passed)
    elif got:
        raise AssertionError(f"passed on what h11 refuses: {response!r} -> {passed!r}")
    # Our cookies' names are never set by an application; its own stay on its path.
    for line in passed.split(b"\r\n"):
        if line.lower().startswith(b"set-cookie:"):
            assert line.endswith(b"Path=" + COOKIE_PATH), line


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked",  # smuggling
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4",  # which length?
        b"HTTP/1.1 200 OK\r\nContent-Length: +3",
        b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 3",
        b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 3",  # a bare LF
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded",
        b"HTTP/1.1 200 OK\r\nX-A: \x00",
        b"HTTP/1.1 099 Low",
        b"HTTP/2 200 OK",
    ],
)
def test_answers_that_could_be_framed_two_ways_are_refused(head: bytes) -> None:
    with pytest.raises(BadResponse):
        read_response_head(head, COOKIE_PATH, head_request=False)


@pytest.mark.parametrize(
    "body",
    [
        b"3\r\nabcd\r\n0\r\n\r\n",  # more data than the size says
        b"g\r\nabc\r\n0\r\n\r\n",
        b"3 \r\nabc\r\n0\r\n\r\n",
        b"3\nabc\r\n0\r\n\r\n",
        b"0\r\nnot a trailer\r\n\r\n",
        b"1" * (MAX_CHUNK_LINE + 1),
    ],
)
def test_malformed_chunked_bodies_are_refused_however_they_are_split(body: bytes) -> None:
    for size in (1, 2, 7, len(body)):
        chunks = ChunkedBody()
        with pytest.raises(BadResponse):
            scan_all(chunks, [body[start : start + size] for start in range(0, len(body), size)])


def test_a_head_answer_has_no_body_and_set_cookie_stays_on_the_application() -> None:
    answer = read_response_head(
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1; Domain=x; Path=/\r\n"
        b"Keep-Alive: 5\r\nConnection: keep-alive",
        COOKIE_PATH,
        head_request=True,
    )
    assert answer.framing == NO_BODY
    assert not answer.close
    assert answer.head == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1; Path=" + COOKIE_PATH
    )
