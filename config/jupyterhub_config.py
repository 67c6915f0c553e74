# JupyterHub configuration for SimPhoNy-Remote: `jupyterhub -f config/jupyterhub_config.py`
# starts the hub, configurable-http-proxy and the remoteapp service together.
# Copy it and adjust; everything deployment-specific comes from environment variables, so the
# same file serves a laptop demo, the tests and production. Written for JupyterHub 5 and 6.
#
# Hub-side variables (never passed on to the service):
#   REMOTEAPP_DEMO_PASSWORD       set: everyone signs in with this one password (demo only!)
#   REMOTEAPP_DEMO_ADMIN_PASSWORD with it: the password of the hub admins (32+ characters)
#   REMOTEAPP_HUB_IP / _PORT      public address of the proxy (127.0.0.1 / 8000)
#   REMOTEAPP_HUB_INTERNAL_PORT   the hub's own port, reached by the proxy and services (8081)
#   REMOTEAPP_HUB_INTERNAL_IP     the address it binds (127.0.0.1; 0.0.0.0 in a container whose
#                                 service runs in other containers, deploy/stack.yml)
#   REMOTEAPP_HUB_BASE_URL        URL prefix of everything (/)
#   REMOTEAPP_HUB_PUBLIC_URL      the hub's public URL when behind TLS/another proxy (unset)
#   REMOTEAPP_HUB_DATA_DIR        where the hub keeps its database and secrets (the cwd)
#   REMOTEAPP_HUB_ADMIN_USERS     comma-separated hub admins (none)
#   REMOTEAPP_HUB_ALLOWED_USERS   comma-separated users allowed to sign in (see below)
#   REMOTEAPP_SERVICE_PORT        port of the remoteapp service on 127.0.0.1 (10101); its gate
#                                 listens on the next one (REMOTEAPP_GATE_URL to choose another)
#   REMOTEAPP_SERVICE_COMMAND     how to start the service (remoteappmanager beside python)
#   REMOTEAPP_SERVICE_API_TOKEN   set: the service runs on its own (systemd, a container...)
#                                 with this token as JUPYTERHUB_API_TOKEN; the hub won't start it
#   REMOTEAPP_SERVICE_URL         with it: where the proxy reaches that service
#                                 (http://127.0.0.1:<REMOTEAPP_SERVICE_PORT>)
#   REMOTEAPP_CHP_COMMAND         configurable-http-proxy executable (the repo's node_modules)
# Shared with the service: CONFIGPROXY_API_URL (http://127.0.0.1:8001), CONFIGPROXY_AUTH_TOKEN
# (generated at each hub start when unset), every other REMOTEAPP_* and DOCKER_* variable.

import os  # environment variables
import secrets  # a proxy token when none is given
import shutil  # finding executables
import socket  # checking that the service's ports are free
import sys  # the Python running the hub (its venv holds remoteappmanager)
from pathlib import Path  # paths relative to this file
from urllib.parse import urlsplit  # REMOTEAPP_GATE_URL

c = get_config()  # noqa: F821 - injected by JupyterHub when it reads this file

_env = os.environ.get  # shorthand for reading a variable with a default


def _names(variable: str) -> set[str]:
    """A comma-separated list of user names from the environment."""
    return {name.strip() for name in _env(variable, "").split(",") if name.strip()}


# ------------------------------------------------------------------------------ addresses
_ip = _env("REMOTEAPP_HUB_IP", "127.0.0.1")  # loopback by default: put TLS in front for real use
_port = int(_env("REMOTEAPP_HUB_PORT", "8000"))  # the one port browsers talk to
_base_url = "/" + _env("REMOTEAPP_HUB_BASE_URL", "/").strip("/") + "/"  # normalised to /x/
_base_url = "/" if _base_url == "//" else _base_url  # the root stays a single slash
_data = Path(_env("REMOTEAPP_HUB_DATA_DIR", os.getcwd())).resolve()  # hub state lives here
_data.mkdir(parents=True, exist_ok=True)  # first start on a fresh machine

