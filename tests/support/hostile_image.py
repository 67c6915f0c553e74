"""A hostile application image (scratch + static busybox), built locally, never pulled.

It follows the container protocol, and its page is an attacker's: a script that, in the
browser of whoever opens it, tries to read the service's REST API and pages with that
browser's credentials (``fetch(..., {credentials: "include"})``) and to read
``document.cookie``. It writes what it got into ``#report`` as JSON, for the test to read:
``{"cookie": ..., "reads": {url: {"status", "leaked", "length"} | {"status": 0, "error"}}}``
where ``leaked`` says the answer held the service's data (an XSRF token, a listing, the
admin page). The service's absolute origin comes in the page's query (``?svc=<origin>``), so
that it is tried from another origin too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import tarfile

import aiodocker

from tests.support.busybox_image import _busybox

HOSTILE_IMAGE = "remoteapp-test/hostile:latest"
NS = "eu.simphony-project.docker."
LABELS = {
    NS + "ui_name": "Hostile test app",
    NS + "description": "Tries to use its visitors' credentials against the service",
    NS + "type": "webapp",
}
_VERSION = "2"

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Hostile app</title></head>
<body>
<h1>Hostile app</h1>
<pre id="report"></pre>
<script>
(async () => {
  const prefix = "/services/remoteapp/";
  const paths = ["api/v1/applications/", "api/v1/admin/containers/", "api/v1/user", "admin/", ""];
  const service = new URLSearchParams(location.search).get("svc") || "";
  const urls = paths.map((p) => prefix + p);
  if (service) urls.push(...paths.map((p) => service + prefix + p));
  const secrets = /xsrf-token|"identifiers"|"items"|remoteapp-admin-api|"admin":/;
  const report = { cookie: null, reads: {} };
  try {
    report.cookie = document.cookie;
  } catch (error) {
    report.cookie = "refused: " + error.name;
  }
  for (const url of urls) {
    try {
      const answer = await fetch(url, { credentials: "include", cache: "no-store" });
      const text = await answer.text();
      const leaked = secrets.test(text);
      report.reads[url] = { status: answer.status, leaked, length: text.length };
    } catch (error) {
      report.reads[url] = { status: 0, error: error.name };
    }
  }
  document.getElementById("report").textContent = JSON.stringify(report);
})();
</script>
</body>
</html>
"""

_START = """#!/bin/sh
set -eu
root=/tmp/www
dir="$root$(httpd -d "$JPY_BASE_USER_URL/containers/$URL_ID")"
mkdir -p "$dir"
cp /page.html "$dir/index.html"
exec httpd -f -p 8888 -h "$root"
"""

_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "/tmp"]
COPY start /bin/start-app
COPY page.html /page.html
EXPOSE 8888
CMD ["/bin/start-app"]
"""


def _context() -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", _DOCKERFILE.encode())
        add("busybox", _busybox().read_bytes(), 0o755)
        add("start", _START.encode(), 0o755)
        add("page.html", _PAGE.encode())
    buffer.seek(0)
    return buffer


async def _ensure() -> None:
    labels = {**LABELS, "remoteapp-test.version": _VERSION}
    async with aiodocker.Docker() as docker:
        try:
            found = await docker.images.inspect(HOSTILE_IMAGE)
            if (found["Config"].get("Labels") or {}).get("remoteapp-test.version") == _VERSION:
                return
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
        await docker.images.build(
            fileobj=_context(), encoding="gzip", tag=HOSTILE_IMAGE, labels=labels, rm=True
        )
        await docker.images.inspect(HOSTILE_IMAGE)


def ensure_hostile_image() -> str:
    """Build the hostile image unless the engine has this version of it; returns its name."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _ensure()).result()
    return HOSTILE_IMAGE
