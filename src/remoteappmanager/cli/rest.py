"""`remoteapprest`: start, stop and list your applications through the service's REST API."""

from __future__ import annotations

import asyncio
import enum
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from remoteappmanager import __version__, bootstrap
from remoteappmanager.cli import credentials as stored
from remoteappmanager.cli.credentials import Credentials, CredentialsError, Endpoint
from remoteappmanager.cli.output import describe_policy, fail, render_table
from remoteappmanager.domain.configurables import RESOLUTION, STARTUP_DATA, parse_resolution
from remoteappmanager.domain.errors import (
    InvalidRequest,
    NotFound,
    RemoteAppError,
    Unable,
    Unauthorized,
    Unavailable,
)
from remoteappmanager.domain.models import Policy, validate_abs_path
from remoteappmanager.ports.remote_api import (
    RemoteAppClient,
    RemoteApplication,
    RemoteContainer,
    ServiceUnreachable,
)

PROG = "remoteapprest"
DEFAULT_TIMEOUT = 120.0
DEFAULT_TOKEN_DAYS = 30
_T = TypeVar("_T")
# What a token may look like: JupyterHub's are hex; anything printable without spaces goes.
_TOKEN_RE = re.compile(r"^[\x21-\x7e]{1,1024}$")


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    NOT_LOGGED_IN = 3
    REFUSED = 4
    NOT_FOUND = 5
    UNREACHABLE = 6
    SERVER_ERROR = 7


EPILOG = f"""\b
Exit codes:
  {ExitCode.OK}  success
  {ExitCode.FAILED}  any other failure (forbidden, a start or stop already under way...)
  {ExitCode.BAD_INPUT}  bad input: the command line, or a value the service or the grant refuses
  {ExitCode.NOT_LOGGED_IN}  not logged in: run `{PROG} login URL`
  {ExitCode.REFUSED}  the token (or the user name and password) was refused: log in again
  {ExitCode.NOT_FOUND}  not found: no such application, container or service
  {ExitCode.UNREACHABLE}  the server cannot be reached (refused, unknown host, timeout)
  {ExitCode.SERVER_ERROR}  the server failed (5xx); its message is shown
"""


@dataclass(frozen=True, slots=True)
class _Options:
    credentials_file: Path
    timeout: float


