"""What the service images install, read from pyproject.toml so that images and the package
never disagree: ``build`` prints the build backend's requirements, ``runtime`` the package's
dependencies, its ``speed`` extra and JupyterHub in the range the test suite runs against.

Used inside image builds (``python3 requirements.py runtime > runtime.txt``): the runtime
requirements get their own cached layer, which then survives changes to the source code.
Standard library only, Python >= 3.11.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

EXTRAS = ("speed",)
# Runs beside the service in the same image; its supported range is the one tested.
HUB_DISTRIBUTION = "jupyterhub"


def _name(requirement: str) -> str:
    for separator in "<>=!~[; ":
        requirement = requirement.split(separator, 1)[0]
    return requirement.strip().lower()


def requirements(project: dict[str, object], which: str) -> list[str]:
    if which == "build":
        build_system = project["build-system"]
        assert isinstance(build_system, dict)
        return list(build_system["requires"])
    metadata = project["project"]
    assert isinstance(metadata, dict)
    extras: dict[str, list[str]] = metadata.get("optional-dependencies", {})
    wanted = list(metadata["dependencies"])
    for extra in EXTRAS:
        wanted += extras.get(extra, [])
    hub = [spec for spec in extras.get("test", []) if _name(spec) == HUB_DISTRIBUTION]
    if not hub:
        raise SystemExit(f"pyproject.toml: no {HUB_DISTRIBUTION} in the test extra")
    return wanted + hub


def main(argv: list[str]) -> None:
    if len(argv) != 3 or argv[2] not in {"build", "runtime"}:
        raise SystemExit(f"usage: {argv[0]} PYPROJECT build|runtime")
    with Path(argv[1]).open("rb") as file:
        project = tomllib.load(file)
    print("\n".join(requirements(project, argv[2])))


if __name__ == "__main__":
    main(sys.argv)
