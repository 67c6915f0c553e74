"""`remoteappdb`: the administrator's tool for the catalogue (users, applications, grants)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import click

from remoteappmanager import bootstrap
from remoteappmanager.cli.output import describe_policy, fail, render_table
from remoteappmanager.domain.audit import CLI_ACTOR
from remoteappmanager.domain.errors import (
    InvalidRequest,
    NotFound,
    RemoteAppError,
    Unable,
    Unavailable,
)
from remoteappmanager.domain.models import (
    MAX_CPU_LIMIT,
    MAX_MEMORY_LIMIT_MB,
    MAX_PIDS_LIMIT,
    MAX_TIMEOUT_S,
    MIN_CPU_LIMIT,
    MIN_MEMORY_LIMIT_MB,
    Policy,
    Volume,
    validate_placement,
)
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.services import catalogue
from remoteappmanager.services.audit import Attribution, AuditTrail
from remoteappmanager.settings import (
    Settings,
    SettingsError,
    load_settings,
    normalise_database_url,
    sqlite_path,
)

PROG = "remoteappdb"
_DB_URL = "remoteappdb.db_url"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    """The async SQLAlchemy URL."""
    shown: str
    """How the user named it (for the commands we suggest)."""


class _DatabaseGroup(click.Group):
    """A group taking an optional ``DB_URL`` before its subcommand.

    Click cannot tell an optional leading argument from a subcommand name by itself: a first
    word that is not one of our commands is the database.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            ctx.meta[_DB_URL] = args[0]
            args = args[1:]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ["[DB_URL]", *super().collect_usage_pieces(ctx)]


