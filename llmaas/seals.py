"""The edge's seal on a job: an HMAC-SHA256, under a key only the edges and metering hold
(``LLMAAS_BILLING_KEY``), over the request id, tenant, key id, model and ``max_tokens``. A worker
copies it into its record of the work done; metering bills such a record (for a request whose edge
died before billing it) only if the seal matches, so a worker's identity cannot invent requests.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from llmaas.wire import GenerateJob, Job, WorkRecord


@dataclass(frozen=True)
class Claim:
    """Who asked for what: what a seal vouches for."""

    request_id: str
    tenant: str
    token_id: str
    model: str
    max_tokens: int

    @classmethod
    def of_job(cls, job: Job) -> Claim:
        max_tokens = (job.sampling.max_tokens or 0) if isinstance(job, GenerateJob) else 0
        return cls(job.request_id, job.caller.tenant, job.caller.token_id, job.model, max_tokens)

    @classmethod
    def of_record(cls, record: WorkRecord) -> Claim:
        return cls(record.request_id, record.tenant, record.token_id, record.model, record.max_tokens)

    def message(self) -> bytes:
        fields = (self.request_id, self.tenant, self.token_id, self.model, str(self.max_tokens))
        return "\x1f".join(fields).encode()


def seal(key: bytes, claim: Claim) -> str:
    return hmac.new(key, claim.message(), hashlib.sha256).hexdigest()


def intact(key: bytes, mark: str, claim: Claim) -> bool:
    return hmac.compare_digest(mark, seal(key, claim))
