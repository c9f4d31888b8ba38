"""The placement bench's workloads, as token counts and block ids (no text is ever made).

A block id stands for the tokens of one KV-cache block and everything before it: equal ids, equal
prefix. Ids are drawn from a counter so that every piece of content (a tenant's system prompt, a
conversation, a random prompt) has ids of its own; content of one tenant is never another's, as
the engines' per-tenant cache salt guarantees. Arrival rates are in requests per second.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from workers.simulation.fleet import FollowUp, Request

_SPAN = 1 << 22
"""Ids reserved for one piece of content (blocks of its token stream)."""

MOONCAKE_BLOCK = 512
"""Tokens per hash id in the Mooncake trace format."""


@dataclass(frozen=True)
class Workload:
    """Requests to replay: the ones that arrive on their own, and the ones they lead to."""

    name: str
    requests: list[Request]
    follow_up: FollowUp | None = None
    opened_until: float = 0.0
    """Time of the last request that arrives on its own (not a follow-up)."""


Maker = Callable[[float, float, int, int], Workload]
"""(rate, seconds of arrivals, block size, seed) -> workload."""


class _Ids:
    def __init__(self) -> None:
        self._next = itertools.count(1)

    def content(self) -> int:
        return next(self._next) * _SPAN


def _lognormal(rng: random.Random, mean: float, sigma: float, low: int, high: int) -> int:
    mu = math.log(mean) - sigma * sigma / 2
    return max(low, min(high, int(rng.lognormvariate(mu, sigma))))


def _arrivals(rng: random.Random, rate: float, seconds: float) -> Iterator[float]:
    """Poisson arrivals at ``rate`` per second for ``seconds`` (at least one)."""
    now = rng.expovariate(rate)
    yield now
    while (now := now + rng.expovariate(rate)) < seconds:
        yield now


def _blocks(segments: list[tuple[int, int]], total: int, size: int) -> tuple[int, ...]:
    """Ids of the full blocks of a token stream made of (content base id, tokens) segments: a block
    that lies inside the first segment is that content's; any later block is the last segment's
    (it follows a history unique to it)."""
    first_base, first_len = segments[0]
    last_base = segments[-1][0]
    return tuple(
        first_base + b if (b + 1) * size <= first_len else last_base + b for b in range(total // size)
    )


def shared_prompts(rate: float, seconds: float, size: int, seed: int) -> Workload:
    """Many tenants, each with one to three long system prompts, Zipf popularity and one hot tenant
    taking a quarter of the traffic; a short question of its own after the system prompt."""
    rng, ids = random.Random(seed), _Ids()
    tenants = 80
    prompts = [
        [(ids.content(), rng.randint(1500, 6000)) for _ in range(rng.randint(1, 3))] for _ in range(tenants)
    ]
    weights = [1 / (rank + 1) for rank in range(tenants)]
    requests = []
    for n, arrival in enumerate(_arrivals(rng, rate, seconds)):
        tenant = 0 if rng.random() < 0.25 else rng.choices(range(tenants), weights)[0]
        base, system = rng.choice(prompts[tenant])
        question, answer = _lognormal(rng, 250, 0.8, 10, 2000), _lognormal(rng, 200, 0.8, 1, 1000)
        prompt = system + question
        blocks = _blocks([(base, system), (ids.content(), question)], prompt + answer, size)
        requests.append(Request(f"s{n}", arrival, blocks, prompt, answer))
    return Workload("shared-prompts", requests, opened_until=requests[-1].arrival)


def random_prompts(rate: float, seconds: float, size: int, seed: int) -> Workload:
    """The control: every prompt unique, nothing to gain from any cache."""
    rng, ids = random.Random(seed), _Ids()
    requests = []
    for n, arrival in enumerate(_arrivals(rng, rate, seconds)):
        prompt, answer = _lognormal(rng, 1500, 0.9, 20, 12000), _lognormal(rng, 200, 0.8, 1, 1000)
        blocks = _blocks([(ids.content(), 0)], prompt + answer, size)
        requests.append(Request(f"r{n}", arrival, blocks, prompt, answer))
    return Workload("random", requests, opened_until=requests[-1].arrival)


def multi_turn(rate: float, seconds: float, size: int, seed: int) -> Workload:
    """Chats of 2 to 12 turns: each turn sends the whole history again (system prompt, earlier
    questions and answers) plus a new question, ~3 s after the answer (a quick reader, or an agent's
    loop).
    ``rate`` is in requests per second: chats start at rate / (mean turns)."""
    rng, ids = random.Random(seed), _Ids()
    tenants = [(ids.content(), rng.randint(300, 2000)) for _ in range(20)]
    mean_turns = 7
    following: dict[str, tuple[Request, float]] = {}
    """A turn's id -> the next turn (its arrival unset) and the think time before it."""
    first = []
    for chat, arrival in enumerate(_arrivals(rng, rate / mean_turns, seconds)):
        system, base = rng.choice(tenants), ids.content()
        history = system[1]
        previous: Request | None = None
        for n in range(rng.randint(2, 12)):
            question, answer = _lognormal(rng, 150, 0.8, 5, 1500), _lognormal(rng, 250, 0.8, 1, 1000)
            prompt = history + question
            blocks = _blocks([system, (base, 0)], prompt + answer, size)
            turn = Request(f"m{chat}.{n}", arrival, blocks, prompt, answer)
            history = prompt + answer
            if previous is None:
                first.append(turn)
            else:
                following[previous.request_id] = (turn, rng.expovariate(1 / 3))
            previous = turn

    def follow_up(done: Request, now: float) -> Request | None:
        turn, think = following.get(done.request_id, (None, 0.0))
        return None if turn is None else replace(turn, arrival=now + think)

    return Workload("multi-turn", first, follow_up, opened_until=first[-1].arrival)


