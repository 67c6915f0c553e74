"""A TCP relay that cuts connections idle for ``idle_cut`` seconds, as many proxies and NATs do.

    relay = CuttingRelay("127.0.0.1", target_port, idle_cut=30.0)
    await relay.start()          # relay.port: where to connect instead of the target
    ...
    relay.accepted, relay.cut    # connections accepted, connections cut for idleness
    relay.links                  # per connection: the longest time without a byte; open?
    relay.cut_all()              # cut every open connection now (a network drop)
    await relay.close()

Bytes in either direction count as activity. It listens on and connects to 127.0.0.1 only.
It can also run as a process of its own (for a browser in another network namespace):

    python -m tests.support.cutting_relay LISTEN_HOST LISTEN_PORT TARGET_PORT IDLE_CUT

which prints ``accepted <n> cut <m>`` on each change to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass


@dataclass
class Link:
    """One relayed connection."""

    longest_quiet: float = 0.0
    open: bool = True


class CuttingRelay:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        idle_cut: float,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        on_change: object = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.idle_cut = idle_cut
        self.listen = (listen_host, listen_port)
        self.accepted = 0
        self.cut = 0
        self.closed_by_peer = 0
        self.links: list[Link] = []
        self._open: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_change = on_change

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, *self.listen)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def cut_all(self) -> int:
        """Cut every open connection, as a network drop would; how many."""
        cutting = list(self._open)
        for task in cutting:
            task.cancel()
        return len(cutting)

    def _changed(self) -> None:
        if callable(self._on_change):
            self._on_change(self)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        link = Link()
        self.links.append(link)
        self._changed()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            link.open = False
            writer.close()
            self._tasks.discard(task)
            return
        last = [time.monotonic()]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                now = time.monotonic()
                link.longest_quiet = max(link.longest_quiet, now - last[0])
                last[0] = now
                dst.write(data)
                await dst.drain()

        pumps = [
            asyncio.create_task(pump(reader, up_writer)),
            asyncio.create_task(pump(up_reader, writer)),
        ]
        self._open.add(task)
        try:
            while True:
                done, _ = await asyncio.wait(
                    pumps, timeout=0.2, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    self.closed_by_peer += 1
                    break
                if time.monotonic() - last[0] >= self.idle_cut:
                    self.cut += 1
                    break
        except asyncio.CancelledError:
            pass  # cut_all, or the relay closing
        finally:
            link.open = False
            self._open.discard(task)
            for pump_task in pumps:
                pump_task.cancel()
            for w in (writer, up_writer):
                # An abort, as a middlebox dropping state would look to both ends (RST).
                with contextlib.suppress(Exception):
                    w.transport.abort()
            self._tasks.discard(task)
            self._changed()


async def _main(listen_host: str, listen_port: int, target_port: int, idle_cut: float) -> None:
    def report(relay: CuttingRelay) -> None:
        print(f"accepted {relay.accepted} cut {relay.cut}", flush=True)

    relay = CuttingRelay(
        "127.0.0.1",
        target_port,
        idle_cut=idle_cut,
        listen_host=listen_host,
        listen_port=listen_port,
        on_change=report,
    )
    await relay.start()
    print(f"listening {relay.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    host, port, target, cut = sys.argv[1:5]
    asyncio.run(_main(host, int(port), int(target), float(cut)))
