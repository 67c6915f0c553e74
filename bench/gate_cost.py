"""What the gate costs: proxy → gate → target against proxy → target, measured side by side.

    .venv/bin/python bench/gate_cost.py [SECONDS_PER_RUN] [ROUNDS]   # default 5 s, 3 rounds
    BENCH_CASES=ghi .venv/bin/python bench/gate_cost.py 5 5   # the activity comparison only

Two configurable-http-proxy instances route the same paths: one to the gate (gated mode), one
straight to the target (direct mode). Targets: the busybox test application container, the
noVNC demo container (``remoteapp-demo/vncapp``, built by ``images/build.sh vncapp``), and a
fast keep-alive aiohttp server on the host (HTTP and a WebSocket stream of 64 KiB binary
frames). The service runs as ``serve`` runs it, in its own process with uvloop, its gate
listening on a port of its own (the gated proxy's target); load comes from
other processes (``wrk`` for HTTP, a Python WebSocket client). Each measurement runs gated
and direct alternately, ``ROUNDS`` times; medians are compared. Every container of the
benchmark's realm is removed at the end, whatever happened.

What reporting client input costs the gate (cases g and h): the gate's activity callback is
wired as in production (``Gate.client_input`` into an ``ActivityTracker`` flushed to the
database every ``activity_flush_interval``), except for a second made-up host application
whose input goes to a no-op callback. The same workloads run against both, alternately,
through the same proxy and gate: HTTP requests (each one is input) and a WebSocket carrying
the client's frames to the application (reported at most once a second per connection).
Case i times the callback alone, as wired in production and a no-op, in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import logging  # noqa: E402

import aiohttp  # noqa: E402
import structlog  # noqa: E402
from aiohttp import web  # noqa: E402
from tests.support.services import Proxy, free_port, running_proxy, wait_for_port  # noqa: E402
from tests.support.session_images import WEB_IMAGE, ensure_session_images, remove_realm  # noqa: E402
from tests.support.webapp import memory_database, parse_login_redirect  # noqa: E402
from tools import cpu_seconds, debian_tool  # noqa: E402

from remoteappmanager.domain.containers import (  # noqa: E402
    RUNINFO_MAPPING_ID,
    RUNINFO_REALM,
    RUNINFO_URL_ID,
    RUNINFO_URLPATH,
    RUNINFO_USER,
    ContainerInfo,
)

VNC_IMAGE = "remoteapp-demo/vncapp:latest"
PREFIX = "/services/remoteapp/"
USER = "alice"
# The fast host server pretends to be a running application with this url id, and to be a
# second one, whose client input the gate reports to a no-op callback (cases g and h).
HOST_URL_ID = "h0st" + "0" * 22
HOST_URLPATH = f"/user/{USER}/containers/{HOST_URL_ID}"
NOOP_URL_ID = "n00p" + "0" * 22
NOOP_URLPATH = f"/user/{USER}/containers/{NOOP_URL_ID}"
# What a client sends the application over a WebSocket, frame by frame (cases g and h).
INPUT_FRAME = 256
FRAME = 64 * 1024
# A WebSocket whose URL carries this query is let through as a view-only viewer's (case f).
VIEWER_QUERY = "remoteapp-bench-viewer=1"
HTTP_CONNECTIONS = 16


# ============================================================================ the gate process
class _ViewerMarking:
    """The gate's gatekeeper, except that requests carrying ``VIEWER_QUERY`` come from a
    view-only VNC viewer: the owner's session, its input filtered as a viewer's would be;
    and that the input of ``NOOP_URL_ID`` is reported to nobody."""

    def __init__(self, gatekeeper: Any) -> None:
        self._gatekeeper = gatekeeper

    def _mark(self, request: Any, verdict: Any) -> Any:
        from remoteappmanager.web.gate.listener import Forward, ViewerInput

        if isinstance(verdict, Forward) and VIEWER_QUERY in request.target:
            return dataclasses.replace(verdict, viewer=ViewerInput(False, "vnc"))
        return verdict

    def check(self, request: Any) -> Any:
        verdict = self._gatekeeper.check(request)
        return None if verdict is None else self._mark(request, verdict)

    async def decide(self, request: Any) -> Any:
        return self._mark(request, await self._gatekeeper.decide(request))

    def unreachable(self, url_id: str) -> None:
        self._gatekeeper.unreachable(url_id)

    def client_input(self, url_id: str) -> None:
        if url_id != NOOP_URL_ID:
            self._gatekeeper.client_input(url_id)


class _WithHostTarget:
    """The real engine, plus made-up running containers: the fast server on the host.

    Only ``list`` sees them; the gate finds them as it finds any session.
    """

    def __init__(self, runtime: Any, extra: Sequence[ContainerInfo]) -> None:
        self._runtime = runtime
        self._extra = extra

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    async def list(self, labels: Mapping[str, str]) -> Sequence[ContainerInfo]:
        found = list(await self._runtime.list(labels))
        for extra in self._extra:
            if all(extra.labels.get(k) == v for k, v in labels.items()):
                found.append(extra)
        return found


def _host_target(realm: str, url_id: str, urlpath: str, port: int) -> ContainerInfo:
    return ContainerInfo(
        id="host-" + url_id,
        name="host-server-" + url_id,
        image="host",
        labels={
            RUNINFO_REALM: realm,
            RUNINFO_USER: USER,
            RUNINFO_MAPPING_ID: "host-" + url_id,
            RUNINFO_URL_ID: url_id,
            RUNINFO_URLPATH: urlpath,
        },
        running=True,
        host_ip="127.0.0.1",
        host_port=port,
    )


async def _gate_main(
    port: int, gate_port: int, realm: str, api_url: str, token: str, info_path: str
) -> None:
    import uvloop  # noqa: F401 - the loop is uvloop's (see main)

    from remoteappmanager import bootstrap
    from remoteappmanager.adapters.chp import ChpRouteTable
    from remoteappmanager.adapters.docker import AiodockerRuntime
    from remoteappmanager.adapters.http_probe import AiohttpReadinessProbe
    from remoteappmanager.adapters.memory_db import InMemoryDatabase
    from remoteappmanager.adapters.memory_events import InMemoryEventStore
    from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider
    from remoteappmanager.adapters.workspaces import DirectoryWorkspaces, LocalHostPaths
    from remoteappmanager.domain.models import Policy
    from remoteappmanager.settings import Settings
    from remoteappmanager.web.admission import tune_garbage_collector
    from remoteappmanager.web.app import create_app
    from remoteappmanager.web.keys import GATE
    from remoteappmanager.web.logs import configure_logging

    configure_logging("console", os.environ.get("BENCH_GATE_LOG_LEVEL", "INFO"))
    host_port = int(os.environ["BENCH_HOST_PORT"])
    service_url = f"http://127.0.0.1:{port}"
    gate_url = f"http://127.0.0.1:{gate_port}"
    hub = InMemoryIdentityProvider()
    hub.add_user(USER)
    database = InMemoryDatabase()
    host_targets = [
        _host_target(realm, HOST_URL_ID, HOST_URLPATH, host_port),
        _host_target(realm, NOOP_URL_ID, NOOP_URLPATH, host_port),
    ]
    runtime = AiodockerRuntime()
    routes = ChpRouteTable(api_url, token)
    probe = AiohttpReadinessProbe()
    workspaces = Path(tempfile.mkdtemp(prefix="remoteapp-gate-bench-"))
    settings = Settings(
        jupyterhub_api_token="bench-" + secrets.token_hex(16),
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_base_url="/",
        jupyterhub_service_url=service_url,
        gate_url=gate_url,
        realm=realm,
        network_timeout=120,
    )
    # The production wiring (client input into the activity tracker, written to the database
    # in batches); the engine and proxy are real, the hub and database in memory.
    built = bootstrap.build(
        settings,
        identity=hub,
        database=memory_database(database, InMemoryEventStore()),
        runtime=_WithHostTarget(runtime, host_targets),  # type: ignore[arg-type]
        routes=routes,
        probe=probe,
        workspaces=DirectoryWorkspaces(workspaces, uid=os.getuid(), gid=os.getgid()),
        host_paths=LocalHostPaths(),
    )
    sessions = built.sessions
    app = create_app(built)
    app[GATE].server.gatekeeper = _ViewerMarking(app[GATE])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    started = []
    try:
        async with database.unit_of_work() as uow:
            user = await uow.users.add(USER)
            grants = []
            for image in (WEB_IMAGE, VNC_IMAGE):
                application = await uow.applications.add(image)
                grants.append(await uow.grants.grant(user, application, Policy()))
            await uow.commit()
        for grant in grants:
            started.append(await sessions.start(grant))
        web_session, vnc_session = started
        cookies = await _sign_in_and_enter(
            service_url, hub, [web_session.url_id, vnc_session.url_id, HOST_URL_ID, NOOP_URL_ID]
        )
        info = {
            "web": {"urlpath": web_session.urlpath, "port": web_session.host_port},
            "vnc": {"urlpath": vnc_session.urlpath, "port": vnc_session.host_port},
            "host": {"urlpath": HOST_URLPATH, "port": host_port},
            "noop": {"urlpath": NOOP_URLPATH, "port": host_port},
            "cookies": cookies,
        }
        # As ``serve`` does once the service has started: what start-up built is frozen out of
        # the collector's sight, and young collections are rarer.
        tune_garbage_collector()
        await asyncio.to_thread(Path(info_path).write_text, json.dumps(info))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
    finally:
        for session in started:
            with contextlib.suppress(Exception):
                await sessions.stop(session.user, session.url_id)
        await runner.cleanup()  # closes the engine, proxy and probe clients
        shutil.rmtree(workspaces, ignore_errors=True)


async def _sign_in_and_enter(service_url: str, hub: Any, url_ids: list[str]) -> dict[str, str]:
    """Sign in as a browser would (through the fake hub) and collect each gate cookie."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=service_url, cookie_jar=jar) as browser:
        response = await browser.get(PREFIX, allow_redirects=False)
        redirect = parse_login_redirect(response.headers["Location"])
        code = hub.approve(USER, redirect.code_challenge)
        response = await browser.get(
            PREFIX + "oauth_callback",
            params={"code": code, "state": redirect.state},
            allow_redirects=False,
        )
        assert response.status == 302, await response.text()
        cookies = {}
        for url_id in url_ids:
            response = await browser.get(PREFIX + "gate/" + url_id, allow_redirects=False)
            assert response.status == 302, await response.text()
            cookies[url_id] = response.cookies["remoteapp-gate"].value
        return cookies


