"""The desktop viewer the gate serves under every application's path: only to whom the gate
lets in, from the service's memory, never from the container."""

from __future__ import annotations

from pathlib import Path

import pytest

from remoteappmanager.web.desktop_viewer import VIEWER_CSP, DesktopViewer, find_novnc
from remoteappmanager.web.gate.handler import GATE_COOKIE
from remoteappmanager.web.keys import GATE
from tests.support.services import REPO
from tests.support.webapp import cookie, sign_in
from tests.unit.test_gate import Stack, enter, stack  # noqa: F401 - the gate's fixture

VIEWER = "/.remoteapp-desktop/"
RFB = b"export default class RFB {}\n"


@pytest.fixture
def novnc(tmp_path: Path) -> Path:
    root = tmp_path / "novnc"
    (root / "core" / "util").mkdir(parents=True)
    (root / "vendor" / "pako").mkdir(parents=True)
    (root / "core" / "rfb.js").write_bytes(RFB)
    (root / "core" / "util" / "int.js").write_bytes(b"export const x = 1;\n")
    (root / "vendor" / "pako" / "inflate.js").write_bytes(b"export default 2;\n")
    (root / "core" / "README.md").write_text("not served")
    return root


@pytest.fixture
def viewing(stack: Stack, novnc: Path) -> Stack:  # noqa: F811
    stack.client.server.app[GATE].desktop = DesktopViewer.load(novnc)
    return stack


async def test_the_owner_gets_the_viewer_and_its_modules_from_the_service(viewing: Stack) -> None:
    session = await viewing.start("alice")
    await sign_in(viewing.client, viewing.world, "alice")
    page = await enter(viewing.client, session.urlpath + VIEWER)
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == VIEWER_CSP
    text = await page.text()
    for module in ("core/rfb.js", "core/util/int.js", "vendor/pako/inflate.js"):
        assert f'<link rel="modulepreload" href="{module}">' in text
    assert "README" not in text
    module = await viewing.client.get(session.urlpath + VIEWER + "core/rfb.js")
    assert module.status == 200
    assert module.headers["Content-Type"].startswith("text/javascript")
    assert await module.read() == RFB
    script = await viewing.client.get(session.urlpath + VIEWER + "viewer.js?v=1")
    assert 'import RFB from "./core/rfb.js"' in await script.text()
    # Nothing of it came from the container.
    assert viewing.seen.requests == []


async def test_anonymous_callers_are_sent_to_the_entry_page_first(viewing: Stack) -> None:
    session = await viewing.start("alice")
    response = await viewing.client.get(session.urlpath + VIEWER, allow_redirects=False)
    assert response.status == 302
    assert "/gate/" + session.url_id in response.headers["Location"]
    module = await viewing.client.get(
        session.urlpath + VIEWER + "core/rfb.js", allow_redirects=False
    )
    assert module.status == 302


async def test_another_tenant_gets_neither_the_viewer_nor_a_module(viewing: Stack) -> None:
    session = await viewing.start("alice")
    await sign_in(viewing.client, viewing.world, "bob")
    assert (await enter(viewing.client, session.urlpath + VIEWER)).status == 403
    assert (await enter(viewing.client, session.urlpath + VIEWER + "core/rfb.js")).status == 403
    assert cookie(viewing.client, GATE_COOKIE) is None
    assert viewing.seen.requests == []


async def test_only_reads_of_known_files_are_answered(viewing: Stack) -> None:
    session = await viewing.start("alice")
    await sign_in(viewing.client, viewing.world, "alice")
    await enter(viewing.client, session.urlpath + "/")
    base = session.urlpath + VIEWER
    assert (await viewing.client.post(base + "core/rfb.js", data=b"x")).status == 405
    for missing in ("core/README.md", "core/nothing.js", "core/", "core/rfb.js/"):
        response = await viewing.client.get(base + missing, allow_redirects=False)
        assert response.status == 404, missing
    # The rest of the path is the application's, as before.
    assert (await viewing.client.get(session.urlpath + "/.remoteapp-desktopx")).status == 200
    assert len(viewing.seen.requests) == 2


def test_a_folder_without_novnc_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"rfb\.js"):
        DesktopViewer.load(tmp_path)


def test_novnc_is_found_beside_the_proxy() -> None:
    found = find_novnc()
    assert found is not None
    assert found.resolve() == (REPO / "node_modules" / "@novnc" / "novnc").resolve()
    viewer = DesktopViewer.load(found)
    assert "core/rfb.js" in viewer.files
