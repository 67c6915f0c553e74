"""The gate: the listener every request to an application container passes through.

One module per part, the lower ones knowing nothing of the higher ones:

- ``handler``      the gatekeeper (``Gate``): who the caller is, entry tickets and the gate
                   cookie, the confirmation page, re-checks; ``setup_gate`` wires it into the
                   aiohttp application. The access decision itself is ``services.gate_access``.
- ``listener``     ``GateServer``: the TCP listener, one ``asyncio.Protocol`` per client
                   connection, asking the gatekeeper about every request.
- ``relay``        the WebSocket relay between a client and an application (sans I/O).
- ``rfb``          the RFB filter that keeps a view-only viewer's input from a desktop.
- ``credentials``  which credentials and cookies reach an application, and back (pure).

The names below are the parts' public ones. ``handler`` is imported as
``remoteappmanager.web.gate.handler``: it depends on the rest of ``web`` (sign-in, pages, the
desktop viewer), which itself uses the parts re-exported here.
"""

from remoteappmanager.web.gate.credentials import (
    GATE_COOKIE,
    authorization_token,
    confine_set_cookie,
    cookie_values,
    forwarded_authorization,
    sort_cookies,
)
from remoteappmanager.web.gate.framing import GateRequest
from remoteappmanager.web.gate.listener import (
    Answer,
    Forward,
    Gatekeeper,
    GateServer,
    GateStats,
    Verdict,
    ViewerInput,
)
from remoteappmanager.web.gate.relay import WebSocketRelay, WebSocketViolation
from remoteappmanager.web.gate.rfb import RfbInputFilter, RfbViolation

__all__ = [
    "GATE_COOKIE",
    "Answer",
    "Forward",
    "GateRequest",
    "GateServer",
    "GateStats",
    "Gatekeeper",
    "RfbInputFilter",
    "RfbViolation",
    "Verdict",
    "ViewerInput",
    "WebSocketRelay",
    "WebSocketViolation",
    "authorization_token",
    "confine_set_cookie",
    "cookie_values",
    "forwarded_authorization",
    "sort_cookies",
]
