"""The desktop viewer: noVNC, served by the gate to every desktop from the service's memory.

A desktop image (``type: vncapp``) serves noVNC itself, from its own web server, one file per
request: through the proxy and the gate that is some fifty requests before the first frame,
and the demo image's websockify forks a process for each. The service instead bundles noVNC's
RFB client (the ``@novnc/novnc`` package installed beside the proxy, see ``package.json``) and
the viewer's own script into one module with esbuild (installed beside it) when it starts,
keeps it in memory with its gzip and, where the ``brotli`` module is installed, brotli
encodings, and the gate answers it and a small page of its own under every desktop's path,
``<urlpath>/.remoteapp-desktop/``, once it has let the request in like any other: the viewer
stays on the application's origin and behind the gate, and the container is asked for nothing
but its WebSocket (``<urlpath>/websockify``).

The script and the style sheet are named by their content's hash: the browser keeps them for a
year without asking again (``immutable``), and a new version of either has a new name. The page
preloads the one script, so the first frame waits for two requests, not fifty.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from remoteappmanager.web.gate.listener import Answer

VIEWER_DIR = "/.remoteapp-desktop/"
NOVNC_PACKAGE = ("@novnc", "novnc")
BUNDLER = "esbuild"
PROXY_COMMAND = "configurable-http-proxy"
PROVISION_STEP = "scripts/provision (npm ci installs noVNC and esbuild, see package.json)"
# Files named by their content's hash never change: a year, without revalidation.
IMMUTABLE = "private, max-age=31536000, immutable"
BUNDLE_TIMEOUT_S = 120
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
<link rel="stylesheet" href="{css}">
<link rel="modulepreload" href="{js}">
<script type="module" src="{js}"></script>
</head>
<body>
<div id="noVNC_container"></div>
<p id="status" role="status">Connecting to the desktop…</p>
</body>
</html>
"""
_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"
_HTML = "text/html; charset=utf-8"


class ViewerBuildError(Exception):
    """The viewer could not be built: noVNC or esbuild is missing, or esbuild failed."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """One representation of a file: its bytes, their strong ETag and their coding."""

    body: bytes
    etag: str
    coding: str | None
    """``Content-Encoding`` (``br``, ``gzip``), None for the bytes as they are."""


@dataclass(frozen=True, slots=True)
class ViewerFile:
    """A file of the viewer in each encoding kept, the most compact first."""

    content_type: str
    headers: tuple[tuple[str, str], ...]
    encodings: tuple[Encoded, ...]

    @classmethod
    def of(cls, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...]) -> ViewerFile:
        digest = _digest(body)
        encodings = [Encoded(body, f'"{digest}"', None)]
        gzipped = gzip.compress(body, compresslevel=9, mtime=0)
        if len(gzipped) < len(body):
            encodings.insert(0, Encoded(gzipped, f'"{digest}-gzip"', "gzip"))
        brotli = _brotli_compress()
        if brotli is not None:
            compressed = brotli(body)
            if len(compressed) < len(encodings[0].body):
                encodings.insert(0, Encoded(compressed, f'"{digest}-br"', "br"))
        return cls(content_type, headers, tuple(encodings))

    def choose(self, accept_encoding: str | None) -> Encoded:
        """The most compact representation the client accepts (``identity`` always)."""
        accepted = accepted_codings(accept_encoding)
        for encoded in self.encodings:
            if encoded.coding is None or encoded.coding in accepted:
                return encoded
        return self.encodings[-1]


@dataclass(frozen=True, slots=True)
class DesktopViewer:
    """The viewer's files by name relative to ``VIEWER_DIR`` (``""`` is the page)."""

    files: Mapping[str, ViewerFile]
    script: str
    """The bundle's name (``viewer.<hash>.js``)."""

    @classmethod
    def load(cls, novnc: Path, bundler: Path) -> DesktopViewer:
        """Bundle noVNC's RFB client from the package folder ``novnc`` and the viewer's own
        script with the esbuild program ``bundler``, and read the viewer's style sheet.

        Raises ``ViewerBuildError`` when noVNC or esbuild is missing or the bundle fails.
        """
        own = resources.files(__package__ or "remoteappmanager.web") / "desktop"
        script = _bundle(novnc, bundler, (own / "viewer.js").read_bytes())
        style = (own / "viewer.css").read_bytes()
        script_name = f"viewer.{_digest(script)}.js"
        style_name = f"viewer.{_digest(style)}.css"
        immutable = (
            ("Cache-Control", IMMUTABLE),
            ("Vary", "Accept-Encoding"),
            ("X-Content-Type-Options", "nosniff"),
        )
        page = _PAGE.format(css=html.escape(style_name), js=html.escape(script_name))
        files = {
            script_name: ViewerFile.of(script, _JS, immutable),
            style_name: ViewerFile.of(style, _CSS, immutable),
            "": ViewerFile.of(
                page.encode(),
                _HTML,
                (
                    # The page names the current script: asked again each time (a 304).
                    ("Cache-Control", "no-cache"),
                    ("Vary", "Accept-Encoding"),
                    ("Content-Security-Policy", VIEWER_CSP),
                    ("Referrer-Policy", "same-origin"),
                    ("X-Content-Type-Options", "nosniff"),
                ),
            ),
        }
        return cls(files, script_name)

    def answer(
        self,
        method: str,
        rest: str,
        *,
        accept_encoding: str | None = None,
        if_none_match: str | None = None,
    ) -> Answer:
        """The answer to ``GET``/``HEAD <urlpath>/.remoteapp-desktop/<rest>`` (no query)."""
        found = self.files.get(rest)
        if found is None:
            return Answer(404, (("Cache-Control", "no-store"),), b"no such file", "text/plain")
        encoded = found.choose(accept_encoding)
        headers = (("ETag", encoded.etag), *found.headers)
        if if_none_match is not None and matches(if_none_match, encoded.etag):
            return Answer(304, headers, b"", found.content_type)
        if encoded.coding is not None:
            headers += (("Content-Encoding", encoded.coding),)
        return Answer(200, headers, encoded.body, found.content_type)


