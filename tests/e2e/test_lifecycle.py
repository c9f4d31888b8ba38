"""The catalog's lifecycle through the real stack: deprecated models announce their sunset, retired
ones are refused (or reactivated for one tenant), aliases answer with their target, /v1/models shows
the lifecycle of what is served, and Prometheus exposes states and days to DSP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import httpx
import openai
import pytest

from llmaas import audit
from llmaas.catalog import add_months
from tests.conftest import CHAT
from tests.stack import Stack, cli, wait_until

TODAY = dt.datetime.now(dt.UTC).date()


def day(offset: int) -> str:
    return (TODAY + dt.timedelta(days=offset)).isoformat()


CATALOG = f"""
[[model]]
name = "{CHAT}"
publisher = "tests"
kind = "chat"
context_length = 4096
dmp = {day(-100)}
dsp = {day(400)}
energy_kwh_per_mtok = 0.01
energy_basis = "estimated"

[[model]]
name = "old-chat"
publisher = "tests"
kind = "chat"
context_length = 2048
dmp = {day(-400)}
dsp = {day(-10)}
energy_kwh_per_mtok = 0.01
energy_basis = "estimated"
successor = "{CHAT}"

[[model]]
name = "soon-chat"
publisher = "tests"
kind = "reasoning"
context_length = 8192
dmp = {day(-30)}
dsp = {day(30)}
energy_kwh_per_mtok = 0.02
energy_basis = "measured"

[[retired]]
name = "gone-chat"
publisher = "tests"
retired_on = {day(-5)}
successor = "{CHAT}"

[[alias]]
name = "legacy-chat"
target = "{CHAT}"
"""

ASK = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("lifecycle"))
    try:
        s.catalog_file = s.root / "models.toml"
        s.catalog_file.write_text(CATALOG)
        s.guard()
        s.scheduler()
        s.worker("w1", "--tokens-per-s", "0")
        s.worker("w-old", "--chat-model", "old-chat", "--tokens-per-s", "0")
        s.worker("w-gone", "--chat-model", "gone-chat", "--tokens-per-s", "0")
        s.edge()
        s.wait_for_model(CHAT)
        s.wait_for_model("old-chat")
        yield s
    finally:
        s.close()


def chat(stack: Stack, key: str, model: str, **extra: object) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        json={"model": model, "messages": ASK, "max_tokens": 4, **extra},
        headers={"authorization": f"Bearer {key}"},
        timeout=20,
    )


def models(stack: Stack, key: str) -> dict[str, dict[str, object]]:
    listed = httpx.get(f"{stack.base_url}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=5)
    assert listed.status_code == 200
    return {m["id"]: m for m in listed.json()["data"]}


def test_a_deprecated_model_is_served_with_its_sunset_announced(stack: Stack) -> None:
    for stream in (False, True):
        answer = chat(stack, stack.api_key, "old-chat", stream=stream)
        assert answer.status_code == 200, answer.text
        deprecated_at = dt.datetime.fromtimestamp(int(answer.headers["deprecation"].lstrip("@")), dt.UTC)
        assert deprecated_at.date().isoformat() == day(-10)
        sunset = parsedate_to_datetime(answer.headers["sunset"]).date()
        assert sunset == add_months(TODAY - dt.timedelta(days=10), 3)
        assert answer.headers["link"] == f'</v1/models/{CHAT}>; rel="successor-version"'
        assert '"model":"old-chat"' in answer.text.replace(" ", "")  # body and chunks unchanged
    production = chat(stack, stack.api_key, CHAT)
    assert production.status_code == 200 and "deprecation" not in production.headers


def test_a_retired_model_is_410_naming_its_successor_unless_reactivated_for_the_tenant(stack: Stack) -> None:
    lab, other = stack.new_key("lab"), stack.new_key("other")
    refused = chat(stack, lab, "gone-chat")
    assert refused.status_code == 410
    error = refused.json()["error"]
    assert error["code"] == "model_retired" and error["type"] == "invalid_request_error"
    assert f"use '{CHAT}' instead" in error["message"] and day(-5) in error["message"]
    assert "gone-chat" not in models(stack, lab)

    env = {"LLMAAS_ADMIN_TOKEN": stack.admin_token}
    out = cli("tenants", "reactivate", "lab", "gone-chat", "--url", stack.base_url, env=env)
    assert "may use again: gone-chat" in out
    wait_until(lambda: chat(stack, lab, "gone-chat").status_code == 200, 5, "the reactivation to apply")
    served = chat(stack, lab, "gone-chat")
    assert parsedate_to_datetime(served.headers["sunset"]).date().isoformat() == day(-5)
    assert models(stack, lab)["gone-chat"]["state"] == "retired"
    assert chat(stack, other, "gone-chat").status_code == 410  # only for that tenant
    assert "gone-chat" not in models(stack, other)
    changes = [audit.decoder.decode(e) for e in stack.stream_messages(audit.STREAM)]
    reactivation = [e for e in changes if e.action == "tenant.change" and e.target == "lab"][-1]
    assert reactivation.detail["reactivate"] == "gone-chat" and reactivation.actor == "admin"

    cli("tenants", "deactivate", "lab", "gone-chat", "--url", stack.base_url, env=env)
    wait_until(lambda: chat(stack, lab, "gone-chat").status_code == 410, 5, "the deactivation to apply")


def test_an_alias_is_answered_by_its_target_and_says_so(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=stack.api_key, max_retries=0)
    completion = client.chat.completions.create(model="legacy-chat", messages=ASK, max_tokens=4)  # type: ignore[arg-type]
    assert completion.model == CHAT


def test_models_lists_what_is_served_with_its_lifecycle(stack: Stack) -> None:
    listed = models(stack, stack.api_key)
    assert listed[CHAT]["state"] == "production"
    assert (listed[CHAT]["dmp"], listed[CHAT]["dsp"]) == (day(-100), day(400))
    assert (listed[CHAT]["kind"], listed[CHAT]["context_length"]) == ("chat", 4096)
    assert listed["old-chat"]["state"] == "deprecated" and listed["old-chat"]["successor"] == CHAT
    assert "soon-chat" not in listed  # in the catalog, but no worker serves it
    assert "synthetic-embed" in listed and "state" not in listed["synthetic-embed"]  # not catalogued
    restricted = stack.new_key("narrow", models=["old-*"])
    assert set(models(stack, restricted)) == {"old-chat"}


def test_a_catalog_model_without_a_worker_is_503_not_404(stack: Stack) -> None:
    answer = chat(stack, stack.api_key, "soon-chat")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "model_unavailable"
    assert "soon-chat" in answer.json()["error"]["message"]


def test_prometheus_exposes_states_and_days_to_dsp(stack: Stack) -> None:
    assert stack.metric("edge", "llmaas_model_state", model="old-chat", state="deprecated") == 1
    assert stack.metric("edge", "llmaas_model_state", model="old-chat", state="production") == 0
    assert stack.metric("edge", "llmaas_model_state", model="gone-chat", state="retired") == 1
    assert stack.metric("edge", "llmaas_model_days_to_dsp", model="soon-chat") == 30
