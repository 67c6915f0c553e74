"""The gate: the listener every request to an application container passes through.

One module per part, the lower ones knowing nothing of the higher ones:

- ``handler``      the gatekeeper (``Gate``): who the caller is, entry tickets and the gate
                   cookie, the confirmation page, re-checks; ``setup_gate`` wires it into the
                   aiohttp application.
- ``listener``     ``GateServer``: the TCP listener, one ``asyncio.Protocol`` per connection
                   from the proxy, asking the gatekeeper about every request.
- ``upstream``     the connections to applications (one exchange at a time) and their pool.
- ``framing``      HTTP/1.1 framing, socket-free: request heads, bodies and ends read from
                   bytes (httptools), answers' heads rewritten and their ends found.
- ``relay``        the WebSocket relay between a client and an application (sans I/O).
- ``rfb``          the RFB filter that keeps a view-only viewer's input from a desktop.
- ``credentials``  which credentials and cookies reach an application, and back (pure).

Each imports only the ones listed after it (an import-linter contract); the access decision
itself is ``services.gate_access``, which knows nothing of this package.

The names below are the parts' public ones. ``handler`` is imported as
``remoteappmanager.web.gate.handler``: it depends on the rest of ``web`` (sign-in, pages, the
desktop viewer), which itself uses the parts re-exported here.
"""

from remoteappmanager.web.gate.credentials import (
    GATE_COOKIE,
    GatePass,
    authorization_token,
    confine_set_cookie,
    cookie_values,
    forwarded_authorization,
    read_gate_pass,
    sort_cookies,
)
from remoteappmanager.web.gate.framing import (
    BadResponse,
    ChunkedBody,
    GateRequest,
    Refused,
    RequestHead,
    RequestReader,
    ResponseHead,
    read_response_head,
)
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
from remoteappmanager.web.gate.upstream import Upstream, UpstreamPool

__all__ = [
    "GATE_COOKIE",
    "Answer",
    "BadResponse",
    "ChunkedBody",
    "Forward",
    "GatePass",
    "GateRequest",
    "GateServer",
    "GateStats",
    "Gatekeeper",
    "Refused",
    "RequestHead",
    "RequestReader",
    "ResponseHead",
    "RfbInputFilter",
    "RfbViolation",
    "Upstream",
    "UpstreamPool",
    "Verdict",
    "ViewerInput",
    "WebSocketRelay",
    "WebSocketViolation",
    "authorization_token",
    "confine_set_cookie",
    "cookie_values",
    "forwarded_authorization",
    "read_gate_pass",
    "read_response_head",
    "sort_cookies",
]
