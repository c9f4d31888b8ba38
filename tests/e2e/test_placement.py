"""Placement for real: simulated workers (vLLM's timing and prefix cache, no GPU) as processes,
their cache events and progress over NATS, two scheduler replicas, edges and guard as in production."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import openai
import pytest

from tests.stack import Stack, wait_until

MODEL = "simulated-chat"
WORKERS = ("sim-a", "sim-b")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("placement"))
    try:
        s.guard()
        s.scheduler()
        s.scheduler(name="scheduler-2")
        for worker in WORKERS:
            s.worker(worker, "--engine", "simulated")
        s.edge()
        s.wait_for_model(MODEL)
        yield s
    finally:
        s.close()


def report(topic: int) -> str:
    """A long prompt of distinct lines (~2 500 tokens by the simulated engine's count)."""
    lines = [
        f"Entry {i} of report {topic}: site {i * 7 % 97}, reading {i * 13 % 89}, all normal."
        for i in range(160)
    ]
    return "Summarise this log for the on-call engineer.\n" + "\n".join(lines)


def ask(s: Stack, key: str, content: str, max_tokens: int = 2) -> openai.types.CompletionUsage:
    client = openai.OpenAI(base_url=f"{s.base_url}/v1", api_key=key, max_retries=0, timeout=30)
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=max_tokens
    )
    assert answer.usage is not None
    return answer.usage


def served(s: Stack) -> dict[str, float]:
    return {w: s.metric(w, "llmaas_worker_requests_total", model=MODEL, outcome="ok") for w in WORKERS}


def cached(usage: openai.types.CompletionUsage) -> int:
    details = usage.prompt_tokens_details
    return (details.cached_tokens or 0) if details is not None else 0


def test_a_repeated_prompt_goes_where_its_prefix_is_cached(fleet: Stack) -> None:
    key = fleet.new_key("prefix-owner")
    first = ask(fleet, key, report(1))
    assert first.prompt_tokens > 2000 and cached(first) == 0
    before = served(fleet)
    hits = [cached(ask(fleet, key, report(1))) for _ in range(6)]
    # Either worker could take each one at random: six hits in a row come from the index.
    assert all(h >= first.prompt_tokens - 64 for h in hits), hits
    after = served(fleet)
    assert sorted(after[w] - before[w] for w in WORKERS) == [0, 6]


def test_the_same_prompt_from_another_tenant_is_computed_afresh(fleet: Stack) -> None:
    owner, other = fleet.new_key("first-tenant"), fleet.new_key("second-tenant")
    ask(fleet, owner, report(2))
    assert cached(ask(fleet, owner, report(2))) > 0
    assert cached(ask(fleet, other, report(2))) == 0


def test_two_schedulers_spread_a_burst_over_both_workers(fleet: Stack) -> None:
    key = fleet.new_key("bursty")
    before = served(fleet)
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        list(pool.map(lambda i: ask(fleet, key, report(100 + i), max_tokens=40), range(48)))
    wait_until(lambda: sum(served(fleet).values()) - sum(before.values()) >= 48, 10, "the burst's counts")
    share = {w: served(fleet)[w] - before[w] for w in WORKERS}
    assert min(share.values()) >= 12, share  # neither worker got (nearly) all of it


def test_both_schedulers_hear_every_workers_cache_events_and_progress(fleet: Stack) -> None:
    ask(fleet, fleet.new_key("counted"), report(3))

    def heard(name: str) -> bool:
        return all(
            fleet.metric(name, "llmaas_scheduler_messages_total", handler=h, outcome="handled") > 0
            for h in ("cache", "progress")
        )

    for name in ("scheduler", "scheduler-2"):
        wait_until(lambda name=name: heard(name), 5, f"{name} hearing cache events and progress")
