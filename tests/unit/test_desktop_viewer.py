"""The desktop viewer the gate serves under every application's path: only to whom the gate
lets in, from the service's memory, never from the container."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import brotli
import pytest
import structlog

from remoteappmanager.web.desktop_viewer import (
    VIEWER_CSP,
    DesktopViewer,
    ViewerBuildError,
    bundler_beside,
    find_novnc,
)
from remoteappmanager.web.gate import handler
from remoteappmanager.web.gate.handler import GATE_COOKIE
from remoteappmanager.web.keys import GATE
from tests.support.services import REPO
from tests.support.webapp import World, cookie, make_app, sign_in
from tests.unit.test_gate import Stack, enter, stack  # noqa: F401 - the gate's fixture

VIEWER = "/.remoteapp-desktop/"
RFB = (
    b'import { x } from "./util/int.js";\n'
    b'export default class RFB { constructor() { this.mark = "rfb-client-marker" + x; } }\n'
)
INT = b"export const x = 1;\n"
ESBUILD = REPO / "node_modules" / ".bin" / "esbuild"


@pytest.fixture
def novnc(tmp_path: Path) -> Path:
    """A noVNC package of three modules, bundled by the real esbuild installed beside it."""
    root = tmp_path / "node_modules" / "@novnc" / "novnc"
    (root / "core" / "util").mkdir(parents=True)
    (root / "vendor" / "pako").mkdir(parents=True)
    (root / "core" / "rfb.js").write_bytes(RFB)
    (root / "core" / "util" / "int.js").write_bytes(INT)
    (root / "vendor" / "pako" / "inflate.js").write_bytes(b"export default 2;\n")
    (root / "core" / "README.md").write_text("not served")
    bin_dir = tmp_path / "node_modules" / ".bin"
    bin_dir.mkdir()
    (bin_dir / "esbuild").symlink_to(ESBUILD)
    return root


@pytest.fixture
def viewer(novnc: Path) -> DesktopViewer:
    return DesktopViewer.load(novnc, bundler_beside(novnc))


@pytest.fixture
def viewing(stack: Stack, viewer: DesktopViewer) -> Stack:  # noqa: F811
    stack.client.server.app[GATE].desktop = viewer
    return stack


async def test_the_owner_gets_the_viewer_and_its_one_bundle_from_the_service(
    viewing: Stack, viewer: DesktopViewer
) -> None:
    session = await viewing.start("alice")
    await sign_in(viewing.client, viewing.world, "alice")
    page = await enter(viewing.client, session.urlpath + VIEWER)
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == VIEWER_CSP
    assert page.headers["Cache-Control"] == "no-cache"
    text = await page.text()
    assert re.fullmatch(r"viewer\.[0-9a-f]{20}\.js", viewer.script)
    assert f'<link rel="modulepreload" href="{viewer.script}">' in text
    assert f'<script type="module" src="{viewer.script}"></script>' in text
    # One script: noVNC's modules are in it, not served one by one.
    assert text.count("<script") == 1
    assert text.count('rel="modulepreload"') == 1
    assert "core/" not in text
    bundle = await viewing.client.get(
        session.urlpath + VIEWER + viewer.script, auto_decompress=False
    )
    assert bundle.status == 200
    assert bundle.headers["Content-Type"].startswith("text/javascript")
    assert bundle.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    body = _decoded(await bundle.read(), bundle.headers.get("Content-Encoding"))
    # The viewer's own script and the RFB client it imports, in one module.
    assert b"websockify" in body
    assert b"rfb-client-marker" in body
    assert b"import " not in body
    for module in ("core/rfb.js", "core/util/int.js", "vendor/pako/inflate.js", "viewer.js"):
        assert (await viewing.client.get(session.urlpath + VIEWER + module)).status == 404
    # Nothing of it came from the container.
    assert viewing.seen.requests == []


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        (None, None),
        ("identity", None),
        ("gzip", "gzip"),
        ("gzip;q=0, identity", None),
        ("deflate, gzip;q=0.5", "gzip"),
        ("br", "br"),
        ("gzip, deflate, br, zstd", "br"),
        ("br;q=0, gzip", "gzip"),
        ("*", "br"),
        ("*, br;q=0", "gzip"),
        ("GZIP ; Q=1", "gzip"),
        ("gzip;q=nonsense", None),
    ],
)
def test_the_bundle_comes_in_the_most_compact_encoding_the_client_takes(
    viewer: DesktopViewer, accept: str | None, coding: str | None
) -> None:
    identity = viewer.answer("GET", viewer.script, accept_encoding="identity")

    answer = viewer.answer("GET", viewer.script, accept_encoding=accept)

    assert answer.status == 200
    headers = dict(answer.headers)
    assert headers.get("Content-Encoding") == coding
    assert headers["Vary"] == "Accept-Encoding"
    assert _decoded(answer.body, coding) == identity.body
    if coding is not None:
        assert len(answer.body) < len(identity.body)
        # A strong ETag names one representation: each encoding has its own.
        assert headers["ETag"] != dict(identity.headers)["ETag"]


def test_a_client_holding_the_same_representation_gets_304_without_a_body(
    viewer: DesktopViewer,
) -> None:
    tags = {
        accept: dict(viewer.answer("GET", viewer.script, accept_encoding=accept).headers)["ETag"]
        for accept in ("identity", "gzip", "br")
    }
    assert len(set(tags.values())) == 3
    assert all(re.fullmatch(r'"[0-9a-f]{20}(-gzip|-br)?"', tag) for tag in tags.values())

    for accept, tag in tags.items():
        for held in (tag, "W/" + tag, f'"other", {tag}', "*"):
            answer = viewer.answer("GET", viewer.script, accept_encoding=accept, if_none_match=held)
            assert answer.status == 304, (accept, held)
            assert answer.body == b""
            headers = dict(answer.headers)
            assert headers["ETag"] == tag
            assert headers["Cache-Control"] == "private, max-age=31536000, immutable"
            assert "Content-Encoding" not in headers
    # A tag of another encoding (or of nothing served) gets the whole file.
    stale = viewer.answer(
        "GET", viewer.script, accept_encoding="identity", if_none_match=tags["gzip"]
    )
    assert stale.status == 200
    assert stale.body
    assert viewer.answer("GET", viewer.script, if_none_match='"0123"').status == 200


async def test_the_gate_answers_304_to_a_revalidation_through_its_listener(
    viewing: Stack, viewer: DesktopViewer
) -> None:
    session = await viewing.start("alice")
    await sign_in(viewing.client, viewing.world, "alice")
    await enter(viewing.client, session.urlpath + VIEWER)
    url = session.urlpath + VIEWER + viewer.script
    first = await viewing.client.get(
        url, headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert first.headers["Content-Encoding"] == "gzip"
    etag = first.headers["ETag"]

    again = await viewing.client.get(
        url,
        headers={"Accept-Encoding": "gzip", "If-None-Match": etag},
        auto_decompress=False,
    )
    # Headers sent on two lines are one list (RFC 9110 5.3).
    split = await viewing.client.get(
        url,
        headers=[("Accept-Encoding", "br;q=0"), ("Accept-Encoding", "gzip")],
        auto_decompress=False,
    )
    head = await viewing.client.head(url, headers={"Accept-Encoding": "br"})

    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    assert split.headers["Content-Encoding"] == "gzip"
    assert head.status == 200
    assert head.headers["Content-Encoding"] == "br"
    assert await head.read() == b""
    assert viewing.seen.requests == []


def test_the_page_and_the_style_sheet_are_kept_and_revalidated_alike(
    viewer: DesktopViewer,
) -> None:
    page = viewer.answer("GET", "")
    (style,) = [name for name in viewer.files if name.endswith(".css")]
    assert re.fullmatch(r"viewer\.[0-9a-f]{20}\.css", style)
    assert f'href="{style}"' in page.body.decode()
    etag = dict(page.headers)["ETag"]
    assert viewer.answer("GET", "", if_none_match=etag).status == 304
    sheet = dict(viewer.answer("GET", style).headers)
    assert sheet["Cache-Control"] == "private, max-age=31536000, immutable"


async def test_anonymous_callers_are_sent_to_the_entry_page_first(
    viewing: Stack, viewer: DesktopViewer
) -> None:
    session = await viewing.start("alice")
    response = await viewing.client.get(session.urlpath + VIEWER, allow_redirects=False)
    assert response.status == 302
    assert "/gate/" + session.url_id in response.headers["Location"]
    module = await viewing.client.get(
        session.urlpath + VIEWER + viewer.script, allow_redirects=False
    )
    assert module.status == 302


async def test_another_tenant_gets_neither_the_viewer_nor_its_script(
    viewing: Stack, viewer: DesktopViewer
) -> None:
    session = await viewing.start("alice")
    await sign_in(viewing.client, viewing.world, "bob")
    assert (await enter(viewing.client, session.urlpath + VIEWER)).status == 403
    assert (await enter(viewing.client, session.urlpath + VIEWER + viewer.script)).status == 403
    assert cookie(viewing.client, GATE_COOKIE) is None
    assert viewing.seen.requests == []


async def test_only_reads_of_known_files_are_answered(
    viewing: Stack, viewer: DesktopViewer
) -> None:
    session = await viewing.start("alice")
    await sign_in(viewing.client, viewing.world, "alice")
    await enter(viewing.client, session.urlpath + "/")
    base = session.urlpath + VIEWER
    assert (await viewing.client.post(base + viewer.script, data=b"x")).status == 405
    missing_ones = ("core/README.md", "core/rfb.js", "core/", viewer.script + "/", "viewer.js")
    for missing in missing_ones:
        response = await viewing.client.get(base + missing, allow_redirects=False)
        assert response.status == 404, missing
    # The rest of the path is the application's, as before.
    assert (await viewing.client.get(session.urlpath + "/.remoteapp-desktopx")).status == 200
    assert len(viewing.seen.requests) == 2


def test_a_folder_without_novnc_or_esbuild_is_refused(tmp_path: Path, novnc: Path) -> None:
    with pytest.raises(ViewerBuildError, match=r"rfb\.js"):
        DesktopViewer.load(tmp_path, bundler_beside(novnc))
    with pytest.raises(ViewerBuildError, match="no esbuild"):
        DesktopViewer.load(novnc, tmp_path / "esbuild")


def test_a_module_esbuild_cannot_bundle_is_refused_with_its_message(novnc: Path) -> None:
    (novnc / "core" / "rfb.js").write_bytes(b"import { nothing } from './missing.js';\n")

    with pytest.raises(ViewerBuildError, match=r"missing\.js"):
        DesktopViewer.load(novnc, bundler_beside(novnc))


def test_without_novnc_the_service_says_so_at_start_and_names_the_provision_step(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    with structlog.testing.capture_logs() as logs:
        # A fresh logger: the module's own may have been cached, with the processors of the
        # day, by a test that configured logging before this one.
        monkeypatch.setattr(handler, "log", structlog.get_logger(handler.__name__))
        app = make_app(World())

    assert app[GATE].desktop is None
    (missing,) = [entry for entry in logs if entry["event"] == "gate.desktop_viewer_missing"]
    assert missing["log_level"] == "error"
    assert "noVNC is not installed" in missing["reason"]
    assert "scripts/provision" in missing["fix"]


def test_novnc_and_esbuild_are_found_beside_the_proxy() -> None:
    found = find_novnc()
    assert found is not None
    assert found.resolve() == (REPO / "node_modules" / "@novnc" / "novnc").resolve()
    viewer = DesktopViewer.load(found, bundler_beside(found))
    # The real noVNC in one module, with gzip and brotli beside it.
    identity = viewer.answer("GET", viewer.script, accept_encoding="identity").body
    assert b"RFB" in identity
    for coding in ("gzip", "br"):
        answer = viewer.answer("GET", viewer.script, accept_encoding=coding)
        assert dict(answer.headers)["Content-Encoding"] == coding
        assert _decoded(answer.body, coding) == identity


def _decoded(body: bytes, coding: str | None) -> bytes:
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "br":
        return bytes(brotli.decompress(body))
    assert coding is None
    return body
