"""Names derived from users and grants: url ids, unix logins, container names, URL paths."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remoteappmanager.domain.naming import (
    container_name,
    is_url_id,
    new_url_id,
    unix_user_name,
    urlpath,
    user_base_url,
)

UNIX_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
DOCKER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
hub_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/"), min_size=1, max_size=80
)


def test_url_ids_are_long_lower_case_and_unique() -> None:
    ids = {new_url_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"[a-z0-9]{26}", url_id) for url_id in ids)
    assert all(is_url_id(url_id) for url_id in ids)
    # Every character position varies: the ids are not a counter or a timestamp.
    assert all(len({url_id[i] for url_id in ids}) > 20 for i in range(26))


@pytest.mark.parametrize("value", ["", "short", "A" * 26, "a" * 25, "a" * 65, "a/" * 13])
def test_is_url_id_refuses_what_we_never_issue(value: str) -> None:
    assert not is_url_id(value)


@pytest.mark.parametrize("name", ["alice", "bob-smith", "carol_1", "d" * 32])
def test_safe_names_are_kept(name: str) -> None:
    assert unix_user_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["Alice", "älice", "root", "nobody", "a--b", "1bob", "x" * 33, "user@example.com", "é", "--"],
)
def test_other_names_are_mangled_with_a_hash(name: str) -> None:
    mangled = unix_user_name(name)
    assert UNIX_RE.match(mangled)
    assert "--" in mangled
    assert mangled != name


def test_mangling_keeps_a_readable_stem() -> None:
    assert unix_user_name("José María").startswith("jose_maria--")
    assert unix_user_name("Alice").startswith("alice--")
    assert unix_user_name("42").startswith("u42--")


@given(hub_names)
def test_unix_names_are_always_valid_and_deterministic(name: str) -> None:
    result = unix_user_name(name)
    assert UNIX_RE.match(result), result
    assert unix_user_name(name) == result


@given(hub_names, hub_names)
def test_different_hub_names_get_different_unix_names(one: str, two: str) -> None:
    if one != two:
        assert unix_user_name(one) != unix_user_name(two)


def test_a_verbatim_name_cannot_impersonate_a_mangled_one() -> None:
    # Someone registering the mangled form of "Alice" as their hub name gets a name of
    # their own, not Alice's workspace.
    impostor = unix_user_name("Alice")
    assert unix_user_name(impostor) != impostor


def test_case_variants_do_not_collide() -> None:
    names = {unix_user_name(n) for n in ("alice", "Alice", "ALICE", "aLice", "älice")}
    assert len(names) == 5


def test_urlpath_and_base_url() -> None:
    assert user_base_url("alice") == "/user/alice"
    assert urlpath("alice", "abc") == "/user/alice/containers/abc"


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("user@example.com", "user@example.com"),
        ("tilde~name", "tilde~name"),
        ("José", "Jos%C3%A9"),
        ("a b", "a%20b"),
        ("what?#", "what%3F%23"),
        ("100%", "100%25"),
    ],
)
def test_user_names_are_escaped_as_jupyterhub_does(name: str, escaped: str) -> None:
    assert user_base_url(name) == f"/user/{escaped}"


def test_container_names_say_realm_user_and_grant() -> None:
    name = container_name("remoteexec", "alice", "0123abcd" * 4)
    assert name == "remoteexec.alice." + "0123abcd" * 4
    assert DOCKER_NAME_RE.match(name)


@given(hub_names)
def test_container_names_are_valid_docker_names(user: str) -> None:
    name = container_name("realm.with-dots_1", user, "f" * 32)
    assert DOCKER_NAME_RE.match(name)
    assert name == container_name("realm.with-dots_1", user, "f" * 32)


def test_container_names_differ_by_realm_user_and_grant() -> None:
    base = container_name("r", "alice", "a" * 32)
    assert base != container_name("r2", "alice", "a" * 32)
    assert base != container_name("r", "Alice", "a" * 32)
    assert base != container_name("r", "alice", "b" * 32)


@pytest.mark.parametrize(
    ("realm", "mapping_id"), [("r", "../x"), ("r", ""), ("", "a"), ("-r", "a")]
)
def test_container_names_refuse_unsafe_parts(realm: str, mapping_id: str) -> None:
    with pytest.raises(ValueError, match="cannot be part of a container name"):
        container_name(realm, "alice", mapping_id)
