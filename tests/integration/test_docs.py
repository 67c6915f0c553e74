"""The documentation site builds without a warning, its generated pages are complete, and the
documented move of a 2.x catalogue works as written.

The site is built with ``mkdocs build --strict`` into a temporary folder: a broken link or
anchor, a page left out of the navigation, or a failing generator hook fails the build. The
migration tests run the shell blocks of ``docs/migrating.md`` themselves, against a database
shaped like SimPhoNy-Remote 2.2's.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices

from remoteappmanager.settings import Settings
from tests.support.database import cli_url
from tests.support.services import REPO, skip_or_fail

DOCS = REPO / "docs"
MIGRATING = DOCS / "migrating.md"
_BIN = str(Path(sys.executable).parent)


# ------------------------------------------------------------------------------ the site
@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        skip_or_fail("mkdocs is not installed (pip install -e '.[docs]')")
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(REPO / "mkdocs.yml"),
            "--site-dir",
            str(site_dir),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=_clean_environment(),
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    return site_dir


def _page_text(site: Path, name: str) -> str:
    """A built page's visible text (tags dropped, entities decoded)."""
    raw = (site / name).read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", " ", raw))


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    for page in (
        "index",
        "quickstart",
        "architecture",
        "configuration",
        "operations",
        "administration",
        "images",
        "api",
        "troubleshooting",
        "migrating",
        "benchmarks",
        "authentication",
        "database",
        "deployment-swarm",
    ):
        assert (site / f"{page}.html").is_file(), page
    # The build code is not published.
    assert not list(site.rglob("*.py"))
    # Every include marker was replaced.
    for page in site.glob("*.html"):
        assert "<!-- include:" not in page.read_text(encoding="utf-8"), page.name


def _variables(name: str, info: Any) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str) and c.upper() == c]
    return [(str(Settings.model_config.get("env_prefix", "")) + name).upper()]


def test_the_configuration_page_lists_every_setting(site: Path) -> None:
    text = _page_text(site, "configuration.html")
    page = (site / "configuration.html").read_text(encoding="utf-8")
    for name, info in Settings.model_fields.items():
        for variable in _variables(name, info):
            assert variable in text, f"{variable} ({name}) is missing from the configuration page"
        assert f'id="{_variables(name, info)[0].lower()}"' in page, name
        assert name in text, f"the TOML key {name} is missing"
    # The names operators rely on, whatever the code says.
    for variable in (
        "REMOTEAPP_DATABASE_URL",
        "REMOTEAPP_DOCKER_HOST",
        "REMOTEAPP_DOCKER_TLS_VERIFY",
        "REMOTEAPP_DOCKER_CERT_PATH",
        "DOCKER_HOST",
        "REMOTEAPP_REALM",
        "CONFIGPROXY_API_URL",
        "CONFIGPROXY_AUTH_TOKEN",
        "REMOTEAPP_CONTAINER_ACCESS",
        "REMOTEAPP_PUBLISH_IP",
        "REMOTEAPP_WORKSPACE_ROOT",
        "REMOTEAPP_NETWORK_TIMEOUT",
        "REMOTEAPP_AUTO_USER_CREATION",
        "REMOTEAPP_DEMO_APPLICATIONS",
        "REMOTEAPP_ADMIN_GROUP",
        "REMOTEAPP_LOG_FORMAT",
        "REMOTEAPP_DEFAULT_MEMORY_LIMIT_MB",
        "REMOTEAPP_DEFAULT_CPU_LIMIT",
        "REMOTEAPP_DEFAULT_PIDS_LIMIT",
        "REMOTEAPP_VOLUME_ROOTS",
        "REMOTEAPP_CONTAINER_NETWORK",
        "REMOTEAPP_ALLOW_PUBLIC_PUBLISH_IP",
        "REMOTEAPP_WORKSPACE_UID_BASE",
    ):
        assert variable in text, variable
    # The commented examples are shown, not copied: they come from config/ at build time.
    toml_example = (REPO / "config" / "remoteappmanager.toml").read_text(encoding="utf-8")
    assert toml_example.splitlines()[0].lstrip("# ") in text


def test_the_api_page_shows_every_operation_of_the_served_document(site: Path) -> None:
    hook = _load_hook("openapi_reference")
    document = hook.build_openapi_document()
    page = (site / "api.html").read_text(encoding="utf-8")
    text = _page_text(site, "api.html")
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert operations
    for path, method, operation in operations:
        assert f'id="op-{operation["operationId"]}"' in page, operation["operationId"]
        shown = "{svc}" + path.removeprefix("/services/remoteapp/")
        assert f"{method.upper()} {shown}" in text, (method, path)
    for schema in document["components"]["schemas"]:
        assert f'id="schema-{schema}"' in page, schema


