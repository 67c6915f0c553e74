"""`remoteapprest` against the real web application (in-memory fakes behind it) on 127.0.0.1.

The service runs in this test's event loop, served by aiohttp's ``TestServer``; each command
runs through click in a worker thread with its own loop, as a user's process would. The hub's
login form and token API are played by ``HubLogin`` on the same origin, as the proxy puts
them. Every command checks that no token ever appears in what it prints.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from remoteappmanager import bootstrap
from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider
from remoteappmanager.adapters.rest_client import AiohttpRemoteAppClient
from remoteappmanager.cli import credentials as stored
from remoteappmanager.cli.credentials import Credentials, Endpoint
from remoteappmanager.cli.rest import ExitCode, main
from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.models import Policy, Volume, VolumeMode
from remoteappmanager.ports.remote_api import RemoteAppClient
from remoteappmanager.services import catalogue
from tests.support.services import free_port
from tests.support.webapp import PREFIX, World, make_app, make_settings

NS = "eu.simphony-project.docker."
DESKTOP = "remoteapp-test/desktop:latest"
WEBAPP = "remoteapp-test/web:latest"
GONE = "remoteapp-test/gone:latest"
DESKTOP_LABELS = {
    NS + "ui_name": "Remote desktop",
    NS + "type": "vncapp",
    NS + "env.x11-width": "",
    NS + "env.x11-height": "",
    NS + "env.startupdata": "",
}
WEB_LABELS = {NS + "ui_name": "Web", NS + "type": "webapp"}
PASSWORD = "correct horse battery staple"
ERROR = "remoteapprest: error: "
HUB_SESSION_COOKIE = "jupyterhub-hub-login"


# ------------------------------------------------------------------------------ the fake hub
@dataclass
class HubLogin:
    """JupyterHub's login form and token API, as far as `login --username` uses them.

    Like the real hub, the login form sets an ``_xsrf`` cookie and checks it comes back in
    the form; a sign-in sets the login cookie and a new ``_xsrf`` cookie, which token requests
    must echo in ``X-XSRFToken``; names are normalised to lower case; an ``expires_in`` above
    ``max_expires_in`` is refused with 400.
    """

    identity: InMemoryIdentityProvider
    passwords: dict[str, str]
    max_expires_in: int | None = None
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    _sessions: dict[str, str] = field(default_factory=dict)
    _xsrf: set[str] = field(default_factory=set)

    def install(self, app: web.Application) -> None:
        app.router.add_get("/hub/login", self.login_form)
        app.router.add_post("/hub/login", self.sign_in)
        app.router.add_get("/hub/api/user", self.whoami)
        app.router.add_post("/hub/api/users/{name}/tokens", self.create_token)

    def _with_xsrf(self, response: web.Response, value: str | None = None) -> web.Response:
        value = value or os.urandom(8).hex()
        self._xsrf.add(value)
        response.set_cookie("_xsrf", value, path="/hub/")
        return response

    def _user(self, request: web.Request) -> str | None:
        return self._sessions.get(request.cookies.get(HUB_SESSION_COOKIE, ""))

    async def login_form(self, _request: web.Request) -> web.Response:
        xsrf = os.urandom(8).hex()
        page = f'<form method="post"><input type="hidden" name="_xsrf" value="{xsrf}"></form>'
        return self._with_xsrf(web.Response(text=page, content_type="text/html"), xsrf)

    async def sign_in(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("_xsrf") != request.cookies.get("_xsrf") or form.get("_xsrf") not in self._xsrf:
            return web.Response(status=403, text="XSRF cookie does not match POST argument")
        name = str(form.get("username", "")).lower()
        if name not in self.passwords or self.passwords[name] != form.get("password"):
            return web.Response(status=403, text="Invalid username or password")
        session = os.urandom(8).hex()
        self._sessions[session] = name
        response = self._with_xsrf(web.Response(status=302, headers={"Location": "/hub/home"}))
        response.set_cookie(HUB_SESSION_COOKIE, session, path="/hub/", httponly=True)
        return response

    async def whoami(self, request: web.Request) -> web.Response:
        name = self._user(request)
        if name is None:
            return web.json_response({"status": 403, "message": "Forbidden"}, status=403)
        return web.json_response({"kind": "user", "name": name})

    async def create_token(self, request: web.Request) -> web.Response:
        name = self._user(request)
        xsrf = request.headers.get("X-XSRFToken")
        if name is None or xsrf is None or xsrf != request.cookies.get("_xsrf"):
            return web.json_response(
                {"status": 403, "message": "'_xsrf' argument missing from POST"}, status=403
            )
        if request.match_info["name"] != name:
            return web.json_response({"status": 403, "message": "no permission"}, status=403)
        body = await request.json()
        self.token_requests.append(body)
        expires_in = body.get("expires_in") or self.max_expires_in
        if self.max_expires_in is not None and expires_in > self.max_expires_in:
            message = f"token expires_in: {expires_in} must not exceed {self.max_expires_in}"
            return web.json_response({"status": 400, "message": message}, status=400)
        token = self.identity.issue_token(name)
        self.issued.append(token)
        expires_at = None
        if expires_in:
            moment = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in)
            expires_at = moment.isoformat().replace("+00:00", "Z")
        return web.json_response(
            {"token": token, "expires_at": expires_at, "scopes": body.get("scopes")}, status=201
        )


# ------------------------------------------------------------------------------ fixtures
@dataclass
class Stack:
    world: World
    hub: HubLogin
    url: str
    """The "hub's public URL": http://127.0.0.1:<port>/."""
    config: Path
    tokens: list[str] = field(default_factory=list)

    @property
    def service_url(self) -> str:
        return self.url.rstrip("/") + PREFIX

    def token_for(self, name: str) -> str:
        token = self.world.hub.issue_token(name)
        self.tokens.append(token)
        return token

    def log_in(self, name: str = "alice", expires_at: datetime | None = None) -> str:
        """Store credentials for ``name`` as `login` would; returns the token."""
        token = self.token_for(name)
        endpoint = Endpoint.locate(self.url)
        stored.save(self.config, Credentials(endpoint, name, token, expires_at))
        return token


