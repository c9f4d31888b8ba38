"""``python -m bench.placement.mooncake_like FILE [--seed N]``: writes a trace in the Mooncake
FAST'25 format (JSON lines: ``timestamp`` ms, ``input_length``, ``output_length``, ``hash_ids``, one
id per 512-token block) shaped like Mooncake's published ones, which these machines cannot fetch.

3 000 sessions of 1-8 turns, each turn's prompt the whole history plus 1-6 new blocks; 60 % of the
sessions start behind one of 30 shared agent prompts of 4-16 blocks (2-8 K tokens); sessions arrive
as a Poisson process (one every 400 ms on average), a session's turns 2 s plus an exponential think
time (mean 20 s) apart; outputs log-normal (median ~200 tokens). About 13 500 requests of ~9 000
input tokens on average.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BLOCK_TOKENS = 512


def generate(seed: int = 0, sessions: int = 3000) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    ids = itertools.count()

    def blocks(n: int) -> list[int]:
        return [next(ids) for _ in range(n)]

    shared = [blocks(rng.randint(4, 16)) for _ in range(30)]
    rows: list[dict[str, Any]] = []
    start = 0.0
    for _ in range(sessions):
        start += rng.expovariate(1 / 400)
        history = list(rng.choice(shared)) if rng.random() < 0.6 else []
        at = start
        for _ in range(rng.randint(1, 8)):
            history = history + blocks(rng.randint(1, 6))
            rows.append({
                "timestamp": int(at),
                "input_length": len(history) * BLOCK_TOKENS - rng.randint(0, BLOCK_TOKENS - 1),
                "output_length": int(rng.lognormvariate(5.3, 0.7)),
                "hash_ids": list(history),
            })  # fmt: skip
            at += rng.expovariate(1 / 20_000) + 2_000
    rows.sort(key=lambda r: int(r["timestamp"]))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.placement.mooncake_like", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = generate(args.seed)
    with args.file.open("w") as out:
        out.writelines(json.dumps(r) + "\n" for r in rows)
    mean = sum(int(r["input_length"]) for r in rows) / len(rows)
    print(f"{len(rows)} requests, {mean:.0f} input tokens on average, in {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
