"""When things go wrong: cancellation crosses NATS, dead workers, missing stages, NATS restarts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import CHAT
from tests.stack import Stack, free_port, wait_until

SLOW = ("--tokens-per-s", "20", "--completion-tokens", "2000")
BODY = {"model": CHAT, "messages": [{"role": "user", "content": "tell me a long story"}]}


def events(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def full_stack(stack: Stack, *worker_args: str) -> str:
    stack.guard()
    stack.scheduler()
    stack.worker("w1", *worker_args)
    url = stack.edge()
    stack.wait_for_model(CHAT)
    return url


def cancelled_jobs(stack: Stack) -> float:
    return stack.metric("w1", "llmaas_worker_requests_total", model=CHAT, outcome="cancelled")


def test_client_disconnect_stops_the_worker(fresh_stack: Stack) -> None:
    url = full_stack(fresh_stack, *SLOW)
    with (
        httpx.Client(timeout=20) as http,
        http.stream(
            "POST", f"{url}/v1/chat/completions", json={**BODY, "stream": True}, headers=fresh_stack.auth
        ) as response,
    ):
        lines = response.iter_lines()
        seen = [line for _, line in zip(range(6), lines, strict=False)]
        assert any('"content":"' in line for line in seen)
        assert fresh_stack.metric("w1", "llmaas_worker_in_flight") == 1
    # The connection is closed here, mid-answer: the worker must stop generating.
    wait_until(lambda: cancelled_jobs(fresh_stack) == 1, 10, "the worker to cancel the job", fresh_stack.logs)
    assert fresh_stack.metric("w1", "llmaas_worker_in_flight") == 0


def test_non_stream_client_timeout_also_stops_the_worker(fresh_stack: Stack) -> None:
    url = full_stack(fresh_stack, *SLOW)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=BODY, timeout=1.0, headers=fresh_stack.auth)
    wait_until(
        lambda: (
            fresh_stack.metric("w1", "llmaas_worker_requests_total", model=CHAT, outcome="cancelled") == 1
        ),
        10,
        "the worker to cancel the job",
        fresh_stack.logs,
    )


def test_worker_killed_mid_stream_ends_the_stream_with_one_error(fresh_stack: Stack) -> None:
    url = full_stack(fresh_stack, *SLOW)
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", f"{url}/v1/chat/completions", json={**BODY, "stream": True}, headers=fresh_stack.auth
        ) as response,
    ):
        assert response.status_code == 200
        received: list[str] = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(line[6:])
            if len(received) == 3:
                fresh_stack.kill("w1", signal.SIGKILL)
                killed_at = time.monotonic()
        ended_after = time.monotonic() - killed_at
    last = json.loads(received[-1])
    assert last["error"]["code"] == "worker_failed"
    assert "[DONE]" not in received
    assert sum('"error"' in e for e in received) == 1
    assert ended_after < 10, ended_after


def test_worker_stopping_gracefully_fails_what_it_cannot_finish(fresh_stack: Stack) -> None:
    url = full_stack(fresh_stack, *SLOW, "--drain-timeout-s", "0.5")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=fresh_stack.api_key, max_retries=0)
    stream = client.chat.completions.create(model=CHAT, messages=BODY["messages"], stream=True)  # type: ignore[arg-type]
    next(iter(stream))
    fresh_stack.procs["w1"].send_signal(signal.SIGTERM)
    with pytest.raises(openai.APIError) as info:
        for _ in stream:
            pass
    assert "shut down" in str(info.value.message)


def timed_chat_once_connected(stack: Stack, url: str) -> tuple[httpx.Response, float]:
    """One chat request after the edge reports NATS connected, with how long the answer took."""
    wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, 10, "edge connected")
    headers = stack.auth
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/chat/completions", json=BODY, timeout=30, headers=headers)
    return response, time.monotonic() - started


def test_no_worker_for_the_model_is_a_quick_503(fresh_stack: Stack) -> None:
    fresh_stack.guard()
    fresh_stack.scheduler()
    response, took = timed_chat_once_connected(fresh_stack, fresh_stack.edge())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert took < 5


def test_no_pipeline_consumer_is_a_quick_503(fresh_stack: Stack) -> None:
    response, took = timed_chat_once_connected(fresh_stack, fresh_stack.edge())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_consumer"
    assert "retry-after" in response.headers
    assert took < 2


def test_nats_down_is_503_and_the_edge_recovers_by_itself(fresh_stack: Stack) -> None:
    url = full_stack(fresh_stack, "--tokens-per-s", "0")
    small = {**BODY, "max_tokens": 3}
    assert httpx.post(f"{url}/v1/chat/completions", json=small, headers=fresh_stack.auth).status_code == 200
    fresh_stack.nats.stop()
    wait_until(lambda: httpx.get(f"{url}/health").status_code == 503, 10, "the edge to notice NATS is gone")
    down = httpx.post(f"{url}/v1/chat/completions", json=small, timeout=10, headers=fresh_stack.auth)
    assert down.status_code == 503
    assert "retry-after" in down.headers
    fresh_stack.nats.start()
    # A job published in the instant between the edge's reconnection and the scheduler's is lost
    # (core NATS); the edge answers it 503 after accept_timeout_s (10 s), and the next one passes.
    wait_until(
        lambda: (
            httpx.post(
                f"{url}/v1/chat/completions", json=small, timeout=15, headers=fresh_stack.auth
            ).status_code
            == 200
        ),
        30,
        "requests to succeed again after NATS returned",
        fresh_stack.logs,
    )


def test_an_edge_killed_with_streams_open_releases_its_keys_in_flight_slots(fresh_stack: Stack) -> None:
    """Two streams of a key allowed two in flight; the edge is SIGKILLed (no settlement): another
    edge refuses the key's third request at once, and admits it within two lease periods."""
    # Killed in a period's first half, the dead edge's leases last at least half a period more:
    # the survivor's first request, just after the kill, is still refused.
    lease = {"LLMAAS_IN_FLIGHT_LEASE_S": "3"}
    fresh_stack.guard()
    fresh_stack.scheduler()
    fresh_stack.worker("w1", *SLOW)
    doomed = fresh_stack.edge(name="doomed", env=lease)
    fresh_stack.wait_for_model(CHAT)
    key = {"authorization": f"Bearer {fresh_stack.new_key('pairs', tier='pair')}"}
    body = {**BODY, "stream": True}
    with httpx.Client(timeout=20) as http, contextlib.ExitStack() as open_streams:
        for _ in range(2):
            answer = http.stream("POST", f"{doomed}/v1/chat/completions", json=body, headers=key)
            assert open_streams.enter_context(answer).status_code == 200
        survivor = fresh_stack.edge(name="survivor", env=lease)
        fresh_stack.kill("doomed")
        # Refused first (the two are still counted), then admitted without anyone settling them.
        statuses: list[int] = []

        def admitted() -> bool:
            r = http.post(f"{survivor}/v1/chat/completions", json={**BODY, "max_tokens": 1}, headers=key)
            statuses.append(r.status_code)
            return r.status_code == 200

        wait_until(admitted, 15, "the dead edge's slots to be released", fresh_stack.logs)
        open_streams.pop_all()  # their edge is gone: nothing to close
    assert statuses[0] == 429 and set(statuses) <= {429, 200}, statuses


