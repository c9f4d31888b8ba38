"""llmaas.retry: tried again on the named errors only, within the attempts and the time given."""

from __future__ import annotations

import pytest

from llmaas import retry


class Flaky:
    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("away")
        return "done"


async def test_retried_on_the_named_errors_until_it_succeeds() -> None:
    flaky = Flaky(3)
    assert await retry.retried(flaky, on=ConnectionError, backoff=retry.AT_ONCE) == "done"
    assert flaky.calls == 4


async def test_another_error_is_raised_at_once() -> None:
    flaky = Flaky(1, ValueError)
    with pytest.raises(ValueError):
        await retry.retried(flaky, on=ConnectionError, backoff=retry.AT_ONCE)
    assert flaky.calls == 1


async def test_the_last_error_is_raised_after_the_attempts() -> None:
    flaky = Flaky(10)
    with pytest.raises(ConnectionError):
        await retry.retried(flaky, on=ConnectionError, backoff=retry.AT_ONCE, attempts=5)
    assert flaky.calls == 5


async def test_no_wait_goes_past_the_time_given(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    waited: list[float] = []

    async def sleep(seconds: float) -> None:  # time passes only by the waits: the test cannot be late
        waited.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(retry.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(retry.asyncio, "sleep", sleep)
    flaky = Flaky(100)
    with pytest.raises(ConnectionError):
        await retry.retried(flaky, on=ConnectionError, backoff=retry.Backoff(1.0, 2.0, 4.0), within_s=10)
    # 1 + 2 + 4 = 7 s waited; the next wait (4 s) would pass 10 s: the error is raised instead.
    assert waited == [1.0, 2.0, 4.0] and flaky.calls == 4


def test_backoff_doubles_up_to_its_most() -> None:
    backoff = retry.Backoff(0.25, 2.0, 1.0)
    waits = [None]
    for _ in range(5):
        waits.append(backoff.after(waits[-1]))
    assert waits[1:] == [0.25, 0.5, 1.0, 1.0, 1.0]
