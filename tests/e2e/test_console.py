"""The console in a real browser (Debian's chromium driven by Playwright) against the whole stack:
a tenant signs in with a key and sees its own usage only, whatever the URL says; the browser holds
an opaque HttpOnly, SameSite=Strict session, never the key; scripts run under a strict CSP (the
chart draws); names are escaped; signing out revokes the session on the server; wrong keys and
forms without their CSRF token are refused, and failures are audited; the operator sees every
tenant, or one."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js.api import DeliverPolicy

from tests.stack import Stack, wait_until

CHAT = "synthetic-chat"
ARTIFACTS = Path(
    os.environ.get("LLMAAS_TEST_ARTIFACTS") or Path(__file__).parents[2] / "build" / "test-artifacts"
)
"""Screenshots of the main pages, kept after the run (CI keeps the folder)."""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    s = Stack(tmp_path_factory.mktemp("console"))
    try:
        s.guard()
        s.scheduler()
        s.worker("w1", "--tokens-per-s", "0")
        s.metering(env={"LLMAAS_METERING_ALERTS_EVERY_S": "0.5"})
        s.edge()
        s.wait_for_model(CHAT)
        keys = {"alpha": s.new_key("alpha", tier="tier1"), "beta": s.new_key("beta", tier="tier1")}
        for tenant, count in (("alpha", 3), ("beta", 2)):
            for n in range(count):
                body = {
                    "model": CHAT,
                    "messages": [{"role": "user", "content": f"{tenant} {n}"}],
                    "max_tokens": 4,
                }
                headers = {"authorization": f"Bearer {keys[tenant]}"}
                answer = httpx.post(
                    f"{s.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30
                )
                assert answer.status_code == 200, answer.text

        def rolled_up() -> bool:
            rows = s.sql("SELECT tenant, sum(requests) AS n FROM usage_day FINAL GROUP BY tenant")
            return {r["tenant"]: int(r["n"]) for r in rows} == {"alpha": 3, "beta": 2}

        wait_until(rolled_up, 60, "the day rollups of both tenants", s.logs)
        yield {"stack": s, "keys": keys}
    finally:
        s.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM is not None, "chromium is installed by `make install` (Debian's package)"
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def shot(page: Any, name: str) -> None:
    (ARTIFACTS / "console").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console" / f"{name}.png"), full_page=True)


def sign_in(browser: Any, base_url: str, key: str) -> Any:
    page = browser.new_context().new_page()
    page.goto(f"{base_url}/console")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    return page


def test_a_tenant_sees_its_own_usage_only_and_the_browser_never_holds_its_key(
    stack: dict[str, Any], browser: Any
) -> None:
    s, key = stack["stack"], stack["keys"]["alpha"]
    # A hostile name among the tenant's keys: shown as text, never run.
    s.admin("POST", "/keys", {"tenant": "alpha", "name": "<img src=x onerror=alert(1)>"})
    page = sign_in(browser, s.base_url, key)
    assert page.url.endswith("/console/overview")
    assert page.inner_text("[data-field=today-requests]") == "3"
    assert page.inner_text("[data-field=month-requests]") == "3"
    assert "of €1000.00" in page.inner_text("[data-field=budget]")
    shot(page, "overview")

    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "llmaas_console")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert all(key not in c["value"] and key.split("_")[-1] not in c["value"] for c in cookies)
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script of the page can read it

    # Another tenant named in the URL changes nothing for a tenant's session.
    page.goto(f"{s.base_url}/console/overview?tenant=beta")
    assert page.inner_text("[data-field=today-requests]") == "3"

    response = page.goto(f"{s.base_url}/console/usage?days=7")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    page.wait_for_selector(
        "[data-chart=tokens][data-drawn=true] canvas", timeout=10_000
    )  # console.js ran under it
    shot(page, "usage")
    drawn = json.loads(page.text_content("#tokens-data") or "{}")
    tokens_out = int(
        stack["stack"].sql("SELECT sum(completion_tokens) AS n FROM usage WHERE tenant = 'alpha'")[0]["n"]
    )
    assert sum(v for series in drawn["series"] for v in series["values"]) == tokens_out  # the chart's total
    cells = page.locator("table.rows tbody tr").all_inner_texts()
    assert len(cells) == 1 and CHAT in cells[0] and "\t3\t" in cells[0]
    page.goto(f"{s.base_url}/console/latency")
    page.wait_for_selector("[data-chart=speed][data-drawn=true] canvas", timeout=10_000)
    shot(page, "latency")
    hours = page.locator("#latency tbody tr").all_inner_texts()
    assert len(hours) == 1 and CHAT in hours[0] and "\t3\t" in hours[0]  # alpha's 3 answers
    p95 = float(hours[0].split("\t")[4])
    assert 0 < p95 < 10_000

    page.goto(f"{s.base_url}/console/usage?days=7")
    # The filters travel with the navigation.
    assert page.get_attribute("nav a[href^='/console/keys']", "href") == "/console/keys?days=7"

    page.click("nav a[href^='/console/keys']")
    listed = page.inner_text("table.rows")
    assert "<img src=x onerror=alert(1)>" in listed
    assert page.locator("table.rows img").count() == 0
    beta_ids = [k["id"] for k in s.admin("GET", "/keys?tenant=beta")["data"]]
    assert beta_ids and not any(i in listed for i in beta_ids)

    # Signing out ends the session on the server: the old cookie opens nothing any more.
    page.click("form.logout button")
    assert page.url.endswith("/console")
    replay = httpx.get(
        f"{s.base_url}/console/overview", cookies={"llmaas_console": session["value"]}, follow_redirects=False
    )
    assert replay.status_code == 303 and replay.headers["location"] == "/console"


def test_wrong_keys_and_forms_without_their_csrf_token_are_refused(
    stack: dict[str, Any], browser: Any
) -> None:
    s = stack["stack"]
    page = sign_in(browser, s.base_url, "sk-llmaas-0123456789abcdef_wrongsecret")
    assert "Incorrect API key" in page.inner_text(".error")
    assert not any(c["name"] == "llmaas_console" for c in page.context.cookies())

    def audited() -> bool:
        rows = s.sql(
            "SELECT count() AS n FROM audit WHERE action = 'auth.failure' AND target = '/console/login'"
        )
        return int(rows[0]["n"]) >= 1

    wait_until(audited, 30, "the failed sign-in in the audit trail", s.logs)

    # A sign-in posted from elsewhere (no form token cookie): refused before the key is looked at.
    forged = httpx.post(f"{s.base_url}/console/login", data={"key": stack["keys"]["beta"], "csrf_token": "x"})
    assert forged.status_code == 403 and "llmaas_console=" not in forged.headers.get("set-cookie", "")

    # Signed in, a sign-out without the session's token does not end it.
    with httpx.Client(base_url=s.base_url) as client:
        form = client.get("/console")
        token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
        signed = client.post("/console/login", data={"key": stack["keys"]["beta"], "csrf_token": token})
        assert signed.status_code == 303
        assert client.post("/console/logout", data={"csrf_token": "wrong"}).status_code == 403
        assert client.get("/console/overview").status_code == 200


def test_a_tenant_creates_rotates_and_revokes_its_keys_and_only_its_own(
    stack: dict[str, Any], browser: Any
) -> None:
    s = stack["stack"]
    signing = s.admin("POST", "/keys", {"tenant": "alpha", "name": "chat only", "models": [CHAT]})
    page = sign_in(browser, s.base_url, signing["key"])
    page.goto(f"{s.base_url}/console/keys")
    page.fill("form.create input[name=name]", "made in the console")
    page.click("form.create button")
    secret = page.inner_text("[data-field=secret]")

    def works(key: str) -> int:
        return httpx.get(f"{s.base_url}/v1/models", headers={"authorization": f"Bearer {key}"}).status_code

    assert works(secret) == 200
    made = next(k for k in s.admin("GET", "/keys?tenant=alpha")["data"] if k["name"] == "made in the console")
    assert made["models"] == [CHAT]  # no more than the key that made it
    page.goto(f"{s.base_url}/console/keys")
    assert page.locator("[data-field=secret]").count() == 0  # shown once

    page.click(f"tr[data-key='{made['id']}'] button[name=rotate]")
    successor = page.inner_text("[data-field=secret]")
    assert successor != secret and works(successor) == 200
    page.click(f"tr[data-key='{made['id']}'] button[name=revoke]")
    assert page.url.endswith("/console/keys")
    assert works(secret) == 401

    def audited() -> set[str]:
        rows = s.sql(f"SELECT action FROM audit WHERE actor = 'key:{signing['id']}'")
        return {r["action"] for r in rows}

    wait_until(lambda: {"key.create", "key.rotate", "key.revoke"} <= audited(), 30, "the key actions audited")

    # Another tenant's key, named in the URL by a signed-in tenant with a valid form token: not found.
    beta = s.admin("GET", "/keys?tenant=beta")["data"][0]
    token = page.get_attribute("form.create input[name=csrf_token]", "value")
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "llmaas_console")
    foreign = httpx.post(
        f"{s.base_url}/console/keys/{beta['id']}/revoke",
        data={"csrf_token": token},
        cookies={"llmaas_console": cookie},
    )
    assert foreign.status_code == 404
    assert (
        next(k for k in s.admin("GET", "/keys?tenant=beta")["data"] if k["id"] == beta["id"])["state"]
        == "active"
    )


def test_request_history_pages_with_a_cursor_one_query_a_page(stack: dict[str, Any], browser: Any) -> None:
    s = stack["stack"]
    key = s.new_key("delta", tier="tier1")
    headers = {"authorization": f"Bearer {key}"}
    sent = []
    for n in range(57):
        body = {"model": CHAT, "messages": [{"role": "user", "content": f"delta {n}"}], "max_tokens": 2}
        answer = httpx.post(f"{s.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30)
        sent.append(answer.headers["x-request-id"])
    wait_until(
        lambda: s.sql("SELECT count() AS n FROM usage WHERE tenant = 'delta'")[0]["n"] == 57,
        60,
        "delta's rows",
    )
    page = sign_in(browser, s.base_url, key)

    def queries() -> float:
        return s.metric("metering", "llmaas_metering_queries_total", outcome="ok")

    before = queries()
    page.goto(f"{s.base_url}/console/history")
    first = page.locator("#history tbody tr[data-request]").evaluate_all(
        "rows => rows.map(r => r.dataset.request)"
    )
    assert queries() - before == 1
    page.click("a[rel=next]")
    second = page.locator("#history tbody tr[data-request]").evaluate_all(
        "rows => rows.map(r => r.dataset.request)"
    )
    assert len(first) == 50 and len(second) == 7 and page.locator("a[rel=next]").count() == 0
    assert set(first) | set(second) == set(sent) and not set(first) & set(second)
    assert first[0] == sent[-1]  # newest first
    shot(page, "history")

    page.goto(f"{s.base_url}/console/history?status=error")
    assert page.locator("#history tbody tr[data-request]").count() == 0
    bad = page.goto(f"{s.base_url}/console/history?since=yesterday-ish")
    assert (
        bad is not None and bad.status == 400 and "Invalid time 'yesterday-ish'" in page.inner_text(".error")
    )


def test_an_alert_rule_fires_shows_in_the_console_and_on_nats_for_its_tenant_only(
    stack: dict[str, Any], browser: Any
) -> None:
    s = stack["stack"]
    page = sign_in(browser, s.base_url, stack["keys"]["alpha"])
    page.goto(f"{s.base_url}/console/alerts")
    page.select_option("#new-rule select[name=kind]", "tokens_per_hour")
    page.fill("#new-rule input[name=threshold]", "1")
    page.fill("#new-rule input[name=min_requests]", "1")
    page.click("#new-rule button")
    rule = page.get_attribute("#rules tbody tr[data-rule]", "data-rule")
    assert rule is not None

    def state() -> str | None:
        page.goto(f"{s.base_url}/console/alerts")
        return page.get_attribute(f"#rules tr[data-rule='{rule}']", "data-state")

    wait_until(lambda: state() == "firing", 20, "the rule to fire")  # alpha's tokens of today
    assert page.locator(f"#alert-history tr[data-rule='{rule}']").count() == 1
    shot(page, "alerts")

    async def published() -> list[dict[str, Any]]:
        nc = await s.connect()
        sub = await nc.jetstream().subscribe("llmaas.v1.alerts.alpha", deliver_policy=DeliverPolicy.ALL)
        found = [json.loads((await sub.next_msg(timeout=5)).data)]
        await nc.close()
        return found

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API holds this thread's event loop
        event = thread.submit(asyncio.run, published()).result()[0]
    assert (event["rule_id"], event["state"], event["tenant"]) == (rule, "firing", "alpha")

    other = sign_in(browser, s.base_url, stack["keys"]["beta"])
    other.goto(f"{s.base_url}/console/alerts")
    assert other.locator(f"tr[data-rule='{rule}']").count() == 0  # neither the rule nor its history

    page.click(f"#rules tr[data-rule='{rule}'] button[name=delete]")
    assert page.locator(f"#rules tr[data-rule='{rule}']").count() == 0


def test_revoking_the_key_ends_its_console_sessions(stack: dict[str, Any], browser: Any) -> None:
    s = stack["stack"]
    made = s.admin("POST", "/keys", {"tenant": "beta", "name": "short-lived"})
    page = sign_in(browser, s.base_url, made["key"])
    assert page.url.endswith("/console/overview")
    s.admin("POST", f"/keys/{made['id']}/revoke")
    wait_until(
        lambda: page.goto(f"{s.base_url}/console/overview") and page.url.endswith("/console"),
        10,
        "the session to end with its key",
    )


def test_the_operator_sees_every_tenant_or_the_one_chosen(stack: dict[str, Any], browser: Any) -> None:
    s = stack["stack"]
    page = sign_in(browser, s.base_url, s.admin_token)
    assert page.url.endswith("/console/overview")
    everyone = s.sql("SELECT sum(requests) AS n FROM usage_day FINAL WHERE day = today()")[0]["n"]
    assert int(everyone) >= 5  # alpha's and beta's, and any other test's tenants'
    assert page.inner_text("[data-field=today-requests]") == f"{int(everyone):,}"
    page.fill("input[name=tenant]", "beta")
    page.click("form.filters button")
    assert "tenant=beta" in page.url
    assert page.inner_text("[data-field=today-requests]") == "2"
    page.click("nav a[href^='/console/usage']")
    assert "tenant=beta" in page.url
    assert "\t2\t" in page.locator("table.rows tbody tr").all_inner_texts()[0]
