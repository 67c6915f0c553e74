"""Image references as the Docker engine parses them: what passes, what is refused and why."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.models import (
    IMAGE_REFERENCE_PATTERN,
    MAX_IMAGE_LENGTH,
    ImageReference,
    parse_image_reference,
    validate_image_name,
)

SHA256 = "sha256:" + "0123456789abcdef" * 4

# Each of these was checked against a Docker 20.10 engine: it answers 404 (no such image),
# never 400 (invalid reference), when asked to inspect them.
ACCEPTED = [
    "busybox",
    "a" * 237,  # docker.io/library/ + 237 = 255
    "x/" + "a" * 243,  # docker.io/ + 245 = 255
    "remoteapp-demo/webapp:latest",
    "a--b",
    "a__b",
    "a.b_c-d",
    "a.b_c-d/e",  # not a host name, so the engine takes it as a repository
    "localhost/foo",
    "localhost:5000/foo:1.0",
    "LOCAL.host:5000/foo",
    "registry.example.org/team/app@" + SHA256,
    "registry.example.org:443/team/app:v2@" + SHA256,
    "foo:" + "t" * 128,
    "foo@sha256:" + "a" * 64,
    "foo@sha512:" + "b" * 128,
    "index.docker.io/a",
]

REFUSED = [
    ("", "non-empty"),
    ("a" * 238, "longer than 255"),
    ("x/" + "a" * 244, "longer than 255"),
    ("docker.io/" + "a" * 238, "longer than 255"),
    ("a" * (MAX_IMAGE_LENGTH + 1), "longer than 255"),
    ("Foo/bar", "lower-case"),
    ("foo/Bar", "lower-case"),
    ("UPPER", "lower-case"),
    ("a___b", "lower-case"),
    ("-a", "lower-case"),
    ("a-", "lower-case"),
    ("a//b", "lower-case"),
    ("foo:" + "t" * 129, "tag"),
    ("foo:.x", "tag"),
    ("foo:", "tag"),
    ("a:b:c", "lower-case"),
    ("foo@sha256:" + "a" * 32, "digest"),
    ("foo@sha256:" + "A" * 64, "digest"),
    ("foo@md5:" + "a" * 32, "digest"),
    ("foo@", "digest"),
    ("0123456789abcdef" * 4, "image id"),
    ("bad image", "only letters"),
    (" busybox", "only letters"),
    ("busybox\n", "only letters"),
    ("caf\u00e9", "only letters"),
    ("host-.example:5000/app", "registry"),
    ("host.example:port/app", "registry"),
]


@pytest.mark.parametrize("image", ACCEPTED)
def test_references_the_engine_accepts_pass(image: str) -> None:
    assert validate_image_name(image) == image


@pytest.mark.parametrize(("image", "reason"), REFUSED)
def test_references_the_engine_refuses_are_refused_with_the_reason(image: str, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason) as refused:
        validate_image_name(image)
    # The message names the image (shortened), never the whole of a long input.
    assert len(refused.value.message) < 400


def test_a_reference_is_split_as_the_engine_splits_it() -> None:
    assert parse_image_reference("localhost:5000/team/app:v1@" + SHA256) == ImageReference(
        domain="localhost:5000", path="team/app", tag="v1", digest=SHA256
    )
    plain = parse_image_reference("busybox")
    assert (plain.domain, plain.path, plain.tag, plain.digest) == (None, "busybox", None, None)
    assert plain.normalised_name == "docker.io/library/busybox"
    assert parse_image_reference("team/app:1").normalised_name == "docker.io/team/app"
    # A first component without '.' or ':' is part of the repository, not a registry.
    assert parse_image_reference("team/app").domain is None
    assert parse_image_reference("docker.io/app").normalised_name == "docker.io/library/app"


@given(st.text(max_size=300))
def test_anything_either_parses_or_is_an_invalid_request(text: str) -> None:
    try:
        reference = parse_image_reference(text)
    except InvalidRequest as exc:
        refused: InvalidRequest | None = exc
    else:
        refused = None
        assert len(text) <= MAX_IMAGE_LENGTH
        assert len(reference.normalised_name) <= MAX_IMAGE_LENGTH
    assert refused is None or refused.message


def _matches_the_pattern(text: str) -> bool:
    # As JSON Schema validators apply a pattern.
    return re.search(IMAGE_REFERENCE_PATTERN, text) is not None


_EDGES = [
    "docker.io/" + "a" * 237,
    "docker.io/" + "a" * 238,
    "docker.io/x/" + "a" * 243,
    "docker.io/x/" + "a" * 244,
    "index.docker.io/" + "a" * 238,
    "docker.io/localhost/x",
    "Docker.io/" + "a" * 240,
    "localhost:5000/" + "a" * 240,
    "a.b/" + "c" * 251,
    "a.b_c/" + "d" * 249,
    "busybox\n",
    "busybox:1\n",
]


@pytest.mark.parametrize("image", [*ACCEPTED, *(image for image, _ in REFUSED), *_EDGES])
def test_the_documented_pattern_is_the_same_rule(image: str) -> None:
    try:
        validate_image_name(image)
    except InvalidRequest:
        accepted = False
    else:
        accepted = True
    assert _matches_the_pattern(image) == accepted


_component = st.from_regex(r"\A[a-z0-9]{1,6}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,6}){0,2}\Z")


@given(
    st.one_of(
        st.text(alphabet="aZ09._-:/@", max_size=20),
        st.builds(
            lambda prefix, parts, padding, tag: prefix + "/".join(parts) + padding + tag,
            st.sampled_from(["", "docker.io/", "index.docker.io/", "localhost/", "r.io:5/"]),
            st.lists(_component, min_size=1, max_size=3),
            st.integers(min_value=0, max_value=250).map(lambda n: "a" * n),
            st.sampled_from(["", ":v1", ":" + "t" * 128, "@sha256:" + "0" * 64]),
        ),
    )
)
def test_the_documented_pattern_agrees_with_the_parser_on_anything(text: str) -> None:
    try:
        validate_image_name(text)
    except InvalidRequest:
        accepted = False
    else:
        accepted = True
    assert _matches_the_pattern(text) == accepted
