"""The desktop viewer: noVNC, served by the gate to every desktop from the service's memory.

A desktop image (``type: vncapp``) serves noVNC itself, from its own web server, one file per
request: through the proxy and the gate that is some fifty requests before the first frame,
and the demo image's websockify forks a process for each. The service instead keeps one copy
of noVNC's RFB client (the ``@novnc/novnc`` package installed beside the proxy, see
``package.json``) and a small page of its own, read once at start, and the gate answers them
under every desktop's path, ``<urlpath>/.remoteapp-desktop/``, once it has let the request in
like any other: the viewer stays on the application's origin and behind the gate, and the
container is asked for nothing but its WebSocket (``<urlpath>/websockify``). The page lists
every module it needs (``modulepreload``), so the browser fetches them all at once instead of
discovering them import by import.
"""

from __future__ import annotations

import hashlib
import html
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from remoteappmanager.web.gate.listener import Answer

VIEWER_DIR = "/.remoteapp-desktop/"
NOVNC_PACKAGE = ("@novnc", "novnc")
PROXY_COMMAND = "configurable-http-proxy"
_FOLDERS = ("core", "vendor")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The viewer needs scripts and styles of its own origin, its WebSocket, and the cursor and
# frames noVNC draws from data and blob URLs; nothing else.
VIEWER_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob:; base-uri 'none'; form-action 'none'"
)
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Desktop</title>
<link rel="stylesheet" href="viewer.css?v={css}">
<script type="module" src="viewer.js?v={js}"></script>
{preloads}
</head>
<body>
<div id="noVNC_container"></div>
<p id="status" role="status">Connecting to the desktop…</p>
</body>
</html>
"""


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True, slots=True)
class DesktopViewer:
    """The viewer's files by name relative to ``VIEWER_DIR`` (``""`` is the page)."""

    files: Mapping[str, _File]

    @classmethod
    def load(cls, novnc: Path) -> DesktopViewer:
        """Read noVNC's modules from the package folder ``novnc`` and the viewer's own files.

        Raises ``OSError`` when the folder does not hold noVNC's RFB client.
        """
        files: dict[str, _File] = {}
        if not (novnc / "core" / "rfb.js").is_file():
            raise FileNotFoundError(f"no noVNC RFB client (core/rfb.js) in {novnc}")
        for folder in _FOLDERS:
            for path in sorted((novnc / folder).rglob("*.js")):
                name = path.relative_to(novnc).as_posix()
                files[name] = _file(path.read_bytes(), ".js")
        own = resources.files(__package__ or "remoteappmanager.web") / "desktop"
        for name in ("viewer.js", "viewer.css"):
            files[name] = _file((own / name).read_bytes(), "." + name.rsplit(".", 1)[1])
        modules = [name for name in files if name.endswith(".js") and name != "viewer.js"]
        preloads = "\n".join(
            f'<link rel="modulepreload" href="{html.escape(name)}">' for name in modules
        )
        page = _PAGE.format(
            css=files["viewer.css"].etag.strip('"'),
            js=files["viewer.js"].etag.strip('"'),
            preloads=preloads,
        )
        files[""] = _file(page.encode(), ".html")
        return cls(files)

    def answer(self, method: str, rest: str) -> Answer:
        """The answer to ``GET``/``HEAD <urlpath>/.remoteapp-desktop/<rest>`` (no query)."""
        found = self.files.get(rest)
        if found is None or ".." in rest:
            return Answer(404, (("Cache-Control", "no-store"),), b"no such file", "text/plain")
        headers = [
            # Each desktop has its own path: keeping the files for its life is enough.
            ("Cache-Control", "private, max-age=86400"),
            ("ETag", found.etag),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if rest == "":
            headers = [
                ("Cache-Control", "no-cache"),
                ("Content-Security-Policy", VIEWER_CSP),
                ("Referrer-Policy", "same-origin"),
                ("X-Content-Type-Options", "nosniff"),
            ]
        return Answer(200, tuple(headers), found.body, found.content_type)


def _file(body: bytes, suffix: str) -> _File:
    content_type = _TYPES.get(suffix, "text/html; charset=utf-8")
    return _File(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')


def find_novnc() -> Path | None:
    """Where noVNC was installed beside the proxy: the ``node_modules`` folder holding
    ``configurable-http-proxy`` (found on ``PATH``), else ``./node_modules``."""
    candidates: list[Path] = []
    proxy = shutil.which(PROXY_COMMAND)
    if proxy is not None:
        resolved = Path(proxy).resolve()
        candidates += [parent for parent in resolved.parents if parent.name == "node_modules"]
    candidates.append(Path.cwd() / "node_modules")
    for modules in candidates:
        folder = modules.joinpath(*NOVNC_PACKAGE)
        if (folder / "core" / "rfb.js").is_file():
            return folder
    return None
