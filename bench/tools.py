"""Programs the benchmarks run besides Python (``wrk``): installed when missing, if we can;
and what a process has used of the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def debian_tool(command: str, package: str) -> str | None:
    """The path of ``command``. When it is missing and this runs as root on a machine with
    apt-get, Debian's ``package`` is installed first; otherwise one line on stderr says how
    to get it, and the answer is None."""
    found = shutil.which(command)
    if found is not None:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {package} (apt-get) for {command}", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["install", "-y", "-qq", "--no-install-recommends", package]
        for apt in (["update", "-qq"], install):
            subprocess.run(["apt-get", *apt], env=env, check=False, stdout=subprocess.DEVNULL)
        found = shutil.which(command)
        if found is not None:
            return found
    print(f"{command} is missing: install it with `apt-get install -y {package}` (as root)")
    return None


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time process ``pid`` has used so far (proc(5))."""
    # Fields 14 and 15 of /proc/<pid>/stat; the command, field 2, may hold spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
