"""The host's pip configuration, translated for an image that is built from what it carries.

scripts/build-base-image pipes ``pip config list`` (every configuration file and the
``PIP_*`` variables, as pip merges them) into this script, which writes the image's
``/etc/pip.conf`` and copies into the image's root file system the files that configuration
needs. Every setting that names a host path is decided on, one line on stderr each:

- copied, at the same path: the CA bundle (``cert``, unless the image has its own there) and
  the constraint and requirement files (``constraint``, ``requirement``), with the files that
  those include with ``-c``/``-r``;
- left out: directories and archives of packages (``find-links``, ``file://`` indexes), a
  client certificate (a credential), and the places pip writes to or runs from (``log``,
  ``cache-dir``, ``src``, ``target``, ``prefix``, ``root``, ``report``, ``python``,
  ``editable``), which belong to the host;
- left out too: credentials in index and proxy URLs.

Everything else is kept as it is. Only the standard library: it runs with the host's python3.

    python3 images/pip_conf.py ROOTFS <pip-config-list >ROOTFS/etc/pip.conf
"""

from __future__ import annotations

import ast
import configparser
import io
import os
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Files pip reads and the image needs as they are: copied to the same path.
COPIED_FILES = frozenset({"cert", "constraint", "requirement"})
# Places of packages: kept when they are URLs, left out when they are host paths (a wheel
# folder or a local index is the host's business; the image gets its packages from an index).
LOCATIONS = frozenset({"index-url", "extra-index-url", "find-links"})
# A credential: never baked into an image layer.
SECRETS = frozenset({"client-cert"})
# Paths pip writes to or runs from: they describe the host, not the image.
HOST_PLACES = frozenset(
    {"log", "cache-dir", "src", "target", "prefix", "root", "report", "python", "editable"}
)
# URLs that may carry a user name and password.
URLS = frozenset({"proxy"})
_INCLUDE = re.compile(r"^\s*(?:-[rc]|--requirement|--constraint)[\s=]+(\S+)")
_LINE = re.compile(r"([^.=]*)\.([^=]+)=(.*)")


@dataclass
class Translation:
    """The image's pip configuration, the host files to copy into the image, and why."""

    config: configparser.ConfigParser = field(
        default_factory=lambda: configparser.ConfigParser(interpolation=None)
    )
    copies: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = io.StringIO()
        self.config.write(out)
        return out.getvalue()


def read_pip_config_list(lines: Iterable[str]) -> dict[tuple[str, str], str]:
    """``pip config list`` lines as {(section, key): value}; ``PIP_*`` values (``:env:``) win
    over the files' and land in ``global``, as pip applies them."""
    merged: dict[tuple[str, str], str] = {}
    from_env: dict[str, str] = {}
    for line in lines:
        match = _LINE.fullmatch(line.strip())
        if not match:
            continue
        section, key, value = match[1], match[2], ast.literal_eval(match[3])
        if section == ":env:":
            from_env[key] = value
        else:
            merged[(section, key)] = value
    for key, value in from_env.items():
        merged[("global", key)] = value
    return merged


def _host_path(location: str) -> str | None:
    """The host path a location names, if it is one (a file:// URL or an absolute path)."""
    if location.startswith("file:"):
        return unquote(urlsplit(location).path)
    if location.startswith("/"):
        return location
    return None


def _includes(path: Path, contents: str) -> list[Path]:
    """The files that a requirement or constraint file at ``path`` (a path as pip sees it)
    includes with -r/-c: absolute, or relative to the including file."""
    found = []
    for line in contents.splitlines():
        match = _INCLUDE.match(line)
        if match:
            found.append(Path(os.path.normpath(path.parent / match[1])))
    return found


def translate(
    settings: dict[tuple[str, str], str],
    host_root: Path = Path("/"),
    image_root: Path | None = None,
) -> Translation:
    """Decide each setting; host paths are looked up below ``host_root`` (tests use a tree).

    A CA bundle that the image (``image_root``) already has at the same path is its own
    (made by its ca-certificates, trusting what the host trusts): it is not replaced.
    """
    result = Translation()

    def on_host(path: str) -> Path:
        return host_root / path.lstrip("/")

    def copy_files(key: str, value: str) -> str:
        kept = []
        for item in value.split():
            pending = [Path(item)]
            if not item.startswith("/"):
                result.notes.append(f"left out {key} {item}: a relative path, not a file to copy")
                continue
            if not on_host(item).is_file():
                result.notes.append(f"left out {key} {item}: no such file on this host")
                continue
            kept.append(item)
            if (
                key == "cert"
                and image_root is not None
                and (image_root / item.lstrip("/")).exists()
            ):
                result.notes.append(f"kept {key} {item}: the image has its own at that path")
                continue
            while pending:
                path = pending.pop()
                if path in result.copies:
                    continue
                result.copies.append(path)
                result.notes.append(f"copied {key} {path} into the image at the same path")
                if key != "cert":
                    contents = on_host(str(path)).read_text(errors="replace")
                    nested = _includes(path, contents)
                    pending.extend(p for p in nested if on_host(str(p)).is_file())
        return " ".join(kept)

    def locations(key: str, value: str) -> str:
        kept = []
        for item in value.split():
            if _host_path(item) is not None:
                result.notes.append(
                    f"left out {key} {item}: a host directory; the image uses the indexes"
                )
                continue
            parts = urlsplit(item)
            if parts.username or parts.password:
                result.notes.append(
                    f"left out {key} {parts.hostname}: it carries credentials; "
                    "pass them at build time"
                )
                continue
            if parts.hostname in {"localhost", "127.0.0.1", "::1"}:
                result.notes.append(f"warning: {key} {item} is this host's loopback")
            kept.append(item)
        return " ".join(kept)

    for (section, key), value in sorted(settings.items()):
        if key in SECRETS:
            result.notes.append(f"left out {key}: a credential")
            continue
        if key in HOST_PLACES:
            result.notes.append(f"left out {key} {value}: a place on this host")
            continue
        if key in COPIED_FILES:
            value = copy_files(key, value)
        elif key in LOCATIONS:
            value = locations(key, value)
        elif key in URLS and (urlsplit(value).username or urlsplit(value).password):
            result.notes.append(f"left out {key}: it carries credentials")
            continue
        if not value:
            continue
        if not result.config.has_section(section):
            result.config.add_section(section)
        result.config.set(section, key, value)
    return result


def install(translation: Translation, rootfs: Path, host_root: Path = Path("/")) -> None:
    """Copy the files the translation needs into ``rootfs``, at their host paths."""
    for path in translation.copies:
        target = rootfs / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host_root / str(path).lstrip("/"), target)
        os.chmod(target, 0o644)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    rootfs = Path(argv[1])
    translation = translate(read_pip_config_list(sys.stdin), image_root=rootfs)
    install(translation, rootfs)
    for note in translation.notes:
        print(f"build-base-image: pip: {note}", file=sys.stderr)
    sys.stdout.write(translation.text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
