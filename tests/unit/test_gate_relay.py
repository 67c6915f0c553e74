"""The gate's WebSocket relay without sockets: frames split at every offset, pings, viewers.

A small reference decoder here reads what the relay sends on; the relay must send the frames
it was given (the owner's byte for byte), its own pings only between frames, and never a
viewer's input while input is not allowed.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remoteappmanager.web.gate.relay import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    FrameStream,
    LegDead,
    WebSocketRelay,
    WebSocketViolation,
    encode_frame,
    mask,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Viewer:
    input_allowed: bool
    protocol: str
    clipboard_in: bool = True


def decode(wire: bytes) -> list[tuple[bool, int, bytes]]:
    """(fin, opcode, payload unmasked) of each whole frame in ``wire``; all must be whole."""
    frames = []
    pos = 0
    while pos < len(wire):
        first, second = wire[pos], wire[pos + 1]
        length = second & 0x7F
        pos += 2
        if length == 126:
            (length,) = struct.unpack(">H", wire[pos : pos + 2])
            pos += 2
        elif length == 127:
            (length,) = struct.unpack(">Q", wire[pos : pos + 8])
            pos += 8
        key = None
        if second & 0x80:
            key = wire[pos : pos + 4]
            pos += 4
        payload = wire[pos : pos + length]
        assert len(payload) == length, "a frame cut short"
        if key is not None:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append((bool(first & 0x80), first & 0x0F, payload))
        pos += length
    return frames


def feed_split(stream: FrameStream, wire: bytes, cuts: list[int]) -> bytes:
    out = []
    last = 0
    for cut in [*sorted({c % (len(wire) + 1) for c in cuts}), len(wire)]:
        out.append(stream.feed(wire[last:cut]))
        last = cut
    return b"".join(out)


def frame(opcode: int, payload: bytes, *, client: bool, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, masked=client, fin=fin)


messages = st.lists(
    st.tuples(
        st.sampled_from([TEXT, BINARY]),
        st.lists(st.binary(max_size=300), min_size=1, max_size=3),  # the fragments
    ),
    max_size=6,
)
controls = st.lists(st.sampled_from([PING, PONG]), max_size=4)


def build(msgs: list[tuple[int, list[bytes]]], extra: list[int], *, client: bool) -> bytes:
    """Messages, fragmented as given, with control frames between some fragments."""
    wire = []
    extra = list(extra)
    for opcode, parts in msgs:
        for i, part in enumerate(parts):
            wire.append(
                frame(
                    opcode if i == 0 else CONTINUATION, part, client=client, fin=i == len(parts) - 1
                )
            )
            if extra:
                wire.append(frame(extra.pop(), b"ctl", client=client))
    return b"".join(wire)


# ------------------------------------------------------------------------ the owner: untouched
@SETTINGS
@given(messages, controls, st.lists(st.integers(0, 5000), max_size=12), st.booleans())
def test_owner_bytes_pass_untouched_at_every_split(msgs, extra, cuts, client) -> None:
    wire = build(msgs, extra, client=client)
    stream = FrameStream(from_client=client)
    assert feed_split(stream, wire, cuts) == wire
    assert stream.at_boundary
    assert stream.data_frames == sum(len(parts) for _, parts in msgs)


@SETTINGS
@given(messages, controls, st.lists(st.integers(0, 5000), max_size=12), st.booleans())
def test_views_of_a_reused_buffer_pass_untouched_and_nothing_of_them_is_kept(
    msgs, extra, cuts, client
) -> None:
    # As the gate reads from applications: every piece is a view of one buffer, written on
    # (copied here) before the next read overwrites the buffer.
    wire = build(msgs, extra, client=client)
    stream = FrameStream(from_client=client)
    buffer = bytearray(len(wire) + 1)
    out = []
    last = 0
    for cut in [*sorted({c % (len(wire) + 1) for c in cuts}), len(wire)]:
        size = cut - last
        buffer[:size] = wire[last:cut]
        out.append(bytes(stream.feed(memoryview(buffer)[:size])))
        buffer[:] = b"\xff" * len(buffer)
        last = cut
    assert b"".join(out) == wire
    assert stream.data_frames == sum(len(parts) for _, parts in msgs)


def test_a_big_frame_passes_as_the_same_objects() -> None:
    payload = os.urandom(64 * 1024)
    wire = frame(BINARY, payload, client=False)
    stream = FrameStream(from_client=False)
    first, rest = wire[:1000], wire[1000:]
    assert stream.feed(first) is first
    assert stream.feed(rest) is rest


# ------------------------------------------------------------------------ violations
@pytest.mark.parametrize(
    ("wire", "client"),
    [
        (frame(BINARY, b"x", client=False), True),  # a client's frame unmasked
        (frame(BINARY, b"x", client=True), False),  # an application's frame masked
        (bytes((0x83, 0x00)), False),  # reserved data opcode
        (bytes((0x8B, 0x00)), False),  # reserved control opcode
        (bytes((0x89, 126, 0, 126)) + b"x" * 126, False),  # a control frame too long
        (frame(PING, b"x", client=False, fin=False), False),  # a fragmented control frame
        (frame(CONTINUATION, b"x", client=False), False),  # continuation of nothing
        (frame(TEXT, b"a", client=False, fin=False) + frame(TEXT, b"b", client=False), False),
        (bytes((0xA2, 0x00)), False),  # RSV2
        (bytes((0x82, 127)) + (2**40).to_bytes(8, "big"), False),  # over the cap
    ],
)
def test_protocol_violations_end_the_stream(wire: bytes, client: bool) -> None:
    for split in range(len(wire) + 1):
        stream = FrameStream(from_client=client)
        with pytest.raises(WebSocketViolation):  # noqa: PT012 (either read may be the one)
            stream.feed(wire[:split])
            stream.feed(wire[split:])


# ------------------------------------------------------------------------ pings and pongs
@SETTINGS
@given(messages, st.lists(st.integers(0, 5000), max_size=8), st.integers(0, 5000), st.booleans())
def test_injected_frames_go_between_frames(msgs, cuts, when, client) -> None:
    wire = build(msgs, [], client=client)
    at = when % (len(wire) + 1)
    stream = FrameStream(from_client=client)
    ping = frame(PING, b"gate-ping", client=client)
    sent = stream.feed(wire[:at])
    sent += stream.inject(ping)
    sent += feed_split(stream, wire[at:], cuts)
    got = decode(sent)
    assert [f for f in got if f[1] != PING] == decode(wire)
    assert [f for f in got if f[1] == PING] == [(True, PING, b"gate-ping")]


@pytest.mark.parametrize("client", [True, False])
def test_pongs_to_the_gates_ping_are_swallowed_others_pass(client: bool) -> None:
    stream = FrameStream(from_client=client)
    stream.expect = b"12345678"
    theirs = frame(PONG, b"other", client=client)
    ours = frame(PONG, b"12345678", client=client)
    data = frame(BINARY, b"abc", client=client)
    wire = theirs + data + ours + data + ours
    for split in range(len(wire) + 1):
        stream = FrameStream(from_client=client)
        stream.expect = b"12345678"
        sent = stream.feed(wire[:split]) + stream.feed(wire[split:])
        assert stream.expect is None
        # The second pong with our id answers nothing any more: it passes.
        assert sent == theirs + data + data + ours


def test_nothing_is_injected_after_a_close() -> None:
    stream = FrameStream(from_client=False)
    assert stream.feed(frame(CLOSE, b"\x03\xe8", client=False))
    assert stream.inject(frame(PING, b"x", client=False)) == b""


def test_a_leg_that_does_not_answer_is_dead() -> None:
    relay = WebSocketRelay(None, ping_interval=2.0, now=0.0)
    assert relay.tick(1.0) == (b"", b"")
    to_client, to_app = relay.tick(2.0)
    (ping_c,) = decode(to_client)
    (ping_a,) = decode(to_app)
    assert ping_c[1] == ping_a[1] == PING
    assert to_client[1] & 0x80 == 0
    assert to_app[1] & 0x80
    # The client answers (its pong comes on the way to the application); the application too.
    assert relay.to_app.feed(frame(PONG, ping_c[2], client=True)) == b""
    assert relay.to_client.feed(frame(PONG, ping_a[2], client=False)) == b""
    to_client, to_app = relay.tick(4.0)
    assert to_client
    assert to_app
    # Now only the application answers.
    (ping_a,) = decode(to_app)
    relay.to_client.feed(frame(PONG, ping_a[2], client=False))
    with pytest.raises(LegDead, match="client"):
        relay.tick(6.0)


def test_a_ping_waits_for_the_end_of_a_frame() -> None:
    relay = WebSocketRelay(None, ping_interval=1.0, now=0.0)
    big = frame(BINARY, b"x" * 1000, client=False)
    assert relay.to_client.feed(big[:500]) == big[:500]
    to_client, _ = relay.tick(1.0)
    assert to_client == b""
    sent = relay.to_client.feed(big[500:])
    assert sent.startswith(big[500:])
    assert decode(sent[len(big) - 500 :])[0][1] == PING


# ------------------------------------------------------------------------ viewers of web apps
def test_a_web_viewer_without_input_sends_no_data_frames_but_control_frames() -> None:
    viewer = Viewer(input_allowed=False, protocol="web")
    relay = WebSocketRelay(viewer, ping_interval=0, now=0.0)
    ping = frame(PING, b"p", client=True)
    wire = (
        frame(TEXT, b"click", client=True, fin=False)
        + ping
        + frame(CONTINUATION, b"more", client=True)
        + frame(BINARY, b"", client=True)
    )
    for split in range(len(wire) + 1):
        relay = WebSocketRelay(viewer, ping_interval=0, now=0.0)
        assert relay.to_app.feed(wire[:split]) + relay.to_app.feed(wire[split:]) == ping
        assert relay.to_app.data_frames == 0


def test_a_web_viewers_flip_applies_from_the_next_message() -> None:
    viewer = Viewer(input_allowed=False, protocol="web")
    relay = WebSocketRelay(viewer, ping_interval=0, now=0.0)
    first = frame(TEXT, b"a", client=True, fin=False)
    rest = frame(CONTINUATION, b"b", client=True)
    after = frame(TEXT, b"c", client=True)
    assert relay.to_app.feed(first) == b""
    viewer.input_allowed = True
    assert relay.to_app.feed(rest) == b""  # the message began dropped: it stays dropped
    assert relay.to_app.feed(after) == after
    viewer.input_allowed = False
    assert relay.to_app.feed(after) == b""


def test_mask_matches_the_definition_at_every_offset() -> None:
    data = os.urandom(37)
    key = os.urandom(4)
    for offset in range(8):
        expect = bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))
        assert mask(data, key, offset) == expect


# ------------------------------------------------------------ the owner's desktop: activity
_HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"
_UPDATE = b"\x03\x01\x00\x00\x00\x00\x04\x00\x03\x00"
_KEY = b"\x04\x01\x00\x00\x00\x00\x00\x61"
_POINTER = b"\x05\x00\x00\x10\x00\x10"


def _client(payload: bytes) -> bytes:
    return encode_frame(BINARY, payload, masked=True)


@pytest.mark.parametrize("split", [1, 3, 7, 1000])
def test_an_owners_desktop_counts_input_not_update_requests(split: int) -> None:
    """noVNC asks for screen updates all the time: a desktop nobody types in or clicks on is
    idle, and its bytes still pass untouched."""
    relay = WebSocketRelay(None, ping_interval=0, now=0.0, rfb_activity=True)
    stream = relay.to_app
    sent = _client(_HANDSHAKE) + b"".join(_client(_UPDATE) for _ in range(20))
    passed = b"".join(stream.feed(sent[i : i + split]) for i in range(0, len(sent), split))
    assert passed == sent
    assert stream.data_frames == 0
    typed = _client(_KEY) + _client(_UPDATE) + _client(_POINTER)
    passed = b"".join(stream.feed(typed[i : i + split]) for i in range(0, len(typed), split))
    assert passed == typed
    assert stream.data_frames == 2


def test_an_owners_stream_the_reader_cannot_follow_counts_every_frame() -> None:
    relay = WebSocketRelay(None, ping_interval=0, now=0.0, rfb_activity=True)
    stream = relay.to_app
    odd = _client(b"not RFB at all") + _client(b"still not")
    assert stream.feed(odd) == odd  # the owner is never cut off for it
    assert stream.data_frames >= 2
    text = encode_frame(TEXT, b"hello", masked=True)
    assert stream.feed(text) == text


def test_without_rfb_activity_every_data_frame_counts() -> None:
    relay = WebSocketRelay(None, ping_interval=0, now=0.0)
    frames = _client(_HANDSHAKE) + _client(_UPDATE) + _client(_UPDATE)
    assert relay.to_app.feed(frames) == frames
    assert relay.to_app.data_frames == 3
