"""The RFB (VNC) input filter: a viewer's stream to the desktop minus keyboard, mouse, clipboard.

Sans-I/O: ``RfbInputFilter.feed`` takes what the client sent (the payload bytes of its
WebSocket frames, in order, split anywhere) and returns what may reach the desktop. It follows
the client's side of RFB 3.7/3.8 (RFC 6143): the handshake passes (ProtocolVersion, the
security type chosen, a VNC authentication response, ClientInit), then each message is read
whole and passed or dropped. Messages that ask for the picture always pass; input messages
pass only while input is allowed. Allow-list: a message type, security type or protocol
version not listed here ends the stream (``RfbViolation``), whether input is allowed or not,
since past an unknown message the boundaries of the next ones are unknown.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Client-to-server message types and how they are read. A fixed size, or a reader of the
# variable part (from the bytes seen so far: the total size, or None while it cannot tell).
SET_PIXEL_FORMAT = 0
SET_ENCODINGS = 2
FRAMEBUFFER_UPDATE_REQUEST = 3
KEY_EVENT = 4
POINTER_EVENT = 5
CLIENT_CUT_TEXT = 6
ENABLE_CONTINUOUS_UPDATES = 150
CLIENT_FENCE = 248
XVP = 250
SET_DESKTOP_SIZE = 251
QEMU = 255

# Messages that only ask for (or about) the picture: they pass for everyone.
VIEW_MESSAGES = frozenset(
    {
        SET_PIXEL_FORMAT,
        SET_ENCODINGS,
        FRAMEBUFFER_UPDATE_REQUEST,
        ENABLE_CONTINUOUS_UPDATES,
        CLIENT_FENCE,
    }
)
# Messages that act on the desktop: keyboard, mouse, clipboard, its size, power (xvp), QEMU's
# extended key events. They pass only while input is allowed.
INPUT_MESSAGES = frozenset({KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT, XVP, SET_DESKTOP_SIZE, QEMU})
_FIXED = {
    SET_PIXEL_FORMAT: 20,
    FRAMEBUFFER_UPDATE_REQUEST: 10,
    KEY_EVENT: 8,
    POINTER_EVENT: 6,
    ENABLE_CONTINUOUS_UPDATES: 10,
    XVP: 4,
}
# How many bytes of a message tell its size (those with a fixed size: the type alone).
_HEADER_NEED = {SET_ENCODINGS: 4, CLIENT_CUT_TEXT: 8, CLIENT_FENCE: 9, SET_DESKTOP_SIZE: 8, QEMU: 2}
# The clipboard text a client may send at once (also the extended clipboard's, RFC-less but
# common: a negative length). Beyond it the stream ends.
MAX_CUT_TEXT = 16 * 1024 * 1024
_VERSION = re.compile(rb"RFB 003\.00[78]\n")
_SECURITY_NONE = 1
_SECURITY_VNC = 2

# Handshake phases, then messages.
_VERSION_PHASE, _SECURITY_PHASE, _AUTH_PHASE, _INIT_PHASE, _MESSAGES = range(5)


class RfbViolation(Exception):
    """The client sent what the filter does not know; the stream must end."""


def message_size(buffer: bytes | bytearray | memoryview) -> int | None:
    """The size of the client message at the start of ``buffer`` (at least one byte), or
    None while more bytes are needed to tell; raises ``RfbViolation`` for an unknown one."""
    kind = buffer[0]
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed
    have = len(buffer)
    if kind == SET_ENCODINGS:
        if have < 4:
            return None
        return 4 + 4 * int.from_bytes(buffer[2:4], "big")
    if kind == CLIENT_CUT_TEXT:
        if have < 8:
            return None
        length = int.from_bytes(buffer[4:8], "big", signed=True)
        length = -length if length < 0 else length
        if length > MAX_CUT_TEXT:
            raise RfbViolation("clipboard text too large")
        return 8 + length
    if kind == CLIENT_FENCE:
        if have < 9:
            return None
        length = buffer[8]
        if length > 64:
            raise RfbViolation("fence payload too large")
        return 9 + length
    if kind == SET_DESKTOP_SIZE:
        if have < 8:
            return None
        return 8 + 16 * buffer[6]
    if kind == QEMU:
        if have < 2:
            return None
        if buffer[1] == 0:  # extended key event
            return 12
        raise RfbViolation(f"unknown QEMU message {buffer[1]}")
    raise RfbViolation(f"unknown message type {kind}")


def _always() -> bool:
    return True


class RfbInputFilter:
    """Reads a client's RFB stream; ``feed`` returns the bytes that may reach the desktop.

    Whether input passes is decided per message (``allow_input`` of the ``feed`` call in
    which the message's first byte arrives), so a change applies from the next message on.
    A message that passes is held until it is complete, except clipboard text, which
    streams; a dropped message is skipped as it comes, never held.
    """

    __slots__ = (
        "_buffer",
        "_need",
        "_passing",
        "_phase",
        "_skip",
        "_stream",
        "clipboard",
        "input_passed",
    )

    def __init__(self) -> None:
        self.clipboard: Callable[[], bool] = _always
        """Whether clipboard text (ClientCutText) may pass along with other input; asked
        per message, like ``allow_input``."""
        self._phase = _VERSION_PHASE
        self._buffer = bytearray()
        self._need = 0  # the size of the message held, 0 while not known yet
        self._passing = False
        # Bytes of the current message still to skip (dropped) or to stream (passed).
        self._skip = 0
        self._stream = 0
        self.input_passed = 0
        """Input messages let through so far."""

    def feed(self, data: bytes, allow_input: bool) -> bytes:
        out = bytearray()
        view = memoryview(data)
        pos = 0
        end = len(data)
        buffer = self._buffer
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
            elif self._stream:
                take = min(self._stream, end - pos)
                out += view[pos : pos + take]
                self._stream -= take
                pos += take
            elif self._phase != _MESSAGES:
                buffer += view[pos : pos + 1]
                pos += 1
                out += self._handshake(buffer)
            elif not buffer:
                kind = data[pos]
                size = message_size(view[pos : pos + _HEADER_NEED.get(kind, 1)])
                passing = kind in VIEW_MESSAGES or (
                    allow_input and (kind != CLIENT_CUT_TEXT or self.clipboard())
                )
                if size is not None and end - pos >= size:
                    # The whole message is here: the common case, no copy into the buffer.
                    if passing:
                        out += view[pos : pos + size]
                        if kind in INPUT_MESSAGES:
                            self.input_passed += 1
                    pos += size
                    continue
                self._passing = passing
                self._need = 0
                take = min(end - pos, _HEADER_NEED.get(kind, 1))
                buffer += view[pos : pos + take]
                pos += take
                self._started(buffer, out)
            elif self._need:
                take = min(self._need - len(buffer), end - pos)
                buffer += view[pos : pos + take]
                pos += take
                if len(buffer) == self._need:
                    out += buffer
                    buffer.clear()
                    self._need = 0
            else:
                take = min(end - pos, _HEADER_NEED[buffer[0]] - len(buffer))
                buffer += view[pos : pos + take]
                pos += take
                self._started(buffer, out)
        return bytes(out)

    def _started(self, buffer: bytearray, out: bytearray) -> None:
        """The start of a message is held: once its size is known, pass, stream or skip it."""
        size = message_size(buffer)
        if size is None:
            return
        kind = buffer[0]
        rest = size - len(buffer)
        if not self._passing:
            self._skip = rest
            buffer.clear()
            return
        if kind in INPUT_MESSAGES:
            self.input_passed += 1
        if kind == CLIENT_CUT_TEXT or rest == 0:
            out += buffer
            buffer.clear()
            self._stream = rest
        else:
            self._need = size

    def _handshake(self, buffer: bytearray) -> bytes:
        phase = self._phase
        if phase == _VERSION_PHASE:
            if len(buffer) < 12:
                return b""
            if _VERSION.fullmatch(buffer) is None:
                raise RfbViolation("unsupported protocol version")
            self._phase = _SECURITY_PHASE
        elif phase == _SECURITY_PHASE:
            if buffer[0] == _SECURITY_NONE:
                self._phase = _INIT_PHASE
            elif buffer[0] == _SECURITY_VNC:
                self._phase = _AUTH_PHASE
            else:
                raise RfbViolation(f"unsupported security type {buffer[0]}")
        elif phase == _AUTH_PHASE:
            if len(buffer) < 16:
                return b""
            self._phase = _INIT_PHASE
        else:
            self._phase = _MESSAGES
        passed = bytes(buffer)
        buffer.clear()
        return passed