def _timed_chat(stack: Stack) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    body = {**BODY, "max_tokens": 3}
    r = httpx.post(f"{stack.base_url}/v1/chat/completions", json=body, headers=stack.auth, timeout=60)
    return r, time.monotonic() - started


# The edge's own last resort (no worker accepted) is far away in these tests: what answers comes
# from the stages themselves, each hearing that the next is gone or stuck.
PATIENT_EDGE = {"LLMAAS_ACCEPT_TIMEOUT_S": "30"}


def test_a_dead_worker_the_scheduler_still_lists_is_skipped_at_once(fresh_stack: Stack) -> None:
    fresh_stack.guard()
    fresh_stack.scheduler()
    # Heartbeats every 5 s: the scheduler goes on believing in a dead worker for a while.
    fresh_stack.worker("w-dead", "--tokens-per-s", "0", "--heartbeat-interval-s", "5")
    fresh_stack.edge(env=PATIENT_EDGE)
    fresh_stack.wait_for_model(CHAT)
    fresh_stack.kill("w-dead")
    fresh_stack.worker("w-live", "--tokens-per-s", "0", "--heartbeat-interval-s", "5")
    log = fresh_stack.logs / "w-live.log"
    wait_until(lambda: "worker w-live serving" in log.read_text(), 20, "w-live", fresh_stack.logs)
    time.sleep(0.5)  # its first heartbeat (sent as it starts) reaches the scheduler
    answers = [_timed_chat(fresh_stack) for _ in range(4)]
    assert [r.status_code for r, _ in answers] == [200] * 4, [r.text for r, _ in answers]
    # Far inside the edge's 30 s: nobody subscribed to w-dead's jobs, the scheduler knew at once.
    assert max(s for _, s in answers) < 5, answers
    gone = fresh_stack.metric("scheduler", "llmaas_scheduler_placements_total", outcome="worker_gone")
    assert gone >= 1


