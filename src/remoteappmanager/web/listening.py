"""One-line explanations of a listening socket that cannot be opened, naming the setting."""

from __future__ import annotations

import errno

GATE_SETTING = "REMOTEAPP_GATE_URL (default: the service's port + 1)"
SERVICE_SETTING = "JUPYTERHUB_SERVICE_URL (REMOTEAPP_SERVICE_PORT for a hub-managed service)"
# What binding a listening socket fails with, as opposed to the failures of what it serves.
BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL})


def listen_failure(what: str, host: str, port: int, error: OSError, setting: str) -> str:
    """``<what> cannot listen on <host>:<port>: <why>; choose another with <setting>``."""
    if error.errno == errno.EADDRINUSE:
        why = "the port is taken by another program"
    elif error.errno == errno.EACCES:
        why = "permission denied (a port below 1024 needs privileges)"
    elif error.errno == errno.EADDRNOTAVAIL:
        why = "this machine has no such address"
    else:
        why = (error.strerror or str(error)).lower()
    shown = f"[{host}]" if ":" in host else host
    return f"{what} cannot listen on {shown}:{port}: {why}; choose another with {setting}"