@pytest.fixture(autouse=True)
def quiet_service_logs() -> Iterator[None]:
    # The service logs each request from the test's thread while a command's output is
    # being captured: keep its lines out of that output.
    with structlog.testing.capture_logs():
        yield


@pytest.fixture(autouse=True)
def private_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv(stored.CONFIG_ENV, raising=False)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    world = World()
    world.runtime.add_image(DESKTOP, DESKTOP_LABELS)
    world.runtime.add_image(WEBAPP, WEB_LABELS)
    uow = world.database.unit_of_work
    for name in ("alice", "bob"):
        world.hub.add_user(name)
        await catalogue.create_user(uow, name)
    for image in (DESKTOP, WEBAPP, GONE):
        await catalogue.create_application(uow, image)
    app = make_app(world)
    hub = HubLogin(world.hub, passwords={"alice": PASSWORD})
    hub.install(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Stack(
            world=world,
            hub=hub,
            url=str(server.make_url("/")),
            config=tmp_path / "config" / "credentials.json",
        )
    finally:
        await server.close()


async def grant(stack: Stack, image: str, user: str = "alice", policy: Policy | None = None) -> str:
    granted = await catalogue.grant_access(
        stack.world.database.unit_of_work,
        image,
        user,
        policy or Policy(),
        volumes=stack.world.volume_guard(make_settings()),
    )
    return granted.mapping_id


# ------------------------------------------------------------------------------ running it
async def rest(stack: Stack | None, *args: str, input: str | None = None) -> Result:
    """Run `remoteapprest ARGS` in a worker thread (it runs its own event loop)."""
    env = {stored.CONFIG_ENV: str(stack.config)} if stack is not None else {}
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), input=input, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if stack is not None:
        printed = result.stdout + result.stderr
        secrets = [*stack.tokens, *stack.hub.issued, PASSWORD]
        assert not any(secret in printed for secret in secrets), printed
    return result


async def ok(stack: Stack | None, *args: str, input: str | None = None) -> str:
    result = await rest(stack, *args, input=input)
    assert result.exit_code == 0, result.output
    return result.stdout


