"""``HubIdentityProvider`` against a small fake hub: the exchange, the user model, the cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from remoteappmanager.adapters.jupyterhub import (
    DEFAULT_CACHE_TTL,
    DEFAULT_NEGATIVE_TTL,
    HubIdentityProvider,
)
from remoteappmanager.domain.errors import Unable, Unauthorized, Unavailable
from remoteappmanager.domain.oauth import pkce_challenge
from remoteappmanager.ports.identity import HubUser
from tests.support.services import free_port
from tests.support.webapp import FakeClock, make_settings

SECRET = "service-secret-token"
CALLBACK = "/services/remoteapp/oauth_callback"


@dataclass
class FakeHub:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> user model
    forms: list[dict[str, str]] = field(default_factory=list)
    user_calls: int = 0
    delay: float = 0.0
    broken: bool = False
    challenge: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hub/api/oauth2/token", self.token)
        app.router.add_get("/hub/api/user", self.user)
        app.router.add_get("/hub/api/", self.root)
        return app

    async def token(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.forms.append(form)
        if form.get("client_secret") != SECRET:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("code") != "good" or pkce_challenge(form["code_verifier"]) != self.challenge:
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response({"access_token": "user-token", "token_type": "Bearer"})

    async def user(self, request: web.Request) -> web.Response:
        self.user_calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.broken:
            return web.Response(status=502, text="<html>bad gateway</html>")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        model = self.users.get(token) if scheme == "token" else None
        if model is None:
            return web.json_response({"status": 403, "message": "Forbidden"}, status=403)
        return web.json_response(model)

    async def root(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "6.0.0"})


@pytest.fixture
def hub() -> FakeHub:
    hub = FakeHub()
    hub.users["user-token"] = {
        "kind": "user",
        "name": "alice",
        "admin": False,
        "groups": ["g1"],
        "scopes": ["access:services!service=remoteapp"],
    }
    return hub


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def provider(
    hub: FakeHub, clock: FakeClock, aiohttp_server: Any
) -> AsyncIterator[HubIdentityProvider]:
    server: TestServer = await aiohttp_server(hub.app())
    provider = HubIdentityProvider(
        api_url=str(server.make_url("/hub/api")),
        api_token=SECRET,
        client_id="service-remoteapp",
        redirect_uri=CALLBACK,
        base_url="/",
        cache_ttl=30,
        cache_size=2,
        clock=clock,
    )
    yield provider
    await provider.close()


def test_authorize_url_is_the_public_hub_path_with_pkce() -> None:
    provider = HubIdentityProvider(
        api_url="http://127.0.0.1:8081/hub/api",
        api_token=SECRET,
        client_id="service-remoteapp",
        redirect_uri=CALLBACK,
        base_url="/jupyter/",
    )
    parts = urlsplit(provider.authorize_url("st4te", "ch4llenge"))
    assert parts.scheme == ""
    assert parts.netloc == ""
    assert parts.path == "/jupyter/hub/api/oauth2/authorize"
    assert {k: v[0] for k, v in parse_qs(parts.query).items()} == {
        "client_id": "service-remoteapp",
        "redirect_uri": CALLBACK,
        "response_type": "code",
        "state": "st4te",
        "code_challenge": "ch4llenge",
        "code_challenge_method": "S256",
    }


def test_from_settings_uses_the_hub_variables() -> None:
    settings = make_settings(jupyterhub_api_url="http://127.0.0.1:9/hub/api")
    provider = HubIdentityProvider.from_settings(settings)
    query = parse_qs(urlsplit(provider.authorize_url("s", "c")).query)
    assert query["client_id"] == ["service-remoteapp"]
    assert query["redirect_uri"] == [CALLBACK]
    assert provider.cache_ttl == DEFAULT_CACHE_TTL
    with pytest.raises(ValueError, match="JUPYTERHUB_API_TOKEN"):
        HubIdentityProvider.from_settings(make_settings(jupyterhub_api_token=None))


async def test_exchange_sends_what_the_hub_expects(
    provider: HubIdentityProvider, hub: FakeHub
) -> None:
    hub.challenge = pkce_challenge("v" * 43)
    assert await provider.exchange_code("good", "v" * 43) == "user-token"
    assert hub.forms == [
        {
            "client_id": "service-remoteapp",
            "client_secret": SECRET,
            "grant_type": "authorization_code",
            "code": "good",
            "redirect_uri": CALLBACK,
            "code_verifier": "v" * 43,
        }
    ]


async def test_bad_code_or_verifier_is_unauthorized(
    provider: HubIdentityProvider, hub: FakeHub
) -> None:
    hub.challenge = pkce_challenge("v" * 43)
    with pytest.raises(Unauthorized):
        await provider.exchange_code("bad", "v" * 43)
    with pytest.raises(Unauthorized):
        await provider.exchange_code("good", "w" * 43)


async def test_refused_client_credentials_are_our_problem_not_the_users(
    hub: FakeHub, aiohttp_server: Any
) -> None:
    server = await aiohttp_server(hub.app())
    provider = HubIdentityProvider(
        api_url=str(server.make_url("/hub/api")),
        api_token="wrong",
        client_id="service-remoteapp",
        redirect_uri=CALLBACK,
    )
    try:
        with pytest.raises(Unable) as caught:
            await provider.exchange_code("good", "v" * 43)
        assert "wrong" not in caught.value.message
    finally:
        await provider.close()


async def test_user_model_is_read(provider: HubIdentityProvider) -> None:
    assert await provider.user_for_token("user-token") == HubUser(
        "alice",
        admin=False,
        groups=frozenset({"g1"}),
        scopes=frozenset({"access:services!service=remoteapp"}),
    )


async def test_user_models_are_cached_for_the_ttl(
    provider: HubIdentityProvider, hub: FakeHub, clock: FakeClock
) -> None:
    await provider.user_for_token("user-token")
    hub.users["user-token"]["admin"] = True
    clock.advance(29)
    assert (await provider.user_for_token("user-token")).admin is False
    assert hub.user_calls == 1
    clock.advance(2)
    assert (await provider.user_for_token("user-token")).admin is True
    assert hub.user_calls == 2


async def test_a_revoked_token_stops_working_once_the_cache_expires(
    provider: HubIdentityProvider, hub: FakeHub, clock: FakeClock
) -> None:
    await provider.user_for_token("user-token")
    del hub.users["user-token"]
    await provider.user_for_token("user-token")  # still cached
    clock.advance(31)
    with pytest.raises(Unauthorized):
        await provider.user_for_token("user-token")


async def test_a_refused_token_is_refused_from_memory_for_the_negative_ttl(
    provider: HubIdentityProvider, hub: FakeHub, clock: FakeClock
) -> None:
    for _ in range(50):
        with pytest.raises(Unauthorized):
            await provider.user_for_token("bad-token")
    assert (hub.user_calls, provider.user_lookups, provider.refusals_cached) == (1, 1, 49)
    clock.advance(DEFAULT_NEGATIVE_TTL - 0.5)
    with pytest.raises(Unauthorized):
        await provider.user_for_token("bad-token")
    assert hub.user_calls == 1
    # Past the TTL the hub is asked again (and its answer counts).
    hub.users["bad-token"] = {"kind": "user", "name": "bob", "admin": True, "groups": []}
    clock.advance(1)
    assert (await provider.user_for_token("bad-token")).name == "bob"
    assert hub.user_calls == 2


async def test_concurrent_bad_tokens_share_one_hub_request(
    provider: HubIdentityProvider, hub: FakeHub
) -> None:
    hub.delay = 0.1
    answers = await asyncio.gather(
        *(provider.user_for_token("bad-token") for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(answer, Unauthorized) for answer in answers)
    assert hub.user_calls == 1


async def test_the_memory_of_refused_tokens_is_bounded(hub: FakeHub, aiohttp_server: Any) -> None:
    server: TestServer = await aiohttp_server(hub.app())
    provider = HubIdentityProvider(
        api_url=str(server.make_url("/hub/api")),
        api_token=SECRET,
        client_id="service-remoteapp",
        redirect_uri=CALLBACK,
        negative_size=2,
        clock=FakeClock(),
    )
    try:
        for token in ("bad-1", "bad-2", "bad-3", "bad-3", "bad-2"):
            with pytest.raises(Unauthorized):
                await provider.user_for_token(token)
        assert hub.user_calls == 3
        with pytest.raises(Unauthorized):
            await provider.user_for_token("bad-1")  # forgotten (size 2): asked again
        assert hub.user_calls == 4
        assert provider.refusals_remembered == 2
    finally:
        await provider.close()


async def test_an_unreachable_hub_is_not_remembered_as_a_refusal(
    provider: HubIdentityProvider, hub: FakeHub
) -> None:
    hub.broken = True
    with pytest.raises(Unavailable):
        await provider.user_for_token("user-token")
    hub.broken = False
    assert (await provider.user_for_token("user-token")).name == "alice"
    assert hub.user_calls == 2


async def test_scopes_are_those_the_hub_names_and_nothing_else(
    provider: HubIdentityProvider, hub: FakeHub
) -> None:
    hub.users["narrow"] = {"kind": "user", "name": "bob", "scopes": ["read:users:name!user=bob"]}
    hub.users["none"] = {"kind": "user", "name": "bob"}
    hub.users["odd"] = {"kind": "user", "name": "bob", "scopes": "access:services"}
    assert (await provider.user_for_token("narrow")).scopes == {"read:users:name!user=bob"}
    assert (await provider.user_for_token("none")).scopes == frozenset()
    assert (await provider.user_for_token("odd")).scopes == frozenset()


async def test_concurrent_lookups_share_one_hub_request(
    provider: HubIdentityProvider, hub: FakeHub
) -> None:
    hub.delay = 0.1
    users = await asyncio.gather(*(provider.user_for_token("user-token") for _ in range(20)))
    assert {user.name for user in users} == {"alice"}
    assert hub.user_calls == 1


async def test_cache_is_bounded(provider: HubIdentityProvider, hub: FakeHub) -> None:
    for name in ("a", "b", "c"):
        hub.users[f"t-{name}"] = {"kind": "user", "name": name, "admin": False, "groups": []}
        await provider.user_for_token(f"t-{name}")
    await provider.user_for_token("t-c")
    await provider.user_for_token("t-b")
    assert hub.user_calls == 3
    await provider.user_for_token("t-a")  # evicted (size 2)
    assert hub.user_calls == 4


async def test_service_tokens_are_not_users(provider: HubIdentityProvider, hub: FakeHub) -> None:
    hub.users["svc"] = {"kind": "service", "name": "announcements"}
    with pytest.raises(Unauthorized):
        await provider.user_for_token("svc")


async def test_hub_errors_are_unavailable(provider: HubIdentityProvider, hub: FakeHub) -> None:
    hub.broken = True
    with pytest.raises(Unavailable):
        await provider.user_for_token("user-token")
    await provider.check()


async def test_unreachable_hub_is_unavailable_without_its_address() -> None:
    port = free_port()
    provider = HubIdentityProvider(
        api_url=f"http://127.0.0.1:{port}/hub/api",
        api_token=SECRET,
        client_id="service-remoteapp",
        redirect_uri=CALLBACK,
        timeout=2,
    )
    try:
        for call in (
            provider.user_for_token("t"),
            provider.exchange_code("c", "v"),
            provider.check(),
        ):
            with pytest.raises(Unavailable) as caught:
                await call
            assert str(port) not in caught.value.message
            assert "127.0.0.1" not in caught.value.message
    finally:
        await provider.close()