def accepted_codings(accept_encoding: str | None) -> frozenset[str]:
    """The content codings an ``Accept-Encoding`` value accepts (RFC 9110 12.5.3): each one
    listed without ``q=0``; ``*`` stands for ``br`` and ``gzip`` unless they are listed.

    Written here because the gate answers outside aiohttp, which parses this for its own
    responses only.
    """
    if not accept_encoding:
        return frozenset()
    weights: dict[str, bool] = {}
    for item in accept_encoding.split(","):
        coding, _, parameters = item.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        weight = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        weights[coding] = weight > 0
    if weights.pop("*", False):
        for coding in ("br", "gzip"):
            weights.setdefault(coding, True)
    return frozenset(coding for coding, accepted in weights.items() if accepted)


def matches(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 13.1.2) or is ``*``."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:20]


def _brotli_compress() -> Callable[[bytes], bytes] | None:
    # Optional: the ``brotli`` module (the ``speed`` extra); without it, gzip only.
    try:
        import brotli
    except ImportError:
        return None
    compress: Callable[[bytes], bytes] = functools.partial(brotli.compress, quality=11)
    return compress


@functools.cache
def _bundle(novnc: Path, bundler: Path, viewer: bytes) -> bytes:
    """One ES module: the viewer's script with noVNC's modules it imports, minified.

    Kept for the life of the process: the service builds an application (and the tests
    hundreds) from the same files.
    """
    if not (novnc / "core" / "rfb.js").is_file():
        raise ViewerBuildError(f"no noVNC RFB client (core/rfb.js) in {novnc}")
    if not bundler.is_file():
        raise ViewerBuildError(f"no esbuild at {bundler}")
    try:
        # The viewer imports "./core/rfb.js": read from standard input, it resolves from noVNC.
        done = subprocess.run(
            [
                str(bundler),
                "--bundle",
                "--format=esm",
                "--minify",
                "--target=es2022",
                "--charset=utf8",
                "--log-level=error",
                "--sourcefile=viewer.js",
            ],
            input=viewer,
            cwd=novnc,
            capture_output=True,
            timeout=BUNDLE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ViewerBuildError(f"esbuild could not run: {exc}") from exc
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode(errors="replace").strip()[:500]
        raise ViewerBuildError(f"esbuild failed ({done.returncode}): {message}")
    return done.stdout


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


def bundler_beside(novnc: Path) -> Path:
    """esbuild's program in the ``node_modules`` folder that holds noVNC."""
    return novnc.parents[1] / ".bin" / BUNDLER
