"""The gate's WebSocket relay (RFC 6455), sans I/O: frame boundaries, pings, a viewer's filter.

After a ``101`` the gate's listener feeds what each side sends to one ``FrameStream`` per
direction and writes what it returns. A stream follows frame headers without copying: the
owner's bytes pass as they came, only their boundaries are tracked. It stops at a protocol
violation (``WebSocketViolation``: the listener closes both legs): a reserved opcode, a
control frame that is fragmented or longer than 125 bytes, a client frame not masked or an
application frame masked, continuation out of place, a frame larger than the cap.

``WebSocketRelay`` holds both directions and the pings: every ``ping_interval`` seconds it
sends a ping with an id of its own to each leg, inserted between frames, swallows the pongs
that answer them (other pongs pass), and declares a leg dead (``LegDead``) whose answer has
not come by the next ping. For a viewer (``ViewerInput``) the client's data frames are
dropped while input is not allowed (web), or unmasked, read as RFB by ``RfbInputFilter`` and
sent on re-framed (VNC).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from remoteappmanager.web.gate.rfb import RfbInputFilter, RfbViolation

CONTINUATION, TEXT, BINARY = 0x0, 0x1, 0x2
CLOSE, PING, PONG = 0x8, 0x9, 0xA
_DATA_OPCODES = frozenset({CONTINUATION, TEXT, BINARY})
_CONTROL_OPCODES = frozenset({CLOSE, PING, PONG})
# A frame's payload may not be larger than this (the cap of aiohttp's and websockify's own
# readers is smaller or equal); a larger one ends the connection.
MAX_PAYLOAD = 64 * 1024 * 1024
_RSV1, _RSV23 = 0x40, 0x30
PING_ID_SIZE = 8

# What a stream reads: bytes, or a view of a reader's buffer (``upstream``).
Buffer = bytes | memoryview

# What happens to a data frame's payload.
_PASS, _DROP, _FILTER, _OBSERVE = range(4)


class Viewer(Protocol):
    """What the relay reads of a viewer's rights (``listener.ViewerInput``)."""

    @property
    def input_allowed(self) -> bool: ...

    @property
    def protocol(self) -> str: ...

    @property
    def clipboard_in(self) -> bool: ...


class WebSocketViolation(Exception):
    """What came is not a WebSocket stream the gate relays; the connection must end."""


class LegDead(Exception):
    """A leg did not answer the gate's ping in time."""


def mask(data: Buffer, key: bytes, offset: int = 0) -> bytes:
    """``data`` XOR the masking ``key`` (RFC 6455 5.3), starting ``offset`` bytes into it."""
    size = len(data)
    if not size:
        return b""
    offset &= 3
    if offset:
        key = key[offset:] + key[:offset]
    # One big-integer XOR: C speed without a C extension.
    stream = key * ((size >> 2) + 1)
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream[:size], "little")).to_bytes(
        size, "little"
    )


