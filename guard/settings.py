"""Settings of a guard process."""

from __future__ import annotations

from pydantic import Field

from guard.screening import SIGNAL_BAR
from llmaas.settings import ServiceSettings


class GuardSettings(ServiceSettings):
    guard_enabled: bool = True
    """Prompt screening for the whole deployment (LLMAAS_GUARD_ENABLED=false turns it off). An
    administrator turns it off for one tenant with `llmaas tenants set-guard NAME off`."""
    guard_learned: bool = True
    """The learned layer (a multilingual classifier, ``guard.layers.learned``) beside the rules."""
    guard_threshold: float | None = Field(default=None, gt=0, le=1)
    """The learned layer's score at which a prompt is blocked; unset: the trained head's own
    (chosen for at most 0.5 % false positives on the benign training prompts). An administrator sets
    one tenant's with `llmaas tenants set-guard-threshold NAME X`."""
    guard_signal_bar: float = Field(default=SIGNAL_BAR, gt=0, le=1)
    """The learned layer's score at which rules that are signals (a quoted order, a role-play…,
    ``signal`` in guard/rules/patterns.toml) block a prompt; below it they let it pass."""
    guard_series_chars: int = Field(default=2048, ge=0)
    """A job whose texts are longer than this (characters) goes on to the engine before its rules
    run, when its edge holds the answer until the verdict (every edge of this version does): the
    rules cost ~1 ms per 1 000 characters of wordy text, the engine's prefill hides them."""
    guard_history_ttl_s: float = Field(default=600.0, gt=0)
    """A token's prompt history is forgotten this long after its last prompt."""
    guard_history_prompts: int = Field(default=4, ge=2)
    """Consecutive prompts of one token taken together to catch a split attack."""
    guard_repeat_limit: int = Field(default=30, ge=2)
    """The n-th identical prompt in a row from one token, and every later one, is blocked."""
    guard_concurrency: int = Field(default=256, ge=1)
    """Jobs one replica screens at once (each may wait on the history store)."""
    guard_tenant_concurrency: int = Field(default=4, ge=1)
    """Jobs of one tenant one replica screens at once."""
    guard_tenant_waiting: int = Field(default=60, ge=0)
    """Jobs of one tenant that may wait for a turn; past them (and past the bytes below) a 429."""
    guard_tenant_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Bytes of jobs one tenant may have in one replica at once (one job always fits)."""