def test_the_image_guide_is_included_from_images_readme(site: Path) -> None:
    text = _page_text(site, "images.html")
    readme = (REPO / "images" / "README.md").read_text(encoding="utf-8")
    headings = [line.lstrip("# ") for line in readme.splitlines() if line.startswith("## ")]
    assert headings
    for heading in headings:
        assert heading in text, heading


def _load_hook(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ migrating from 2.x
# What SimPhoNy-Remote 2.2's ORM creates on SQLite (SQLAlchemy 1.3 create_all): nullable
# booleans with CHECK constraints, unnamed constraints, a unique index on user names.
SCHEMA_2X = """
CREATE TABLE user (id INTEGER NOT NULL, name VARCHAR, PRIMARY KEY (id));
CREATE UNIQUE INDEX ix_user_name ON user (name);
CREATE TABLE application (id INTEGER NOT NULL, image VARCHAR, PRIMARY KEY (id), UNIQUE (image));
CREATE TABLE application_policy (
    id INTEGER NOT NULL,
    app_license VARCHAR,
    allow_home BOOLEAN,
    allow_common BOOLEAN,
    allow_view BOOLEAN,
    volume_source VARCHAR,
    volume_target VARCHAR,
    volume_mode VARCHAR(2),
    allow_startup_data BOOLEAN,
    PRIMARY KEY (id),
    CHECK (allow_home IN (0, 1)),
    CHECK (allow_common IN (0, 1)),
    CHECK (allow_view IN (0, 1)),
    CHECK (volume_mode IN ('ro', 'rw')),
    CHECK (allow_startup_data IN (0, 1))
);
CREATE TABLE accounting (
    id VARCHAR(32) NOT NULL,
    user_id INTEGER,
    application_id INTEGER,
    application_policy_id INTEGER,
    PRIMARY KEY (id),
    UNIQUE (user_id, application_id, application_policy_id),
    FOREIGN KEY(user_id) REFERENCES user (id) ON DELETE CASCADE,
    FOREIGN KEY(application_id) REFERENCES application (id) ON DELETE CASCADE,
    FOREIGN KEY(application_policy_id) REFERENCES application_policy (id) ON DELETE CASCADE
);
"""
PARAVIEW = "simphony/paraview:5.9"
WEBAPP = "remoteapp-demo/webapp:latest"
GRANTS = {
    "1f0c9d0b7a8e4c2f9a6b5d4e3c2b1a00": (1, 1, 1),
    "2e1d0c9b8a7f6e5d4c3b2a1908f7e6d5": (1, 3, 2),
    "3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d": (2, 3, 3),
    "4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e": (7, 1, 4),
}
# The rows as remoteappdb lists them afterwards (--show-apps --no-decoration).
EXPECTED_LISTING = [
    f"1 alice {PARAVIEW} 1f0c9d0b7a8e4c2f9a6b5d4e3c2b1a00 home",
    f"1 alice {WEBAPP} 2e1d0c9b8a7f6e5d4c3b2a1908f7e6d5 "
    "home,view,common,volume=/srv/data:/data:ro,license=LIC 1",
    f"2 bob {WEBAPP} 3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d -",
    f"7 carol.smith {PARAVIEW} 4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e startupdata",
]


def _make_2x_database(path: Path, *, schema: str = SCHEMA_2X) -> None:
    with sqlite3.connect(path) as connection:
        connection.executescript(schema)
        connection.executemany(
            "INSERT INTO user (id, name) VALUES (?, ?)",
            [(1, "alice"), (2, "bob"), (7, "carol.smith")],
        )
        connection.executemany(
            "INSERT INTO application (id, image) VALUES (?, ?)", [(1, PARAVIEW), (3, WEBAPP)]
        )
        policy_columns = [
            row[1] for row in connection.execute("PRAGMA table_info(application_policy)")
        ]
        policies = [
            # id, licence, home, common, view, source, target, mode, startup data
            (1, None, 1, 0, 0, None, None, None, 0),
            (2, "LIC 1", 1, 1, 1, "/srv/data", "/data", "ro", 0),
            (3, None, None, None, None, None, None, None, None),  # from before a column existed
            (4, "", 0, 0, 0, None, None, None, 1),
        ]
        names = [
            "id",
            "app_license",
            "allow_home",
            "allow_common",
            "allow_view",
            "volume_source",
            "volume_target",
            "volume_mode",
            "allow_startup_data",
        ]
        kept = [i for i, name in enumerate(names) if name in policy_columns]
        connection.executemany(
            f"INSERT INTO application_policy ({', '.join(names[i] for i in kept)}) "
            f"VALUES ({', '.join('?' for _ in kept)})",
            [tuple(policy[i] for i in kept) for policy in policies],
        )
        connection.executemany(
            "INSERT INTO accounting VALUES (?, ?, ?, ?)",
            [(mapping_id, *ids) for mapping_id, ids in GRANTS.items()],
        )


def _shell_block(containing: str) -> str:
    blocks = re.findall(r"^```sh\n(.*?)^```$", MIGRATING.read_text(encoding="utf-8"), re.M | re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"expected one sh block with {containing!r} in {MIGRATING}"
    return found[0]


def _with_values(block: str, values: dict[str, str]) -> str:
    """The block with each ``NAME=...`` assignment line replaced (each must be there once)."""
    for prefix, value in values.items():
        pattern = re.compile(rf"^{re.escape(prefix)}=.*$", re.M)
        assert len(pattern.findall(block)) == 1, prefix
        line = f"{prefix}={value}"
        block = pattern.sub(lambda _, line=line: line, block)
    return block


def _clean_environment(**extra: str) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("REMOTEAPP_", "CONFIGPROXY_", "DOCKER_", "JUPYTERHUB_"))
    }
    environment["PATH"] = _BIN + os.pathsep + environment.get("PATH", "")
    environment.update(extra)
    return environment