c.JupyterHub.bind_url = f"http://{_ip}:{_port}{_base_url}"  # the proxy's public side
# The hub's own port: only the proxy and the service talk to it, so it stays on loopback.
_hub_ip = _env("REMOTEAPP_HUB_INTERNAL_IP", "127.0.0.1")  # another container's service: 0.0.0.0
c.JupyterHub.hub_bind_url = f"http://{_hub_ip}:{_env('REMOTEAPP_HUB_INTERNAL_PORT', '8081')}"
if _env("REMOTEAPP_HUB_PUBLIC_URL"):  # absolute links (e.g. share links) need the real origin
    c.JupyterHub.public_url = _env("REMOTEAPP_HUB_PUBLIC_URL")  # e.g. https://apps.example.org/
c.JupyterHub.db_url = f"sqlite:///{_data / 'jupyterhub.sqlite'}"  # the hub's own small database
c.JupyterHub.cookie_secret_file = str(_data / "jupyterhub_cookie_secret")  # survives restarts

# ------------------------------------------------------------------------------ the proxy
_proxy_api = _env("CONFIGPROXY_API_URL", "http://127.0.0.1:8001")  # the proxy's REST API
# One token for the hub and our service, which both edit the proxy's routes; made up at each
# start when the operator gave none (the service receives it below, nobody else needs it).
os.environ.setdefault("CONFIGPROXY_AUTH_TOKEN", secrets.token_hex(32))  # 256 random bits
os.environ.setdefault("CONFIGPROXY_API_URL", _proxy_api)  # so the service gets it too
_repo = Path(__file__).resolve().parent.parent  # the checkout this file comes from
_repo_chp = _repo / "node_modules" / ".bin" / "configurable-http-proxy"  # its npm install
_chp = _env("REMOTEAPP_CHP_COMMAND") or (  # an explicit choice wins
    str(_repo_chp) if _repo_chp.exists() else "configurable-http-proxy"  # repo's, else PATH
)
c.ConfigurableHTTPProxy.command = [_chp]  # what the hub runs as the proxy
c.ConfigurableHTTPProxy.api_url = _proxy_api  # where the hub (and we) reach its API
c.ConfigurableHTTPProxy.auth_token = os.environ["CONFIGPROXY_AUTH_TOKEN"]  # the shared token
c.ConfigurableHTTPProxy.pid_file = str(_data / "jupyterhub-proxy.pid")  # beside the hub's state
c.ConfigurableHTTPProxy.should_start = True  # the hub starts and stops the proxy

# ------------------------------------------------------------------------------ sign-in
_demo_password = _env("REMOTEAPP_DEMO_PASSWORD")  # a demo switch, never for production
if _demo_password:
    # Any user name, this one password (8 characters or more); the hub admins sign in with
    # REMOTEAPP_DEMO_ADMIN_PASSWORD instead (32 characters or more), or not at all.
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = _demo_password  # everyone but the admins
    if _env("REMOTEAPP_DEMO_ADMIN_PASSWORD"):
        c.SharedPasswordAuthenticator.admin_password = _env("REMOTEAPP_DEMO_ADMIN_PASSWORD")
    c.Authenticator.allow_all = True  # whoever knows the password may sign in
# Otherwise the default PAMAuthenticator signs in the machine's own accounts.
c.Authenticator.admin_users = _names("REMOTEAPP_HUB_ADMIN_USERS")  # also remoteapp admins
_allowed = _names("REMOTEAPP_HUB_ALLOWED_USERS")  # who may sign in (with PAM)
if _allowed:
    c.Authenticator.allowed_users = _allowed  # JupyterHub 5 lets nobody in until told whom
# Give users the ability to enter our service (the OAuth flow checks exactly this scope)
# on top of the default `self`.
c.JupyterHub.load_roles = [
    {
        "name": "user",  # the role every hub user has
        "scopes": ["self", "access:services!service=remoteapp"],  # their own data + our service
    },
    # The service's own token authenticates it as the OAuth client (the client secret of the
    # code exchange). Who a user is comes from GET /hub/api/user with the *user's* token. The
    # service lists user and group names, and nothing else of them, for the share dialog's
    # search; it never changes hub users or groups.
    {
        "name": "remoteapp-directory",
        "services": ["remoteapp"],
        "scopes": ["list:users", "read:users:name", "list:groups", "read:groups:name"],
    },
]

