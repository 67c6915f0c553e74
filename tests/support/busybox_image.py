"""A tiny test application image (scratch + static busybox httpd on 8888), built, never pulled."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import shutil
import tarfile
from pathlib import Path

import aiodocker

from tests.support.services import ServiceMissing

TEST_IMAGE = "remoteapp-test/busybox:latest"
CRASHING_IMAGE = "remoteapp-test/busybox-crash:latest"
_SERVE = '["/bin/busybox", "httpd", "-f", "-p", "8888", "-h", "/www"]'
_CRASH = '["/bin/busybox", "false"]'
BALLOON_IMAGE = "remoteapp-test/busybox-balloon:latest"
# Serves for a few seconds (long enough to be started), then its main process fills memory
# until the kernel kills it: the container ends with the engine's OOMKilled set.
_BALLOON = (
    '["/bin/busybox", "sh", "-c", "/bin/busybox httpd -p 8888 -h /www'
    " && /bin/busybox sleep 4"
    ' && /bin/busybox head -c 1073741824 /dev/zero | /bin/busybox tail > /dev/null"]'
)
LABEL_NAMESPACE = "eu.simphony-project.docker."
# A 1x1 PNG, so the icon label holds real base64 image data.
ICON_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()

IMAGE_LABELS = {
    LABEL_NAMESPACE + "ui_name": "Busybox test app",
    LABEL_NAMESPACE + "description": "Answers HTTP on port 8888",
    LABEL_NAMESPACE + "type": "webapp",
    LABEL_NAMESPACE + "icon_128": ICON_PNG,
    LABEL_NAMESPACE + "env.x11-width": "",
    LABEL_NAMESPACE + "env.x11-height": "",
    LABEL_NAMESPACE + "env.startupdata": "",
}

# The CGI reports what the container sees: its environment, a mounted file, and whether the
# mount can be written.
_PROBE_CGI = """#!/bin/sh
echo "Content-Type: text/plain"
echo ""
env
echo "---"
cat /data/hello.txt 2>/dev/null || echo "NO DATA"
if touch /data/written 2>/dev/null; then echo "WRITABLE"; else echo "READONLY"; fi
"""


def _busybox() -> Path:
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.exists():
            return candidate
    found = shutil.which("busybox")
    if found:
        return Path(found)
    raise ServiceMissing("no static busybox to build the test image (apt install busybox-static)")


def _context(command: str) -> io.BytesIO:
    dockerfile = f"""FROM scratch
COPY busybox /bin/busybox
COPY busybox /bin/sh
COPY www /www
EXPOSE 8888
CMD {command}
"""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", dockerfile.encode())
        add("busybox", _busybox().read_bytes(), 0o755)
        add("www/index.html", b"hello from busybox\n")
        add("www/cgi-bin/probe", _PROBE_CGI.encode(), 0o755)
    buffer.seek(0)
    return buffer


async def _ensure(image: str, command: str, url: str | None = None) -> None:
    async with aiodocker.Docker(url=url) as docker:
        try:
            await docker.images.inspect(image)
            return
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
        await docker.images.build(
            fileobj=_context(command), encoding="gzip", tag=image, labels=IMAGE_LABELS, rm=True
        )
        await docker.images.inspect(image)


def ensure_test_image(
    image: str = TEST_IMAGE,
    *,
    crash: bool = False,
    balloon: bool = False,
    docker_url: str | None = None,
) -> str:
    """Build the test image unless the engine already has it; returns its name.

    ``crash``: the image's command exits at once instead of serving; ``balloon``: it serves
    for four seconds, then uses memory until it is killed; ``docker_url``: the engine to
    build it on (default: ``DOCKER_HOST``, then the local socket). Runs in a thread of its
    own so that it also works when called under a running loop.
    """
    command = _CRASH if crash else _BALLOON if balloon else _SERVE
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _ensure(image, command, docker_url)).result()
    return image


async def remove_containers_labelled(key: str, value: str | None = None) -> None:
    """Force-remove every container carrying the label (any state)."""
    selector = key if value is None else f"{key}={value}"
    async with aiodocker.Docker() as docker:
        for container in await docker.containers.list(all=True, filters={"label": [selector]}):
            try:
                await container.delete(force=True, v=True)
            except aiodocker.DockerError as exc:
                if exc.status not in (404, 409):
                    raise


async def tag_image(image: str, alias: str) -> None:
    repo, tag = alias.rsplit(":", 1)
    async with aiodocker.Docker() as docker:
        await docker.images.tag(image, repo, tag=tag)


async def untag_image(alias: str) -> None:
    async with aiodocker.Docker() as docker:
        try:
            await docker.images.delete(alias, noprune=True)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
