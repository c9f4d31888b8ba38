"""How a job goes from one stage to the next (edge → guard → scheduler → worker): each hop is a
NATS request whose answer is only "taken", so that a stage learns at once when nobody is there
(no responders) and within ``hop_timeout_s`` when the next one died holding it, instead of the edge
waiting out its accept timeout. The frames of the answer go to the edge's subject in ``job.reply``.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from llmaas import codec
from llmaas.errors import LlmaasError, Unavailable
from llmaas.wire import Failed, Job


class NobodyThere(Unavailable):
    """No process subscribes to the next stage's subject."""


class NotTaken(Unavailable):
    """The next stage did not say it took the job in time (it died holding it, or is stuck)."""


async def hand_over(nc: Client, subject: str, data: bytes, timeout_s: float, what: str) -> None:
    """Send a job to ``subject`` and return once a ``what`` took it; raise NobodyThere / NotTaken."""
    try:
        await nc.request(subject, data, timeout=timeout_s)
    except NoRespondersError:
        raise NobodyThere(
            f"No {what} is running right now; retry shortly.", code="no_consumer", retry_after_s=1
        ) from None
    except TimeoutError:
        raise NotTaken(
            f"The {what} did not take the request within {timeout_s:g} s; retry shortly.",
            code="no_consumer",
            retry_after_s=1,
        ) from None


async def took(msg: Msg) -> None:
    """Tell the previous stage this one took the job (when it asked)."""
    if msg.reply:
        await msg.respond(b"")


async def fail(nc: Client, to: str, error: LlmaasError) -> None:
    """End the job whose frames go to ``to`` with ``error`` (the edge answers it to the client)."""
    await nc.publish(to, codec.encode(Failed(error=error.to_wire())))


def frames_to(job: Job, msg: Msg) -> str:
    """Where this job's frames go: its ``reply``, else (an older publisher) the message's reply."""
    return job.reply or msg.reply