@click.group(PROG, cls=_DatabaseGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Manage the users, applications and grants of SimPhoNy-Remote.

    DB_URL is a SQLite file path, a sqlite:// or a postgresql:// URL; by default
    REMOTEAPP_DATABASE_URL, else remoteappmanager.db in the working directory. A database
    file named like a command must be written as ./NAME.
    """


# ------------------------------------------------------------------------------ plumbing
def _target() -> _Target:
    ctx = click.get_current_context()
    given: str | None = ctx.find_root().meta.get(_DB_URL)
    if given is not None:
        try:
            return _Target(url=normalise_database_url(given), shown=given)
        except ValueError as exc:
            fail(PROG, f"DB_URL: {exc}", 2)
    try:
        url = load_settings().database_url
    except SettingsError as exc:
        fail(PROG, str(exc), 2)
    path = sqlite_path(url)
    return _Target(url=url, shown=str(path) if path is not None else url)


@dataclass(frozen=True, slots=True)
class _Work:
    """What a command works with: the catalogue, and who its changes are recorded for."""

    unit_of_work: UnitOfWorkFactory
    by: Attribution


def _os_user() -> str:
    """The account running the command, by its real uid (not the environment, which anyone
    can set); ``cli`` when the system has no name for it."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name or CLI_ACTOR
    except KeyError:
        return CLI_ACTOR


def _run(action: Callable[[_Work], Awaitable[_T]]) -> _T:
    """Run ``action`` on the database, which must exist and be at the current schema; what
    it changed is then written to the audit trail (a failure to write it is only warned of:
    the change itself is done)."""
    target = _target()

    async def on_database() -> _T:
        await _require_current_schema(target)
        async with bootstrap.build_database(target.url) as database:
            trail = AuditTrail(database.events)
            result = await action(_Work(database.unit_of_work, Attribution(trail, _os_user())))
            if trail.pending and not await trail.flush():
                click.echo(f"{PROG}: warning: the change could not be audited", err=True)
            return result

    return _report_errors(lambda: asyncio.run(on_database()))


def _report_errors(work: Callable[[], _T]) -> _T:
    try:
        return work()
    except RemoteAppError as exc:
        fail(PROG, str(exc))


async def _require_current_schema(target: _Target) -> None:
    status = await bootstrap.schema_status(target.url)
    init = f"`{PROG} {shlex.quote(target.shown)} init`"
    if not status.exists:
        raise Unable(f"there is no database at {target.shown}; create it with {init}")
    if status.current is None:
        raise Unable(f"the {status.location} has no remoteapp schema; create it with {init}")
    if not status.known:
        raise Unable(
            f"the {status.location} has schema revision {status.current}, which is newer than "
            "this software knows; upgrade remoteappmanager"
        )
    if not status.at_head:
        raise Unable(
            f"the {status.location} has schema revision {status.current}, not {status.head}: "
            "run `remoteappmanager db upgrade` with REMOTEAPP_DATABASE_URL naming it"
        )


def _volume_guard() -> catalogue.VolumeGuard:
    """The volume rules of the service's settings (``REMOTEAPP_VOLUME_ROOTS``...)."""
    try:
        return bootstrap.build_volume_guard(load_settings())
    except SettingsError as exc:
        fail(PROG, str(exc), 2)


def _echo_lines(lines: Sequence[str]) -> None:
    for line in lines:
        click.echo(line)


def _policy_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--app-license", default=None, help="Licence text given to the app."),
        click.option("--allow-home", is_flag=True, help="Mount the user's workspace."),
        click.option("--allow-view", is_flag=True, help="Others may view the running app."),
        click.option("--volume", default=None, metavar="SRC:TGT:MODE", help="Mount a host path."),
        click.option(
            "--allow-startup-data", is_flag=True, help="The user may pick a startup file."
        ),
        click.option(
            "--placement",
            multiple=True,
            metavar="KEY==VALUE",
            help="A Docker Swarm placement constraint (KEY==VALUE or KEY!=VALUE, e.g. "
            "node.labels.gpu==true); repeat for several. Only a swarm engine starts such "
            "a grant.",
        ),
        click.option(
            "--memory-limit-mb",
            type=click.IntRange(MIN_MEMORY_LIMIT_MB, MAX_MEMORY_LIMIT_MB),
            default=None,
            help="Memory limit in MiB, swap included (default: the deployment's).",
        ),
        click.option(
            "--cpu-limit",
            type=click.FloatRange(MIN_CPU_LIMIT, MAX_CPU_LIMIT),
            default=None,
            help="CPU limit in cores, fractional (default: the deployment's).",
        ),
        click.option(
            "--pids-limit",
            type=click.IntRange(1, MAX_PIDS_LIMIT),
            default=None,
            help="Process limit (default: the deployment's).",
        ),
        click.option(
            "--idle-timeout",
            "idle_timeout_s",
            type=click.IntRange(0, MAX_TIMEOUT_S),
            default=None,
            metavar="SECONDS",
            help="Stop the session after this long without input (0: never).",
        ),
        click.option(
            "--max-lifetime",
            "max_lifetime_s",
            type=click.IntRange(0, MAX_TIMEOUT_S),
            default=None,
            metavar="SECONDS",
            help="Stop the session this long after its start (0: never).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _policy(
    app_license: str | None,
    allow_home: bool,
    allow_view: bool,
    volume: str | None,
    allow_startup_data: bool,
    placement: tuple[str, ...],
    limits: dict[str, Any],
) -> Policy:
    try:
        parsed_volume = Volume.parse(volume) if volume is not None else None
        constraints = validate_placement(placement)
    except InvalidRequest as exc:
        fail(PROG, str(exc))
    return Policy(
        app_license=app_license,
        allow_home=allow_home,
        allow_view=allow_view,
        volume=parsed_volume,
        allow_startup_data=allow_startup_data,
        placement=constraints,
        **limits,
    )


# ------------------------------------------------------------------------------ init
@main.command()
def init() -> None:
    """Create a new database with the current schema (never overwrites one)."""
    target = _target()
    status = _report_errors(lambda: asyncio.run(bootstrap.initialise_database(target.url)))
    click.echo(f"created the {status.location} (schema revision {status.current})")


# ------------------------------------------------------------------------------ users
@main.group()
def user() -> None:
    """Create, remove and list users (by JupyterHub user name)."""


@user.command("create")
@click.argument("name")
def user_create(name: str) -> None:
    """Add user NAME; prints their id."""
    created = _run(
        lambda database: catalogue.create_user(database.unit_of_work, name, by=database.by)
    )
    click.echo(str(created.id))


@user.command("remove")
@click.argument("name")
def user_remove(name: str) -> None:
    """Remove user NAME and every grant they hold."""
    _run(lambda database: catalogue.remove_user(database.unit_of_work, name, by=database.by))


@user.command("list")
@click.option("--show-apps", is_flag=True, help="Show each user's grants too.")
@click.option("--no-decoration", is_flag=True, help="Plain lines, no header, for scripts.")
def user_list(show_apps: bool, no_decoration: bool) -> None:
    """List the users (and with --show-apps, what each may run)."""
    decorated = not no_decoration
    if not show_apps:
        users = _run(lambda database: catalogue.list_users(database.unit_of_work))
        rows = [[str(found.id), found.name] for found in users]
        _echo_lines(render_table(["ID", "NAME"], rows, decorated=decorated))
        return
    listing = _run(lambda database: catalogue.list_users_with_grants(database.unit_of_work))
    rows = []
    for entry in listing:
        if not entry.grants:
            rows.append([str(entry.user.id), entry.user.name, "", "", ""])
        for grant in entry.grants:
            rows.append(
                [
                    str(entry.user.id),
                    entry.user.name,
                    grant.application.image,
                    grant.mapping_id,
                    describe_policy(grant.policy),
                ]
            )
    headers = ["ID", "NAME", "IMAGE", "MAPPING_ID", "POLICY"]
    _echo_lines(render_table(headers, rows, decorated=decorated))


# ------------------------------------------------------------------------------ applications
@main.group()
def app() -> None:
    """Register, remove and list applications; grant and revoke them."""


@app.command("create")
@click.argument("image")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check that the Docker engine holds the image.",
)
def app_create(image: str, verify: bool) -> None:
    """Register Docker image IMAGE; prints its id."""
    settings = None
    if verify:
        try:
            settings = load_settings(database_url=_target().url)
        except SettingsError as exc:
            fail(PROG, str(exc), 2)

    async def create(database: _Work) -> int:
        if settings is not None:
            await _verify(settings, image)
        created = await catalogue.create_application(database.unit_of_work, image, by=database.by)
        return created.id

    click.echo(str(_run(create)))