@click.group(PROG, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.option(
    "--credentials-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Where the login is kept [default: ${stored.CONFIG_ENV}, else "
    "remoteapprest/credentials.json in $XDG_CONFIG_HOME or ~/.config].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Longest wait for one answer (a start lasts until the application serves).",
)
@click.version_option(__version__, prog_name=PROG)
@click.pass_context
def main(ctx: click.Context, credentials_file: Path | None, timeout: float) -> None:
    """Start, stop and list your SimPhoNy-Remote applications from the command line.

    Log in once with `remoteapprest login URL`; the other commands use that login.
    """
    ctx.obj = _Options(credentials_file or stored.default_path(), timeout)


# ------------------------------------------------------------------------------ login
@main.command()
@click.argument("url")
@click.option(
    "--username",
    metavar="NAME",
    help="Sign in to the hub as NAME and have it create a token for this tool.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--token-stdin", is_flag=True, help="Read the token from stdin.")
@click.option(
    "--service",
    default=stored.DEFAULT_SERVICE,
    show_default=True,
    metavar="NAME",
    help="The service's name on the hub, when URL is the hub's.",
)
@click.option(
    "--expires-in-days",
    type=click.IntRange(min=0),
    default=DEFAULT_TOKEN_DAYS,
    show_default=True,
    help="With --username: the new token's lifetime (0: as long as the hub allows).",
)
@click.pass_context
def login(
    ctx: click.Context,
    url: str,
    username: str | None,
    password_stdin: bool,
    token_stdin: bool,
    service: str,
    expires_in_days: int,
) -> None:
    """Log in to the service at URL and remember it.

    URL is the hub's public URL (http://127.0.0.1:8000) or the service's
    (.../services/remoteapp/). You are asked for a JupyterHub API token (make one on the
    hub's token page, URL/hub/token). With --username, the tool signs in to the hub instead
    and has it create a token limited to this service.

    The URL and the token are kept in a file only you can read; the token is never shown.
    """
    options: _Options = ctx.obj
    if password_stdin and username is None:
        raise click.UsageError("--password-stdin needs --username")
    if token_stdin and username is not None:
        raise click.UsageError("--token-stdin and --username exclude each other")
    if username is None and _given(ctx, "expires_in_days"):
        raise click.UsageError("--expires-in-days needs --username")
    try:
        endpoint = Endpoint.locate(url, service)
    except InvalidRequest as exc:
        fail(PROG, str(exc), ExitCode.BAD_INPUT)

    if username is None:
        token = _read_secret(
            token_stdin, f"JupyterHub API token (from {endpoint.hub_url}hub/token)"
        ).strip()
        if not _TOKEN_RE.match(token):
            fail(PROG, "that is not a JupyterHub API token", ExitCode.BAD_INPUT)
        work = _verify(options, endpoint, token, expires_at=None)
    else:
        password = _read_secret(password_stdin, f"Password for {username} on the hub")
        work = _create_and_verify(options, endpoint, username, password, expires_in_days)
    credentials = _run(work)
    try:
        stored.save(options.credentials_file, credentials)
    except CredentialsError as exc:
        fail(PROG, str(exc), ExitCode.FAILED)
    click.echo(f"logged in to {endpoint.service_url} as {credentials.user}")
    if credentials.expires_at is not None:
        click.echo(f"the token expires on {_when(credentials.expires_at)}")


async def _create_and_verify(
    options: _Options, endpoint: Endpoint, username: str, password: str, days: int
) -> Credentials:
    issuer = bootstrap.build_hub_token_issuer(endpoint.hub_url, timeout=options.timeout)
    try:
        # Reaching the service is the one scope needed: the hub lets every token read its
        # owner's name, admin flag and groups at /hub/api/user, which is all the service asks.
        issued = await issuer.create_token(
            username,
            password,
            scopes=[f"access:services!service={endpoint.service_name}"],
            note=f"{PROG} on {socket.gethostname()}",
            expires_in=days * 86400 if days else None,
        )
    finally:
        await issuer.close()
    return await _verify(options, endpoint, issued.token, expires_at=issued.expires_at)


async def _verify(
    options: _Options, endpoint: Endpoint, token: str, *, expires_at: datetime | None
) -> Credentials:
    """The credentials of ``token``, once the service has said whose it is."""
    client = bootstrap.build_remote_client(endpoint.service_url, token, timeout=options.timeout)
    try:
        user = await client.whoami()
    except Unauthorized:
        raise Unauthorized(f"the service at {endpoint.service_url} refused this token") from None
    except NotFound:
        raise NotFound(
            f"no SimPhoNy-Remote service answers at {endpoint.service_url} "
            "(check the URL, or name the service with --service)"
        ) from None
    finally:
        await client.close()
    return Credentials(endpoint=endpoint, user=user.name, token=token, expires_at=expires_at)


# ------------------------------------------------------------------------------ applications
@main.group()
def app() -> None:
    """List, start and stop your applications."""


@app.command("available")
@click.option("--no-decoration", is_flag=True, help="Plain lines, no header, for scripts.")
@click.pass_obj
def app_available(options: _Options, no_decoration: bool) -> None:
    """List the applications you may start (your grants).

    POLICY says what the grant allows: home (your workspace is mounted), view (others may
    watch), startupdata, a volume, a licence.
    """

    async def listing(client: RemoteAppClient) -> Sequence[RemoteApplication]:
        return await client.list_applications()

    applications = _with_client(options, listing)
    rows = [
        [
            found.mapping_id,
            found.image,
            _policy_summary(found.policy),
            found.ui_name if found.available else f"{found.ui_name} (image missing)",
        ]
        for found in applications
    ]
    headers = ["MAPPING_ID", "IMAGE", "POLICY", "NAME"]
    _echo_lines(render_table(headers, rows, decorated=not no_decoration))


@app.command("running")
@click.option("--no-decoration", is_flag=True, help="Plain lines, no header, for scripts.")
@click.pass_obj
def app_running(options: _Options, no_decoration: bool) -> None:
    """List your running applications and where they are served."""

    async def listing(client: RemoteAppClient) -> Sequence[RemoteContainer]:
        return await client.list_containers()

    credentials = _credentials(options)
    containers = _with_client(options, listing, credentials)
    rows = [
        [found.url_id, found.mapping_id, found.image, _url_of(credentials, found)]
        for found in containers
    ]
    headers = ["URL_ID", "MAPPING_ID", "IMAGE", "URL"]
    _echo_lines(render_table(headers, rows, decorated=not no_decoration))


@app.command("start")
@click.argument("mapping_id")
@click.option(
    "--startupdata",
    metavar="PATH",
    help="A file for the application to open (inside what your grant mounts).",
)
@click.option("--resolution", metavar="WxH", help="Screen size of a desktop, e.g. 1920x1080.")
@click.pass_obj
def app_start(
    options: _Options, mapping_id: str, startupdata: str | None, resolution: str | None
) -> None:
    """Start the application of grant MAPPING_ID; prints its URL once it serves.

    An application of that grant that runs already is replaced.
    """
    configurables: dict[str, str] = {}
    try:
        if resolution is not None:
            parse_resolution(resolution)
            configurables[RESOLUTION] = resolution
        if startupdata is not None:
            configurables[STARTUP_DATA] = validate_abs_path(startupdata, "startupdata")
    except InvalidRequest as exc:
        fail(PROG, str(exc), ExitCode.BAD_INPUT)

    async def start(client: RemoteAppClient) -> RemoteContainer:
        try:
            granted = await client.get_application(mapping_id)
        except NotFound:
            raise NotFound(
                f"you have no application with mapping id {mapping_id} (see `{PROG} app available`)"
            ) from None
        _check_offered(granted, configurables)
        return await client.start_container(mapping_id, configurables)

    credentials = _credentials(options)
    started = _with_client(options, start, credentials)
    click.echo(_url_of(credentials, started))


def _check_offered(granted: RemoteApplication, configurables: dict[str, str]) -> None:
    """Refuse, before asking the service, what the grant or the image does not allow."""
    if STARTUP_DATA in configurables:
        if not granted.policy.allow_startup_data:
            raise InvalidRequest(
                f"your grant {granted.mapping_id} ({granted.image}) does not allow startup data"
            )
        if STARTUP_DATA not in granted.configurables:
            raise InvalidRequest(f"{granted.image} does not take startup data")
    if RESOLUTION in configurables and RESOLUTION not in granted.configurables:
        raise InvalidRequest(f"{granted.image} does not offer a choice of resolution")


@app.command("stop")
@click.argument("url_id")
@click.pass_obj
def app_stop(options: _Options, url_id: str) -> None:
    """Stop your running application URL_ID (see `app running`)."""

    async def stop(client: RemoteAppClient) -> None:
        try:
            await client.stop_container(url_id)
        except NotFound:
            raise NotFound(
                f"you have no running application with id {url_id} (see `{PROG} app running`)"
            ) from None

    _with_client(options, stop)


# ------------------------------------------------------------------------------ plumbing
def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source not in (None, click.core.ParameterSource.DEFAULT)


def _read_secret(from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    # On stderr, so that what the command prints on stdout stays the same when scripted.
    secret: str = click.prompt(prompt, hide_input=True, err=True)
    return secret


def _credentials(options: _Options) -> Credentials:
    path = options.credentials_file
    try:
        found = stored.load(path)
    except CredentialsError as exc:
        if exc.missing:
            fail(PROG, f"not logged in; run `{PROG} login URL` first", ExitCode.NOT_LOGGED_IN)
        fail(PROG, f"{exc}; run `{PROG} login URL` again", ExitCode.NOT_LOGGED_IN)
    if stored.exposed(path):
        click.echo(
            f"{PROG}: warning: others may read {path}, which holds your token; "
            f"run `chmod 600 {path}`",
            err=True,
        )
    return found


def _with_client(
    options: _Options,
    action: Callable[[RemoteAppClient], Awaitable[_T]],
    credentials: Credentials | None = None,
) -> _T:
    """Run ``action`` with a client logged in as the stored credentials say."""
    login = credentials or _credentials(options)

    async def run() -> _T:
        client = bootstrap.build_remote_client(
            login.endpoint.service_url, login.token, timeout=options.timeout
        )
        try:
            return await action(client)
        finally:
            await client.close()

    return _run(run(), refused=lambda _exc: _refused_message(login))


def _run(work: Coroutine[Any, Any, _T], refused: Callable[[Unauthorized], str] = str) -> _T:
    """Run ``work``; our errors end the program with their message and exit code."""
    try:
        return asyncio.run(work)
    except Unauthorized as exc:
        fail(PROG, refused(exc), ExitCode.REFUSED)
    except RemoteAppError as exc:
        _fail_with(exc)


def _fail_with(exc: RemoteAppError) -> NoReturn:
    if isinstance(exc, ServiceUnreachable):
        fail(PROG, str(exc), ExitCode.UNREACHABLE)
    if isinstance(exc, NotFound):
        fail(PROG, str(exc), ExitCode.NOT_FOUND)
    if isinstance(exc, InvalidRequest):
        fail(PROG, str(exc), ExitCode.BAD_INPUT)
    if isinstance(exc, Unable | Unavailable):
        fail(PROG, f"server error: {exc}", ExitCode.SERVER_ERROR)
    fail(PROG, str(exc), ExitCode.FAILED)


def _refused_message(login: Credentials) -> str:
    again = f"log in again with `{PROG} login {login.endpoint.hub_url}`"
    if login.expires_at is not None and login.expires_at <= datetime.now(UTC):
        return f"your token expired on {_when(login.expires_at)}; {again}"
    return f"your token was refused; {again}"


def _url_of(credentials: Credentials, container: RemoteContainer) -> str:
    return f"{credentials.endpoint.origin}{container.urlpath}/"


def _policy_summary(policy: Policy) -> str:
    # The licence text is free and may hold spaces: only its presence fits in the column.
    summary = describe_policy(replace(policy, app_license=None))
    if policy.app_license is None:
        return summary
    return "license" if summary == "-" else summary + ",license"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _echo_lines(lines: Sequence[str]) -> None:
    for line in lines:
        click.echo(line)
