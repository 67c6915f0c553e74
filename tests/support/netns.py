"""Run a program in its own network namespace whose 127.0.0.1 ports reach the host's.

Chromium aborts in-flight requests (``net::ERR_NETWORK_CHANGED``) whenever a network interface
appears or goes, and every Docker container adds one on the host. A namespace of its own has
only ``lo``, so the browser never hears of them. Unix sockets on a shared file system cross
namespaces: inside, a relay listens on ``127.0.0.1:<port>`` and connects to
``<socket dir>/<port>.sock``; outside, ``HostRelay`` listens there and connects to the host's
``127.0.0.1:<port>``. Only the ports named are reachable; nothing else is.

As a program (stdlib only, so that it starts fast):
``python netns.py --socket-dir DIR --ports 8000,8001 -- /usr/bin/chromium [args...]``
enters a new namespace, brings ``lo`` up, starts the inner relay and becomes the program, so
that whatever started it (Playwright, over inherited pipe descriptors) talks to it directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

_INSIDE_FLAG = "REMOTEAPP_NETNS_INSIDE"
_CHUNK = 64 * 1024
_PR_SET_PDEATHSIG = 1


def socket_path(socket_dir: Path, port: int) -> Path:
    return socket_dir / f"{port}.sock"


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    try:
        await asyncio.gather(_copy(a[0], b[1]), _copy(b[0], a[1]))
    finally:
        for _, writer in (a, b):
            writer.close()


class HostRelay:
    """The host side: ``<socket dir>/<port>.sock`` → ``127.0.0.1:<port>``, in its own thread."""

    def __init__(self, socket_dir: Path, ports: Sequence[int]) -> None:
        self.socket_dir = socket_dir
        self.ports = tuple(ports)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.AbstractServer] = []

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> None:
        for port in self.ports:
            path = socket_path(self.socket_dir, port)
            path.unlink(missing_ok=True)

            async def accepted(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int = port
            ) -> None:
                try:
                    upstream = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    writer.close()
                    return
                await _splice((reader, writer), upstream)

            self._servers.append(await asyncio.start_unix_server(accepted, path=str(path)))

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
        for port in self.ports:
            socket_path(self.socket_dir, port).unlink(missing_ok=True)


# ------------------------------------------------------------------------------ inside
async def _inner_relay(listeners: Sequence[socket.socket], socket_dir: Path, parent: int) -> None:
    for listener in listeners:
        port = listener.getsockname()[1]
        path = str(socket_path(socket_dir, port))

        async def accepted(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str = path
        ) -> None:
            try:
                upstream = await asyncio.open_unix_connection(path)
            except OSError:
                writer.close()
                return
            await _splice((reader, writer), upstream)

        await asyncio.start_server(accepted, sock=listener)
    # The relay lives as long as the program it serves (also should the death signal fail);
    # being re-parented is not an event anything can wait on, hence the polling.
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(0.5)


def _become_relay(listeners: Sequence[socket.socket], socket_dir: Path, parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # Let go of every descriptor but the listeners: holding the browser's control pipes or
    # stdio open would keep its driver waiting for an end that never comes.
    keep = {listener.fileno() for listener in listeners}
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    try:
        asyncio.run(_inner_relay(listeners, socket_dir, parent))
    finally:
        os._exit(0)


def _inside(socket_dir: Path, ports: Sequence[int], command: Sequence[str]) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    listeners = []
    for port in ports:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        listener.setblocking(False)
        listeners.append(listener)
    parent = os.getpid()
    if os.fork() == 0:
        _become_relay(listeners, socket_dir, parent)
    for listener in listeners:
        listener.close()
    os.execv(command[0], list(command))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket-dir", type=Path, required=True)
    parser.add_argument("--ports", default="", help="comma-separated 127.0.0.1 ports to relay")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no program to run")
    ports = [int(port) for port in args.ports.split(",") if port]
    if os.environ.get(_INSIDE_FLAG) != "1":
        unshare = ["unshare", "--net"]
        if os.geteuid() != 0:
            unshare = ["unshare", "--user", "--map-root-user", "--net"]
        os.environ[_INSIDE_FLAG] = "1"
        os.execvp(unshare[0], [*unshare, "--", sys.executable, *sys.argv])
    del os.environ[_INSIDE_FLAG]
    _inside(args.socket_dir, ports, command)


if __name__ == "__main__":
    main()
