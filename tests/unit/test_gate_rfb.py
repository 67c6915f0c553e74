"""The RFB input filter, alone and behind WebSocket framing, against a reference reading of RFB.

The reference below reads a whole client stream at once, message by message, the plain way;
the filter is fed the same stream split into WebSocket frames, and those into reads, at
offsets hypothesis picks. In view mode no input message may come out, and what comes out
must be exactly the view messages the reference read, whole and in order; on a stream the
reference cannot read, the filter must end the connection.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remoteappmanager.web.gate.relay import (
    BINARY,
    CONTINUATION,
    PING,
    WebSocketRelay,
    WebSocketViolation,
    encode_frame,
)
from remoteappmanager.web.gate.rfb import RfbInputFilter, RfbViolation

from .test_gate_relay import Viewer, decode

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
INPUT = {4, 5, 6, 250, 251, 255}
HANDSHAKE_NONE = b"RFB 003.008\n" + b"\x01" + b"\x01"
HANDSHAKE_VNC = b"RFB 003.008\n" + b"\x02" + bytes(range(16)) + b"\x00"


# ------------------------------------------------------------------------ the reference
class Unreadable(Exception):
    pass


def reference(stream: bytes) -> tuple[bytes, list[tuple[int, bytes]], bool]:
    """(handshake, the whole messages, whether it stopped on something unreadable)."""
    if len(stream) < 13:
        return b"", [], False
    if stream[:12] not in (b"RFB 003.008\n", b"RFB 003.007\n"):
        return b"", [], True
    security = stream[12]
    if security == 1:
        end = 14
    elif security == 2:
        end = 30
    else:
        return b"", [], True
    if len(stream) < end:
        return b"", [], False
    handshake, rest = stream[:end], stream[end:]
    found: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(rest):
        kind = rest[pos]
        try:
            size = _size(rest[pos:])
        except Unreadable:
            return handshake, found, True
        except (IndexError, struct.error):  # not all here yet
            break
        if pos + size > len(rest):
            break
        found.append((kind, rest[pos : pos + size]))
        pos += size
    return handshake, found, False


def _size(msg: bytes) -> int:
    kind = msg[0]
    if kind == 0:
        return 20
    if kind == 2:
        return 4 + 4 * struct.unpack(">H", msg[2:4])[0]
    if kind in (3, 150):
        return 10
    if kind == 4:
        return 8
    if kind == 5:
        return 6
    if kind == 6:
        (length,) = struct.unpack(">i", msg[4:8])
        if abs(length) > 16 * 1024 * 1024:
            raise Unreadable
        return 8 + abs(length)
    if kind == 248:
        if msg[8] > 64:
            raise Unreadable
        return 9 + msg[8]
    if kind == 250:
        return 4
    if kind == 251:
        return 8 + 16 * msg[6]
    if kind == 255:
        if msg[1] != 0:
            raise Unreadable
        return 12
    raise Unreadable


# ------------------------------------------------------------------------ generated streams
def _message(kind: int, draw: st.DrawFn) -> bytes:
    body = draw(st.binary(min_size=64, max_size=64))
    if kind == 0:
        return b"\x00" + body[:19]
    if kind == 2:
        count = draw(st.integers(0, 12))
        return (
            b"\x02\x00"
            + struct.pack(">H", count)
            + draw(st.binary(min_size=4 * count, max_size=4 * count))
        )
    if kind in (3, 150):
        return bytes((kind,)) + body[:9]
    if kind == 4:
        return b"\x04" + body[:7]
    if kind == 5:
        return b"\x05" + body[:5]
    if kind == 6:
        text = draw(st.binary(max_size=200))
        length = -len(text) if draw(st.booleans()) else len(text)
        return b"\x06\x00\x00\x00" + struct.pack(">i", length) + text
    if kind == 248:
        n = draw(st.integers(0, 64))
        return b"\xf8" + body[:7] + bytes((n,)) + draw(st.binary(min_size=n, max_size=n))
    if kind == 250:
        return b"\xfa" + body[:3]
    if kind == 251:
        n = draw(st.integers(0, 3))
        return (
            b"\xfb" + body[:5] + bytes((n, 0)) + draw(st.binary(min_size=16 * n, max_size=16 * n))
        )
    return b"\xff\x00" + body[:10]


@st.composite
def rfb_streams(draw: st.DrawFn) -> bytes:
    handshake = draw(st.sampled_from([HANDSHAKE_NONE, HANDSHAKE_VNC]))
    kinds = draw(
        st.lists(st.sampled_from([0, 2, 3, 4, 5, 6, 150, 248, 250, 251, 255]), max_size=25)
    )
    body = b"".join(_message(kind, draw) for kind in kinds)
    if draw(st.booleans()):
        # Adversarial: bytes the generator did not shape, inserted anywhere.
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(max_size=40)) + body[at:]
    return handshake + body


def as_frames(stream: bytes, draw: st.DrawFn) -> bytes:
    """The stream as masked binary frames (some fragmented), pings between some of them."""
    wire = []
    pos = 0
    in_message = False
    while pos < len(stream):
        size = draw(st.integers(1, 64))
        part = stream[pos : pos + size]
        pos += len(part)
        last = pos >= len(stream)
        fin = last or draw(st.booleans())
        wire.append(
            encode_frame(CONTINUATION if in_message else BINARY, part, masked=True, fin=fin)
        )
        in_message = not fin
        if draw(st.integers(0, 5)) == 0:
            wire.append(encode_frame(PING, b"hi", masked=True))
    return b"".join(wire)


def run(stream: bytes, wire: bytes, cuts: list[int], allowed: bool) -> tuple[bytes, bool]:
    """What reaches the application (payloads joined) and whether the relay ended it."""
    relay = WebSocketRelay(Viewer(input_allowed=allowed, protocol="vnc"), ping_interval=0, now=0)
    sent = b""
    last = 0
    ended = False
    for cut in [*sorted({c % (len(wire) + 1) for c in cuts}), len(wire)]:
        try:
            sent += relay.to_app.feed(wire[last:cut])
        except WebSocketViolation:
            ended = True
            break
        last = cut
    frames = decode(sent)
    assert all(fin for fin, _, _ in frames)
    assert all(opcode in (BINARY, PING) for _, opcode, _ in frames)
    assert [p for _, op, p in frames if op == PING] == [b"hi"] * len(
        [p for _, op, p in frames if op == PING]
    )
    return b"".join(p for _, op, p in frames if op == BINARY), ended


@SETTINGS
@given(rfb_streams(), st.data(), st.lists(st.integers(0, 10_000), max_size=10))
def test_view_mode_passes_view_messages_exactly_and_no_input(stream, data, cuts) -> None:
    wire = as_frames(stream, data.draw)
    out, ended = run(stream, wire, cuts, allowed=False)
    handshake, found, unreadable = reference(stream)
    view = handshake + b"".join(m for kind, m in found if kind not in INPUT)
    if ended:
        assert unreadable, "ended a stream the reference reads"
        assert view.startswith(out)
    else:
        assert not unreadable
        assert out == view
    # Nothing in what passed reads as input to the reference either.
    _, passed, _ = reference(out) if out.startswith(handshake) and handshake else (b"", [], False)
    assert not [kind for kind, _ in passed if kind in INPUT]


@SETTINGS
@given(rfb_streams(), st.data(), st.lists(st.integers(0, 10_000), max_size=10))
def test_control_mode_passes_every_message_exactly(stream, data, cuts) -> None:
    wire = as_frames(stream, data.draw)
    out, ended = run(stream, wire, cuts, allowed=True)
    handshake, found, unreadable = reference(stream)
    whole = handshake + b"".join(m for _, m in found)
    if ended:
        assert unreadable
    else:
        assert not unreadable
        # Clipboard text streams: what passed is the whole messages plus the start of one.
        assert out.startswith(whole)
        assert stream.startswith(out)


# ------------------------------------------------------------------------ by hand
KEY = b"\x04\x01\x00\x00\x00\x00\x00\x61"
POINTER = b"\x05\x00\x00\x10\x00\x10"
CUT = b"\x06\x00\x00\x00\x00\x00\x00\x03abc"
UPDATE = b"\x03\x01\x00\x00\x00\x00\x04\x00\x03\x00"
ENCODINGS = b"\x02\x00\x00\x02" + b"\x00\x00\x00\x07" + b"\xff\xff\xff\x21"


def test_input_is_dropped_and_view_messages_pass_split_at_every_byte() -> None:
    stream = HANDSHAKE_NONE + ENCODINGS + KEY + UPDATE + POINTER + CUT + UPDATE
    expect = HANDSHAKE_NONE + ENCODINGS + UPDATE + UPDATE
    for split in range(len(stream) + 1):
        rfb = RfbInputFilter()
        assert rfb.feed(stream[:split], False) + rfb.feed(stream[split:], False) == expect
    one_by_one = RfbInputFilter()
    assert b"".join(one_by_one.feed(bytes((b,)), False) for b in stream) == expect


def test_the_decision_is_taken_per_message() -> None:
    rfb = RfbInputFilter()
    assert rfb.feed(HANDSHAKE_NONE + KEY[:3], False) == HANDSHAKE_NONE
    # Input allowed from here: the key event that began while it was not stays dropped.
    assert rfb.feed(KEY[3:] + POINTER, True) == POINTER
    assert rfb.input_passed == 1
    assert rfb.feed(KEY, False) == b""


@pytest.mark.parametrize(
    "stream",
    [
        b"RFB 003.003\n",  # 3.3: the server picks the security type, unseen here
        b"RFB 004.001\n",
        b"RFB 003.008\n\x10",  # Tight security: not known
        HANDSHAKE_NONE + b"\x07",  # an unknown message type
        HANDSHAKE_NONE + b"\xff\x01",  # an unknown QEMU message
        HANDSHAKE_NONE + b"\x06\x00\x00\x00\x7f\xff\xff\xff",  # clipboard text too large
    ],
)
def test_unknown_things_end_the_stream_whether_input_is_allowed_or_not(stream: bytes) -> None:
    for allowed in (False, True):
        with pytest.raises(RfbViolation):
            RfbInputFilter().feed(stream, allowed)


def test_a_viewer_desktop_stream_must_be_binary() -> None:
    relay = WebSocketRelay(Viewer(input_allowed=True, protocol="vnc"), ping_interval=0, now=0)
    with pytest.raises(WebSocketViolation):
        relay.to_app.feed(encode_frame(1, b"RFB 003.008\n", masked=True))
