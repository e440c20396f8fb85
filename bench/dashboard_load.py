"""The dashboard's first load in Chromium: from navigation to the overview showing its numbers.

A real ``trellis serve`` (embedded defaults) and Debian's Chromium (``/usr/bin/chromium``, driven by
Playwright; nothing is downloaded). Signed in once; then each measured load opens a fresh browser
context (empty cache, the session cookie only) and times, with the wall clock of this script:

* ``overview, data shown``: ``goto /dashboard`` until the page says "updated" (its first round of
  API answers is on the screen: cards and charts);
* ``overview, load event``: the navigation timing's ``loadEventEnd`` (HTML, CSS, scripts);
* baseline, in the same run: the sign-in page (server-rendered, no script, no API call) to its
  load event, and the overview loaded again in the same context (warm cache).

Target: the overview with its data in under 1 s on this machine. Usage:
``python bench/dashboard_load.py [--loads 15]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, sync_playwright

from _common import median, percentile, render_table, result_header, stop_on_signals, write_results
from _server import find_trellis, running_server, server_env

CHROMIUM = "/usr/bin/chromium"
TARGET_S = 1.0
READY = "() => (document.getElementById('updated')?.textContent || '').startsWith('updated')"


def sign_in(browser: Browser, base: str, key: str) -> list[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(base + "/dashboard/sign-in")
    page.fill("#key-form input[name=api_key]", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_url("**/dashboard")
    cookies = [c for c in context.cookies() if c["name"] == "trellis_session"]
    context.close()
    if not cookies:
        raise SystemExit("sign-in did not set the session cookie")
    return cookies  # type: ignore[return-value]


def load_event_seconds(page: Any) -> float:
    timing = page.evaluate("() => performance.getEntriesByType('navigation')[0].toJSON()")
    return float(timing["loadEventEnd"]) / 1000


def measure(browser: Browser, base: str, cookies: list[Any], loads: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"data": [], "load": [], "warm": [], "sign_in": []}
    for _ in range(loads):
        context = browser.new_context(viewport={"width": 1366, "height": 860})
        context.add_cookies(cookies)
        page = context.new_page()
        started = time.perf_counter()
        page.goto(base + "/dashboard")
        page.wait_for_function(READY, polling=10)
        out["data"].append(time.perf_counter() - started)
        out["load"].append(load_event_seconds(page))
        started = time.perf_counter()
        page.goto(base + "/dashboard")
        page.wait_for_function(READY, polling=10)
        out["warm"].append(time.perf_counter() - started)
        context.close()
        anonymous = browser.new_context()
        page = anonymous.new_page()
        page.goto(base + "/dashboard/sign-in")
        out["sign_in"].append(load_event_seconds(page))
        anonymous.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=15)
    args = parser.parse_args()
    stop_on_signals()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    started = datetime.now(UTC)
    key = "trl_" + "bench-dashboard-key-0123456789abcdefghijklmnop"
    with tempfile.TemporaryDirectory(prefix="trellis-dashboard-bench-") as tmp:
        workdir = Path(tmp)
        env = server_env(workdir / "data", key)
        with running_server(find_trellis(), env, workdir) as server, sync_playwright() as playwright:
            base = f"http://127.0.0.1:{server.port}"
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
            try:
                cookies = sign_in(browser, base, key)
                measure(browser, base, cookies, 2)  # warm-up: the server's first requests, Chromium's start
                results = measure(browser, base, cookies, args.loads)
            finally:
                browser.close()
    names = {
        "data": "overview, data shown (cold cache)",
        "load": "overview, load event (cold cache)",
        "warm": "overview, data shown (warm cache)",
        "sign_in": "baseline: sign-in page, load event",
    }
    rows = [
        [names[k], f"{median(v) * 1000:.0f}", f"{percentile(v, 95) * 1000:.0f}", f"{max(v) * 1000:.0f}"]
        for k, v in results.items()
    ]
    print(f"\nDashboard first load in Chromium, {args.loads} loads each (ms):\n")
    print(render_table(["what", "median", "p95", "max"], rows))
    p95 = percentile(results["data"], 95)
    verdict = "meets" if p95 < TARGET_S else "MISSES"
    print(f"\np95 of the overview with its data: {p95 * 1000:.0f} ms: {verdict} the {TARGET_S * 1000:.0f} ms target")
    path = write_results(
        "dashboard_load",
        started,
        {**result_header("dashboard_load", started), "loads": args.loads, "seconds": results, "target_s": TARGET_S},
    )
    print(f"results: {path}")
    return 0 if p95 < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
