"""The CPU the gate's WebSocket relay spends per read, without sockets, side by side.

    .venv/bin/python bench/ws_relay_cost.py [ROUNDS]   # default 5

Feeds the same reads to ``FrameStream.feed`` and to a plain hand-over (what splicing bytes
cost before frames were tracked), alternating, and prints the least CPU time (process time, so
that other processes taking the CPU do not count) of µs per read over the rounds. Cases: an
application's 64 KiB binary frames read 64 KiB and 256 KiB at a time
(the owner's and every viewer's picture), a client's small masked frames (an owner typing),
and a view-only VNC viewer's stream of update requests and pointer events (filtered).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from remoteappmanager.web.gate.relay import (  # noqa: E402
    BINARY,
    FrameStream,
    WebSocketRelay,
    encode_frame,
)


class _Viewer:
    input_allowed = False
    protocol = "vnc"


def _reads(wire: bytes, size: int) -> list[bytes]:
    return [wire[i : i + size] for i in range(0, len(wire), size)]


def _time(feed: Callable[[bytes], bytes], reads: list[bytes]) -> float:
    started = time.process_time()
    for data in reads:
        feed(data)
    return (time.process_time() - started) / len(reads) * 1e6


def _splice(data: bytes) -> bytes:
    return data


def main(rounds: int) -> None:
    frame = encode_frame(BINARY, os.urandom(64 * 1024), masked=False)
    picture = frame * 256
    pointer = b"\x05\x00\x01\x00\x01\x00"
    update = b"\x03\x01\x00\x00\x00\x00\x04\x00\x03\x00"
    typing = b"".join(encode_frame(BINARY, pointer, masked=True) for _ in range(16384))
    handshake = encode_frame(BINARY, b"RFB 003.008\n\x01\x01", masked=True)
    viewing = b"".join(encode_frame(BINARY, update + pointer, masked=True) for _ in range(16384))

    def owner_picture() -> Callable[[bytes], bytes]:
        return FrameStream(from_client=False).feed

    def owner_typing() -> Callable[[bytes], bytes]:
        return FrameStream(from_client=True).feed

    def viewer() -> Callable[[bytes], bytes]:
        relay = WebSocketRelay(_Viewer(), ping_interval=0, now=0)
        relay.to_app.feed(handshake)
        return relay.to_app.feed

    cases = [
        (
            "application → client, 64 KiB frames, 64 KiB reads",
            owner_picture,
            _reads(picture, 65536),
        ),
        (
            "application → client, 64 KiB frames, 256 KiB reads",
            owner_picture,
            _reads(picture, 262144),
        ),
        ("owner → application, 12-byte frames, 4 KiB reads", owner_typing, _reads(typing, 4096)),
        (
            "view-only viewer → desktop, 22-byte frames, filtered, 4 KiB reads",
            viewer,
            _reads(viewing, 4096),
        ),
    ]
    print(f"{rounds} rounds; CPU µs per read, least of the rounds (relay vs plain hand-over)\n")
    print("| Case | Hand-over | Relay | Added per read |")
    print("|---|---|---|---|")
    for label, make, reads in cases:
        plain, relayed = [], []
        for _ in range(rounds):
            plain.append(_time(_splice, reads))
            relayed.append(_time(make(), reads))
        p, r = min(plain), min(relayed)
        print(f"| {label} | {p:.2f} µs | {r:.2f} µs | {r - p:.2f} µs |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
