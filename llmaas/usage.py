"""Usage events: the JetStream stream LLMAAS_USAGE, filled from each edge's outbox.

The edge records one ``UsageEvent`` per finished request and returns at once; its outbox
(``llmaas.outbox``) publishes it in the background, with the request id as ``Nats-Msg-Id``, so a
retried publish is stored once (the stream's duplicate window; metering deduplicates again by
request id in ClickHouse).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from nats.js.client import JetStreamContext

from llmaas import streams, subjects
from llmaas.outbox import Outbox
from llmaas.wire import UsageEvent

STREAM = streams.USAGE.name
encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(UsageEvent)


async def publish(js: JetStreamContext, event: UsageEvent, timeout_s: float = 2.0) -> None:
    """Raises the nats-py error (or TimeoutError) when the stream did not acknowledge the event."""
    headers = {"Nats-Msg-Id": event.request_id}
    await js.publish(subjects.USAGE, encoder.encode(event), timeout=timeout_s, headers=headers)


UsageOutbox = Outbox[UsageEvent]


def outbox(on_lost: Callable[[int], None] | None = None) -> UsageOutbox:
    """An edge's outbox of usage events."""
    return Outbox(streams.USAGE, publish, "usage event", on_lost=on_lost)
