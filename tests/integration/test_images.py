"""The demo application images (images/) follow the container protocol.

Each image is run the way the launcher runs it (``--init``, port 8888 published
on 127.0.0.1 only, the protocol's environment, no capabilities, no-new-privileges and the
default limits) and probed through the published
port: readiness on ``<urlpath>/``, the content served under the URL path, and
for the VNC desktop a WebSocket connection through to the RFB server.

Images that are not built yet are built with ``images/build.sh <name>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import socket
import string
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from remoteappmanager.domain.confinement import DEFAULT_CONFINEMENT

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "images" / "build.sh"
NS = "eu.simphony-project.docker."
READY_TIMEOUT = 60.0
BUILD_TIMEOUT = 1500.0
WEBAPP = "remoteapp-demo/webapp:latest"
VNCAPP = "remoteapp-demo/vncapp:latest"
# Every container started here carries this label.
TEST_LABEL = "remoteapp-test.images"
# Confined as the launcher confines every application container by default.
_LIMITS = DEFAULT_CONFINEMENT.limits
CONFINED = (
    *(f"--cap-drop={cap}" for cap in DEFAULT_CONFINEMENT.cap_drop),
    "--security-opt=no-new-privileges",
    f"--memory={_LIMITS.memory_mb}m",
    f"--memory-swap={_LIMITS.memory_mb}m",
    f"--cpus={_LIMITS.cpus}",
    f"--pids-limit={_LIMITS.pids}",
)


# ----------------------------------------------------------------------------- docker


def docker(
    *args: str, timeout: float = 120.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="module")
def docker_cli() -> None:
    """A docker command talking to a running engine, else skip (fail in CI)."""
    reachable = False
    if shutil.which("docker"):
        try:
            reachable = docker("info", timeout=30, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            reachable = False
    if not reachable:
        if os.environ.get("CI"):
            pytest.fail("Docker engine not reachable (CI must provide one)", pytrace=False)
        pytest.skip("Docker engine not reachable")


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def ensure_image(name: str) -> str:
    ref = f"remoteapp-demo/{name}:latest"
    if not image_exists(ref):
        # build.sh skips images that exist, so racing builds stay harmless.
        result = subprocess.run(
            [str(BUILD_SCRIPT), name], capture_output=True, text=True, timeout=BUILD_TIMEOUT
        )
        assert result.returncode == 0, f"images/build.sh {name} failed:\n{result.stderr[-4000:]}"
        assert image_exists(ref), f"images/build.sh {name} did not create {ref}"
    return ref


@pytest.fixture(scope="module")
def webapp_image(docker_cli: None) -> str:
    return ensure_image("webapp")


@pytest.fixture(scope="module")
def vncapp_image(docker_cli: None) -> str:
    return ensure_image("vncapp")


def image_info(ref: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(docker("image", "inspect", ref).stdout)[0]
    return info


def random_url_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


# ----------------------------------------------------------------------------- http


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def http_get(port: int, path: str, timeout: float = 10.0) -> Response:
    """GET http://127.0.0.1:<port><path>, not following redirects."""
    try:
        with _opener.open(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
            return Response(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read())


# ----------------------------------------------------------------------------- containers


@dataclass
class Container:
    id: str
    port: int
    url_id: str
    urlpath: str

    def logs(self) -> str:
        result = docker("logs", self.id, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(
            docker("inspect", "--format", "{{json .State}}", self.id).stdout
        )
        return state


def start_container(image: str, env: dict[str, str], volumes: list[str]) -> Container:
    url_id = random_url_id()
    full_env = {
        "JPY_USER": "alice",
        "JPY_BASE_USER_URL": "/user/alice",
        "URL_ID": url_id,
        "USER": "alice",
        **env,
    }
    args = ["run", "-d", "--init", "-p", "127.0.0.1::8888", "--label", TEST_LABEL, *CONFINED]
    for key, value in full_env.items():
        args += ["-e", f"{key}={value}"]
    for volume in volumes:
        args += ["-v", volume]
    container_id = docker(*args, image).stdout.strip()
    urlpath = f"{full_env['JPY_BASE_USER_URL']}/containers/{full_env['URL_ID']}"
    try:
        published = docker("port", container_id, "8888/tcp").stdout.split()[0]
        host, _, port = published.rpartition(":")
        assert host == "127.0.0.1", f"8888 published on {published}"
    except BaseException:
        docker("rm", "-f", container_id, check=False)
        raise
    return Container(container_id, int(port), full_env["URL_ID"], urlpath)


def wait_ready(container: Container, timeout: float = READY_TIMEOUT) -> Response:
    """Poll <urlpath>/ until it answers 200, as the launcher does."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if not container.state()["Running"]:
            pytest.fail(f"the container exited before it was ready:\n{container.logs()}")
        try:
            response = http_get(container.port, container.urlpath + "/", timeout=5)
            if response.status == 200:
                return response
            last = response.status
        except OSError as exc:
            last = exc
        time.sleep(0.25)
    pytest.fail(
        f"{container.urlpath}/ not ready after {timeout}s (last: {last}):\n{container.logs()}"
    )


@contextmanager
def running(image: str, volumes: list[str] | None = None, **env: str) -> Iterator[Container]:
    """A started and ready container of ``image``, always removed afterwards."""
    container = start_container(image, env, volumes or [])
    try:
        wait_ready(container)
        yield container
    finally:
        docker("rm", "-f", "-v", container.id, check=False)


def assert_stops_promptly(container: Container) -> None:
    started = time.monotonic()
    docker("stop", "--time", "10", container.id)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"docker stop took {elapsed:.1f}s: SIGTERM was not honoured"
    state = container.state()
    assert not state["Running"]
    assert state["ExitCode"] == 0, container.logs()


# ----------------------------------------------------------------------------- labels


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_common_labels(ref: str, app_type: str) -> dict[str, str]:
    labels: dict[str, str] = image_info(ref)["Config"]["Labels"]
    assert labels[NS + "type"] == app_type
    assert labels[NS + "ui_name"].strip()
    assert labels[NS + "description"].strip()
    assert png_size(base64.b64decode(labels[NS + "icon_128"], validate=True)) == (128, 128)
    assert labels[NS + "env.startupdata"] == ""
    return labels


# ----------------------------------------------------------------------------- webapp


def test_webapp_labels(webapp_image: str) -> None:
    labels = check_common_labels(webapp_image, "webapp")
    assert labels[NS + "ui_name"] == "Demo web app"
    assert not any(key.startswith(NS + "env.x11") for key in labels)
    icon = base64.b64decode(labels[NS + "icon_128"])
    assert icon == (REPO / "images/webapp/icon.png").read_bytes()


def test_webapp_is_tiny(webapp_image: str) -> None:
    info = image_info(webapp_image)
    assert info["Size"] < 3_000_000
    assert info["Config"]["ExposedPorts"] == {"8888/tcp": {}}


def test_webapp_serves_its_page_under_the_urlpath(webapp_image: str, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "results.csv").write_text("1,2,3\n")
    workspace.chmod(0o755)
    tmp_path.chmod(0o755)
    with running(
        webapp_image,
        volumes=[f"{workspace}:/workspace:ro"],
        STARTUPDATA="/workspace/results.csv",
        APP_LICENSE="demo-licence-42",
    ) as container:
        page = http_get(container.port, container.urlpath + "/")
        assert page.status == 200
        assert page.headers["Content-type"].startswith("text/html")
        assert '<strong id="user">alice</strong>' in page.text
        assert container.url_id in page.text
        assert "/workspace/results.csv" in page.text
        assert "demo-licence-42" in page.text
        assert "results.csv" in page.text.split('<pre id="workspace">', 1)[1]

        # The path without its trailing slash leads to the page.
        bare = http_get(container.port, container.urlpath)
        assert bare.status in (301, 302)
        assert bare.headers["Location"].endswith(container.urlpath + "/")

        # Nothing outside the URL path.
        assert http_get(container.port, "/").status == 404
        assert http_get(container.port, f"/user/alice/containers/{random_url_id()}/").status == 404

        assert_stops_promptly(container)


def test_webapp_escapes_what_it_shows(webapp_image: str) -> None:
    hostile = '<script>alert("x")</script>&\'</td>'
    with running(
        webapp_image, JPY_USER=hostile, STARTUPDATA=hostile, APP_LICENSE=hostile
    ) as container:
        page = http_get(container.port, container.urlpath + "/").text
        escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;&lt;/td&gt;"
        assert f'<strong id="user">{escaped}</strong>' in page
        assert page.count(escaped) == 3
        assert "<script>" not in page
        assert "No workspace is mounted." in page


def test_webapp_refuses_a_malformed_url_id(webapp_image: str) -> None:
    result = docker(
        "run", "--rm", "--init", "--label", TEST_LABEL,
        "-e", "JPY_BASE_USER_URL=/user/alice", "-e", "URL_ID=../../etc",
        webapp_image, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "URL_ID" in result.stderr


# ----------------------------------------------------------------------------- vncapp


class WebSocket:
    """Just enough of a WebSocket client (RFC 6455) to talk RFB through websockify."""

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, port: int, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(secrets.token_bytes(16))
        self.sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\n"
            b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: binary\r\n"
            b"\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, f"connection closed during the handshake: {head!r}"
            head += chunk
        head, _, self._raw = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        self._expected_accept = base64.b64encode(hashlib.sha1(key + self.GUID).digest()).decode()
        self._data = b""

    @property
    def accept_is_valid(self) -> bool:
        return self.headers.get("sec-websocket-accept") == self._expected_accept

    def close(self) -> None:
        with suppress(OSError):
            self._send_frame(0x8, struct.pack(">H", 1000))
        self.sock.close()

    def _recv_raw(self, n: int) -> bytes:
        while len(self._raw) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "the WebSocket connection was closed"
            self._raw += chunk
        data, self._raw = self._raw[:n], self._raw[n:]
        return data

    def _read_frame(self) -> None:
        first, second = self._recv_raw(2)
        opcode = first & 0x0F
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", self._recv_raw(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", self._recv_raw(8))
        mask = self._recv_raw(4) if second & 0x80 else None
        payload = self._recv_raw(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if opcode in (0x0, 0x1, 0x2):
            self._data += payload
        elif opcode == 0x8:
            raise AssertionError(f"the server closed the WebSocket: {payload!r}")
        elif opcode == 0x9:
            self._send_frame(0xA, payload)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = secrets.token_bytes(4)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, payload: bytes) -> None:
        self._send_frame(0x2, payload)

    def read(self, n: int) -> bytes:
        """Exactly n bytes of the relayed stream."""
        while len(self._data) < n:
            self._read_frame()
        data, self._data = self._data[:n], self._data[n:]
        return data


@dataclass
class Desktop:
    width: int
    height: int
    bits_per_pixel: int
    depth: int
    name: str
    distinct_pixels: int


def look_at_desktop(container: Container) -> Desktop:
    """Connect as noVNC does, run the RFB 3.8 handshake and fetch one full frame."""
    ws = WebSocket(container.port, container.urlpath + "/websockify")
    try:
        assert ws.status == 101, ws.headers
        assert ws.accept_is_valid
        greeting = ws.read(12)
        assert greeting.startswith(b"RFB 003.00"), greeting
        ws.send(b"RFB 003.008\n")
        (count,) = ws.read(1)
        security_types = ws.read(count)
        assert 1 in security_types, f"no 'None' security type: {security_types!r}"
        ws.send(b"\x01")
        assert ws.read(4) == b"\x00\x00\x00\x00", "security handshake failed"
        ws.send(b"\x01")  # ClientInit, shared
        width, height = struct.unpack(">HH", ws.read(4))
        pixel_format = ws.read(16)
        (name_length,) = struct.unpack(">I", ws.read(4))
        name = ws.read(name_length).decode()
        bits_per_pixel, depth = pixel_format[0], pixel_format[1]

        ws.send(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: Raw only
        ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))  # full update
        pixels: set[bytes] = set()
        message_type = ws.read(1)[0]
        assert message_type == 0, f"expected a FramebufferUpdate, got message {message_type}"
        (rectangles,) = struct.unpack(">xH", ws.read(3))
        step = bits_per_pixel // 8
        for _ in range(rectangles):
            _x, _y, w, h, encoding = struct.unpack(">HHHHi", ws.read(12))
            assert encoding == 0, f"unexpected encoding {encoding}"
            data = ws.read(w * h * step)
            pixels.update(data[i : i + step] for i in range(0, len(data), step))
        return Desktop(width, height, bits_per_pixel, depth, name, len(pixels))
    finally:
        ws.close()


def test_vncapp_labels(vncapp_image: str) -> None:
    labels = check_common_labels(vncapp_image, "vncapp")
    assert "xclock" in labels[NS + "ui_name"]
    for name in ("x11-width", "x11-height", "x11-depth"):
        assert labels[NS + f"env.{name}"] == ""
    icon = base64.b64decode(labels[NS + "icon_128"])
    assert icon == (REPO / "images/vncapp/icon.png").read_bytes()


def test_vncapp_image_size_and_config(vncapp_image: str) -> None:
    info = image_info(vncapp_image)
    assert info["Size"] < 400_000_000
    config = info["Config"]
    assert config["ExposedPorts"] == {"8888/tcp": {}}
    assert config["Cmd"] == ["/usr/local/bin/start-vncapp"]
    assert config["User"] not in ("", "root", "0")


def test_vncapp_serves_novnc_under_the_urlpath(vncapp_image: str) -> None:
    with running(vncapp_image) as container:
        index = http_get(container.port, container.urlpath + "/")
        assert index.status == 200
        ws_path = f"path={container.urlpath.lstrip('/')}/websockify"
        target = f"vnc.html?autoconnect=true&amp;resize=remote&amp;reconnect=true&amp;{ws_path}"
        assert f'content="0; url={target}"' in index.text

        vnc = http_get(container.port, container.urlpath + "/" + target.replace("&amp;", "&"))
        assert vnc.status == 200
        assert "noVNC" in vnc.text
        assert http_get(container.port, container.urlpath + "/core/rfb.js").status == 200

        bare = http_get(container.port, container.urlpath)
        assert bare.status in (301, 302)
        assert bare.headers["Location"].endswith(container.urlpath + "/")
        assert http_get(container.port, "/").status == 404
        assert http_get(container.port, "/user/alice/containers/").status == 404

        assert docker("exec", container.id, "id", "-u").stdout.strip() != "0"
        assert_stops_promptly(container)


def test_vncapp_websocket_reaches_the_desktop(vncapp_image: str) -> None:
    with running(vncapp_image, X11_WIDTH="800", X11_HEIGHT="600", X11_DEPTH="24") as container:
        desktop = look_at_desktop(container)
    assert (desktop.width, desktop.height) == (800, 600)
    assert desktop.depth == 24
    assert desktop.name == "Demo desktop"
    # xclock is drawn on the (uniform) root window.
    assert desktop.distinct_pixels > 1


def _window_box(container: Container, chosen: str) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the desktop's window that xwd's ``chosen`` option names
    (None: not shown), from the header xwd writes (its 21st to 24th 32-bit fields)."""
    shot = subprocess.run(
        ["docker", "exec", container.id, "sh", "-c", f"DISPLAY=:1 xwd -silent {chosen}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if shot.returncode != 0 or len(shot.stdout) < 100:
        return None
    width, height, x, y = struct.unpack(">4i", shot.stdout[80:96])
    return x, y, width, height


def test_vncapp_shows_a_terminal_beside_the_clock(vncapp_image: str) -> None:
    with running(vncapp_image, X11_WIDTH="1024", X11_HEIGHT="768") as container:
        box = None
        for _ in range(40):
            # The terminal's shell leaves its window id there.
            box = _window_box(container, '-id "$(cat /tmp/terminal-window)"')
            if box is not None:
                break
            time.sleep(0.25)
        assert box is not None, container.logs()
        clock = _window_box(container, "-name xclock")
    x, y, width, height = box
    # In the right half of the screen, whole; the clock in the left half.
    assert x >= 512
    assert x + width <= 1024
    assert y >= 0
    assert y + height <= 768
    assert width > 200
    assert height > 100
    assert clock is not None
    assert clock[0] + clock[2] <= 512


def test_vncapp_ignores_malformed_geometry(vncapp_image: str) -> None:
    with running(vncapp_image, X11_WIDTH="wide", X11_HEIGHT="768; id", X11_DEPTH="7") as container:
        desktop = look_at_desktop(container)
        logs = container.logs()
    assert (desktop.width, desktop.height, desktop.depth) == (1024, 768, 16)
    assert "ignoring X11_WIDTH='wide'" in logs
