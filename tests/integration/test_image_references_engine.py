"""Our image-reference rule against a real Docker engine: we refuse exactly what it refuses.

The engine answers an image inspection with 400 for a reference it cannot parse and 404 for
a valid one it does not hold, so the status is the engine's
verdict on the reference (a 200 for one it happens to hold is an acceptance too).
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import aiodocker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remoteappmanager.adapters import docker as docker_adapter
from remoteappmanager.adapters.docker import AiodockerRuntime
from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.models import validate_image_name
from remoteappmanager.services.applications import IMAGE_MISSING, ImageMetadataCache
from tests.unit.test_image_reference import ACCEPTED, REFUSED

pytestmark = pytest.mark.docker

# The engine looks a bare 64-digit hex string up as an image id; as a name it refuses it.
_ID_LIKE = "0123456789abcdef" * 4


async def _engine_accepts(docker: aiodocker.Docker, image: str) -> bool:
    try:
        await docker._query_json(f"images/{quote(image, safe='/:@')}/json")
    except aiodocker.DockerError as exc:
        status, message = exc.status, exc.message
    else:
        return True  # it even holds it
    assert status in (400, 404), (image, status, message)
    return status == 404


def _not_in_a_path(image: str) -> bool:
    # The engine's router redirects paths with empty, "." or ".." segments instead of answering.
    return image == _ID_LIKE or any(part in ("", ".", "..") for part in image.split("/"))


def _ours(image: str) -> bool:
    try:
        validate_image_name(image)
    except InvalidRequest:
        return False
    return True


async def test_the_listed_references_get_the_engines_verdict(docker_engine: None) -> None:
    async with aiodocker.Docker() as docker:
        for image in ACCEPTED:
            assert await _engine_accepts(docker, image), image
        for image, _reason in REFUSED:
            if _not_in_a_path(image) or image != image.strip() or not image.isascii():
                assert not _ours(image)
                continue  # not expressible in the URL path, or looked up as an id
            assert not await _engine_accepts(docker, image), image


_component = st.from_regex(r"\A[a-z0-9]{1,8}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,8}){0,2}\Z")
_noise = st.text(alphabet="aZ09._-:/@", min_size=1, max_size=12)
_long = st.integers(min_value=225, max_value=260).map(lambda n: "a" * n)
_references = st.one_of(
    st.builds(
        lambda domain, parts, tag: f"{domain}{'/'.join(parts)}{tag}",
        st.sampled_from(["", "localhost/", "registry.example:5000/", "docker.io/", "Reg.io/"]),
        st.lists(st.one_of(_component, _noise), min_size=1, max_size=3),
        st.one_of(st.just(""), _noise.map(lambda t: ":" + t)),
    ),
    _long,
    _long.map(lambda name: "x/" + name[2:]),
    _long.map(lambda name: name[:200] + ":" + "t" * 130),
)


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(image=_references)
def test_generated_references_get_the_engines_verdict(docker_engine: None, image: str) -> None:
    async def verdict() -> bool:
        async with aiodocker.Docker() as docker:
            return await _engine_accepts(docker, image)

    if _not_in_a_path(image):
        assert not _ours(image)
        return
    assert _ours(image) == asyncio.run(verdict()), image


async def test_a_listing_shows_what_the_real_engine_cannot_inspect_as_unavailable(
    docker_engine: None,
) -> None:
    runtime = AiodockerRuntime()
    try:
        images = ImageMetadataCache(runtime)
        refused = await images.get("a" * 238)
        missing = await images.get("remoteapp-test/never-built:" + "0" * 12)
    finally:
        await runtime.close()
    assert refused.metadata is None
    assert refused.unavailable_reason is not None
    assert "not a valid Docker image name" in refused.unavailable_reason
    assert (missing.metadata, missing.unavailable_reason) == (None, IMAGE_MISSING)


async def test_the_engines_own_refusal_is_an_unavailable_image_not_an_error(
    docker_engine: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if our check let a reference through that the engine refuses (the 400 that used to
    # fail every listing): the engine's answer alone must make it unavailable.
    monkeypatch.setattr(docker_adapter, "validate_image_name", lambda image: image)
    runtime = AiodockerRuntime()
    try:
        state = await ImageMetadataCache(runtime).get("a" * 238)
    finally:
        await runtime.close()
    assert state.metadata is None
    assert state.unavailable_reason is not None
    assert "Docker engine refused to inspect image" in state.unavailable_reason
