"""The shape and canonical encoding of our proxy paths."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.naming import urlpath
from remoteappmanager.domain.routing import check_route_path, encode_route_path


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/user/alice/containers/abc123", "/user/alice/containers/abc123"),
        ("/user/al ice/containers/abc", "/user/al%20ice/containers/abc"),
        ("/user/al%20ice/containers/abc", "/user/al%20ice/containers/abc"),
        ("/user/x%40y/containers/abc", "/user/x@y/containers/abc"),
        ("/user/%c3%bc/containers/abc", "/user/%C3%BC/containers/abc"),
    ],
)
def test_canonical_form(path: str, canonical: str) -> None:
    assert check_route_path(path) == canonical


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/hub/",
        "/user/alice",
        "/user/alice/",
        "/user/alice/containers/",
        "/user/alice/containers/ABC",
        "/user/alice/containers/abc/",
        "/user/alice/containers/abc/extra",
        "/user//containers/abc",
        "/user/../containers/abc",
        "/user/./containers/abc",
        "/user/%2E%2E/containers/abc",
        "/user/a%2Fb/containers/abc",
        "/user/%ff/containers/abc",
        "/user/a%0Ab/containers/abc",
        "/user/a\nb/containers/abc",
        "user/alice/containers/abc",
    ],
)
def test_refused(path: str) -> None:
    with pytest.raises(InvalidRequest):
        check_route_path(path)


names = st.text(min_size=1, max_size=30).filter(
    lambda name: "/" not in name and name.isprintable() and name not in {".", ".."}
)


@given(names, st.from_regex(r"[a-z0-9]{1,40}", fullmatch=True))
def test_urlpath_is_canonical_and_survives_the_proxy_decoding_it(name: str, url_id: str) -> None:
    path = urlpath(name, url_id)
    assert check_route_path(path) == path
    # The proxy keeps routes decoded and reports them so; encoding gives our path back.
    assert encode_route_path(unquote(path)) == path