def encode_frame(opcode: int, payload: bytes, *, masked: bool, fin: bool = True) -> bytes:
    """One frame; masked with a fresh key when sent as a client."""
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, bit | size))
    elif size < 65536:
        head = bytes((first, bit | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + size.to_bytes(8, "big")
    if masked:
        key = os.urandom(4)
        return head + key + mask(payload, key)
    return head + payload


class FrameStream:
    """One direction of a relayed WebSocket: ``feed`` returns the bytes to send on.

    ``from_client`` streams carry masked frames. ``data_policy`` (None: every data frame
    passes untouched) is asked at the first frame of each message: ``_PASS``, ``_DROP``, or
    ``_FILTER`` (the payload goes through ``rfb`` and is sent on as new binary frames).
    ``expect`` is the id of the gate's ping whose pong comes this way, None once answered;
    ``inject`` puts a frame of the gate's own in at the next boundary.
    """

    __slots__ = (
        "_action",
        "_closed",
        "_data_policy",
        "_held",
        "_in_message",
        "_key",
        "_offset",
        "_pending",
        "_remaining",
        "data_frames",
        "expect",
        "from_client",
        "max_payload",
        "rfb",
        "rfb_input",
    )

    def __init__(
        self,
        *,
        from_client: bool,
        data_policy: Callable[[], int] | None = None,
        rfb_input: Callable[[], bool] | None = None,
        observe_rfb: bool = False,
        max_payload: int = MAX_PAYLOAD,
    ) -> None:
        self.from_client = from_client
        self.max_payload = max_payload
        if observe_rfb and data_policy is None and rfb_input is None:
            # The owner's desktop: bytes pass untouched, and are read beside (``_observe``)
            # only to tell its keyboard, mouse and clipboard input from update requests.
            data_policy = _observe_policy
        self._data_policy = data_policy
        self.rfb = RfbInputFilter() if rfb_input is not None or observe_rfb else None
        self.rfb_input = rfb_input
        self._remaining = 0  # payload bytes of the current frame still to come
        self._action = _PASS
        self._held = b""  # the start of a frame header (or of a control frame) not all here
        self._in_message = False  # a fragmented data message is under way
        self._key = b""
        self._offset = 0
        self._pending: list[bytes] = []
        self._closed = False  # a close frame went this way: nothing may follow it
        self.data_frames = 0
        """Data frames sent on (not dropped) so far."""
        self.expect: bytes | None = None

    @property
    def at_boundary(self) -> bool:
        """Whether what was sent on so far ends between frames."""
        return self._remaining == 0

    def inject(self, frame: bytes) -> bytes:
        """A frame of the gate's own: returned if it may be sent now, else sent at the next
        boundary (by ``feed``); dropped once a close went this way."""
        if self._closed:
            return b""
        if self._remaining == 0:
            return frame
        self._pending.append(frame)
        return b""

    def feed(self, data: Buffer) -> Buffer:
        """The bytes to send on for ``data``: ``data`` itself, slices of it, or new bytes.
        Nothing of ``data`` is kept (a reader may reuse its buffer)."""
        remaining = self._remaining
        if len(data) < remaining and self._action == _PASS:
            # Inside a frame that passes (most reads of a busy stream).
            self._remaining = remaining - len(data)
            return data
        return self._feed(data)

    # ---------------------------------------------------------------- the general case
    # One pass over the bytes, frame after frame, without a call per frame: the relay's
    # throughput is this loop's.
    def _feed(self, data: Buffer) -> Buffer:  # noqa: C901
        if self._held:
            data = self._held + data
            self._held = b""
        out: list[Buffer] = []
        keep = 0  # data[keep:pos] passes as it came
        pos = 0
        end = len(data)
        while pos < end:
            remaining = self._remaining
            if remaining:
                take = min(remaining, end - pos)
                action = self._action
                if action == _DROP:
                    if pos > keep:
                        out.append(data[keep:pos])
                    keep = pos + take
                elif action == _FILTER:
                    if pos > keep:
                        out.append(data[keep:pos])
                    keep = pos + take
                    out.append(self._filter(data[pos : pos + take]))
                elif action == _OBSERVE:
                    self._observe(data[pos : pos + take])
                pos += take
                self._remaining = remaining - take
                if remaining == take and self._pending:
                    if pos > keep:
                        out.append(data[keep:pos])
                    keep = pos
                    out.extend(self._pending)
                    self._pending.clear()
                continue
            # A frame header begins at pos.
            size = self._frame_start(data, pos, end)
            if size < 0:  # not all here: held for the next read
                if pos > keep:
                    out.append(data[keep:pos])
                keep = end
                self._held = bytes(data[pos:])
                break
            if size:  # a whole control frame: pass or swallow it
                if not self._control(data, pos, size):
                    if pos > keep:
                        out.append(data[keep:pos])
                    keep = pos + size
                pos += size
                if self._pending:
                    if pos > keep:
                        out.append(data[keep:pos])
                    keep = pos
                    out.extend(self._pending)
                    self._pending.clear()
                continue
            # A data frame's header: its payload follows (self._remaining set).
            head = self._header_size(data, pos)
            if self._action not in (_PASS, _OBSERVE):
                if pos > keep:
                    out.append(data[keep:pos])
                keep = pos + head
            pos += head
            if self._remaining == 0 and self._pending:
                if pos > keep:
                    out.append(data[keep:pos])
                keep = pos
                out.extend(self._pending)
                self._pending.clear()
        if keep == 0 and not out:
            return data
        if keep < end:
            out.append(data[keep:end])
        return b"".join(out)

    # RFC 6455's header rules (lengths, masking, opcodes, control frames) checked in one place.
    def _frame_start(self, data: Buffer, pos: int, end: int) -> int:  # noqa: C901
        """Reads a frame header at ``pos``. Returns -1 if it is not all here; the whole
        frame's size for a control frame (only once all of it is here, else -1); 0 for a data
        frame, whose payload length is then in ``_remaining`` and its action in ``_action``."""
        if end - pos < 2:
            return -1
        first = data[pos]
        second = data[pos + 1]
        opcode = first & 0x0F
        masked = second & 0x80
        if bool(masked) != self.from_client:
            raise WebSocketViolation("client frames must be masked, application frames not")
        if first & _RSV23:
            raise WebSocketViolation("reserved bits set")
        length = second & 0x7F
        head = 2
        if length == 126:
            head = 4
        elif length == 127:
            head = 10
        if masked:
            head += 4
        if end - pos < head:
            return -1
        if length == 126:
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        elif length == 127:
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
        if opcode in _CONTROL_OPCODES:
            if not first & 0x80 or length > 125 or first & _RSV1:
                raise WebSocketViolation("control frames are short and whole")
            if end - pos < head + length:
                return -1
            return head + length
        if opcode not in _DATA_OPCODES:
            raise WebSocketViolation(f"reserved opcode {opcode}")
        if length > self.max_payload:
            raise WebSocketViolation("frame too large")
        fin = first & 0x80
        if opcode == CONTINUATION:
            if not self._in_message:
                raise WebSocketViolation("continuation outside a message")
            if first & _RSV1:
                raise WebSocketViolation("reserved bit on a continuation")
        else:
            if self._in_message:
                raise WebSocketViolation("a new message inside a fragmented one")
            policy = self._data_policy
            self._action = _PASS if policy is None else policy()
            if self._action == _FILTER and (opcode != BINARY or first & _RSV1):
                raise WebSocketViolation("a viewer's desktop stream is uncompressed binary")
            if self._action == _OBSERVE and (opcode != BINARY or first & _RSV1):
                self._stop_observing()
        self._in_message = not fin
        if self._action == _PASS:
            self.data_frames += 1
        if masked:
            self._key = bytes(data[pos + head - 4 : pos + head])
            self._offset = 0
        self._remaining = length
        return 0

    @staticmethod
    def _header_size(data: Buffer, pos: int) -> int:
        second = data[pos + 1]
        length = second & 0x7F
        head = 4 if length == 126 else 10 if length == 127 else 2
        return head + 4 if second & 0x80 else head

    def _control(self, data: Buffer, pos: int, size: int) -> bool:
        """A whole control frame: True to pass it, False to swallow it."""
        opcode = data[pos] & 0x0F
        if opcode == CLOSE:
            self._closed = True
            self._pending.clear()
            return True
        if opcode != PONG or self.expect is None:
            return True
        payload = data[pos + size - (data[pos + 1] & 0x7F) : pos + size]
        if self.from_client:
            payload = mask(payload, bytes(data[pos + 2 : pos + 6]))
        if payload != self.expect:
            return True
        self.expect = None
        return False

    def _observe(self, chunk: Buffer) -> None:
        """Read the owner's RFB beside the stream: a data frame counts (``data_frames``) when
        it carries input. Anything the reader cannot follow ends the reading, and every data
        frame counts from then on, as for any other WebSocket."""
        rfb = self.rfb
        if rfb is None:
            return
        plain = mask(chunk, self._key, self._offset)
        self._offset += len(chunk)
        before = rfb.input_passed
        try:
            rfb.feed(plain, True)
        except RfbViolation:
            self._stop_observing()
            return
        if rfb.input_passed != before:
            self.data_frames += 1

    def _stop_observing(self) -> None:
        self.rfb = None
        self._data_policy = None
        self._action = _PASS
        self.data_frames += 1

    def _filter(self, chunk: Buffer) -> bytes:
        assert self.rfb is not None
        assert self.rfb_input is not None
        plain = mask(chunk, self._key, self._offset)
        self._offset += len(chunk)
        try:
            passed = self.rfb.feed(plain, self.rfb_input())
        except RfbViolation as exc:
            raise WebSocketViolation(f"RFB: {exc}") from exc
        if not passed:
            return b""
        self.data_frames += 1
        return encode_frame(BINARY, passed, masked=True)


class WebSocketRelay:
    """Both directions of one relayed WebSocket, and the gate's pings to each leg.

    ``viewer`` None: the owner, unfiltered. Otherwise its ``input_allowed`` is read for each
    message from the client (web: data frames pass or are dropped; vnc: RFB input messages).
    """

    __slots__ = ("next_ping", "ping_interval", "to_app", "to_client")

    def __init__(
        self,
        viewer: Viewer | None,
        *,
        ping_interval: float,
        now: float,
        rfb_activity: bool = False,
    ) -> None:
        policy: Callable[[], int] | None = None
        rfb_input: Callable[[], bool] | None = None
        if viewer is not None:

            def allowed() -> bool:
                return viewer.input_allowed

            def web_policy() -> int:
                return _PASS if viewer.input_allowed else _DROP

            if viewer.protocol == "vnc":
                policy = _filter_policy
                rfb_input = allowed
            else:
                policy = web_policy
        self.to_app = FrameStream(
            from_client=True,
            data_policy=policy,
            rfb_input=rfb_input,
            observe_rfb=rfb_activity and viewer is None,
        )
        if viewer is not None and self.to_app.rfb is not None:
            self.to_app.rfb.clipboard = lambda: viewer.clipboard_in
        self.to_client = FrameStream(from_client=False)
        self.ping_interval = ping_interval
        self.next_ping = now + ping_interval if ping_interval > 0 else float("inf")

    def tick(self, now: float) -> tuple[bytes, bytes]:
        """Pings due now: (to write to the client, to write to the application) at once (the
        rest go at the next boundary). Raises ``LegDead`` if a leg left the last unanswered."""
        if now < self.next_ping:
            return b"", b""
        # The client's pong comes on the stream to the application, and the other way round.
        if self.to_app.expect is not None:
            raise LegDead("client")
        if self.to_client.expect is not None:
            raise LegDead("application")
        self.next_ping = now + self.ping_interval
        to_client = to_app = b""
        if not self.to_client._closed:
            ident = os.urandom(PING_ID_SIZE)
            self.to_app.expect = ident
            to_client = self.to_client.inject(encode_frame(PING, ident, masked=False))
        if not self.to_app._closed:
            ident = os.urandom(PING_ID_SIZE)
            self.to_client.expect = ident
            to_app = self.to_app.inject(encode_frame(PING, ident, masked=True))
        return to_client, to_app


def _filter_policy() -> int:
    return _FILTER


def _observe_policy() -> int:
    return _OBSERVE
