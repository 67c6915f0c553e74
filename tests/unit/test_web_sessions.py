"""Signed cookie values, the signing key, and the bounded in-memory session store."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from remoteappmanager.web.cookies import CookieSigner, cookie_key
from remoteappmanager.web.login_sessions import LoginSessionStore
from remoteappmanager.web.urls import ServiceUrls
from tests.support.webapp import FakeClock, make_settings

KEY = b"k" * 32


def test_signed_values_round_trip_and_are_bound_to_their_purpose() -> None:
    signer = CookieSigner(KEY)
    signed = signer.sign("session", "abc")
    assert signer.unsign("session", signed, max_age=60) == "abc"
    assert signer.unsign("oauth-state", signed, max_age=60) is None
    assert CookieSigner(b"x" * 32).unsign("session", signed, max_age=60) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),
        lambda s: "QUJD" + s[s.index(".") :],
        lambda s: s.replace(".", ".9", 1),
        lambda s: s + ".x",
        lambda s: "",
    ],
)
def test_tampered_values_are_refused(mangle: object) -> None:
    signer = CookieSigner(KEY)
    signed = signer.sign("session", "abc")
    assert callable(mangle)
    assert signer.unsign("session", mangle(signed), max_age=60) is None


def test_old_values_are_refused() -> None:
    clock = FakeClock()
    signer = CookieSigner(KEY, clock=clock)
    signed = signer.sign("state", "v")
    clock.advance(599)
    assert signer.unsign("state", signed, max_age=600) == "v"
    clock.advance(2)
    assert signer.unsign("state", signed, max_age=600) is None


def test_key_is_the_cookie_secret_or_derived_from_the_hub_token() -> None:
    assert cookie_key(make_settings(cookie_secret="s" * 32)) == b"s" * 32
    token = "service-token-" + "0" * 32
    derived = cookie_key(make_settings(jupyterhub_api_token=token))
    assert derived == hmac.new(token.encode(), b"remoteapp-cookie", hashlib.sha256).digest()
    assert token.encode() not in derived


def test_without_secret_or_token_the_key_is_random() -> None:
    first = cookie_key(make_settings(jupyterhub_api_token=None))
    second = cookie_key(make_settings(jupyterhub_api_token=None))
    assert len(first) == 32
    assert first != second


def test_store_expires_idle_and_old_sessions() -> None:
    clock = FakeClock()
    store = LoginSessionStore(clock=clock, idle_timeout=100, max_age=250)
    session = store.create("alice", "hub-token")
    clock.advance(90)
    assert store.get(session.id) is session
    clock.advance(90)
    assert store.get(session.id) is session  # used within the idle timeout
    clock.advance(90)
    assert store.get(session.id) is None  # older than max_age
    idle = store.create("bob", "t")
    clock.advance(101)
    assert store.get(idle.id) is None


def test_store_is_bounded_dropping_the_least_recently_used() -> None:
    clock = FakeClock()
    store = LoginSessionStore(clock=clock, max_sessions=3)
    first, second, third = (store.create(f"u{i}", "t") for i in range(3))
    store.get(first.id)
    store.create("u3", "t")
    assert len(store) == 3
    assert store.get(second.id) is None
    assert store.get(first.id) is not None
    assert store.get(third.id) is not None


def test_one_user_signing_in_again_and_again_ends_only_their_own_sessions() -> None:
    clock = FakeClock()
    store = LoginSessionStore(clock=clock, max_sessions_per_user=3)
    others = [store.create(name, "t") for name in ("bob", "carol")]
    first, second, third = (store.create("mallory", "t") for _ in range(3))
    for _ in range(100):
        clock.advance(1)
        store.get(first.id)  # the one in use survives
        latest = store.create("mallory", "t")
    assert store.count_for("mallory") == 3
    assert store.get(latest.id) is not None
    assert store.get(first.id) is not None
    assert store.get(second.id) is None
    assert store.get(third.id) is None
    assert all(store.get(other.id) is not None for other in others)
    assert len(store) == 5


def test_a_full_store_takes_a_known_users_new_session_out_of_their_own() -> None:
    clock = FakeClock()
    store = LoginSessionStore(clock=clock, max_sessions=4, max_sessions_per_user=10)
    victims = [store.create(name, "t") for name in ("bob", "carol", "dave")]
    mallory = store.create("mallory", "t")
    for _ in range(20):
        mallory = store.create("mallory", "t")
    assert len(store) == 4
    assert store.count_for("mallory") == 1
    assert all(store.get(victim.id) is not None for victim in victims)
    # A first session of a new user ends the least recently used session of anyone.
    store.get(mallory.id)
    store.get(victims[0].id)
    store.create("erin", "t")
    assert store.get(victims[1].id) is None
    assert store.get(victims[0].id) is not None
    assert store.get(mallory.id) is not None


def test_per_user_bookkeeping_follows_deletes_and_expiry() -> None:
    clock = FakeClock()
    store = LoginSessionStore(clock=clock, idle_timeout=10, max_sessions_per_user=2)
    a = store.create("a", "t")
    store.delete(a.id)
    assert store.count_for("a") == 0
    store.create("a", "t")
    clock.advance(11)
    store.create("b", "t")  # sweeps a's idle session
    assert store.count_for("a") == 0
    assert store.delete_user("b") == 1
    assert store.count_for("b") == 0
    assert store._by_user == {}


def test_creating_sessions_sweeps_idle_ones() -> None:
    clock = FakeClock()
    store = LoginSessionStore(clock=clock, idle_timeout=10)
    for i in range(100):
        store.create(f"u{i}", "t")
    clock.advance(11)
    store.create("late", "t")
    assert len(store) == 1


def test_delete_user_ends_all_their_sessions() -> None:
    store = LoginSessionStore()
    a1, a2, b = store.create("a", "t"), store.create("a", "t"), store.create("b", "t")
    assert store.delete_user("a") == 2
    assert store.get(a1.id) is None
    assert store.get(a2.id) is None
    assert store.get(b.id) is not None


def test_session_ids_are_unguessable() -> None:
    store = LoginSessionStore()
    ids = {store.create("a", "t").id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) >= 43 for i in ids)


def test_urls_follow_the_settings() -> None:
    urls = ServiceUrls.from_settings(
        make_settings(
            jupyterhub_service_prefix="/jh/services/ra/",
            jupyterhub_base_url="/jh/",
            jupyterhub_oauth_callback_url="https://hub.example/jh/services/ra/oauth_callback",
        )
    )
    assert urls.callback == "/jh/services/ra/oauth_callback"
    assert urls.redirect_uri == "https://hub.example/jh/services/ra/oauth_callback"
    assert urls.hub_logout == "/jh/hub/logout"
    assert urls.is_api("/jh/services/ra/api/v1/")
    assert urls.is_local_page("/jh/services/ra/?x=1")
    for target in ("//evil.example/", "https://evil.example/", "/jh/other", "/jh/services/ra/\\x"):
        assert not urls.is_local_page(target)
