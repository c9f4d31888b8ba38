"""Layer ``behaviour``: what one API token sent lately, not only what this prompt says.

- Fragmentation: an attack split over consecutive prompts ("ignore" / "the previous instructions")
  passes the pattern layer piece by piece. Where the token's last prompts meet this one, the end of
  the earlier ones and the start of this one are joined and matched again with the pattern rules
  marked ``across_prompts``; a match blocks this prompt and clears the kept fragments (the next
  prompt starts afresh). Only the seam is matched: each prompt alone was matched in full already,
  so a new match must cross into this prompt, and the rules' phrases are far shorter than the
  ``chars`` taken on each side.
- Repetition: the same prompt sent ``repeat_limit`` times in a row (30 by default) is flagged from
  that one on; a different prompt resets the count.

Only the new text of a request counts as the token's prompt: a completion's prompt, or a chat's
last message when the user wrote it (a conversation resends its earlier turns, and an agent's tool
loop ends on tool results: neither is a new prompt). Embeddings are not prompts and are not kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from guard import rules as rule_data
from guard.history import History, Record
from guard.normalize import skeleton
from guard.screening import ALLOW, Verdict
from llmaas.wire import GenerateJob, Job


@dataclass(frozen=True, slots=True)
class Policy:
    prompts: int = 4
    """How many consecutive prompts are taken together, this one included."""
    chars: int = 128
    """How much is matched on each side of the seam (and kept of each prompt's end)."""
    repeat_limit: int = 30
    """The n-th identical prompt in a row, and every later one, is flagged."""


def new_prompt(job: Job) -> str | None:
    """The text this request adds to the conversation, if a user wrote it."""
    if not isinstance(job, GenerateJob):
        return None
    if job.prompt:
        return job.prompt
    if job.messages and job.messages[-1].role == "user":
        return job.messages[-1].content
    return None


class BehaviourLayer:
    name = "behaviour"

    def __init__(
        self, history: History, rules: Sequence[rule_data.Rule] | None = None, policy: Policy | None = None
    ) -> None:
        self.history = history
        self.policy = policy or Policy()
        every = tuple(rules) if rules is not None else rule_data.load()
        self.rules = tuple(rule for rule in every if rule.across_prompts)

    async def check(self, job: Job) -> Verdict:
        """Raises HistoryUnavailable when the token's history cannot be read or recorded."""
        prompt = new_prompt(job)
        if not job.caller.token_id or prompt is None or not prompt.strip():
            return ALLOW
        digest = hashlib.blake2b(prompt.encode(), digest_size=16).hexdigest()
        # Only the ends matter for a split attack; de-obfuscating 8 000 characters again would not.
        n = self.policy.chars
        head = skeleton(prompt[: 2 * n])[:n].strip()
        tail = skeleton(prompt[-2 * n :])[-n:].strip()
        return await self.history.apply(
            job.caller.token_id, lambda record: self.step(record, digest, head, tail)
        )

    def step(self, record: Record, digest: str, head: str, tail: str) -> tuple[Verdict, Record]:
        repeats = record.repeats + 1 if digest == record.last else 1
        if repeats >= self.policy.repeat_limit:
            verdict = Verdict(blocked=True, layer=self.name, rules=("repetition.prompts",))
            return verdict, Record(tails=record.tails, last=digest, repeats=repeats)
        if record.tails:
            before = " ".join(record.tails)[-self.policy.chars :] + " "
            joined, seam = before + head, len(before)
            # A match must cross the seam: one wholly inside the earlier prompts was theirs (a
            # signal the model cleared there, an e-mail that says "disregard my last message").
            hits = tuple(
                f"fragmentation/{rule.id}"
                for rule in self.rules
                if any(m.start() < seam - 1 and m.end() > seam for m in rule.regex.finditer(joined))
            )
            if hits:  # the kept fragments are spent: the next prompt starts afresh
                verdict = Verdict(blocked=True, layer=self.name, rules=hits)
                return verdict, Record(last=digest, repeats=repeats)
        kept = (*record.tails, tail)[-(self.policy.prompts - 1) :]
        return ALLOW, Record(tails=kept, last=digest, repeats=repeats)
