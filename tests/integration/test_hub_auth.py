"""Sign-in against a real JupyterHub (config/jupyterhub_config.py) with our app as its service."""

from __future__ import annotations

import asyncio
import html
import json
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from yarl import URL

from remoteappmanager.adapters.jupyterhub import HubIdentityProvider
from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider
from remoteappmanager.domain.errors import Unauthorized
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.oauth import new_pkce_verifier, pkce_challenge
from remoteappmanager.ports.identity import Directory, IdentityProvider
from remoteappmanager.settings import Settings
from remoteappmanager.web.app import create_app
from tests.support.gated import gated_service
from tests.support.hub import (
    HubPorts,
    admin_password,
    clean_environment,
    hub_environment,
    new_browser,
    require_hub,
    running_hub,
    sign_in,
    wait_until_routed,
    write_hub_config,
)
from tests.support.services import REPO
from tests.support.webapp import World

pytestmark = [pytest.mark.hub, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "demo-" + secrets.token_hex(8)
HUB_ADMINS = ("root",)
PREFIX = "/services/remoteapp/"
ADMIN_GROUP = "remoteapp-admins"
# The real default; tests move the identity cache's clock instead of waiting it out.
CACHE_TTL = 30.0


class ShiftedClock:
    """The monotonic clock, plus however far a test has moved it on."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


CLOCK = ShiftedClock()

# A service holding the test's own admin token, to create tokens and groups through the API,
# and another OAuth client that users may sign in to (its tokens are not for us).
_TEST_CONFIG = """
c.JupyterHub.services.append({{"name": "test-admin", "api_token": {admin_token!r}}})
c.JupyterHub.services.append(
    {{
        "name": "other-client",
        "api_token": {other_token!r},
        "oauth_redirect_uri": {other_redirect!r},
        "oauth_no_confirm": True,
    }}
)
for _role in c.JupyterHub.load_roles:
    if _role["name"] == "user":
        _role["scopes"] = [*_role["scopes"], "access:services!service=other-client"]
c.JupyterHub.load_roles.append(
    {{
        "name": "test-admin",
        "services": ["test-admin"],
        "scopes": ["admin:users", "admin:groups", "tokens", "list:users"],
    }}
)
import jupyterhub  # noqa
if int(jupyterhub.__version__.split(".")[0]) >= 6:
    # Proves that we send a correct PKCE verifier: without one the exchange would fail.
    c.JupyterHub.oauth_require_pkce = True
"""


OTHER_REDIRECT = "http://127.0.0.1:9/other/oauth_callback"


@dataclass
class Stack:
    public_url: str
    api_url: str
    admin_token: str
    other_token: str
    identity: HubIdentityProvider
    settings: Settings

    def url(self, path: str) -> str:
        return self.public_url + path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    require_hub()
    tmp = tmp_path_factory.mktemp("hub")
    ports = HubPorts.free()
    service_token, admin_token = secrets.token_hex(32), secrets.token_hex(32)
    other_token = secrets.token_hex(32)
    write_hub_config(
        tmp,
        _TEST_CONFIG.format(
            admin_token=admin_token, other_token=other_token, other_redirect=OTHER_REDIRECT
        ),
    )
    env = hub_environment(
        tmp,
        ports,
        PASSWORD,
        REMOTEAPP_HUB_ADMIN_USERS=",".join(HUB_ADMINS),
        REMOTEAPP_SERVICE_API_TOKEN=service_token,
        CONFIGPROXY_AUTH_TOKEN=secrets.token_hex(32),
    )

    # Our service, externally managed: in this process, on the port the hub routes to.
    settings = Settings(
        jupyterhub_api_url=f"http://127.0.0.1:{ports.hub}/hub/api",
        jupyterhub_api_token=service_token,
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_service_url=f"http://127.0.0.1:{ports.service}",
        jupyterhub_base_url="/",
        admin_group=ADMIN_GROUP,
        auto_user_creation=True,
        # No application runs here: no gate listener beside the hub's ports.
        container_access="direct",
    )
    identity = HubIdentityProvider.from_settings(settings, cache_ttl=CACHE_TTL, clock=CLOCK)
    # The production wiring, the real hub, everything else in memory, on the real clocks.
    deps = World().build(settings, identity=identity, clock=time.time, monotonic=CLOCK)
    runner = web.AppRunner(create_app(deps))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", ports.service)
    await site.start()
    try:
        with running_hub(tmp, env, ports.public):
            public_url = ports.public_url
            await wait_until_routed(public_url + PREFIX + "health")
            yield Stack(
                public_url=public_url,
                api_url=f"{public_url}/hub/api",
                admin_token=admin_token,
                other_token=other_token,
                identity=identity,
                settings=settings,
            )
    finally:
        await runner.cleanup()


async def _sign_in(
    browser: aiohttp.ClientSession, stack: Stack, name: str
) -> aiohttp.ClientResponse:
    password = admin_password(PASSWORD) if name in HUB_ADMINS else PASSWORD
    return await sign_in(browser, stack.url(PREFIX), name, password)


async def _api(stack: Stack, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"token {stack.admin_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.api_url + path, headers=headers, **kwargs) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json(content_type=None)


async def _whoami(browser: aiohttp.ClientSession, stack: Stack, **kwargs: Any) -> tuple[int, Any]:
    async with browser.get(stack.url(PREFIX + "api/v1/user"), **kwargs) as response:
        return response.status, await response.json()


# ------------------------------------------------------------------------------ tests
async def test_browser_signs_in_through_the_hub(stack: Stack) -> None:
    async with new_browser() as browser:
        landed = await _sign_in(browser, stack, "alice")
        assert landed.status == 200
        assert landed.url.path == PREFIX
        async with browser.get(stack.url(PREFIX)) as page:
            assert 'Signed in as <strong id="user">alice</strong>.' in await page.text()
        assert await _whoami(browser, stack) == (
            200,
            {"name": "alice", "admin": False, "groups": []},
        )
        # The hub token stays with us: the browser holds only our opaque session cookie.
        ours = {m.key for m in browser.cookie_jar if m["path"].startswith(PREFIX)}
        assert ours == {"remoteapp-session", "_xsrf"}


async def test_hub_lands_users_on_our_page(stack: Stack) -> None:
    async with new_browser() as browser:
        await _sign_in(browser, stack, "dora")
        async with browser.get(stack.url("/hub/")) as response:
            assert response.url.path == PREFIX
            assert "dora" in await response.text()


async def test_hub_admins_and_admin_group_members_are_admins(stack: Stack) -> None:
    async with new_browser() as browser:
        await _sign_in(browser, stack, "root")
        status, body = await _whoami(browser, stack)
        assert (status, body["admin"]) == (200, True)

    await _api(stack, "POST", "/users/bob")
    await _api(stack, "POST", f"/groups/{ADMIN_GROUP}", json={"users": ["bob"]})
    async with new_browser() as browser:
        await _sign_in(browser, stack, "bob")
        status, body = await _whoami(browser, stack)
        assert (status, body) == (200, {"name": "bob", "admin": True, "groups": [ADMIN_GROUP]})


async def test_api_clients_use_hub_tokens(stack: Stack) -> None:
    await _api(stack, "POST", "/users/carol")
    token = (await _api(stack, "POST", "/users/carol/tokens", json={"note": "test"}))["token"]
    async with aiohttp.ClientSession() as client:
        assert await _whoami(client, stack, headers={"Authorization": f"token {token}"}) == (
            200,
            {"name": "carol", "admin": False, "groups": []},
        )
        status, body = await _whoami(client, stack, headers={"Authorization": "token nope"})
        assert (status, body["type"]) == (401, "Unauthorized")
        status, body = await _whoami(client, stack)
        assert (status, body["type"]) == (401, "Unauthorized")
        # Token-authenticated changes need no XSRF token: the request passes the CSRF check
        # (403) and reaches the handler, which refuses its missing body (400).
        async with client.post(
            stack.url(PREFIX + "api/v1/containers/"),
            headers={"Authorization": f"token {token}"},
        ) as response:
            assert response.status == 400


async def test_hub_logout_ends_our_session_within_the_cache_ttl(stack: Stack) -> None:
    async with new_browser() as browser:
        await _sign_in(browser, stack, "erin")
        assert (await _whoami(browser, stack))[0] == 200
        async with browser.get(stack.url("/hub/logout")) as response:
            assert response.status == 200
        # Until the cached answer expires the session stands; then the logout holds.
        assert (await _whoami(browser, stack))[0] == 200
        CLOCK.advance(CACHE_TTL)
        status, body = await _whoami(browser, stack)
        assert (status, body["type"]) == (401, "Unauthorized")
        # A page visit now goes back to the hub's login form.
        async with browser.get(stack.url(PREFIX)) as page:
            assert page.url.path == "/hub/login"


async def test_our_logout_signs_out_of_the_hub_too(stack: Stack) -> None:
    async with new_browser() as browser:
        await _sign_in(browser, stack, "frank")
        # GET only asks for confirmation; the page's form POSTs with its XSRF token.
        async with browser.get(stack.url(PREFIX + "logout")) as page:
            assert page.status == 200
            text = await page.text()
        assert (await _whoami(browser, stack))[0] == 200
        match = re.search(r'name="_xsrf" value="([^"]+)"', text)
        assert match is not None, text
        async with browser.post(
            stack.url(PREFIX + "logout"),
            data={"_xsrf": html.unescape(match.group(1))},
            headers={"Origin": stack.public_url},
        ) as response:
            assert response.url.path.startswith("/hub/")
        status, _ = await _whoami(browser, stack)
        assert status == 401
        async with browser.get(stack.url(PREFIX)) as page:
            assert page.url.path == "/hub/login"


async def test_state_changes_by_cookie_need_the_xsrf_token_and_our_origin(stack: Stack) -> None:
    async with new_browser() as browser:
        await _sign_in(browser, stack, "gina")
        url = stack.url(PREFIX + "logout")
        async with browser.post(url, allow_redirects=False) as refused:
            assert refused.status == 403
        xsrf = next(m.value for m in browser.cookie_jar if m.key == "_xsrf" and m["path"] == PREFIX)
        # The proxy keeps the Host header, so the origin check sees the public origin.
        evil = {"X-XSRFToken": xsrf, "Origin": "http://evil.example"}
        async with browser.post(url, headers=evil, allow_redirects=False) as refused:
            assert refused.status == 403
        ours = {"X-XSRFToken": xsrf, "Origin": stack.public_url}
        async with browser.post(url, headers=ours, allow_redirects=False) as accepted:
            assert accepted.status == 302


# ------------------------------------------------------------------------------ token scopes
async def _token(stack: Stack, user: str, scopes: list[str] | None = None) -> str:
    """A new API token of ``user`` (created in the hub if need be) with ``scopes``."""
    users = await _api(stack, "GET", "/users")
    if user not in {model["name"] for model in users}:
        await _api(stack, "POST", f"/users/{user}")
    body: dict[str, Any] = {"note": "scope test"}
    if scopes is not None:
        body["scopes"] = scopes
    token: str = (await _api(stack, "POST", f"/users/{user}/tokens", json=body))["token"]
    return token


async def _other_clients_token(stack: Stack, browser: aiohttp.ClientSession) -> str:
    """The OAuth code flow of another service, for a browser signed in to the hub."""
    verifier = new_pkce_verifier()
    query = {
        "client_id": "service-other-client",
        "redirect_uri": OTHER_REDIRECT,
        "response_type": "code",
        "state": secrets.token_urlsafe(16),
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    async with browser.get(
        stack.url("/hub/api/oauth2/authorize"), params=query, allow_redirects=False
    ) as response:
        assert response.status == 302, await response.text()
        location = URL(response.headers["Location"])
    assert str(location).startswith(OTHER_REDIRECT)
    form = {
        "client_id": "service-other-client",
        "client_secret": stack.other_token,
        "grant_type": "authorization_code",
        "code": location.query["code"],
        "redirect_uri": OTHER_REDIRECT,
        "code_verifier": verifier,
    }
    async with (
        aiohttp.ClientSession() as client,
        client.post(stack.url("/hub/api/oauth2/token"), data=form) as response,
    ):
        assert response.status == 200, await response.text()
        token: str = (await response.json())["access_token"]
    return token


async def test_a_token_with_only_read_users_name_is_refused_by_the_api(stack: Stack) -> None:
    narrow = await _token(stack, "helen", ["read:users:name!user=helen"])
    async with aiohttp.ClientSession() as client:
        status, body = await _whoami(client, stack, headers={"Authorization": f"token {narrow}"})
    assert (status, body["type"]) == (403, "Forbidden")
    assert "access:services!service=remoteapp" in body["message"]
    assert narrow not in body["message"]


async def test_a_token_with_the_access_scope_is_accepted(stack: Stack) -> None:
    scoped = await _token(
        stack, "ivan", ["access:services!service=remoteapp", "read:users:name!user=ivan"]
    )
    async with aiohttp.ClientSession() as client:
        status, body = await _whoami(client, stack, headers={"Authorization": f"token {scoped}"})
    assert (status, body["name"]) == (200, "ivan")


async def test_a_token_issued_to_another_oauth_client_is_refused(stack: Stack) -> None:
    async with new_browser() as browser:
        # Signed in to the hub (and to us: the browser's own session keeps working).
        await _sign_in(browser, stack, "judy")
        assert (await _whoami(browser, stack))[0] == 200
        foreign = await _other_clients_token(stack, browser)
    async with aiohttp.ClientSession() as client:
        status, body = await _whoami(client, stack, headers={"Authorization": f"token {foreign}"})
    assert (status, body["type"]) == (403, "Forbidden")


async def test_our_own_oauth_token_carries_the_access_scope(stack: Stack) -> None:
    async with new_browser() as browser:
        await _sign_in(browser, stack, "kim")
        assert (await _whoami(browser, stack))[0] == 200


async def test_the_gate_takes_only_tokens_with_the_access_scope(stack: Stack) -> None:
    world = World()
    async with gated_service(
        world,
        identity=HubIdentityProvider.from_settings(stack.settings),
        jupyterhub_api_url=stack.settings.jupyterhub_api_url,
        jupyterhub_api_token=stack.settings.jupyterhub_api_token,
    ) as gated:
        session = await gated.start("lena")
        path = session.urlpath + "/x"
        narrow = await _token(stack, "lena", ["read:users:name!user=lena"])
        status, body = await gated.gate_request("GET", path, {"Authorization": f"token {narrow}"})
        assert status == 403
        assert narrow.encode() not in body
        async with new_browser() as browser:
            await _sign_in(browser, stack, "lena")
            foreign = await _other_clients_token(stack, browser)
        status, _ = await gated.gate_request("GET", path, {"Authorization": f"token {foreign}"})
        assert status == 403
        full = await _token(stack, "lena")
        status, body = await gated.gate_request("GET", path, {"Authorization": f"token {full}"})
        assert status == 200, body
        assert session.urlpath.encode() in body


async def test_repeated_bad_tokens_cost_the_hub_one_request(stack: Stack) -> None:
    before = stack.identity.user_lookups
    bad = {"Authorization": f"token {secrets.token_hex(16)}"}
    async with aiohttp.ClientSession() as client:
        for _ in range(25):
            status, body = await _whoami(client, stack, headers=bad)
            assert (status, body["type"]) == (401, "Unauthorized")
    # Well within the 10 s negative-cache TTL: one request to the real hub, 24 from memory.
    assert stack.identity.user_lookups - before == 1


_LOAD_CONFIG = """
import json, sys
from traitlets.config.loader import PyFileConfigLoader
config = PyFileConfigLoader("jupyterhub_config.py", path=sys.argv[1]).load_config()
hub = config.JupyterHub
print(json.dumps({
    "services": hub.services,
    "roles": hub.load_roles,
    "default_url": hub.default_url,
    "authenticator": str(hub.get("authenticator_class", "")),
    "proxy_token": config.ConfigurableHTTPProxy.auth_token,
}))
"""


async def test_config_registers_a_managed_service_with_the_right_environment(
    tmp_path: Path,
) -> None:
    require_hub()
    env = clean_environment(also=("DOCKER_",))
    env.update(
        REMOTEAPP_HUB_DATA_DIR=str(tmp_path),
        REMOTEAPP_HUB_BASE_URL="/jupyter",
        REMOTEAPP_HUB_ADMIN_USERS=",".join(HUB_ADMINS),
        REMOTEAPP_REALM="lab",
        REMOTEAPP_AUTO_USER_CREATION="true",
        DOCKER_HOST="unix:///run/docker.sock",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LOAD_CONFIG,
        str(REPO / "config"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    config = json.loads(stdout)
    (service,) = config["services"]
    assert service["name"] == "remoteapp"
    assert service["oauth_no_confirm"] is True
    assert service["url"] == "http://127.0.0.1:10101"
    assert Path(service["command"][0]).name == "remoteappmanager"
    environment = service["environment"]
    # A proxy token was made up, and the hub and the service share it.
    assert len(environment["CONFIGPROXY_AUTH_TOKEN"]) == 64
    assert environment["CONFIGPROXY_AUTH_TOKEN"] == config["proxy_token"]
    assert environment["CONFIGPROXY_API_URL"] == "http://127.0.0.1:8001"
    assert environment["REMOTEAPP_REALM"] == "lab"
    assert environment["REMOTEAPP_AUTO_USER_CREATION"] == "true"
    assert environment["DOCKER_HOST"] == "unix:///run/docker.sock"
    assert not any(name.startswith("REMOTEAPP_HUB_") for name in environment)
    assert config["default_url"] == "/jupyter/services/remoteapp/"
    assert config["roles"] == [
        {"name": "user", "scopes": ["self", "access:services!service=remoteapp"]},
        # The share dialog's search: names of users and groups, nothing else of them.
        {
            "name": "remoteapp-directory",
            "services": ["remoteapp"],
            "scopes": ["list:users", "read:users:name", "list:groups", "read:groups:name"],
        },
    ]
    # Without a demo password the machine's accounts sign in (PAM, JupyterHub's default).
    assert config["authenticator"] == ""


@pytest.mark.parametrize("held", ["service", "gate"])
async def test_the_hub_refuses_to_start_when_a_service_port_is_taken(
    tmp_path: Path, held: str
) -> None:
    """A managed service whose port is taken would die and be restarted by the hub forever:
    the hub stops at once instead, with one line naming the port and the setting."""
    require_hub()
    ports = HubPorts.free()
    write_hub_config(tmp_path)
    env = hub_environment(tmp_path, ports, "pw")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.service if held == "service" else ports.gate))
        taken.listen()
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "jupyterhub", "-f", str(tmp_path / "test_config.py")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("remoteapp:")]
    port = ports.service if held == "service" else ports.gate
    setting = "REMOTEAPP_SERVICE_PORT" if held == "service" else "REMOTEAPP_GATE_URL"
    assert f"port {port} on 127.0.0.1 is taken" in line
    assert setting in line
    # Nothing was started: no proxy on the public port.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", ports.public)) != 0


# ---------------------------------------------------------------- the identity port's contract
# The same assertions against the in-memory hub and the real one (ports/identity.py).


class HubSide:
    """What a test does at the hub: make users and tokens, revoke, change groups."""

    async def token(self, user: str) -> str:
        raise NotImplementedError

    async def revoke(self, user: str) -> None:
        raise NotImplementedError

    async def join(self, user: str, group: str) -> None:
        raise NotImplementedError


class RealHubSide(HubSide):
    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def token(self, user: str) -> str:
        return await _token(self.stack, user)

    async def revoke(self, user: str) -> None:
        for token in (await _api(self.stack, "GET", f"/users/{user}/tokens"))["api_tokens"]:
            await _api(self.stack, "DELETE", f"/users/{user}/tokens/{token['id']}")

    async def join(self, user: str, group: str) -> None:
        groups = {g["name"] for g in await _api(self.stack, "GET", "/groups")}
        if group not in groups:
            await _api(self.stack, "POST", f"/groups/{group}")
        await _api(self.stack, "POST", f"/groups/{group}/users", json={"users": [user]})


class FakeHubSide(HubSide):
    def __init__(self, hub: InMemoryIdentityProvider) -> None:
        self.hub = hub

    async def token(self, user: str) -> str:
        try:
            return self.hub.issue_token(user)
        except KeyError:
            self.hub.add_user(user)
            return self.hub.issue_token(user)

    async def revoke(self, user: str) -> None:
        self.hub.revoke_user(user)

    async def join(self, user: str, group: str) -> None:
        self.hub.set_groups(user, self.hub._users[user].groups | {group})


@pytest_asyncio.fixture(loop_scope="module", params=["in-memory", "jupyterhub"])
async def contract(
    request: pytest.FixtureRequest, stack: Stack
) -> AsyncIterator[tuple[IdentityProvider, HubSide, ShiftedClock]]:
    clock = ShiftedClock()
    provider: IdentityProvider
    side: HubSide
    if request.param == "in-memory":
        fake = InMemoryIdentityProvider(cache_ttl=CACHE_TTL, clock=clock)
        provider, side = fake, FakeHubSide(fake)
    else:
        provider = HubIdentityProvider.from_settings(
            stack.settings, cache_ttl=CACHE_TTL, clock=clock
        )
        side = RealHubSide(stack)
    try:
        yield provider, side, clock
    finally:
        await provider.close()


async def test_contract_the_authorize_url_carries_state_and_challenge(
    contract: tuple[IdentityProvider, HubSide, ShiftedClock],
) -> None:
    provider, _side, _clock = contract
    challenge = pkce_challenge(new_pkce_verifier())
    url = URL(provider.authorize_url("the-state", challenge))
    assert url.path == "/hub/api/oauth2/authorize"
    assert url.query["state"] == "the-state"
    assert url.query["code_challenge"] == challenge
    assert url.query["code_challenge_method"] == "S256"
    assert url.query["response_type"] == "code"
    assert url.query["client_id"] == "service-remoteapp"


async def test_contract_an_unknown_code_is_unauthorized(
    contract: tuple[IdentityProvider, HubSide, ShiftedClock],
) -> None:
    provider, _side, _clock = contract
    with pytest.raises(Unauthorized):
        await provider.exchange_code(secrets.token_urlsafe(16), new_pkce_verifier())


async def test_contract_a_token_names_its_user_and_carries_the_access_scope(
    contract: tuple[IdentityProvider, HubSide, ShiftedClock],
) -> None:
    provider, side, _clock = contract
    token = await side.token("mona")
    user = await provider.user_for_token(token)
    assert (user.name, user.admin, user.groups) == ("mona", False, frozenset())
    assert "access:services!service=remoteapp" in user.scopes
    await provider.check()


async def test_contract_unknown_and_empty_tokens_are_unauthorized(
    contract: tuple[IdentityProvider, HubSide, ShiftedClock],
) -> None:
    provider, _side, _clock = contract
    for token in ("", secrets.token_hex(16)):
        with pytest.raises(Unauthorized):
            await provider.user_for_token(token)


async def test_contract_a_revoked_token_works_until_the_cached_answer_expires(
    contract: tuple[IdentityProvider, HubSide, ShiftedClock],
) -> None:
    provider, side, clock = contract
    token = await side.token("nina")
    assert (await provider.user_for_token(token)).name == "nina"
    await side.revoke("nina")
    clock.advance(CACHE_TTL - 1)
    assert (await provider.user_for_token(token)).name == "nina"
    clock.advance(1)
    with pytest.raises(Unauthorized):
        await provider.user_for_token(token)


async def test_contract_a_group_change_shows_once_the_cached_answer_expires(
    contract: tuple[IdentityProvider, HubSide, ShiftedClock],
) -> None:
    provider, side, clock = contract
    token = await side.token("omar")
    assert (await provider.user_for_token(token)).groups == frozenset()
    await side.join("omar", "physics")
    assert (await provider.user_for_token(token)).groups == frozenset()
    clock.advance(CACHE_TTL)
    assert (await provider.user_for_token(token)).groups == {"physics"}


async def test_the_share_dialogs_search_finds_hub_users_and_groups(stack: Stack) -> None:
    # The hub's own listing, asked with the service's token (the config's directory role).
    stem = "s" + secrets.token_hex(3)
    await _api(stack, "POST", f"/users/{stem}ora")
    await _api(stack, "POST", f"/users/{stem}oris")
    await _api(stack, "POST", f"/groups/{stem}olphins", json={"users": [f"{stem}ora"]})
    found = await stack.identity.directory(stem, 20)
    assert found.users == (f"{stem}ora", f"{stem}oris")
    assert found.groups == (f"{stem}olphins",)
    assert (await stack.identity.directory(stem + "or", 1)).users == (f"{stem}ora",)
    assert await stack.identity.directory(stem + "-nobody", 20) == Directory()
    # Through the API: a signed-in user who may share nothing (no grant here) learns no
    # names; an admin gets them.
    query = {"query": json.dumps({"prefix": stem + "ol"})}
    async with new_browser() as browser:
        await _sign_in(browser, stack, f"{stem}ora")
        async with browser.get(stack.url(PREFIX + "api/v1/directory"), params=query) as response:
            assert response.status == 403, await response.text()
            assert f"{stem}olphins" not in await response.text()
    async with new_browser() as browser:
        await _sign_in(browser, stack, "root")
        async with browser.get(stack.url(PREFIX + "api/v1/directory"), params=query) as response:
            assert response.status == 200, await response.text()
            assert await response.json() == {"users": [], "groups": [f"{stem}olphins"]}


# ------------------------------------------------------------------------------ group grants
_GROUP_IMAGE = "remoteapp-test/web:latest"


async def test_a_hub_group_member_gets_the_groups_grant_and_loses_it_on_leaving(
    stack: Stack,
) -> None:
    """Groups as the real hub reports them: joining shows the application, leaving takes
    it away (and stops its session) once the hub's cached answer expires."""
    from aiohttp.test_utils import TestClient, TestServer

    from remoteappmanager.services import catalogue

    world = World()
    world.runtime.add_image(_GROUP_IMAGE, {"eu.simphony-project.docker.type": "webapp"})
    settings = Settings(
        jupyterhub_api_url=stack.settings.jupyterhub_api_url,
        jupyterhub_api_token=stack.settings.jupyterhub_api_token,
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_base_url="/",
        container_access="direct",
    )
    # The caches age on the clock that the hub's answers age on.
    deps = world.build(settings, identity=stack.identity, clock=time.time, monotonic=CLOCK)
    await catalogue.create_user(world.database.unit_of_work, "gina")
    await catalogue.create_application(world.database.unit_of_work, _GROUP_IMAGE)
    async with world.database.unit_of_work() as work:
        application = await work.applications.get_by_image(_GROUP_IMAGE)
        granted = await work.grants.grant_group("physics-lab", application, Policy())
        await work.commit()
    await _api(stack, "POST", "/groups/physics-lab")
    token = await _token(stack, "gina")
    headers = {"Authorization": f"token {token}"}
    applications = PREFIX + "api/v1/applications/"

    async with TestClient(TestServer(create_app(deps))) as client:

        async def listed() -> list[str]:
            async with client.get(applications, headers=headers) as response:
                assert response.status == 200
                return list((await response.json())["identifiers"])

        assert await listed() == []
        await _api(stack, "POST", "/groups/physics-lab/users", json={"users": ["gina"]})
        CLOCK.advance(CACHE_TTL)
        assert await listed() == [granted.mapping_id]
        async with client.post(
            PREFIX + "api/v1/containers/", json={"mapping_id": granted.mapping_id}, headers=headers
        ) as response:
            assert response.status == 201, await response.text()
            location = response.headers["Location"]
        assert world.runtime.container_ids

        await _api(stack, "DELETE", "/groups/physics-lab/users", json={"users": ["gina"]})
        assert await listed() == [granted.mapping_id]  # the hub's answer is cached
        CLOCK.advance(CACHE_TTL)
        assert await listed() == []
        assert world.runtime.container_ids == frozenset()
        async with client.get(location, headers=headers) as response:
            body = await response.json()
        assert (body["state"], body["stop_reason"]) == ("stopped", "admin")
        async with client.post(
            PREFIX + "api/v1/containers/", json={"mapping_id": granted.mapping_id}, headers=headers
        ) as response:
            assert response.status == 404
