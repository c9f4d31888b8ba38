"""Failed authentications: throttled per address, summarized, bounded in memory (edge.auth_failures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from edge.auth_failures import OVERFLOW, FailedLogins
from edge.settings import EdgeSettings
from llmaas import audit, tenants
from llmaas.audit import AuditLog
from llmaas.errors import RateLimited
from llmaas.operator import admin
from llmaas.operator.admin import AdminError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def written(log: AuditLog) -> list[audit.AuditEvent]:
    out = []
    while not log._queue.empty():
        out.append(log._queue.get_nowait())
    return out


def failure(source: str, actor: str = "anonymous") -> audit.AuditEvent:
    return audit.event(actor, "auth.failure", "/v1/models", "denied", source=source, detail={"reason": "bad"})


def test_the_first_failure_is_written_at_once_the_rest_in_one_summary() -> None:
    log, clock = AuditLog("e"), Clock()
    failures = FailedLogins(log, window_s=60, allowed=100, clock=clock)
    for _ in range(50):
        failures.failed(failure("10.0.0.1", actor="key:k1"))
    assert [e.action for e in written(log)] == ["auth.failure"]
    clock.now += 30
    failures.flush()
    assert written(log) == []  # the window is still open
    clock.now += 31
    failures.flush()
    [summary] = written(log)
    assert summary.action == "auth.failure.summary" and summary.actor == "key:k1"
    assert summary.detail["count"] == "49" and summary.source == "10.0.0.1"


def test_past_the_allowance_an_address_is_refused_until_its_window_ends() -> None:
    log, clock = AuditLog("e"), Clock()
    failures = FailedLogins(log, window_s=60, allowed=3, clock=clock)
    for _ in range(3):
        failures.check("10.0.0.1")
        failures.failed(failure("10.0.0.1"))
    with pytest.raises(RateLimited) as refused:
        failures.check("10.0.0.1")
    assert refused.value.retry_after_s == 60
    failures.check("10.0.0.2")  # another address is not affected
    clock.now += 61
    failures.flush()
    failures.check("10.0.0.1")  # a new window
    assert written(log)[-1].detail["throttled"] == "1"


def test_a_spread_attack_is_bounded_in_memory_and_in_the_trail() -> None:
    log, clock = AuditLog("e"), Clock()
    failures = FailedLogins(log, window_s=60, allowed=5, max_sources=10, clock=clock)
    for i in range(10_000):
        failures.failed(failure(f"10.1.{i // 256}.{i % 256}"))
    assert len(failures._windows) == 11  # 10 addresses followed, the rest together
    with pytest.raises(RateLimited):
        failures.check("192.0.2.1")  # an address never seen, past the bound: the overflow's allowance
    clock.now += 61
    failures.flush()
    events = written(log)
    assert len(events) == 12  # 11 first events, one summary (the overflow's)
    [summary] = [e for e in events if e.action.endswith(".summary")]
    assert summary.source == OVERFLOW and summary.detail["count"] == str(10_000 - 10 - 1)


@pytest.mark.parametrize("token", ["secret", "admin-admin-admin-admin-admin-admin-admin", "a" * 64])
def test_a_weak_admin_token_is_refused_by_the_edge_and_by_up(token: str, tmp_path: Path) -> None:
    assert tenants.admin_token_weakness(token)
    with pytest.raises(ValidationError, match="too weak"):
        EdgeSettings(admin_token=SecretStr(token))
    with pytest.raises(AdminError, match="too weak"):
        admin.ensure_token(tmp_path, SecretStr(token))
    assert not admin.token_file(tmp_path).exists()


def test_minted_admin_tokens_are_strong(tmp_path: Path) -> None:
    token, created = admin.ensure_token(tmp_path, None)
    assert created and tenants.admin_token_weakness(token) is None
    assert EdgeSettings(admin_token=SecretStr(token)).admin_token is not None
