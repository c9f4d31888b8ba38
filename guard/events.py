"""Security events: every blocked prompt, published to the JetStream stream LLMAAS_SECURITY.

An event says who (tenant, key id), what (model, layer, rules) and a SHA-256 of the screened text,
never the text. The request id is the message id, so a redelivered job is recorded once (JetStream's
duplicate window). Events are JSON, like the audit trail's, so that `nats stream view` shows them
as they are. Metering copies the stream into ClickHouse for reports.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import msgspec
from nats.js import JetStreamContext

from guard.screening import Verdict
from llmaas import streams, subjects
from llmaas.wire import Job, SecurityEvent

STREAM = streams.SECURITY.name
decoder = msgspec.json.Decoder(SecurityEvent)


def prompt_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\x1e".join(texts).encode()).hexdigest()


def event_of(job: Job, texts: Sequence[str], verdict: Verdict, guard_id: str) -> SecurityEvent:
    return SecurityEvent(
        request_id=job.request_id,
        at=time.time(),
        tenant=job.caller.tenant,
        token_id=job.caller.token_id,
        model=job.model,
        layer=verdict.layer,
        rules=list(verdict.reasons),
        prompt_sha256=prompt_digest(texts),
        guard=guard_id,
    )


async def publish(js: JetStreamContext, event: SecurityEvent) -> None:
    """Raises the nats-py error when the stream did not acknowledge the event."""
    await js.publish(
        subjects.SECURITY, msgspec.json.encode(event), timeout=2.0, headers={"Nats-Msg-Id": event.request_id}
    )
