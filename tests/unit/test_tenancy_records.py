"""Keys, tiers, prices, limit windows and the audit chain, as pure logic."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from edge import limits
from llmaas import audit, durations, tenants, tiers
from llmaas.pricing import PriceList, PriceVersion
from llmaas.tenants import ApiKey


def key(**fields: object) -> ApiKey:
    return ApiKey(
        **{"id": "0" * 12, "tenant": "t", "name": "k", "secret_sha256": "0" * 64, "created_at": 0, **fields}
    )  # type: ignore[arg-type]


def test_a_minted_key_parses_back_and_only_its_secret_matches() -> None:
    key_id, presented, stored = tenants.mint_key()
    assert presented.startswith("sk-llmaas-") and len(key_id) == 12
    parsed = tenants.parse_key(presented)
    assert parsed is not None and parsed[0] == key_id
    assert tenants.matches(parsed[1], stored)
    assert not tenants.matches(parsed[1] + "x", stored)
    assert parsed[1] not in stored  # only the digest is kept
    assert tenants.public_id(presented) == key_id


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "sk-llmaas-",
        "sk-llmaas-short_x",
        "sk-other-0123456789ab_x",
        "sk-llmaas-0123456789ab",
        "sk-llmaas-ab.cd*>ef.gh_x",  # twelve characters, but not an id we mint
    ],
)
def test_malformed_keys_do_not_parse(presented: str) -> None:
    assert tenants.parse_key(presented) is None


@pytest.mark.parametrize(
    ("patterns", "model", "allowed"),
    [
        ([], "anything", True),
        (["qwen3:*"], "qwen3:30b-a3b", True),
        (["qwen3:*"], "qwen2.5:7b", False),
        (["gemma3:4b", "llama3.3:*"], "gemma3:4b", True),
        (["gemma3:4b"], "gemma3:4b-it", False),
    ],
)
def test_model_permissions_take_names_and_patterns(patterns: list[str], model: str, allowed: bool) -> None:
    assert key(models=patterns).allows(model) is allowed


def test_a_key_is_usable_until_it_expires_or_is_revoked() -> None:
    assert key(expires_at=100.0).usable_at(99.9)
    assert not key(expires_at=100.0).usable_at(100.0)
    assert not key(state="revoked").usable_at(0)


@pytest.mark.parametrize("name", ["acme", "a", "team-1_x"])
def test_plain_tenant_names_are_accepted(name: str) -> None:
    assert tenants.check_name(name) == name


@pytest.mark.parametrize("name", ["", "Acme", "a.b", "a*", "-x", "x" * 64, "a b"])
def test_tenant_names_that_are_not_subject_safe_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid tenant name"):
        tenants.check_name(name)


def test_the_shipped_tiers_match_the_product_page() -> None:
    shipped = tiers.load()
    assert (
        shipped["tier1"].monthly_budget_eur == 1000 and shipped["tier4"].output_tokens_per_day == 14_400_000
    )
    assert shipped["tier2"].output_tokens_per_hour == 300_000 and shipped["tier3"].upfront_credit_eur == 1000
    assert shipped["invoiced"].monthly_budget_eur is None and shipped["invoiced"].priority == "high"
    assert all(t.requests_per_minute == 1000 for t in shipped.values())


def test_a_malformed_tier_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tiers.toml"
    path.write_text('[gold]\ntitle = "Gold"\nrequests_per_minit = 5\n')
    with pytest.raises(ValueError, match=r"tier \[gold\].*requests_per_minit"):
        tiers.load(path)


def test_prices_are_versioned_and_batch_is_half_price() -> None:
    v1 = PriceVersion(
        valid_from=dt.date(2026, 1, 1), input_eur_per_m=0.9, output_eur_per_m=4, reasoning_eur_per_m=21
    )
    v2 = msgspec.structs.replace(v1, valid_from=dt.date(2026, 7, 1), output_eur_per_m=5)
    prices = PriceList([v2, v1])
    assert prices.at(dt.date(2026, 6, 30)) is v1 and prices.at(dt.date(2026, 7, 1)) is v2
    # 1M prompt, 1M completion of which 0.5M reasoning: 0.9 + 0.5 * 4 + 0.5 * 21 = 13.4 €
    assert v1.cost_nano(1_000_000, 1_000_000, 500_000) == 13_400_000_000
    assert msgspec.structs.replace(v1, batch_factor=0.5).cost_nano(0, 1_000, batch=True) == 2_000_000
    shipped = PriceList.load().at(dt.date(2026, 11, 22))
    assert (shipped.input_eur_per_m, shipped.output_eur_per_m, shipped.reasoning_eur_per_m) == (0.9, 4, 21)
    assert shipped.batch_factor == 0.5


@pytest.mark.parametrize(
    ("text", "seconds"), [("90d", 90 * 86400), ("24h", 86400), ("30m", 1800), ("45s", 45), ("1.5h", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert durations.seconds(text) == seconds


@pytest.mark.parametrize("text", ["90", "d", "1w", "-1d", ""])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 90d"):
        durations.seconds(text)


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.25, "250ms"), (1, "1s"), (59.2, "1m0s"), (360, "6m0s"), (3723, "1h2m3s")]
)
def test_reset_durations_look_like_openai_s(seconds: float, shown: str) -> None:
    assert limits._duration(seconds) == shown


def test_windows_are_utc_minute_hour_day_and_month() -> None:
    now = dt.datetime(2026, 12, 31, 23, 59, 30, tzinfo=dt.UTC).timestamp()
    w = limits._windows(now)
    assert w["rpm"] == ("202612312359", dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp())
    assert w["tokens_day"][0] == "20261231" and w["budget_month"][0] == "202612"
    assert w["budget_month"][1] == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()


def test_the_budget_refusal_wins_and_invites_no_retry() -> None:
    tier = tiers.Tier(title="t", requests_per_minute=1, monthly_budget_eur=1)
    counters = limits._counters("acme", "k" * 12, tier, reserve=10, reserve_nano=40_000, now=0, period=0)
    refusal = limits._refusal(counters, 10, 0)
    assert refusal.code == "insufficient_quota" and refusal.retryable is False


def test_the_tighter_token_window_is_the_one_reported() -> None:
    tier = tiers.Tier(title="t", output_tokens_per_hour=100, output_tokens_per_day=1000)
    counters = limits._counters("acme", "k" * 12, tier, reserve=10, reserve_nano=0, now=0, period=0)
    headers = dict(limits._headers(counters, [95, 20], 0))
    assert headers[b"x-ratelimit-limit-tokens"] == b"100" and headers[b"x-ratelimit-remaining-tokens"] == b"5"


def chain(n: int) -> list[audit.AuditEvent]:
    events, prev = [], audit.GENESIS
    for i in range(n):
        sealed = audit.seal(audit.event("admin", "tenant.create", f"t{i}", "ok"), prev)
        events.append(sealed)
        prev = sealed.hash
    return events


def walk(records: list[tuple[int, bytes | None]]) -> audit.Verdict:
    w = audit.ChainWalk()
    for seq, data in records:
        problem = w.step(seq, data)
        if problem:
            return w.verdict(problem)
    return w.verdict()


def encoded(events: list[audit.AuditEvent]) -> list[tuple[int, bytes | None]]:
    return [(i + 1, msgspec.json.encode(e)) for i, e in enumerate(events)]


def test_an_intact_chain_verifies() -> None:
    verdict = walk(encoded(chain(5)))
    assert verdict.ok and verdict.events == 5


def test_an_edited_event_is_detected() -> None:
    records = encoded(chain(4))
    edited = msgspec.json.decode(records[2][1] or b"")
    edited["outcome"] = "denied"
    records[2] = (3, msgspec.json.encode(edited))
    verdict = walk(records)
    assert not verdict.ok and verdict.problem == "event 3 was altered (its content does not match its hash)"
    assert verdict.events == 2


def test_a_removed_or_inserted_event_is_detected() -> None:
    events = chain(4)
    assert walk([(1, msgspec.json.encode(events[0])), (2, None)]).problem == "event 2 is missing"
    skipped = [(1, msgspec.json.encode(events[0])), (2, msgspec.json.encode(events[2]))]
    assert "event 2 does not follow event 1" in (walk(skipped).problem or "")
    # A forger who seals a new event correctly still cannot link it without rewriting all that follows.
    forged = audit.seal(audit.event("mallory", "key.create", "t0", "ok"), audit.GENESIS)
    inserted = encoded([events[0], forged, *events[1:]])
    assert "event 2 does not follow event 1" in (walk(inserted).problem or "")


def test_a_successor_sealed_under_a_secret_opens_only_with_that_secret() -> None:
    sealed = tenants.seal_successor("old-secret", "sk-llmaas-0123456789ab_new")
    assert "sk-llmaas" not in sealed and "new" not in sealed
    assert tenants.open_successor("old-secret", sealed) == "sk-llmaas-0123456789ab_new"
    assert tenants.open_successor("other-secret", sealed) is None


def test_an_unused_key_due_for_rotation_expires_after_its_grace() -> None:
    due = key(created_at=0.0, rotate_every_s=100.0, grace_s=10.0)
    assert not due.rotation_due(99.0) and due.rotation_due(100.0)
    assert due.usable_at(109.9) and not due.usable_at(110.0)
    rotated = msgspec.structs.replace(due, successor="1" * 12, expires_at=150.0)
    assert not rotated.rotation_due(120.0) and rotated.usable_at(149.0)


def test_a_trail_whose_start_expired_verifies_from_what_is_kept() -> None:
    """Retention drops the oldest events: the rest still verifies, anchored by a checkpoint."""
    events, prev = [], audit.GENESIS
    for i in range(8):
        if i == 5:
            marker = audit.checkpoint()
            marker = msgspec.structs.replace(marker, detail={"after_seq": "5", "after_hash": prev})
            sealed = audit.seal(marker, prev)
        else:
            sealed = audit.seal(audit.event("admin", "tenant.create", f"t{i}", "ok"), prev)
        events.append(sealed)
        prev = sealed.hash
    kept = encoded(events)[3:]  # events 1-3 expired
    w = audit.ChainWalk()
    w.resume(4, kept[0][1] or b"")
    problems = [w.step(seq, data) for seq, data in kept]
    verdict = w.verdict()
    assert problems == [None] * 5 and verdict.ok and verdict.expired == 3 and verdict.anchored_from == 6
    # a checkpoint that claims another predecessor is caught
    forged = audit.seal(
        msgspec.structs.replace(audit.checkpoint(), detail={"after_seq": "5", "after_hash": "f" * 64}),
        events[4].hash,
    )
    w = audit.ChainWalk()
    for seq, data in encoded(events[:5]):
        assert w.step(seq, data) is None
    assert w.step(6, msgspec.json.encode(forged)) == "checkpoint 6 does not match the chain before it"