# ============================================================================ the host server
def _host_app() -> web.Application:
    frame = os.urandom(FRAME)

    async def small(_request: web.Request) -> web.Response:
        return web.Response(body=b"hello, world\n", content_type="text/plain")

    async def stream(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("binary",), compress=False, max_msg_size=0)
        await ws.prepare(request)

        async def push() -> None:
            # A VNC-like stream: the server pushes frames as fast as the client takes them.
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                while not ws.closed:
                    await ws.send_bytes(frame)

        pusher = asyncio.ensure_future(push())
        async for _message in ws:  # answers the client's close
            pass
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pusher
        return ws

    async def sink(request: web.Request) -> web.WebSocketResponse:
        # Takes the client's frames and drops them: an application reading its input.
        ws = web.WebSocketResponse(protocols=("binary",), compress=False, max_msg_size=0)
        await ws.prepare(request)
        async for _message in ws:
            pass
        return ws

    app = web.Application()
    for urlpath in (HOST_URLPATH, NOOP_URLPATH):
        app.router.add_get(urlpath + "/small", small)
        app.router.add_get(urlpath + "/stream", stream)
        app.router.add_get(urlpath + "/sink", sink)
    return app


# ============================================================================ the WS load client
class _Bytes:
    """RFB over WebSocket messages: a byte stream read exactly."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.buffer = bytearray()
        self.total = 0

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"stream ended: {message.type}")
            self.buffer += message.data
            self.total += len(message.data)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


async def _ws_client(url: str, cookie: str, mode: str, seconds: float) -> dict[str, float]:
    timeout = aiohttp.ClientWSTimeout(ws_close=5)
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(
            url,
            protocols=("binary",),
            headers={"Cookie": f"remoteapp-gate={cookie}"},
            # As a page served through the proxy would: its own http origin.
            origin="http://" + url.split("/", 3)[2],
            max_msg_size=0,
            compress=0,
            timeout=timeout,
        ) as ws,
    ):
        if mode == "send":
            # The client's frames, as fast as the way to the application takes them.
            frame = os.urandom(INPUT_FRAME)
            sent = 0
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                for _ in range(64):
                    await ws.send_bytes(frame)
                sent += 64 * len(frame)
            return {"bytes": sent, "seconds": time.perf_counter() - started}
        if mode == "stream":
            total = 0
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.BINARY:
                    break
                total += len(message.data)
            return {"bytes": total, "seconds": time.perf_counter() - started}
        stream = _Bytes(ws)
        await stream.read(12)
        await ws.send_bytes(b"RFB 003.008\n")
        (count,) = await stream.read(1)
        await stream.read(count)
        await ws.send_bytes(b"\x01")
        await stream.read(4)
        await ws.send_bytes(b"\x01")
        width, height = struct.unpack(">HH", await stream.read(4))
        pixel_format = await stream.read(16)
        (name_length,) = struct.unpack(">I", await stream.read(4))
        await stream.read(name_length)
        step = pixel_format[0] // 8
        await ws.send_bytes(struct.pack(">BxHi", 2, 1, 0))  # Raw encoding only
        request = struct.pack(">BBHHHH", 3, 0, 0, 0, width, height)  # full, not incremental
        before = stream.total
        started = time.perf_counter()
        frames = 0
        while time.perf_counter() - started < seconds:
            await ws.send_bytes(request)
            while True:
                kind = (await stream.read(1))[0]
                if kind == 0:
                    break
                if kind == 2:  # Bell
                    continue
                raise ConnectionError(f"unexpected RFB message {kind}")
            (rectangles,) = struct.unpack(">xH", await stream.read(3))
            for _ in range(rectangles):
                _x, _y, w, h, encoding = struct.unpack(">HHHHi", await stream.read(12))
                if encoding != 0:
                    raise ConnectionError(f"unexpected encoding {encoding}")
                await stream.read(w * h * step)
            frames += 1
        return {
            "bytes": stream.total - before,
            "seconds": time.perf_counter() - started,
            "frames": frames,
        }


# ============================================================================ the orchestrator
def _run_ws_client(url: str, cookie: str, mode: str, seconds: float) -> float:
    """Bytes per second seen by a WebSocket client in a process of its own."""
    result = subprocess.run(
        [sys.executable, __file__, "ws-client", url, cookie, mode, str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"WebSocket client failed: {result.stderr[-1500:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return float(figures["bytes"]) / float(figures["seconds"])


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _run_wrk(url: str, cookie: str, seconds: float, connections: int) -> tuple[float, float]:
    """(requests per second, p50 latency in seconds) from ``wrk``."""
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-H",
            f"Cookie: remoteapp-gate={cookie}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    out = result.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if result.returncode != 0 or rate is None or p50 is None or errors is not None:
        raise RuntimeError(f"wrk failed or saw errors:\n{out}\n{result.stderr}")
    return float(rate.group(1)), float(p50.group(1)) * _UNITS[p50.group(2)]


def _add_route(proxy: Proxy, path: str, target: str) -> None:
    request = urllib.request.Request(
        proxy.api_url + "/api/routes" + path,
        data=json.dumps({"target": target}).encode(),
        headers={"Authorization": f"token {proxy.token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@contextlib.contextmanager
def _process(
    args: list[str], log: Path | None = None, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log or os.devnull, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, __file__, *args],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _alternate(
    rounds: int, measure: Callable[[str], float], modes: tuple[str, str] = ("direct", "gated")
) -> tuple[list[float], list[float]]:
    """``measure`` of each of the two ``modes``, alternating which goes first."""
    first: list[float] = []
    second: list[float] = []
    for index in range(rounds):
        order = modes if index % 2 == 0 else modes[::-1]
        for mode in order:
            (first if mode == modes[0] else second).append(measure(mode))
    return first, second


def _wait_for_file(
    path: Path, process: subprocess.Popen[bytes], log: Path, within: float
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        if process.poll() is not None:
            stderr = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"the gate process ended early:\n{stderr[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError("the gate process did not get ready")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _machine() -> str:
    debian = Path("/etc/debian_version")
    version = debian.read_text().strip() if debian.exists() else "?"
    return (
        f"{os.cpu_count()} cores, Debian {version}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}"
    )


def _require_vnc_image() -> None:
    result = subprocess.run(
        ["docker", "image", "inspect", VNC_IMAGE], capture_output=True, check=False
    )
    if result.returncode != 0:
        build = subprocess.run([str(REPO / "images" / "build.sh"), "vncapp"], check=False)
        if build.returncode != 0:
            raise SystemExit(f"{VNC_IMAGE} is missing and images/build.sh vncapp failed")


def main(seconds: float, rounds: int) -> None:
    if debian_tool("wrk", "wrk") is None:
        raise SystemExit(1)
    ensure_session_images()
    _require_vnc_image()
    realm = f"bench-gate-{secrets.token_hex(4)}"
    service_port, gate_port, host_port = free_port(), free_port(), free_port()
    gate_url = f"http://127.0.0.1:{gate_port}"
    info_path = Path(tempfile.mkdtemp(prefix="remoteapp-gate-bench-")) / "info.json"
    print(f"Machine: {_machine()}")
    print(f"Load average (1 / 5 / 15 min) at the start: {_load()}")
    print(
        f"{seconds:g} s per run, {rounds} rounds, the two sides of each measurement alternating\n"
    )
    try:
        with (
            running_proxy() as gated_proxy,
            running_proxy() as direct_proxy,
            _process(["serve-host", str(host_port)]),
        ):
            wait_for_port(host_port)
            gate_log = info_path.parent / "gate.log"
            with _process(
                [
                    "serve-gate",
                    str(service_port),
                    str(gate_port),
                    realm,
                    gated_proxy.api_url,
                    gated_proxy.token,
                    str(info_path),
                ],
                log=gate_log,
                env={"BENCH_HOST_PORT": str(host_port)},
            ) as gate:
                info = _wait_for_file(info_path, gate, gate_log, within=240)
                _add_route(gated_proxy, HOST_URLPATH, gate_url)
                _add_route(gated_proxy, NOOP_URLPATH, gate_url)
                for key in ("web", "vnc", "host"):
                    target = f"http://127.0.0.1:{info[key]['port']}"
                    _add_route(direct_proxy, info[key]["urlpath"], target)
                _measure_all(info, gated_proxy, direct_proxy, seconds, rounds, gate.pid)
                print(f"\nLoad average (1 / 5 / 15 min) at the end: {_load()}")
    finally:
        removed = asyncio.run(remove_realm(realm))
        if removed:
            print(f"(clean-up removed {removed} container(s) of realm {realm})")
        shutil.rmtree(info_path.parent, ignore_errors=True)


def _measure_all(
    info: dict[str, Any], gated: Proxy, direct: Proxy, seconds: float, rounds: int, gate_pid: int
) -> None:
    cookies: dict[str, str] = info["cookies"]

    def url_of(mode: str, key: str, tail: str, scheme: str = "http") -> str:
        proxy = gated if mode == "gated" else direct
        return f"{scheme}://127.0.0.1:{proxy.public_port}{info[key]['urlpath']}{tail}"

    def cookie_of(key: str) -> str:
        return cookies[info[key]["urlpath"].rsplit("/", 1)[1]]

    # One short untimed run of each path first: connections, caches, the JIT of nothing.
    for mode in ("direct", "gated"):
        _run_wrk(url_of(mode, "host", "/small"), cookie_of("host"), 1, HTTP_CONNECTIONS)
        _run_wrk(url_of(mode, "web", "/"), cookie_of("web"), 1, HTTP_CONNECTIONS)
        _run_ws_client(url_of(mode, "host", "/stream", "ws"), cookie_of("host"), "stream", 1)
    _run_wrk(url_of("gated", "noop", "/small"), cookie_of("noop"), 1, HTTP_CONNECTIONS)

    rows: list[tuple[str, str, float, float, str]] = []

    cases = os.environ.get("BENCH_CASES", "abcdefghi")

    def throughput(label: str, unit: str, scale: float, measure: Callable[[str], float]) -> None:
        if label[1] not in cases:
            return
        direct_values, gated_values = _alternate(rounds, measure)
        d, g = statistics.median(direct_values), statistics.median(gated_values)
        rows.append((label, unit, d / scale, g / scale, f"{g / d:.3f}"))
        print(
            f"  {label}: direct {d / scale:.1f} {unit}, gated {g / scale:.1f} {unit}, "
            f"ratio {g / d:.3f}  (direct {_fmt(direct_values, scale)}; "
            f"gated {_fmt(gated_values, scale)})",
            flush=True,
        )

    mib = 1024 * 1024
    throughput(
        "(a) WebSocket, 64 KiB frames from a host server",
        "MiB/s",
        mib,
        lambda mode: _run_ws_client(
            url_of(mode, "host", "/stream", "ws"), cookie_of("host"), "stream", seconds
        ),
    )
    throughput(
        "(b) WebSocket, noVNC container (full raw framebuffer updates)",
        "MiB/s",
        mib,
        lambda mode: _run_ws_client(
            url_of(mode, "vnc", "/websockify", "ws"), cookie_of("vnc"), "vnc", seconds
        ),
    )
    throughput(
        "(c) HTTP GET, busybox application container",
        "req/s",
        1,
        lambda mode: _run_wrk(
            url_of(mode, "web", "/"), cookie_of("web"), seconds, HTTP_CONNECTIONS
        )[0],
    )
    throughput(
        "(d) HTTP GET, fast keep-alive server on the host",
        "req/s",
        1,
        lambda mode: _run_wrk(
            url_of(mode, "host", "/small"), cookie_of("host"), seconds, HTTP_CONNECTIONS
        )[0],
    )
    # A view-only viewer against the owner, both through the gate ("direct" here is the
    # owner's unfiltered connection, "gated" the viewer's filtered one).
    throughput(
        "(f) WebSocket, noVNC container, view-only viewer (filtered) vs owner (unfiltered)",
        "MiB/s",
        mib,
        lambda mode: _run_ws_client(
            url_of(
                "gated",
                "vnc",
                "/websockify" + ("?" + VIEWER_QUERY if mode == "gated" else ""),
                "ws",
            ),
            cookie_of("vnc"),
            "vnc",
            seconds,
        ),
    )
    latencies: dict[str, list[float]] = {}
    for key, tail in (("host", "/small"), ("web", "/")) if "e" in cases else ():
        direct_values, gated_values = _alternate(
            rounds,
            lambda mode, key=key, tail=tail: _run_wrk(  # type: ignore[misc]
                url_of(mode, key, tail), cookie_of(key), seconds, 1
            )[1],
        )
        d, g = statistics.median(direct_values) * 1e3, statistics.median(gated_values) * 1e3
        latencies[key] = [d, g]
        print(
            f"  (e) p50 latency, one connection, {key}: direct {d:.3f} ms, gated {g:.3f} ms, "
            f"added {g - d:.3f} ms",
            flush=True,
        )
    activity = _measure_activity(url_of, cookie_of, cases, seconds, rounds, gate_pid)
    if rows or latencies:
        print("\n| Measurement | Direct | Gated | Gated ÷ direct |")
        print("|---|---|---|---|")
    for label, unit, d, g, ratio in rows:
        print(f"| {label} | {d:.1f} {unit} | {g:.1f} {unit} | **{ratio}** |")
    for key, (d, g) in latencies.items():
        what = "fast host server" if key == "host" else "busybox container"
        print(
            f"| (e) p50 latency, 1 connection, {what} | {d:.3f} ms | {g:.3f} ms | "
            f"**+{g - d:.3f} ms** |"
        )
    if activity:
        print("\n| Through the gate | No-op callback | As in production | Production ÷ no-op |")
        print("|---|---|---|---|")
    for label, unit, n, w, ratio in activity:
        print(f"| {label} | {n:.{_places(n)}f} {unit} | {w:.{_places(w)}f} {unit} | **{ratio}** |")


def _places(value: float) -> int:
    return 1 if value >= 10 else 3


def _measure_activity(
    url_of: Callable[..., str],
    cookie_of: Callable[[str], str],
    cases: str,
    seconds: float,
    rounds: int,
    gate_pid: int,
) -> list[tuple[str, str, float, float, str]]:
    """Cases g and h: the same load on the host server through the gate, its input reported
    as in production (``host``) and to a no-op callback (``noop``), alternately. Besides the
    rates, the gate process's CPU time per unit of work: what the machine's other load
    disturbs least."""
    rows: list[tuple[str, str, float, float, str]] = []

    def compare(
        label: str, unit: str, scale: float, cpu_unit: str, measure: Callable[[str], float]
    ) -> None:
        if label[1] not in cases:
            return
        cpu: dict[str, list[float]] = {"noop": [], "host": []}

        def timed(key: str) -> float:
            before = cpu_seconds(gate_pid)
            rate = measure(key)
            # CPU microseconds per unit (a request, or ``scale`` bytes).
            cpu[key].append((cpu_seconds(gate_pid) - before) * 1e6 / (rate / scale * seconds))
            return rate

        noop_values, wired_values = _alternate(rounds, timed, ("noop", "host"))
        n, w = statistics.median(noop_values), statistics.median(wired_values)
        rows.append((label, unit, n / scale, w / scale, f"{w / n:.3f}"))
        cpu_n, cpu_w = statistics.median(cpu["noop"]), statistics.median(cpu["host"])
        rows.append((f"{label}: gate CPU", cpu_unit, cpu_n, cpu_w, f"{cpu_w / cpu_n:.3f}"))
        print(
            f"  {label}: no-op {n / scale:.1f} {unit}, as in production {w / scale:.1f} {unit}, "
            f"ratio {w / n:.3f}  (no-op {_fmt(noop_values, scale)}; "
            f"production {_fmt(wired_values, scale)})\n"
            f"      gate CPU: no-op {cpu_n:.1f} {cpu_unit}, as in production {cpu_w:.1f} "
            f"{cpu_unit}, ratio {cpu_w / cpu_n:.3f}  (no-op {_fmt(cpu['noop'], 1)}; "
            f"production {_fmt(cpu['host'], 1)})",
            flush=True,
        )

    compare(
        "(g) HTTP GET, fast keep-alive server on the host (every request is input)",
        "req/s",
        1,
        "µs/request",
        lambda key: _run_wrk(
            url_of("gated", key, "/small"), cookie_of(key), seconds, HTTP_CONNECTIONS
        )[0],
    )
    compare(
        f"(h) WebSocket, the client's {INPUT_FRAME}-byte frames to a server on the host",
        "MiB/s",
        1024 * 1024,
        "µs/MiB",
        lambda key: _run_ws_client(
            url_of("gated", key, "/sink", "ws"), cookie_of(key), "send", seconds
        ),
    )
    if "i" in cases:
        n, w = _callback_alone(rounds)
        rows.append(("(i) the callback alone, per call", "µs", n, w, f"+{w - n:.3f} µs"))
        print(
            f"  (i) the callback alone: no-op {n:.3f} µs, as in production {w:.3f} µs, "
            f"added {w - n:.3f} µs per call",
            flush=True,
        )
    return rows


class _NoInput:
    def client_input(self, url_id: str) -> None:
        pass


def _callback_alone(rounds: int, calls: int = 500_000) -> tuple[float, float]:
    """Median microseconds per ``client_input`` call through the bench's gatekeeper: into the
    gate's callback and a tracker as in production, and into a no-op; 1,000 sessions."""
    from remoteappmanager.services.activity import ActivityTracker
    from remoteappmanager.web.gate.handler import Gate

    class Wired:
        """The gate's gatekeeper, as far as client input goes."""

        client_input = Gate.client_input

        def __init__(self) -> None:
            self.activity = ActivityTracker()

    url_ids = [secrets.token_hex(13) for _ in range(1000)] * (calls // 1000)

    def per_call(mode: str) -> float:
        report = _ViewerMarking(Wired() if mode == "wired" else _NoInput()).client_input
        started = time.perf_counter()
        for url_id in url_ids:
            report(url_id)
        return (time.perf_counter() - started) * 1e6 / len(url_ids)

    noop, wired = _alternate(rounds, per_call, ("noop", "wired"))
    return statistics.median(noop), statistics.median(wired)


def _fmt(values: list[float], scale: float) -> str:
    return ", ".join(f"{v / scale:.1f}" for v in values)


# ============================================================================ entry points
def _new_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get("BENCH_NO_UVLOOP"):
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _run(coroutine: Any) -> Any:
    loop = _new_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "serve-gate":
        port, gate_port, realm, api_url, token, info_file = sys.argv[2:8]
        profile_to = os.environ.get("BENCH_GATE_PROFILE")
        if profile_to:
            import cProfile

            with cProfile.Profile(time.process_time) as profiler:
                _run(_gate_main(int(port), int(gate_port), realm, api_url, token, info_file))
            profiler.dump_stats(profile_to)
        else:
            _run(_gate_main(int(port), int(gate_port), realm, api_url, token, info_file))
    elif command == "serve-host":
        web.run_app(
            _host_app(),
            host="127.0.0.1",
            port=int(sys.argv[2]),
            print=None,
            access_log=None,
            loop=_new_loop(),
        )
    elif command == "ws-client":
        url, cookie, mode, duration = sys.argv[2:6]
        print(json.dumps(_run(_ws_client(url, cookie, mode, float(duration)))))
    else:
        main(
            float(sys.argv[1]) if len(sys.argv) > 1 else 5.0,
            int(sys.argv[2]) if len(sys.argv) > 2 else 3,
        )
