"""``remoteappmanager``'s ``serve``: listens where JUPYTERHUB_SERVICE_URL says, logs JSON, stops
cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import urllib.request

from tests.support.services import REPO, free_port, wait_for_port

SECRET = "hub-token-" + "s" * 30

_SCRIPT = textwrap.dedent(
    """
    import asyncio, contextlib, dataclasses, sys, time
    from remoteappmanager.cli.manager import serve
    from remoteappmanager.settings import Settings
    from remoteappmanager.web.logs import configure_logging
    from tests.support.webapp import World

    @contextlib.asynccontextmanager
    async def resource():
        loop = type(asyncio.get_running_loop())
        print("opened", loop.__module__, flush=True)
        yield
        print("closed", flush=True)

    settings = Settings(
        jupyterhub_service_url="http://127.0.0.1:" + sys.argv[1],
        jupyterhub_api_token=sys.argv[2],
        gate_url="http://127.0.0.1:0",
        log_format="json",
    )
    configure_logging(settings.log_format, settings.log_level)
    # The production wiring over in-memory ports, on the real clocks.
    built = World().build(settings, clock=time.time, monotonic=time.monotonic)
    serve(dataclasses.replace(built, resources=[*built.resources, resource]))
    """
)


def test_serve_runs_the_app_and_shuts_down_gracefully() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(port), SECRET],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=20, process=process)
        url = f"http://127.0.0.1:{port}/services/remoteapp/health"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            request_id = response.headers["X-Request-Id"]
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    assert lines[0] == "opened uvloop" or lines[0].startswith("opened asyncio")
    assert lines[-1] == "closed"

    events = [json.loads(line) for line in stderr.decode().splitlines() if line.strip()]
    requests = [e for e in events if e.get("event") == "request"]
    assert requests == [
        {
            **requests[0],
            "method": "GET",
            "path": "/services/remoteapp/health",
            "status": 200,
            "request_id": request_id,
        }
    ]
    assert {"service_starting", "service_stopped"} <= {e.get("event") for e in events}
    assert SECRET not in stderr.decode()
