"""The pages' package data: HTML templates and static files with content-versioned URLs."""

from __future__ import annotations

import hashlib
import html
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

# A versioned URL names one exact content, so browsers may keep it for good.
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
# Unversioned (or stale-versioned) requests must not pin an old copy.
REVALIDATE_CACHE = "no-cache"
VERSION_PARAM = "v"

_PLACEHOLDER_RE = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_STATIC_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*\.(?:js|css|svg|png|ico)$")
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    version: str

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


class Template:
    """An HTML file with ``{{ name }}`` placeholders, each filled with an escaped value."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self._text = text
        self.placeholders = frozenset(_PLACEHOLDER_RE.findall(text))

    def render(self, values: Mapping[str, str]) -> str:
        """The page, every value HTML-escaped (quotes too: values also fill attributes).

        Raises ``KeyError`` when a placeholder has no value, so a typo cannot ship blank.
        """
        missing = self.placeholders - values.keys()
        if missing:
            raise KeyError(f"{self.name} needs {', '.join(sorted(missing))}")
        return _PLACEHOLDER_RE.sub(
            lambda match: html.escape(values[match[1]], quote=True), self._text
        )


@dataclass(frozen=True, slots=True)
class PageAssets:
    """Everything the pages serve from the package, read once when the application is made."""

    templates: Mapping[str, Template]
    static: Mapping[str, StaticFile]
    static_prefix: str

    @classmethod
    def load(cls, static_prefix: str) -> PageAssets:
        package = resources.files(__package__ or "remoteappmanager.web")
        templates = {
            entry.name: Template(entry.name, entry.read_text(encoding="utf-8"))
            for entry in (package / "templates").iterdir()
            if entry.is_file() and entry.name.endswith(".html")
        }
        static: dict[str, StaticFile] = {}
        for entry in (package / "static").iterdir():
            if not entry.is_file() or not _STATIC_NAME_RE.match(entry.name):
                continue
            body = entry.read_bytes()
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            content_type = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0]
            static[entry.name] = StaticFile(
                body=body,
                content_type=content_type or "application/octet-stream",
                version=hashlib.sha256(body).hexdigest()[:16],
            )
        return cls(templates=templates, static=static, static_prefix=static_prefix)

    def static_url(self, name: str) -> str:
        """``{svc}static/<name>?v=<content digest>``: a new URL whenever the file changes."""
        return f"{self.static_prefix}{name}?{VERSION_PARAM}={self.static[name].version}"

    def template(self, name: str) -> Template:
        return self.templates[name]