# ------------------------------------------------------------------------------ our service
_service_port = int(_env("REMOTEAPP_SERVICE_PORT", "10101"))  # on loopback, behind the proxy
# Variables the hub reads itself, or secrets the service must not see.
_HUB_ONLY = {
    "REMOTEAPP_DEMO_PASSWORD",
    "REMOTEAPP_DEMO_ADMIN_PASSWORD",
    "REMOTEAPP_SERVICE_API_TOKEN",
    "REMOTEAPP_SERVICE_COMMAND",
    "REMOTEAPP_SERVICE_PORT",
    "REMOTEAPP_CHP_COMMAND",
}
_service_env = {  # a managed service inherits nothing else from the hub's environment
    name: value
    for name, value in os.environ.items()
    if name.startswith(("REMOTEAPP_", "CONFIGPROXY_", "DOCKER_"))
    and not name.startswith("REMOTEAPP_HUB_")
    and name not in _HUB_ONLY
}


def _port_is_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether another program listens on host:port (as the service would bind it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _require_free_ports(service_port: int) -> None:
    """Stop the hub with one line when the service's or its gate's port is taken."""
    wanted = [(("127.0.0.1", service_port), "REMOTEAPP_SERVICE_PORT")]
    if _env("REMOTEAPP_CONTAINER_ACCESS", "gated") != "direct":  # gated: the gate listens too
        gate = urlsplit(_env("REMOTEAPP_GATE_URL") or f"http://127.0.0.1:{service_port + 1}")
        wanted.append(
            (
                (gate.hostname or "127.0.0.1", gate.port or 80),
                "REMOTEAPP_GATE_URL (default: the service's port + 1)",
            )
        )
    for (host, port), setting in wanted:
        if _port_is_taken(port, host):
            sys.exit(
                f"remoteapp: port {port} on {host} is taken by another program; "
                f"choose another with {setting}"
            )


_service = {
    "name": "remoteapp",  # served under {base_url}services/remoteapp/
    "url": f"http://127.0.0.1:{_service_port}",  # where the proxy sends /services/remoteapp/
    "oauth_no_confirm": True,  # part of this site: no "authorize access?" page for users
    "display": True,  # listed on the hub's home page
}
if _env("REMOTEAPP_SERVICE_API_TOKEN"):
    # Externally managed: the operator runs `remoteappmanager` with the same token as its
    # JUPYTERHUB_API_TOKEN (and JUPYTERHUB_SERVICE_URL=http://127.0.0.1:<port>).
    _service["api_token"] = _env("REMOTEAPP_SERVICE_API_TOKEN")  # its OAuth client secret too
    _service["url"] = _env("REMOTEAPP_SERVICE_URL") or _service["url"]  # another host's port
else:
    _beside_python = Path(sys.executable).parent / "remoteappmanager"  # same venv as the hub
    _command = _env("REMOTEAPP_SERVICE_COMMAND") or (  # explicit, else the venv's, else PATH
        str(_beside_python) if _beside_python.exists() else shutil.which("remoteappmanager")
    )
    _service["command"] = [_command or "remoteappmanager"]  # the hub starts and restarts it
    _require_free_ports(_service_port)  # else the hub would restart a dying service forever
    _service["environment"] = _service_env  # the hub adds its JUPYTERHUB_* variables itself
    _service["cwd"] = str(_data)  # the default SQLite database lands beside the hub's
c.JupyterHub.services = [_service]  # the only service

# ------------------------------------------------------------------------------ no notebooks
c.JupyterHub.default_url = _base_url + "services/remoteapp/"  # users land on our page
c.JupyterHub.redirect_to_server = False  # never send anyone to a notebook server
c.JupyterHub.implicit_spawn_seconds = 0  # and never start one on their behalf
c.JupyterHub.allow_named_servers = False  # nothing to name: nobody spawns
c.JupyterHub.shutdown_on_logout = False  # hub logout leaves the user's containers running
