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
BLOCK_TOKENS = 16
"""Tokens a piece stands for: vLLM's KV block on GPUs."""
BLOCK_CHARS = BLOCK_TOKENS * CHARS_PER_TOKEN
MAX_BLOCKS = 1024
"""Blocks named per prompt (its first ~16 000 tokens): enough to tell which worker holds a prompt's
beginning, and a bounded cost on the scheduler's path (~1.5 ms at most) however long the prompt."""


def prompt_chars(job: GenerateJob) -> int:
    """The prompt's length in characters (counted without building its text)."""
    if job.kind == "completion":
        return len(job.prompt)
    return sum(len(m.role) + len(m.content) + 2 for m in job.messages)


def prompt_tokens(job: GenerateJob) -> int:
    return max(1, prompt_chars(job) // CHARS_PER_TOKEN)


def text_of(job: GenerateJob, limit: int | None = None) -> str:
    """The job's prompt as one text, in the order an engine reads it (roles mark the turns); with
    ``limit``, at least its first ``limit`` characters and not much more."""
    if job.kind == "completion":
        return job.prompt[:limit]
    parts, size = [], 0
    for m in job.messages:
        content = m.content if limit is None else m.content[: max(limit - size, 0)]
        parts.append(f"\x1e{m.role}\x1f{content}")
        size += len(parts[-1])
        if limit is not None and size >= limit:
            break
    return "".join(parts)[:limit]


def ids(salt: str, text: str) -> tuple[int, ...]:
    """The ids of the text's first full pieces (up to ``MAX_BLOCKS``), salted with ``salt``."""
    data = text.encode()[: MAX_BLOCKS * BLOCK_CHARS]
    chained = hashlib.blake2b(salt.encode(), digest_size=8).digest()
    out = []
    for start in range(0, len(data) - BLOCK_CHARS + 1, BLOCK_CHARS):
        chained = hashlib.blake2b(chained + data[start : start + BLOCK_CHARS], digest_size=8).digest()
        out.append(int.from_bytes(chained, "big") >> 1)  # 63 bits: a positive msgpack int
    return tuple(out)


def of_job(job: GenerateJob) -> tuple[int, ...]:
    return ids(job.caller.tenant, text_of(job, MAX_BLOCKS * BLOCK_CHARS))