def _bash(script: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=_clean_environment(**extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _remoteappdb(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [os.path.join(_BIN, "remoteappdb"), *args],
        cwd=cwd,
        env=_clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _require(command: str) -> None:
    if shutil.which(command) is None:
        skip_or_fail(f"the {command} command is not installed")


def test_the_documented_sqlite_migration_keeps_every_grant(tmp_path: Path) -> None:
    _require("sqlite3")
    old, new = tmp_path / "old.db", tmp_path / "new" / "remoteappmanager.db"
    new.parent.mkdir()
    _make_2x_database(old)

    script = _with_values(_shell_block("ATTACH DATABASE"), {"OLD": str(old), "NEW": str(new)})
    result = _bash(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    listing = _remoteappdb(str(new), "user", "list", "--show-apps", "--no-decoration", cwd=tmp_path)
    assert listing.splitlines() == EXPECTED_LISTING
    check = _bash("remoteappmanager db check", tmp_path, REMOTEAPP_DATABASE_URL=str(new))
    assert check.returncode == 0, check.stderr
    # The moved rows behave like native ones: an identical grant is found, not duplicated,
    # and new ids follow the copied ones.
    granted = _remoteappdb(
        str(new), "app", "grant", PARAVIEW, "alice", "--allow-home", cwd=tmp_path
    )
    assert granted.strip() == "1f0c9d0b7a8e4c2f9a6b5d4e3c2b1a00"
    assert _remoteappdb(str(new), "user", "create", "dave", cwd=tmp_path).strip() == "8"


def test_the_documented_sqlite_migration_writes_nothing_when_a_column_is_missing(
    tmp_path: Path,
) -> None:
    _require("sqlite3")
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    _make_2x_database(
        old,
        schema=SCHEMA_2X.replace("allow_startup_data BOOLEAN,", "").replace(
            "CHECK (allow_startup_data IN (0, 1))", "CHECK (1)"
        ),
    )

    script = _with_values(_shell_block("ATTACH DATABASE"), {"OLD": str(old), "NEW": str(new)})
    result = _bash(script, tmp_path)
    assert result.returncode != 0
    assert "no such column" in result.stderr
    assert _remoteappdb(str(new), "user", "list", "--no-decoration", cwd=tmp_path) == ""


@pytest.mark.postgres
def test_the_documented_postgresql_migration_keeps_every_grant(
    tmp_path: Path, postgres_url: str
) -> None:
    _require("sqlite3")
    _require("psql")
    old = tmp_path / "old.db"
    _make_2x_database(old)
    url = cli_url(postgres_url)

    script = _with_values(
        _shell_block("psql "), {"OLD": str(old), "export REMOTEAPP_DATABASE_URL": url}
    )
    result = _bash(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    listing = _remoteappdb(url, "user", "list", "--show-apps", "--no-decoration", cwd=tmp_path)
    assert listing.splitlines() == EXPECTED_LISTING
    # The id sequences were moved past the copied ids.
    assert _remoteappdb(url, "user", "create", "dave", cwd=tmp_path).strip() == "8"
    assert _remoteappdb(url, "app", "create", "--no-verify", "x/y:1", cwd=tmp_path).strip() == "4"
    granted = _remoteappdb(url, "app", "grant", "x/y:1", "dave", "--allow-view", cwd=tmp_path)
    assert re.fullmatch(r"[0-9a-f]{32}", granted.strip())
