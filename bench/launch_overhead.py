"""Launch overhead: Sessions.start versus the same steps by hand, until the proxy serves the app.

Usage: .venv/bin/python bench/launch_overhead.py [REPETITIONS]   (default 20)

Each repetition times both ways, in alternating order, from "go" to "the app answers 200
through the proxy's public port". By hand = aiodocker create + start + inspect, poll the
published port every 20 ms until it answers, one POST to the proxy's API. Both use the same
image, the same container configuration and the same proxy. Reported: medians and the median
of the per-pair ratios (target <= 1.10).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time

import aiodocker
import aiohttp
from benchsupport import (
    WEB_IMAGE,
    Proxy,
    Stack,
    ensure_session_images,
    grant,
    machine,
    median,
    proxy,
    stack,
    wait_until_served,
)

from remoteappmanager.domain.containers import RUNINFO_NAMESPACE
from remoteappmanager.domain.naming import new_url_id, urlpath


async def by_sessions(bench: Stack, chp: Proxy, user: str) -> float:
    began = time.perf_counter()
    session = await bench.sessions.start(grant(user))
    await wait_until_served(bench.http, chp.public_url + session.urlpath + "/")
    elapsed = time.perf_counter() - began
    await bench.sessions.stop(user, session.url_id)
    return elapsed


async def by_hand(docker: aiodocker.Docker, bench: Stack, chp: Proxy, user: str) -> float:
    url_id = new_url_id()
    path = urlpath(user, url_id)
    config = {
        "Image": WEB_IMAGE,
        "Labels": {RUNINFO_NAMESPACE + "realm": bench.realm},
        "Env": [
            f"JPY_USER={user}",
            f"JPY_BASE_USER_URL=/user/{user}",
            f"USER={user}",
            f"URL_ID={url_id}",
        ],
        "ExposedPorts": {"8888/tcp": {}},
        "HostConfig": {
            "PortBindings": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
            "Init": True,
        },
    }
    began = time.perf_counter()
    container = await docker.containers.create(config, name=f"{bench.realm}.hand.{url_id}")
    await container.start()
    info = await container.show()
    port = info["NetworkSettings"]["Ports"]["8888/tcp"][0]["HostPort"]
    target = f"http://127.0.0.1:{port}"
    while True:
        try:
            async with bench.http.get(target + path + "/", allow_redirects=False) as response:
                if response.status < 500:
                    break
        except aiohttp.ClientError:
            pass
        # Every 20 ms: never slower than the service's probe, so the comparison is not flattered.
        await asyncio.sleep(0.02)
    async with bench.http.post(
        f"{chp.api_url}/api/routes{path}",
        json={"target": target},
        headers={"Authorization": f"token {chp.token}"},
    ) as response:
        response.raise_for_status()
    await wait_until_served(bench.http, chp.public_url + path + "/")
    elapsed = time.perf_counter() - began
    async with bench.http.delete(
        f"{chp.api_url}/api/routes{path}", headers={"Authorization": f"token {chp.token}"}
    ):
        pass
    await container.delete(force=True)
    return elapsed


async def main(repetitions: int) -> None:
    ensure_session_images()
    print(machine())
    with proxy() as chp:
        async with stack(chp) as bench, aiodocker.Docker() as docker:
            # One untimed round each: image metadata cache, connection pools, page cache.
            await by_sessions(bench, chp, "warmup")
            await by_hand(docker, bench, chp, "warmup")
            ours: list[float] = []
            hand: list[float] = []
            ratios: list[float] = []
            for i in range(repetitions):
                user = f"user{secrets.token_hex(3)}"
                if i % 2 == 0:
                    a = await by_sessions(bench, chp, user)
                    b = await by_hand(docker, bench, chp, user)
                else:
                    b = await by_hand(docker, bench, chp, user)
                    a = await by_sessions(bench, chp, user)
                ours.append(a)
                hand.append(b)
                ratios.append(a / b)
                print(f"  {i + 1:3d}: sessions {a * 1000:7.1f} ms   by hand {b * 1000:7.1f} ms")
    print(f"launch overhead, {repetitions} alternating repetitions")
    print(f"  median Sessions.start -> served : {median(ours) * 1000:7.1f} ms")
    print(f"  median by hand        -> served : {median(hand) * 1000:7.1f} ms")
    print(f"  median ratio (target <= 1.10)   : {median(ratios):7.3f}")
    print(f"  ratio of medians                : {median(ours) / median(hand):7.3f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