async def refused(stack: Stack | None, code: ExitCode, *args: str, input: str | None = None) -> str:
    """The one stderr line of a refused command (asserting the exit code and no stdout)."""
    result = await rest(stack, *args, input=input)
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR), lines
    return lines[0].removeprefix(ERROR)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def stored_json(stack: Stack) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(stack.config.read_text())
    return data


# ------------------------------------------------------------------------------ help
async def test_help_documents_every_exit_code() -> None:
    out = await ok(None, "--help")
    assert "Exit codes:" in out
    for code in ExitCode:
        assert re.search(rf"^\s+{int(code)}\s+\S", out, re.MULTILINE), code
    assert re.search(r"^\s+3\s+not logged in", out, re.MULTILINE)
    assert re.search(r"^\s+6\s+the server cannot be reached", out, re.MULTILINE)


# ------------------------------------------------------------------------------ login
async def test_login_asks_for_a_token_and_keeps_it_readable_by_the_user_only(
    stack: Stack,
) -> None:
    token = stack.token_for("alice")
    out = await ok(stack, "login", stack.url, input=token + "\n")

    assert out.splitlines() == [f"logged in to {stack.service_url} as alice"]
    data = stored_json(stack)
    assert data["token"] == token
    assert data["service_url"] == stack.service_url
    assert data["hub_url"] == stack.url
    assert data["user"] == "alice"
    assert mode_of(stack.config) == 0o600
    assert mode_of(stack.config.parent) == 0o700
    assert [p.name for p in stack.config.parent.iterdir()] == [stack.config.name]


async def test_the_token_prompt_is_hidden(stack: Stack) -> None:
    token = stack.token_for("alice")
    result = await rest(stack, "login", stack.url, input=token + "\n")
    assert result.exit_code == 0
    # click echoes hidden input as nothing: only the prompt and a newline are shown.
    assert "JupyterHub API token" in result.stderr
    assert token not in result.output


async def test_login_takes_the_service_url_and_a_token_on_stdin(stack: Stack) -> None:
    token = stack.token_for("bob")
    out = await ok(
        stack, "login", stack.service_url + "api/v1/", "--token-stdin", input=f"  {token}  \n"
    )
    assert out == f"logged in to {stack.service_url} as bob\n"
    assert stored_json(stack)["token"] == token
    assert stored_json(stack)["service_url"] == stack.service_url


