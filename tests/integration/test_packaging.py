"""The built wheel carries the migrations, and an installed copy can create a database."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.database import CURRENT_REVISION
from tests.support.services import REPO, skip_or_fail

_REPORT_AND_UPGRADE = """
import asyncio, sys
import remoteappmanager
from remoteappmanager.adapters.db import migrate
status = asyncio.run(migrate.upgrade(sys.argv[1]))
print(remoteappmanager.__file__)
print(migrate.scripts_dir())
print(status.current, status.at_head)
"""
_REMOTEAPPDB = "from remoteappmanager.cli.remoteappdb import main; main(prog_name='remoteappdb')"


@pytest.mark.slow
def test_an_installed_wheel_migrates_with_its_own_copy(tmp_path: Path) -> None:
    if importlib.util.find_spec("hatchling") is None:
        skip_or_fail("hatchling is not installed (pip install -e '.[test]')")
    dist, site = tmp_path / "dist", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
        check=True,
        timeout=120,
    )
    (wheel,) = dist.glob("remoteappmanager-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "remoteappmanager/migrations/versions/0001_baseline.py" in names
    assert "remoteappmanager/migrations/env.py" in names
    assert not any("__pycache__" in name for name in names)

    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True,
        timeout=120,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    url = f"sqlite+aiosqlite:///{tmp_path / 'installed.db'}"
    upgraded = subprocess.run(
        [sys.executable, "-c", _REPORT_AND_UPGRADE, url],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    module, scripts, state = upgraded.stdout.splitlines()
    assert Path(module).is_relative_to(site)
    assert Path(scripts) == site / "remoteappmanager" / "migrations"
    assert state == f"{CURRENT_REVISION} True"

    created = subprocess.run(
        [sys.executable, "-c", _REMOTEAPPDB, str(tmp_path / "cli.db"), "init"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert f"schema revision {CURRENT_REVISION}" in created.stdout
