"""Test application images for the session tests (scratch + static busybox), built locally.

``WEB_IMAGE`` follows the container protocol: it serves under ``$JPY_BASE_USER_URL/containers/
$URL_ID/`` on port 8888, with its environment in ``env.txt``. ``SLEEPER_IMAGE`` never answers;
``CRASHER_IMAGE`` exits at once. They share every layer, so building all three costs one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import subprocess
import tarfile
from pathlib import Path

import aiodocker

from tests.support.services import REPO, ServiceMissing

NS = "eu.simphony-project.docker."
WEB_IMAGE = "remoteapp-test/sessions-web:latest"
SLEEPER_IMAGE = "remoteapp-test/sessions-sleeper:latest"
CRASHER_IMAGE = "remoteapp-test/sessions-crasher:latest"
# The demo desktop of ``images/`` (Xvnc, websockify and noVNC on a debootstrapped Debian).
VNC_IMAGE = "remoteapp-demo/vncapp:latest"
VNC_BUILD_TIMEOUT = 1500.0
LABELS = {
    NS + "ui_name": "Session test app",
    NS + "description": "Serves its environment under its URL path",
    NS + "type": "webapp",
    NS + "env.x11-width": "",
    NS + "env.x11-height": "",
    NS + "env.startupdata": "",
}

_START = """#!/bin/sh
set -eu
root=/tmp/www
dir="$root$(httpd -d "$JPY_BASE_USER_URL/containers/$URL_ID")"
mkdir -p "$dir"
printf 'hello %s from %s\\n' "$JPY_USER" "$URL_ID" > "$dir/index.html"
env | sort > "$dir/env.txt"
if [ -d /workspace ]; then echo "$URL_ID" > /workspace/written-by-container; fi
exec httpd -f -p 8888 -h "$root"
"""

_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "/tmp"]
COPY start /bin/start-app
EXPOSE 8888
CMD {command}
"""

_COMMANDS = {
    WEB_IMAGE: '["/bin/start-app"]',
    SLEEPER_IMAGE: '["/bin/sleep", "3600"]',
    CRASHER_IMAGE: '["/bin/false"]',
}


def _context(command: str) -> io.BytesIO:
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise ServiceMissing("no static busybox at /bin/busybox (apt install busybox-static)")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode in (
            ("Dockerfile", _DOCKERFILE.format(command=command).encode(), 0o644),
            ("busybox", busybox.read_bytes(), 0o755),
            ("start", _START.encode(), 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


async def _build_missing() -> None:
    async with aiodocker.Docker() as docker:
        for image, command in _COMMANDS.items():
            try:
                await docker.images.inspect(image)
                continue
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise
            await docker.images.build(
                fileobj=_context(command),
                encoding="identity",
                tag=image,
                labels=LABELS,
                rm=True,
                pull=False,
            )
            await docker.images.inspect(image)


def ensure_session_images() -> None:
    """Build the images the engine does not have yet (in a thread: safe under a loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _build_missing()).result()


def _image_exists(image: str) -> bool:
    async def inspect() -> bool:
        async with aiodocker.Docker() as docker:
            try:
                await docker.images.inspect(image)
            except aiodocker.DockerError as exc:
                if exc.status == 404:
                    return False
                raise
        return True

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, inspect()).result()


def ensure_vnc_image() -> str:
    """The demo desktop, built by ``images/build.sh vncapp`` if the engine does not have it
    (minutes: debootstrap); ``ServiceMissing`` if that cannot be done."""
    if _image_exists(VNC_IMAGE):
        return VNC_IMAGE
    try:
        built = subprocess.run(
            [str(REPO / "images" / "build.sh"), "vncapp"],
            capture_output=True,
            text=True,
            timeout=VNC_BUILD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceMissing(f"images/build.sh vncapp could not run: {exc}") from exc
    if built.returncode != 0 or not _image_exists(VNC_IMAGE):
        raise ServiceMissing(f"images/build.sh vncapp failed: {built.stderr[-500:]}")
    return VNC_IMAGE


async def remove_realm(realm: str) -> int:
    """Force-remove every container of ``realm``; returns how many there were."""
    removed = 0
    async with aiodocker.Docker() as docker:
        containers = await docker.containers.list(
            all=True, filters={"label": [f"{NS}runinfo.realm={realm}"]}
        )
        for container in containers:
            try:
                await container.delete(force=True, v=True)
                removed += 1
            except aiodocker.DockerError as exc:
                if exc.status not in (404, 409):
                    raise
    return removed