async def test_login_by_password_creates_a_token_for_the_service(stack: Stack) -> None:
    out = await ok(
        stack, "login", stack.url, "--username", "Alice", "--password-stdin", input=PASSWORD
    )

    assert stack.hub.token_requests == [
        {
            "note": f"remoteapprest on {socket.gethostname()}",
            "scopes": ["access:services!service=remoteapp"],
            "expires_in": 30 * 86400,
        }
    ]
    lines = out.splitlines()
    assert lines[0] == f"logged in to {stack.service_url} as alice"
    assert re.fullmatch(r"the token expires on \d{4}-\d\d-\d\d \d\d:\d\d UTC", lines[1])
    data = stored_json(stack)
    assert data["token"] == stack.hub.issued[0]
    assert data["user"] == "alice"
    expires = datetime.fromisoformat(data["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    assert mode_of(stack.config) == 0o600
    # The token it made works for the next commands.
    await ok(stack, "app", "available")


async def test_login_by_password_prompts_for_it_hidden(stack: Stack) -> None:
    result = await rest(
        stack, "login", stack.url, "--username", "alice", "--expires-in-days", "0",
        input=PASSWORD + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Password for alice" in result.stderr
    assert "expires_in" not in stack.hub.token_requests[0]
    assert stored_json(stack)["expires_at"] is None


async def test_a_wrong_password_is_refused_and_nothing_is_stored(stack: Stack) -> None:
    message = await refused(
        stack, ExitCode.REFUSED, "login", stack.url, "--username", "alice", "--password-stdin",
        input="wrong\n",
    )  # fmt: skip
    assert message == f"the hub at {stack.url} refused this user name or password"
    assert not stack.config.exists()
    assert stack.hub.issued == []


async def test_a_token_lifetime_beyond_the_hubs_limit_is_reported(stack: Stack) -> None:
    stack.hub.max_expires_in = 7 * 86400
    message = await refused(
        stack, ExitCode.BAD_INPUT, "login", stack.url, "--username", "alice",
        "--password-stdin", input=PASSWORD,
    )  # fmt: skip
    assert message == f"token expires_in: {30 * 86400} must not exceed {7 * 86400}"
    assert not stack.config.exists()


async def test_a_refused_token_leaves_the_previous_login_in_place(stack: Stack) -> None:
    stack.log_in("alice")
    before = stack.config.read_bytes()
    message = await refused(
        stack, ExitCode.REFUSED, "login", stack.url, "--token-stdin", input="not-a-hub-token\n"
    )
    assert message == f"the service at {stack.service_url} refused this token"
    assert stack.config.read_bytes() == before


async def test_login_to_a_service_that_is_not_there(stack: Stack) -> None:
    token = stack.token_for("alice")
    message = await refused(
        stack, ExitCode.NOT_FOUND, "login", stack.url, "--service", "other", "--token-stdin",
        input=token,
    )  # fmt: skip
    assert message.startswith(f"no SimPhoNy-Remote service answers at {stack.url}services/other/")
    assert not stack.config.exists()


async def test_login_to_a_server_that_is_not_there(stack: Stack) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    message = await refused(stack, ExitCode.UNREACHABLE, "login", url, "--token-stdin", input="x")
    assert message == f"cannot reach {url}/services/remoteapp/: connection refused"
    message = await refused(
        stack, ExitCode.UNREACHABLE, "login", url, "--username", "alice", "--password-stdin",
        input=PASSWORD,
    )  # fmt: skip
    assert message == f"cannot reach {url}/: connection refused"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ftp://example.org/"], "is not an http:// or https:// URL"),
        (["--password-stdin"], "--password-stdin needs --username"),
        (["--username", "alice", "--token-stdin"], "exclude each other"),
        (["--expires-in-days", "3"], "--expires-in-days needs --username"),
    ],
)
async def test_login_refuses_bad_input(stack: Stack, args: list[str], needle: str) -> None:
    url = [] if args[0].startswith("ftp") else [stack.url]
    result = await rest(stack, "login", *url, *args, input="x\n")
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert needle in result.stderr
    assert not stack.config.exists()


async def test_an_empty_token_is_refused_before_asking_the_service(stack: Stack) -> None:
    message = await refused(
        stack, ExitCode.BAD_INPUT, "login", stack.url, "--token-stdin", input="\n"
    )
    assert message == "that is not a JupyterHub API token"


async def test_login_replaces_the_previous_one_atomically(stack: Stack) -> None:
    stack.log_in("bob")
    stack.config.chmod(0o644)
    token = stack.token_for("alice")
    await ok(stack, "login", stack.url, "--token-stdin", input=token)
    assert stored_json(stack)["user"] == "alice"
    assert mode_of(stack.config) == 0o600
    assert [p.name for p in stack.config.parent.iterdir()] == [stack.config.name]


async def test_credentials_go_to_the_users_config_directory_by_default(
    stack: Stack, tmp_path: Path
) -> None:
    token = stack.token_for("alice")
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["login", stack.url, "--token-stdin"], input=token
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "home" / ".config" / "remoteapprest" / "credentials.json"
    assert json.loads(path.read_text())["token"] == token
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700


async def test_credentials_follow_xdg_config_home(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    token = stack.token_for("alice")
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["login", stack.url, "--token-stdin"], input=token
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "xdg" / "remoteapprest" / "credentials.json"
    assert json.loads(path.read_text())["token"] == token


async def test_the_credentials_file_option_wins(stack: Stack, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    token = stack.token_for("alice")
    await ok(stack, "--credentials-file", str(elsewhere), "login", stack.url, "--token-stdin",
             input=token)  # fmt: skip
    assert json.loads(elsewhere.read_text())["token"] == token
    assert not stack.config.exists()
    await ok(stack, "--credentials-file", str(elsewhere), "app", "running")


# ------------------------------------------------------------------------------ app available
async def test_available_lists_the_grants_with_their_policies(stack: Stack) -> None:
    desktop = await grant(
        stack,
        DESKTOP,
        policy=Policy(
            allow_home=True,
            allow_startup_data=True,
            app_license="site licence 42",
            volume=Volume("/data", "/data", VolumeMode.RO),
        ),
    )
    web_app = await grant(stack, WEBAPP)
    gone = await grant(stack, GONE, policy=Policy(allow_view=True))
    await grant(stack, WEBAPP, user="bob")
    stack.log_in("alice")

    lines = (await ok(stack, "app", "available")).splitlines()
    assert lines[0].split() == ["MAPPING_ID", "IMAGE", "POLICY", "NAME"]
    assert set(lines[1]) <= {"-", " "}
    rows = {line.split()[0]: line.split(None, 3) for line in lines[2:]}
    assert rows == {
        desktop: [
            desktop,
            DESKTOP,
            "home,startupdata,volume=/data:/data:ro,license",
            "Remote desktop",
        ],
        web_app: [web_app, WEBAPP, "-", "Web"],
        gone: [gone, GONE, "view", f"{GONE} (image missing)"],
    }

    plain = (await ok(stack, "app", "available", "--no-decoration")).splitlines()
    assert sorted(plain) == sorted(" ".join(row) for row in rows.values())


async def test_available_with_no_grants(stack: Stack) -> None:
    stack.log_in("alice")
    assert len((await ok(stack, "app", "available")).splitlines()) == 2
    assert await ok(stack, "app", "available", "--no-decoration") == ""


# ------------------------------------------------------------------------------ start, stop
async def test_start_running_stop(stack: Stack) -> None:
    mapping_id = await grant(stack, WEBAPP)
    stack.log_in("alice")
    assert await ok(stack, "app", "running", "--no-decoration") == ""

    url = (await ok(stack, "app", "start", mapping_id)).strip()
    match = re.fullmatch(re.escape(stack.url) + r"user/alice/containers/([a-z0-9]+)/", url)
    assert match, url
    url_id = match[1]

    lines = (await ok(stack, "app", "running")).splitlines()
    assert lines[0].split() == ["URL_ID", "MAPPING_ID", "IMAGE", "URL"]
    assert lines[2].split() == [url_id, mapping_id, WEBAPP, url]
    plain = await ok(stack, "app", "running", "--no-decoration")
    assert plain == f"{url_id} {mapping_id} {WEBAPP} {url}\n"

    assert await ok(stack, "app", "stop", url_id) == ""
    assert await ok(stack, "app", "running", "--no-decoration") == ""
    assert stack.world.runtime.container_ids == frozenset()


async def test_start_passes_the_resolution_and_startup_data(stack: Stack) -> None:
    mapping_id = await grant(
        stack, DESKTOP, policy=Policy(allow_home=True, allow_startup_data=True)
    )
    stack.log_in("alice")
    await ok(stack, "app", "start", mapping_id, "--resolution", "1920x1080",
             "--startupdata", "/workspace/run.in")  # fmt: skip
    (container_id,) = stack.world.runtime.container_ids
    environment = stack.world.runtime.spec_of(container_id).environment
    assert environment["X11_WIDTH"] == "1920"
    assert environment["X11_HEIGHT"] == "1080"
    assert environment["STARTUPDATA"] == "/workspace/run.in"


async def test_startup_data_the_grant_does_not_allow_is_refused_without_starting(
    stack: Stack,
) -> None:
    mapping_id = await grant(stack, DESKTOP, policy=Policy(allow_home=True))
    stack.log_in("alice")
    message = await refused(
        stack, ExitCode.BAD_INPUT, "app", "start", mapping_id, "--startupdata", "/workspace/x"
    )
    assert message == f"your grant {mapping_id} ({DESKTOP}) does not allow startup data"
    assert stack.world.runtime.container_ids == frozenset()


async def test_choices_the_image_does_not_offer_are_refused_without_starting(
    stack: Stack,
) -> None:
    mapping_id = await grant(stack, WEBAPP, policy=Policy(allow_home=True, allow_startup_data=True))
    stack.log_in("alice")
    message = await refused(
        stack, ExitCode.BAD_INPUT, "app", "start", mapping_id, "--startupdata", "/workspace/x"
    )
    assert message == f"{WEBAPP} does not take startup data"
    message = await refused(
        stack, ExitCode.BAD_INPUT, "app", "start", mapping_id, "--resolution", "800x600"
    )
    assert message == f"{WEBAPP} does not offer a choice of resolution"
    assert stack.world.runtime.container_ids == frozenset()


async def test_malformed_choices_are_refused_before_any_request(stack: Stack) -> None:
    # Logged in to a server that is not there: only a check made locally can answer 2.
    endpoint = Endpoint.locate(f"http://127.0.0.1:{free_port()}/")
    stored.save(stack.config, Credentials(endpoint, "alice", "t0ken"))
    message = await refused(stack, ExitCode.BAD_INPUT, "app", "start", "m1", "--resolution", "big")
    assert message == "resolution 'big' is not WIDTHxHEIGHT (e.g. 1920x1080)"
    message = await refused(stack, ExitCode.BAD_INPUT, "app", "start", "m1", "--startupdata", "x")
    assert message == "startupdata 'x' must be an absolute path"


async def test_what_the_service_refuses_is_bad_input(stack: Stack) -> None:
    mapping_id = await grant(
        stack, DESKTOP, policy=Policy(allow_home=True, allow_startup_data=True)
    )
    stack.log_in("alice")
    message = await refused(
        stack, ExitCode.BAD_INPUT, "app", "start", mapping_id, "--startupdata", "/etc/passwd"
    )
    assert message == (
        "Remote desktop could not be started: startupdata '/etc/passwd' must lie inside /workspace"
    )
    assert stack.world.runtime.container_ids == frozenset()


async def test_unknown_ids_are_not_found(stack: Stack) -> None:
    other = await grant(stack, WEBAPP, user="bob")
    stack.log_in("alice")
    message = await refused(stack, ExitCode.NOT_FOUND, "app", "start", other)
    assert message == (
        f"you have no application with mapping id {other} (see `remoteapprest app available`)"
    )
    message = await refused(stack, ExitCode.NOT_FOUND, "app", "stop", "abc123")
    assert message == (
        "you have no running application with id abc123 (see `remoteapprest app running`)"
    )
    assert stack.world.runtime.container_ids == frozenset()


async def test_someone_elses_container_cannot_be_stopped(stack: Stack) -> None:
    mapping_id = await grant(stack, WEBAPP, user="bob")
    stack.log_in("bob")
    url = (await ok(stack, "app", "start", mapping_id)).strip()
    url_id = url.rstrip("/").rpartition("/")[2]
    stack.log_in("alice")
    await refused(stack, ExitCode.NOT_FOUND, "app", "stop", url_id)
    assert len(stack.world.runtime.container_ids) == 1


# ------------------------------------------------------------------------------ failures
@pytest.mark.parametrize(
    "args",
    [
        ["app", "available"],
        ["app", "running"],
        ["app", "start", "m1"],
        ["app", "stop", "u1"],
    ],
)
async def test_every_command_says_when_nobody_is_logged_in(stack: Stack, args: list[str]) -> None:
    message = await refused(stack, ExitCode.NOT_LOGGED_IN, *args)
    assert message == "not logged in; run `remoteapprest login URL` first"


async def test_a_damaged_credentials_file(stack: Stack) -> None:
    stack.config.parent.mkdir(mode=0o700)
    stack.config.write_text("{not json")
    stack.config.chmod(0o600)
    message = await refused(stack, ExitCode.NOT_LOGGED_IN, "app", "running")
    assert message == (
        f"the credentials file {stack.config} is damaged; run `remoteapprest login URL` again"
    )


async def test_a_revoked_token_asks_to_log_in_again(stack: Stack) -> None:
    await grant(stack, WEBAPP)
    stack.log_in("alice")
    stack.world.hub.revoke_user("alice")
    for args in (["app", "available"], ["app", "running"], ["app", "stop", "x1"]):
        message = await refused(stack, ExitCode.REFUSED, *args)
        assert message == (
            f"your token was refused; log in again with `remoteapprest login {stack.url}`"
        )


async def test_an_expired_token_says_so(stack: Stack) -> None:
    expired = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    stack.log_in("alice", expires_at=expired)
    stack.world.hub.revoke_user("alice")
    message = await refused(stack, ExitCode.REFUSED, "app", "running")
    assert message == (
        "your token expired on 2024-05-01 12:30 UTC; "
        f"log in again with `remoteapprest login {stack.url}`"
    )


async def test_a_server_that_refuses_connections(stack: Stack) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    stored.save(stack.config, Credentials(Endpoint.locate(url), "alice", "t0ken"))
    for args in (["app", "available"], ["app", "running"], ["app", "stop", "x"]):
        message = await refused(stack, ExitCode.UNREACHABLE, *args)
        assert message == f"cannot reach {url}services/remoteapp/: connection refused"


async def test_a_server_that_never_answers(stack: Stack) -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"http://127.0.0.1:{port}/"
        stored.save(stack.config, Credentials(Endpoint.locate(url), "alice", "t0ken"))
        message = await refused(stack, ExitCode.UNREACHABLE, "--timeout", "0.3", "app", "running")
        assert message == f"cannot reach {url}services/remoteapp/: no answer within 0.3 s"
    finally:
        server.close()
        await server.wait_closed()


class _NoSuchHost(AbstractResolver):
    """A resolver for which no name exists (no DNS query leaves the machine)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise OSError(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        return None


async def test_a_host_name_that_does_not_resolve(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def client(service_url: str, token: str, *, timeout: float) -> RemoteAppClient:
        return AiohttpRemoteAppClient(service_url, token, timeout=timeout, resolver=_NoSuchHost())

    monkeypatch.setattr(bootstrap, "build_remote_client", client)
    url = "http://apps.example.invalid:8000/"
    stored.save(stack.config, Credentials(Endpoint.locate(url), "alice", "t0ken"))
    message = await refused(stack, ExitCode.UNREACHABLE, "app", "available")
    assert message == f"cannot reach {url}services/remoteapp/: its host name does not resolve"


async def test_a_server_error_shows_the_apis_message(stack: Stack) -> None:
    mapping_id = await grant(stack, WEBAPP)
    stack.log_in("alice")
    stack.world.probe.ready = False
    message = await refused(stack, ExitCode.SERVER_ERROR, "app", "start", mapping_id)
    assert message == (
        "server error: Web could not be started (step: waiting for the app): the application "
        "did not become ready within 5 s"
    )
    stack.world.hub.available = False
    message = await refused(stack, ExitCode.SERVER_ERROR, "app", "running")
    assert message == "server error: JupyterHub cannot be reached; try again shortly"


async def test_a_server_error_without_the_apis_shape(stack: Stack) -> None:
    async def bad_gateway(_request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")

    proxy = web.Application()
    proxy.router.add_route("*", "/{tail:.*}", bad_gateway)
    server = TestServer(proxy, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/"))
        stored.save(stack.config, Credentials(Endpoint.locate(url), "alice", "t0ken"))
        message = await refused(stack, ExitCode.SERVER_ERROR, "app", "running")
        assert message == f"server error: {url}services/remoteapp/ answered 502 Bad Gateway"
    finally:
        await server.close()


async def test_credentials_others_can_read_are_used_with_a_warning(stack: Stack) -> None:
    stack.log_in("alice")
    stack.config.chmod(0o644)
    result = await rest(stack, "app", "running", "--no-decoration")
    assert result.exit_code == 0
    assert result.stderr == (
        f"remoteapprest: warning: others may read {stack.config}, which holds your token; "
        f"run `chmod 600 {stack.config}`\n"
    )


# ------------------------------------------------------------------------------ the URL given
@pytest.mark.parametrize(
    ("given", "hub", "service"),
    [
        ("http://h:8000", "http://h:8000/", "http://h:8000/services/remoteapp/"),
        ("http://h:8000/hub/login?next=x", "http://h:8000/", "http://h:8000/services/remoteapp/"),
        ("https://h/jhub/hub/", "https://h/jhub/", "https://h/jhub/services/remoteapp/"),
        ("https://h/services/apps", "https://h/", "https://h/services/apps/"),
        ("http://h/services/apps/api/v1/user", "http://h/", "http://h/services/apps/"),
    ],
)
def test_where_a_url_points(given: str, hub: str, service: str) -> None:
    assert Endpoint.locate(given) == Endpoint(hub_url=hub, service_url=service)


@pytest.mark.parametrize(
    "given", ["h:8000", "file:///etc", "http:///x", "http://h/services/", "http://u:pw@h/"]
)
def test_urls_that_point_nowhere(given: str) -> None:
    with pytest.raises(InvalidRequest):
        Endpoint.locate(given)
