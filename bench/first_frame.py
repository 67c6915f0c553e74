"""Click "Start" to the first desktop frame, for the demo desktop in Chromium, step by step.

Usage: .venv/bin/python bench/first_frame.py [RUNS]   (default 5)

It starts the test suite's stack itself (JupyterHub with the repository's configuration, the
proxy, the service, the Docker engine and Chromium in its own network namespace; see
``tests/support/stack.py``), signs alice in, and RUNS times starts the demo desktop
(``remoteapp-demo/vncapp``) from her page and stops it again. For each start it takes the
times, in the browser, of:

- **start**: the click until the service answers the start (engine create and start, the
  application's readiness, the proxy route: ``POST api/v1/containers/``), as seen by this
  script (a few milliseconds after the browser);
- **page**: until the desktop's page and scripts have loaded in the frame (the service's
  noVNC viewer, which the gate serves under ``<urlpath>/.remoteapp-desktop/``);
- **connect**: until noVNC reports the WebSocket and the RFB handshake done;
- **frame**: until the canvas shows its first non-blank pixels (the first framebuffer update).

It prints each step's median and the median of the whole (target: <= 1.0 s), and the
viewer's **assets**: from the frame's navigation until its last script or style sheet had
arrived, how many there were and their bytes on the wire (each desktop has its own path,
so every start loads them cold). Needs what the test suite needs (``scripts/test`` installs
it): root, the engine, the demo images.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.stack import (  # noqa: E402
    VNCAPP,
    remoteappdb,
    require_everything,
    running_stack,
    signed_in,
)

STEPS = ("start", "page", "connect", "frame")
TIMEOUT_MS = 60_000

# In the user page: click "Start", noting the time.
_CLICK = "() => { window.__clicked = Date.now(); document.querySelector('#start-button').click(); }"
# In noVNC's frame: when its page loaded, and when the canvas first shows something.
_LOADED = "() => performance.timing.loadEventEnd"
_FIRST_PIXELS = """() => new Promise(resolve => {
  const look = () => {
    const canvas = document.querySelector('#noVNC_container canvas');
    if (canvas && canvas.width > 0 && canvas.height > 0) {
      const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < pixels.length; i += 4) {
        if (pixels[i] || pixels[i + 1] || pixels[i + 2]) { resolve(Date.now()); return; }
      }
    }
    requestAnimationFrame(look);
  };
  look();
})"""


# In noVNC's frame: its scripts and style sheets, when the last one arrived (ms from the
# frame's navigation) and their size as sent (compressed, if it was).
_ASSETS = """() => {
  const files = performance.getEntriesByType('resource')
    .filter(r => /\\.(js|css)$/.test(new URL(r.name).pathname));
  return {
    ms: Math.max(0, ...files.map(r => r.responseEnd)),
    count: files.length,
    bytes: files.reduce((sum, r) => sum + r.encodedBodySize, 0),
  };
}"""


def _fill(database: Path) -> None:
    remoteappdb(database, "init")
    remoteappdb(database, "user", "create", "alice")
    remoteappdb(database, "app", "create", VNCAPP)
    remoteappdb(database, "app", "grant", VNCAPP, "alice")


def _is_start(response: object) -> bool:
    """Whether a response answers the page's start (``POST api/v1/containers/``)."""
    from playwright.async_api import Response

    assert isinstance(response, Response)
    return response.request.method == "POST" and "/api/v1/containers/" in response.url


async def one_start(page: object) -> dict[str, float]:
    """Start the desktop from alice's page, time its steps (seconds), and stop it again."""
    from playwright.async_api import Page

    assert isinstance(page, Page)
    await page.click("#applistentries .app-entry")
    await page.locator("#start-button:enabled").wait_for()
    async with page.expect_response(_is_start, timeout=TIMEOUT_MS) as answered:
        await page.evaluate(_CLICK)
    await answered.value
    # When the answer reached this script: a few milliseconds after the browser had it.
    started = await page.evaluate("() => Date.now()")
    frame = page.frame_locator("#application")
    await frame.locator("html.noVNC_connected").wait_for(timeout=TIMEOUT_MS)
    connected = await page.evaluate("() => Date.now()")
    inner = next(f for f in page.frames if f != page.main_frame and "/containers/" in f.url)
    painted = await inner.evaluate(_FIRST_PIXELS)
    loaded = await inner.evaluate(_LOADED)
    assets = await inner.evaluate(_ASSETS)
    clicked = await page.evaluate("() => window.__clicked")
    marks = [clicked, started, loaded, connected, painted]
    times = {step: (marks[i + 1] - marks[i]) / 1000 for i, step in enumerate(STEPS)}
    times["total"] = (painted - clicked) / 1000
    times["assets"] = assets["ms"] / 1000
    times["asset files"] = assets["count"]
    times["asset kB"] = assets["bytes"] / 1000
    await page.click("#quit-button")
    await page.locator("dialog[open]").get_by_role("button", name="Ok").click()
    await page.locator("#start-button:enabled", has_text=re.compile(r"^Start$")).wait_for()
    return times


async def main(runs: int) -> None:
    require_everything(("vncapp",))
    with tempfile.TemporaryDirectory(prefix="bench-first-frame-") as tmp:
        async with running_stack(Path(tmp), _fill) as stack:
            context, page = await signed_in(stack, "alice")
            try:
                await page.wait_for_selector("#loading-spinner", state="hidden")
                await one_start(page)  # untimed: the first start warms the image's page cache
                results = []
                for run in range(runs):
                    times = await one_start(page)
                    results.append(times)
                    shown = ", ".join(f"{k} {v:.3f}" for k, v in times.items())
                    print(f"run {run + 1}: {shown} s", flush=True)
            finally:
                await context.close()
    print(f"\nmedians over {runs} runs (s):")
    for step in (*STEPS, "total", "assets"):
        values = [times[step] for times in results]
        print(f"  {step:8} {statistics.median(values):.3f}  (min {min(values):.3f})")
    files = statistics.median(times["asset files"] for times in results)
    size = statistics.median(times["asset kB"] for times in results)
    print(f"  assets: {files:.0f} scripts and style sheets, {size:.1f} kB on the wire")
    total = statistics.median(times["total"] for times in results)
    verdict = "met" if total <= 1.0 else "NOT met"
    print(f"click -> first frame: median {total:.3f} s (target <= 1.0 s: {verdict})")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