async def _verify(settings: Settings, image: str) -> None:
    try:
        runtime = bootstrap.build_runtime(settings)
        try:
            await catalogue.verify_image(runtime, image)
        finally:
            await runtime.close()
    except NotFound as exc:
        raise NotFound(f"{exc}; use --no-verify to register it anyway") from None
    except Unavailable as exc:
        raise _verification_unavailable(exc) from None


def _verification_unavailable(exc: Unavailable) -> Unavailable:
    detail = str(exc).removeprefix("Docker engine unavailable").lstrip(":; ")
    return Unavailable(
        f"Docker engine unavailable ({detail}); use --no-verify to register the image anyway"
    )


@app.command("remove")
@click.argument("image")
def app_remove(image: str) -> None:
    """Remove application IMAGE and every grant of it."""
    _run(
        lambda database: catalogue.remove_application(database.unit_of_work, image, by=database.by)
    )


@app.command("list")
@click.option("--no-decoration", is_flag=True, help="Plain lines, no header, for scripts.")
@click.option("--show-groups", is_flag=True, help="List the grants to hub groups instead.")
def app_list(no_decoration: bool, show_groups: bool) -> None:
    """List the registered applications (or the grants to hub groups)."""
    if show_groups:
        granted = _run(lambda database: catalogue.list_group_grants(database.unit_of_work))
        rows = [[g.mapping_id, g.group, g.application.image] for g in granted]
        _echo_lines(
            render_table(["MAPPING ID", "GROUP", "IMAGE"], rows, decorated=not no_decoration)
        )
        return
    applications = _run(lambda database: catalogue.list_applications(database.unit_of_work))
    rows = [[str(found.id), found.image] for found in applications]
    _echo_lines(render_table(["ID", "IMAGE"], rows, decorated=not no_decoration))


@app.command("grant")
@click.argument("image")
@click.argument("user_name", metavar="[USER]", required=False)
@click.option("--group", default=None, metavar="NAME", help="Grant to this hub group instead.")
@_policy_options
def app_grant(
    image: str,
    user_name: str | None,
    group: str | None,
    app_license: str | None,
    allow_home: bool,
    allow_view: bool,
    volume: str | None,
    allow_startup_data: bool,
    placement: tuple[str, ...],
    **limits: Any,
) -> None:
    """Let USER (or every member of hub group NAME) run IMAGE under a policy; prints the
    grant's mapping id.

    Granting the same policy again gives the same mapping id.
    """
    subject = _user_or_group(user_name, group)
    policy = _policy(
        app_license, allow_home, allow_view, volume, allow_startup_data, placement, limits
    )
    volumes = _volume_guard() if policy.volume is not None else None
    granted = _run(
        lambda database: catalogue.grant_access(
            database.unit_of_work, image, subject, policy, volumes=volumes, by=database.by
        )
    )
    click.echo(granted.mapping_id)


def _user_or_group(user_name: str | None, group: str | None) -> catalogue.Subject:
    if group is not None and user_name is None:
        return catalogue.HubGroup(group)
    if user_name is not None and group is None:
        return user_name
    fail(PROG, "name exactly one of USER and --group", 2)


@app.command("revoke")
@click.argument("image")
@click.argument("user_name", metavar="[USER]", required=False)
@click.option("--group", default=None, metavar="NAME", help="Revoke hub group NAME's grant.")
@click.option("--revoke-all", is_flag=True, help="Revoke every policy of IMAGE for USER.")
@_policy_options
def app_revoke(
    image: str,
    user_name: str | None,
    group: str | None,
    revoke_all: bool,
    app_license: str | None,
    allow_home: bool,
    allow_view: bool,
    volume: str | None,
    allow_startup_data: bool,
    placement: tuple[str, ...],
    **limits: Any,
) -> None:
    """Withdraw USER's (or hub group NAME's) grant of IMAGE with exactly this policy (or all
    of them)."""
    subject = _user_or_group(user_name, group)
    policy: Policy | Literal["all"]
    if revoke_all:
        chosen = any(value is not None for value in limits.values())
        if (
            app_license is not None
            or allow_home
            or allow_view
            or volume
            or allow_startup_data
            or placement
            or chosen
        ):
            fail(PROG, "--revoke-all cannot be combined with policy options", 2)
        policy = catalogue.ALL_POLICIES
    else:
        policy = _policy(
            app_license, allow_home, allow_view, volume, allow_startup_data, placement, limits
        )
    count = _run(
        lambda database: catalogue.revoke_access(
            database.unit_of_work, image, subject, policy, by=database.by
        )
    )
    click.echo(f"revoked {count} grant{'' if count == 1 else 's'}")