def test_a_dead_scheduler_is_a_quick_503(fresh_stack: Stack) -> None:
    fresh_stack.guard()
    fresh_stack.scheduler()
    fresh_stack.worker("w1", "--tokens-per-s", "0")
    fresh_stack.edge(env=PATIENT_EDGE)
    fresh_stack.wait_for_model(CHAT)
    fresh_stack.kill("scheduler")
    r, took_s = _timed_chat(fresh_stack)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_consumer", r.text
    assert "scheduler" in r.json()["error"]["message"]
    assert took_s < 5, took_s


def test_a_stuck_scheduler_is_a_503_after_the_hop_timeout_and_its_late_work_is_cancelled(
    fresh_stack: Stack,
) -> None:
    fresh_stack.guard()
    fresh_stack.scheduler()
    fresh_stack.worker("w1", *SLOW)
    fresh_stack.edge(env=PATIENT_EDGE)
    fresh_stack.wait_for_model(CHAT)
    fresh_stack.procs["scheduler"].send_signal(signal.SIGSTOP)
    try:
        r, took_s = _timed_chat(fresh_stack)
    finally:
        fresh_stack.procs["scheduler"].send_signal(signal.SIGCONT)
    assert r.status_code == 503 and "did not take" in r.json()["error"]["message"], r.text
    assert took_s < 5, took_s
    # Woken up, the scheduler places the stale job; the edge stops the worker it landed on.
    wait_until(lambda: cancelled_jobs(fresh_stack) == 1, 10, "the late job to be cancelled", fresh_stack.logs)


def test_an_edge_stopping_gracefully_ends_its_streams_with_an_error_event(fresh_stack: Stack) -> None:
    fresh_stack.guard()
    fresh_stack.scheduler()
    fresh_stack.worker("w1", *SLOW)
    url = fresh_stack.edge(env={"LLMAAS_DRAIN_S": "1"})
    fresh_stack.wait_for_model(CHAT)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=fresh_stack.api_key, max_retries=0)
    stream = client.chat.completions.create(model=CHAT, messages=BODY["messages"], stream=True)  # type: ignore[arg-type]
    next(iter(stream))
    fresh_stack.procs["edge"].send_signal(signal.SIGTERM)
    # The answer cannot finish within the drain: it ends with the edge's own word, not a cut.
    with pytest.raises(openai.APIError) as info:
        for _ in stream:
            pass
    assert "shutting down" in str(info.value.message)
    assert fresh_stack.procs["edge"].wait(20) is not None
    wait_until(
        lambda: cancelled_jobs(fresh_stack) == 1, 10, "the worker to stop generating", fresh_stack.logs
    )


def test_a_restarted_edge_serves_from_its_first_connection(fresh_stack: Stack) -> None:
    """No "authentication is starting up" 503: the edge listens once it can authenticate."""
    full_stack(fresh_stack, "--tokens-per-s", "0")
    key = fresh_stack.auth
    fresh_stack.kill("edge", signal.SIGTERM)
    port = free_port()
    env = {"LLMAAS_ADMIN_TOKEN": fresh_stack.admin_token, "LLMAAS_TIERS_FILE": str(fresh_stack.tiers_file)}
    # NATS frozen for a while as the edge starts: its directory cannot load before NATS is back.
    nats_pid = fresh_stack.nats.pid
    assert nats_pid is not None
    os.kill(nats_pid, signal.SIGSTOP)
    thaw = threading.Timer(2.0, os.kill, (nats_pid, signal.SIGCONT))
    thaw.start()
    fresh_stack.start("edge", "edge", "--port", str(port), env=env)
    body = {**BODY, "max_tokens": 2}
    statuses: list[int] = []

    def answered() -> bool:
        try:
            r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=key, timeout=10)
        except httpx.TransportError:
            return False  # not listening yet
        statuses.append(r.status_code)
        return len(statuses) >= 5

    try:
        wait_until(answered, 30, "the restarted edge", fresh_stack.logs)
    finally:
        thaw.join()
    assert statuses == [200] * 5, statuses