WORKLOADS: dict[str, Maker] = {
    "multi-turn": multi_turn,
    "shared-prompts": shared_prompts,
    "random": random_prompts,
}


class TraceError(ValueError):
    """A trace file that is not in Mooncake's format (the line that is not, and why)."""


def read_trace(path: Path, size: int) -> list[Request]:
    """A trace in Mooncake's format (FAST'25): JSON lines ``{"timestamp": ms, "input_length",
    "output_length", "hash_ids": [one id per 512-token block]}``; each 512-token block becomes
    512 / ``size`` engine blocks, and only the trace's full blocks carry ids."""
    per = MOONCAKE_BLOCK // size
    requests = []
    with path.open() as lines:
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                prompt, answer = int(row["input_length"]), max(1, int(row["output_length"]))
                hashes = [int(h) for h in row.get("hash_ids", [])]
                arrival = float(row["timestamp"]) / 1000
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
                raise TraceError(f"{path}:{n + 1}: not a Mooncake trace line ({what})") from None
            blocks = tuple(
                (hashes[b // per] + 1) * per + b % per for b in range(min(prompt // size, len(hashes) * per))
            )
            requests.append(Request(f"t{n}", arrival, blocks, prompt, answer))
    if not requests:
        raise TraceError(f"{path}: no request in the trace")
    requests.sort(key=lambda r: r.arrival)
    return requests


def scaled(requests: list[Request], rate: float) -> Workload:
    """The trace's requests with arrival times stretched or squeezed to ``rate`` per second."""
    start = requests[0].arrival
    span = requests[-1].arrival - start
    natural = (len(requests) - 1) / span if span > 0 else rate
    factor = natural / rate
    moved = [
        Request(r.request_id, (r.arrival - start) * factor, r.blocks, r.prompt_tokens, r.output_tokens)
        for r in requests
    ]
    return Workload("trace", moved, opened_until=moved[-1].arrival)
