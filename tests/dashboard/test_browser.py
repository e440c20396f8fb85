"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against a real `trellis
serve` (the local model answers the model calls). Sign in, watch the overview move with traffic this
test makes, filter and page the log and open a call, search contexts in each mode and open one's
graph, follow runs live and cancel and retry one, watch an alert fire and resolve (and silence
it), sign out; then the same pages on a phone's screen.
Screenshots are saved (the path is printed); any script error on a page fails the test."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page

from tests.conftest import ADMIN_KEY
from tests.dashboard.browser import artifacts, chromium, sign_in_with_key, trellis_serve

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
DIGITS = "(sel) => Number((document.querySelector(sel)?.textContent || '').replace(/[^0-9]/g, '') || -1)"


def watch_errors(page: Page) -> list[str]:
    """Script errors and failed requests the page reports: a working page has none."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    return errors


async def number(page: Page, selector: str) -> int:
    value: int = await page.evaluate(DIGITS, selector)
    return value


async def wait_number_at_least(page: Page, selector: str, at_least: int) -> None:
    await page.wait_for_function(f"([sel, n]) => ({DIGITS})(sel) >= n", arg=[selector, at_least], timeout=20_000)


async def make_contexts(api: httpx.AsyncClient) -> dict[str, str]:
    async def add(content: str, **extra: Any) -> str:
        response = await api.post("/api/context", json={"type": "note", "content": content, **extra})
        assert response.status_code == 201, response.text
        return str(response.json()["data"]["id"])

    burrows = await add("Burrow depth records from the field survey.")
    diet = await add("Their diet is grasses, roots and bark.", metadata={"topic": "diet"})
    root = await add(
        "Wombats dig burrows with their strong claws.",
        relationships=[
            {"target_context_id": burrows, "relationship_type": "references", "strength": 0.9},
            {"target_context_id": diet, "relationship_type": "relates_to", "strength": 0.4},
        ],
    )
    return {"root": root, "burrows": burrows, "diet": diet}


async def rule_reaches(api: httpx.AsyncClient, rule_id: str, state: str, seconds: float) -> None:
    """Through the API, before looking at the page: when the rule never gets there, the failure says
    what the evaluator saw (the rule, its series' recent points, the collector's gaps), not only that a
    selector timed out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    rule: dict[str, Any] = {}
    while loop.time() < deadline:
        answer = await api.get(f"/api/v1/alerts/rules/{rule_id}")
        assert answer.status_code == 200, answer.text
        rule = answer.json()["data"]
        if rule["state"] == state:
            return
        await asyncio.sleep(0.5)  # a real server's evaluator runs every second: poll it, bounded
    # The last three minutes at 1-second steps (180 points: the default hour at 1 s would be refused
    # for having more than max_points, and the failure would show that 400 instead of the points).
    since = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    points = await api.get(
        "/api/v1/db/metrics",
        params={"series": "http.requests", "label": "route_class:auth", "step": 1, "since": since},
    )
    events = await api.get("/api/v1/alerts/events", params={"rule_id": rule_id})
    collector = await api.get("/api/v1/db/metrics/collector")
    raise AssertionError(
        f"rule {rule_id} not {state} after {seconds} s: {rule}\n"
        f"series: {points.text[:3000]}\nevents: {events.text[:2000]}\ncollector: {collector.text}"
    )


async def start_nap(api: httpx.AsyncClient) -> str:
    response = await api.post("/api/v1/workflow/execute", json={"workflow": "nap", "input": {}})
    assert response.status_code in (200, 202), response.text
    return str(response.json()["data"]["id"])


async def test_the_dashboard_in_chromium(tmp_path: Path) -> None:
    shots = artifacts("tour")
    async with (
        trellis_serve(tmp_path) as server,
        chromium() as browser,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN, timeout=120) as api,
    ):
        contexts = await make_contexts(api)
        saved = await api.post(
            "/api/v1/workflows",
            json={"name": "nap", "definition": {"steps": [{"id": "rest", "type": "wait", "with": {"seconds": 600}}]}},
        )
        assert saved.status_code == 201, saved.text

        laptop = await browser.new_context(viewport={"width": 1366, "height": 860})
        page = await laptop.new_page()
        errors = watch_errors(page)

        # Sign-in: a page without a session goes there; a wrong key is told so; the right one gets in.
        await page.goto(server.url + "/dashboard/logs")
        await page.wait_for_url("**/dashboard/sign-in?next=%2Fdashboard%2Flogs")
        await page.fill("#key-form input[name=api_key]", "trl_wrong")
        await page.click("#key-form button[type=submit]")
        await page.wait_for_selector("#sign-in-error")
        assert "Invalid API key" in await page.inner_text("#sign-in-error")
        await page.screenshot(path=shots / "01-sign-in-refused.png")
        await page.fill("#key-form input[name=api_key]", ADMIN_KEY)
        await page.click("#key-form button[type=submit]")
        await page.wait_for_url("**/dashboard/logs")
        assert ADMIN_KEY not in page.url
        errors.clear()  # the refused sign-in's 401 answer is reported by Chromium as a failed load

        # The overview moves with traffic: requests now, and model calls with their tokens.
        await page.goto(server.url + "/dashboard")
        await page.wait_for_selector("#live-state:text-is('live')")
        await page.wait_for_selector("#updated:text-matches('^updated')")
        await page.wait_for_selector("#stat-requests .sub:has-text('in range')")
        requests_before = await number(page, "#stat-requests .sub")
        calls_before = await number(page, "#stat-calls .value")
        tokens_before = await number(page, "#stat-tokens .value")
        await page.screenshot(path=shots / "02-overview-before.png")
        for _ in range(40):
            assert (await api.get("/api/v1/auth/me")).status_code == 200
        for word in ("quokka", "quokkas"):
            generated = await api.post(
                "/api/v1/ai/generate",
                json={"prompt": f"Say the word {word}.", "max_tokens": 8, "temperature": 0},
            )
            assert generated.status_code == 200, generated.text
        await wait_number_at_least(page, "#stat-requests .sub", requests_before + 42)
        await wait_number_at_least(page, "#stat-calls .value", calls_before + 2)
        await wait_number_at_least(page, "#stat-tokens .value", tokens_before + 1)
        assert await page.locator("#chart-traffic polyline.series").count() >= 1
        assert await page.locator("#chart-tokens polyline.series").count() == 1
        await page.screenshot(path=shots / "03-overview-after-traffic.png", full_page=True)

        # The models page: the local model, healthy, its breaker closed, the calls just made.
        await page.click("header nav >> text=Models")
        row = page.locator("tr[data-model='smollm2-135m']")
        await row.wait_for()
        assert "healthy" in await row.inner_text()
        assert "closed" in await row.inner_text()
        await page.screenshot(path=shots / "04-models.png", full_page=True)

        # The log: search and filter, one page at a time, open a call.
        await page.click("header nav >> text=Log")
        await page.wait_for_selector("#log-table tbody tr.log-row")
        await page.fill("#log-filters input[name=q]", "quokka")
        await page.select_option("#log-filters select[name=status]", "ok")
        await page.select_option("#log-filters select[name=door]", "rest")
        await page.click("#log-filters button[type=submit]")
        await page.wait_for_url("**q=quokka**")
        await page.wait_for_selector("#log-table tbody tr.log-row")
        rows = page.locator("#log-table tbody tr.log-row")
        assert await rows.count() == 2
        for text in await rows.all_inner_texts():
            assert "rest" in text
            assert "quokka" in text
        assert await page.input_value("#log-filters input[name=q]") == "quokka"  # the filter stays shown
        await page.screenshot(path=shots / "05-log-filtered.png", full_page=True)
        await page.goto(server.url + "/dashboard/logs?q=quokka&limit=1")
        await page.wait_for_selector("#next-page")
        first = await page.locator("#log-table tbody tr.log-row").inner_text()
        await page.click("#next-page")
        await page.wait_for_url("**cursor=**")
        await page.wait_for_selector("#log-table tbody tr.log-row")
        second = await page.locator("#log-table tbody tr.log-row").inner_text()
        assert second != first
        assert await page.locator("#next-page").count() == 0  # two calls: the second page is the last
        await page.click("#log-table tbody tr.log-row a")
        await page.wait_for_selector("#log-response")
        assert "quokka" in await page.inner_text("#log-texts")
        await page.screenshot(path=shots / "06-log-call.png", full_page=True)

        # Contexts: each search mode finds the wombats; the graph of the root is drawn.
        for mode in ("keyword", "semantic", "hybrid"):
            await page.goto(server.url + "/dashboard/contexts")
            await page.fill("#context-search input[name=query]", "wombats dig burrows")
            await page.select_option("#context-search select[name=mode]", mode)
            await page.click("#context-search button[type=submit]")
            await page.wait_for_url(f"**mode={mode}**")
            await page.wait_for_selector("#context-table tbody tr.context-row")
            assert contexts["root"] in await page.inner_text("#context-table"), mode
            assert mode in await page.inner_text("#contexts-summary")
        await page.screenshot(path=shots / "07-contexts-hybrid.png", full_page=True)
        await page.click(f"#context-table a:text-is('{contexts['root']}')")
        await page.wait_for_selector("#graph-svg circle.node")
        assert await page.locator("#graph-svg circle.node").count() == 3
        assert await page.locator("#graph-svg line.edge").count() == 2
        labels = await page.locator("#graph-svg .edge-label").all_text_contents()
        assert sorted(labels) == ["references", "relates_to"]
        assert "Wombats dig burrows" in await page.inner_text("#context-content")
        await page.screenshot(path=shots / "08-context-graph.png", full_page=True)
        await page.click(f"#graph-svg a[href$='{contexts['diet']}']")  # a node opens its context
        await page.wait_for_url(f"**/dashboard/contexts/{contexts['diet']}")
        await page.wait_for_selector("#graph-svg circle.node")

        # Workflows: a run started elsewhere appears live; cancel it, then retry it.
        await page.click("header nav >> text=Workflows")
        await page.wait_for_selector("#live-state:text-is('live')")
        run_id = await start_nap(api)  # after the page loaded: only the live feed can show it
        run_row = page.locator(f"tr[data-run='{run_id}']")
        await run_row.wait_for(timeout=20_000)
        await page.wait_for_selector(f"tr[data-run='{run_id}'][data-status='waiting']", timeout=20_000)
        await page.wait_for_selector(f"#dashboard-feed li:has-text('{run_id}')")  # every user's runs (admins)
        assert "metrics_sample" not in await page.inner_text("#dashboard-feed")  # only runs in that feed
        await page.screenshot(path=shots / "09-workflows-live.png", full_page=True)
        await run_row.locator("button.cancel").click()
        await page.wait_for_selector(f"tr[data-run='{run_id}'][data-status='cancelled']")
        status = await api.get(f"/api/v1/workflow/status/{run_id}")
        assert status.json()["data"]["status"] == "cancelled"
        await page.locator(f"tr[data-run='{run_id}'] button.retry").click()
        await page.wait_for_selector(f"tr[data-run='{run_id}'][data-status='waiting']", timeout=20_000)
        await page.click(f"tr[data-run='{run_id}'] a")
        await page.wait_for_selector("#run-events li:has-text('run.retried')")
        await page.wait_for_selector("#cancel-run")
        await page.screenshot(path=shots / "10-run.png", full_page=True)
        await page.click("#cancel-run")
        await page.wait_for_selector("#run-events li:has-text('run.cancelled') >> nth=1")
        await page.wait_for_selector("#retry-run")

        # Alerts: a rule on the auth routes' traffic fires when the test calls them, then resolves.
        rule = await api.post(
            "/api/v1/alerts/rules",
            json={
                "name": "auth traffic",
                "series": "http.requests",
                "labels": {"route_class": "auth"},
                "condition": {"type": "threshold", "op": ">", "value": 20, "window_seconds": 30},
                "severity": "critical",
            },
        )
        assert rule.status_code == 201, rule.text
        rule_id = rule.json()["data"]["id"]
        await page.click("header nav >> text=Alerts")
        await page.wait_for_selector("#live-state:text-is('live')")
        await page.wait_for_selector(f"tr[data-rule='{rule_id}']")
        # At once, so that all 30 land in one 30-second window even on a loaded machine (a 10-second
        # window missed them once in CI, with the whole suite running beside the served process).
        answers = await asyncio.gather(*(api.get("/api/v1/auth/me") for _ in range(30)))
        assert [answer.status_code for answer in answers] == [200] * 30
        await rule_reaches(api, rule_id, "firing", 60)
        await page.wait_for_selector(f"tr[data-rule='{rule_id}'][data-state='firing']", timeout=20_000)
        await page.wait_for_selector(f"#active-alerts li[data-rule='{rule_id}']")
        await page.wait_for_selector("tr.alert-event[data-to='firing']")
        await page.screenshot(path=shots / "11-alert-firing.png", full_page=True)
        await page.goto(server.url + "/dashboard")  # the overview says so too
        await page.wait_for_selector("#firing:has-text('auth traffic')")
        await page.click("#firing")
        await page.wait_for_url("**/dashboard/alerts")
        row = page.locator(f"tr[data-rule='{rule_id}']")
        await row.locator("select").select_option("900")
        await row.locator("button.silence").click()
        await page.wait_for_selector("#silence-table tr[data-silence]")
        # No more auth calls: the window empties and the alert resolves, live.
        await rule_reaches(api, rule_id, "resolved", 90)
        await page.wait_for_selector(f"tr[data-rule='{rule_id}'][data-state='resolved']", timeout=20_000)
        await page.wait_for_selector("tr.alert-event[data-to='resolved']")
        await page.screenshot(path=shots / "12-alert-resolved.png", full_page=True)
        await page.locator("#silence-table button.cancel").click()
        await page.wait_for_selector("#silence-table td:text-is('No active silences.')")

        # Sign out: back to the sign-in page, and the dashboard is closed again.
        await page.click("#sign-out")
        await page.wait_for_url("**/dashboard/sign-in")
        await page.goto(server.url + "/dashboard")
        await page.wait_for_url("**/dashboard/sign-in?next=%2Fdashboard")
        await page.screenshot(path=shots / "13-signed-out.png")
        assert errors == []

        # A phone: the same pages, one column, nothing wider than the screen.
        phone = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        small = await phone.new_page()
        phone_errors = watch_errors(small)
        await sign_in_with_key(small, server.url, ADMIN_KEY)
        await small.wait_for_selector("#updated:text-matches('^updated')")
        for name, path, ready in (
            ("14-phone-overview", "/dashboard", "#chart-tokens svg"),
            ("15-phone-log", "/dashboard/logs", "#log-table tbody tr.log-row"),
            ("16-phone-context", f"/dashboard/contexts/{contexts['root']}", "#graph-svg circle.node"),
            ("17-phone-workflows", "/dashboard/workflows", "tr.run-row"),
            ("18-phone-alerts", "/dashboard/alerts", "tr.alert-event"),
        ):
            await small.goto(server.url + path)
            await small.wait_for_selector(ready)
            overflow = await small.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} is {overflow}px wider than a phone's screen"
            await small.screenshot(path=shots / f"{name}.png", full_page=True)
        assert phone_errors == []


async def test_a_developer_sees_their_own_usage_only(tmp_path: Path) -> None:
    shots = artifacts("developer")
    async with (
        trellis_serve(tmp_path) as server,
        chromium() as browser,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN, timeout=120) as admin,
    ):
        made = await admin.post(
            "/api/v1/users", json={"username": "dev", "password": "a long password", "role": "developer"}
        )
        assert made.status_code == 201, made.text
        key = await admin.post("/api/v1/keys", json={"name": "dev", "user_id": made.json()["data"]["id"]})
        dev_headers = {"Authorization": f"Bearer {key.json()['data']['key']}"}
        body = {"prompt": "Say the word emu.", "max_tokens": 4, "temperature": 0}
        assert (await admin.post("/api/v1/ai/generate", json=body)).status_code == 200  # not dev's
        assert (await admin.post("/api/v1/ai/generate", json=body, headers=dev_headers)).status_code == 200

        page = await (await browser.new_context(viewport={"width": 1280, "height": 800})).new_page()
        errors = watch_errors(page)
        await page.goto(server.url + "/dashboard")
        await page.fill("#password-form input[name=username]", "dev")
        await page.fill("#password-form input[name=password]", "a long password")
        await page.click("#password-form button[type=submit]")
        await page.wait_for_url("**/dashboard")
        assert "Your own usage" in await page.inner_text("#overview-scope")
        # The usage series are the user's: their one call, not the administrator's.
        await page.wait_for_function(f"([sel]) => ({DIGITS})(sel) === 1", arg=["#stat-calls .value"], timeout=30_000)
        assert await page.locator("#stat-requests").count() == 0  # system series are for administrators
        assert await page.locator("#chart-traffic").count() == 0
        await page.screenshot(path=shots / "01-overview.png", full_page=True)
        await page.click("header nav >> text=Log")
        await page.wait_for_selector("#log-table tbody tr.log-row")
        assert await page.locator("#log-table tbody tr.log-row").count() == 1
        assert await page.locator("#log-filters input[name=user_id]").count() == 0
        await page.screenshot(path=shots / "02-log.png", full_page=True)
        # Contexts: their own only, with no owner to choose. (Made only now: indexing a context is a
        # model call of its owner's, which the usage and log checks above would count.)
        note = {"type": "note", "content": "the developer's own note about emus"}
        theirs = (await admin.post("/api/context", json=note, headers=dev_headers)).json()["data"]
        mine = (await admin.post("/api/context", json={"type": "note", "content": "the admin's note"})).json()["data"]
        await page.click("header nav >> text=Contexts")
        await page.wait_for_selector("#context-table tbody tr.context-row")
        assert await page.locator("#context-table tbody tr.context-row").count() == 1
        assert theirs["id"] in await page.inner_text("#context-table")
        assert await page.locator("#context-search input[name=owner]").count() == 0
        await page.click("header nav >> text=Alerts")
        await page.wait_for_selector("#rule-table td:text-is('No rules.')")  # built-in rules are the operator's
        assert errors == []

        # An administrator sees everyone's contexts, each with its owner, and opens the developer's.
        page = await (await browser.new_context(viewport={"width": 1280, "height": 800})).new_page()
        errors = watch_errors(page)
        await page.goto(server.url + "/dashboard/sign-in?next=/dashboard/contexts")
        await page.fill("#key-form input[name=api_key]", ADMIN_KEY)
        await page.click("#key-form button[type=submit]")
        await page.wait_for_url("**/dashboard/contexts")
        await page.wait_for_selector(f"#context-table a:text-is('{theirs['id']}')")
        table = await page.inner_text("#context-table")
        assert mine["id"] in table
        assert theirs["owner_id"] in table
        assert "(you)" in table
        await page.screenshot(path=shots / "03-admin-contexts.png", full_page=True)
        await page.fill("#context-search input[name=owner]", theirs["owner_id"])
        await page.click("#context-search button[type=submit]")
        await page.wait_for_selector(f"#context-table a:text-is('{theirs['id']}')")
        assert mine["id"] not in await page.inner_text("#context-table")
        await page.click(f"#context-table a:text-is('{theirs['id']}')")
        await page.wait_for_selector("#graph-svg circle.node")
        assert errors == []
