"""A prompt's prefix identity: chained hashes of its fixed-size pieces, salted with the tenant.

The scheduler computes them to ask its prefix index which worker holds a prompt's beginning; the
simulated engine (and the vLLM worker's digest of its cache) name their cached blocks with them.
Piece ``i``'s id hashes the tenant, every piece before it and piece ``i`` itself, as an engine's
prefix cache does with tokens (vLLM's block hashes, salted by ``cache_salt``): equal ids mean equal
beginnings of the same tenant, and two tenants never share one. Pieces are ``BLOCK_CHARS``
characters, ~one 16-token KV block of English text; a partial last piece has no id.
"""

from __future__ import annotations

import hashlib

from llmaas.wire import GenerateJob

CHARS_PER_TOKEN = 4
"""Tokens of a text as guessed without its model's tokenizer (English averages ~4 characters)."""
BLOCK_CHARS = 16 * CHARS_PER_TOKEN


def text_of(job: GenerateJob) -> str:
    """The job's prompt as one text, in the order an engine reads it (roles mark the turns)."""
    if job.kind == "completion":
        return job.prompt
    return "".join(f"\x1e{m.role}\x1f{m.content}" for m in job.messages)


def ids(salt: str, text: str) -> tuple[int, ...]:
    """The ids of the text's full pieces, salted with ``salt`` (the tenant)."""
    data = text.encode()
    chained = hashlib.blake2b(salt.encode(), digest_size=8).digest()
    out = []
    for start in range(0, len(data) - BLOCK_CHARS + 1, BLOCK_CHARS):
        chained = hashlib.blake2b(chained + data[start : start + BLOCK_CHARS], digest_size=8).digest()
        out.append(int.from_bytes(chained, "big") >> 1)  # 63 bits: a positive msgpack int
    return tuple(out)


def of_job(job: GenerateJob) -> tuple[int, ...]:
    return ids(job.caller.tenant, text_of(job))
