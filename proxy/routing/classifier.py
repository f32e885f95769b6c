"""The task classifier: which task of the vocabulary a chat request asks for.

Why it looks like this:

- **What it reads.** DESIGN.md's Trust section: the task is what the *person* asked, so only
  the last user turn with text counts. System prompts, assistant and tool messages are never
  read; content parts other than text (images, ``tool_result`` parts) are skipped; a user turn
  made only of tool results is not the person's ask, so the search goes on to the previous
  user turn; well-known injected wrappers (``<system-reminder>``, ``<environment_details>``,
  ...) are cut out of the text.
- **How fast.** It runs on every routed request, on a 2-core box, so the budget is p99 <=
  100 us. Everything costly is done once at load (a dense weight table indexed by hashed
  feature, the bucket of every meta feature); per request it is a handful of C-level passes
  over at most ``head_chars + tail_chars`` bytes (lower-case and punctuation translation,
  ``split``, ``zlib.crc32`` per token), a numpy bigram hash, one gather and one small matmul.
  Regular expressions were measured too slow for tokenizing here and are not used for it.
- **Stable hashing.** Python's ``hash`` is salted per process, so tokens are hashed with
  ``crc32`` and mixed into buckets with a multiplicative hash; training
  (``scripts/train_classifier.py``) calls :class:`Featurizer` itself, so training and serving
  cannot disagree about features.
- **No scikit-learn at run time**: the shipped JSON holds the linear model's numbers
  (plus its provenance); this module needs only numpy.
"""

from __future__ import annotations

import json
import math
import re
import string
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from proxy.config import TASKS

__all__ = ["DEFAULT_FLOOR", "DEFAULT_WEIGHTS", "Featurizer", "TaskClassifier", "TaskLabel", "last_user_text"]

#: the weights shipped with the package, written by scripts/train_classifier.py
DEFAULT_WEIGHTS = Path(__file__).with_name("classifier_weights.json")
#: below this softmax probability the classifier's answer is not trusted (see `label`)
DEFAULT_FLOOR = 0.5
WEIGHTS_FORMAT = "pareto-task-classifier/1"

LabelSource = Literal["explicit", "key", "classifier"]

# -- text of the last user turn -------------------------------------------------------------

#: wrappers that agents and IDE plugins inject into user turns; they are not the person's words
_INJECTED = re.compile(
    r"<(system-reminder|environment_details|tool_result|tool_output|function_results|function_calls)\b[^>]*>"
    r".*?</\1>",
    re.S,
)
_TEXT_PARTS = frozenset(("text", "input_text"))


def _content_text(content: Any) -> str:
    """The person's words in one message's content (a string or a list of content parts)."""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "\n".join(
            p["text"] for p in content
            if isinstance(p, dict) and p.get("type") in _TEXT_PARTS and isinstance(p.get("text"), str)
        )
    else:
        return ""
    if "</" in text:
        text = _INJECTED.sub(" ", text)
    return text.strip()


def last_user_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The text of the last user turn that has any; "" when there is none."""
    for message in reversed(list(messages)):
        if isinstance(message, Mapping) and message.get("role") == "user":
            text = _content_text(message.get("content"))
            if text:
                return text
    return ""


# -- features ------------------------------------------------------------------------------

#: punctuation that carries the signal of code, formulas, grids and clause lists: kept as tokens
_KEEP = "(){}[]=+-*/^|#:;?<>$\\&~!%"
_SPLITS = tuple((c.encode(), f" {c} ".encode()) for c in _KEEP)


def _translation() -> bytes:
    """Byte table: ASCII upper -> lower, digit -> '0' (numbers keep their length, not their value),
    other ASCII punctuation -> space. Bytes >= 0x80 (UTF-8 letters, logic symbols) pass through."""
    table = bytearray(range(256))
    for c in range(ord("A"), ord("Z") + 1):
        table[c] = c + 32
    for c in b"123456789":
        table[c] = ord("0")
    for c in string.punctuation.encode():
        if chr(c) not in _KEEP and c != ord("_"):
            table[c] = ord(" ")
    return bytes(table)


_TABLE = _translation()
_DIGITS = b"0123456789"
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
#: lines that look like the options of a multiple-choice question (on lower-cased text)
_OPTION_MARKS = (b"\nb)", b"\n(b)", b"\nb.", b"\nb:", b" b) ", b"(b) ", b"\n b)", b"\n- b)")
#: meta features: a few character-class facts the bag of words cannot see
META_FEATURES = (
    *(f"len{i}" for i in range(5)), *(f"lines{i}" for i in range(4)), *(f"digits{i}" for i in range(5)),
    "fence", "options", "indent",
)
_LEN_BINS = (60, 200, 600, 2000)
_LINE_BINS = (1, 4, 16)
_DIGIT_BINS = (1e-9, 0.02, 0.08, 0.2)


def _bin(value: float, edges: tuple[float, ...]) -> int:
    for i, edge in enumerate(edges):
        if value < edge:
            return i
    return len(edges)


class Featurizer:
    """Text -> (bucket indices, values) of a hashed bag of word unigrams and bigrams plus meta
    features. Token features share the value 1/sqrt(number of token features) (so long and short
    prompts give logits of the same scale); meta features have value 1. Duplicate buckets add up.
    """

    def __init__(self, bits: int, head_chars: int, tail_chars: int) -> None:
        if not 8 <= bits <= 24:
            raise ValueError(f"hash bits must be in [8, 24], got {bits}")
        self.bits = bits
        self.head_chars = head_chars
        self.tail_chars = tail_chars
        self._shift = np.uint64(64 - bits)
        crcs = np.array([zlib.crc32(b"\x00meta:" + n.encode()) for n in META_FEATURES], np.uint64)
        self.meta_bucket: Mapping[str, int] = dict(zip(META_FEATURES, self._unigram_buckets(crcs).tolist()))

    def _unigram_buckets(self, crcs: np.ndarray) -> np.ndarray:
        return ((crcs * _M1) >> self._shift).astype(np.intp)

    def _clip(self, text: str) -> str:
        """Very long turns: the head (where the question usually is) and the tail (the instruction)."""
        if len(text) > self.head_chars + self.tail_chars:
            return text[: self.head_chars] + "\n" + text[-self.tail_chars:]
        return text

    @staticmethod
    def _tokens(raw: bytes) -> list[bytes]:
        data = raw.translate(_TABLE)
        for char, spaced in _SPLITS:
            if char in data:
                data = data.replace(char, spaced)
        return data.split()

    def tokens(self, text: str) -> list[bytes]:
        """The normalized tokens of `text` (clipped to its head and tail)."""
        return self._tokens(self._clip(text).encode("utf-8", "replace"))

    def _meta(self, raw: bytes, n_chars: int) -> list[str]:
        data = raw.lower()
        digits = len(data) - len(data.translate(None, _DIGITS))
        newlines = data.count(b"\n")
        found = [
            f"len{_bin(n_chars, _LEN_BINS)}",
            f"lines{_bin(newlines, _LINE_BINS)}",
            f"digits{_bin(digits / max(len(data), 1), _DIGIT_BINS)}",
        ]
        if b"```" in data:
            found.append("fence")
        if any(mark in data for mark in _OPTION_MARKS):
            found.append("options")
        if b"\n    " in data or b"\n\t" in data:
            found.append("indent")
        return found

    def meta(self, text: str) -> list[str]:
        """The meta features present in `text`."""
        return self._meta(self._clip(text).encode("utf-8", "replace"), len(text))

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        raw = self._clip(text).encode("utf-8", "replace")
        toks = self._tokens(raw)
        crcs = np.fromiter(map(zlib.crc32, toks), np.uint64, len(toks))
        uni = crcs * _M1
        bi = (uni[:-1] ^ crcs[1:]) * _M2
        meta = [self.meta_bucket[m] for m in self._meta(raw, len(text))]
        n_tok = len(toks) + max(len(toks) - 1, 0)
        idx = np.concatenate(((uni >> self._shift).astype(np.intp), (bi >> self._shift).astype(np.intp),
                              np.array(meta, np.intp)))
        vals = np.ones(len(idx), np.float32)
        if n_tok:
            vals[:n_tok] = 1.0 / math.sqrt(n_tok)
        return idx, vals


# -- labels --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskLabel:
    """A request's task, how hard it is (None: unknown) and who decided the task."""

    task: str
    difficulty: str | None = None
    source: LabelSource = "classifier"


class TaskClassifier:
    """A linear model over hashed features; immutable after `load`, safe to share across requests."""

    def __init__(self, classes: tuple[str, ...], bias: np.ndarray, weights: np.ndarray, featurizer: Featurizer,
                 floor: float = DEFAULT_FLOOR, provenance: Mapping[str, Any] | None = None) -> None:
        unknown = [c for c in classes if c not in TASKS]
        if unknown:
            raise ValueError(f"classifier classes outside the task vocabulary: {unknown}")
        if weights.shape != (1 << featurizer.bits, len(classes)) or bias.shape != (len(classes),):
            raise ValueError("weight table does not match the classes and hash size")
        self.classes = classes
        self.floor = floor
        self.featurizer = featurizer
        self.provenance: Mapping[str, Any] = dict(provenance or {})
        self._bias = bias.astype(np.float64)
        self._weights = np.ascontiguousarray(weights, np.float32)
        self._weights.flags.writeable = False

    @classmethod
    def load(cls, path: str | Path | None = None, floor: float = DEFAULT_FLOOR) -> TaskClassifier:
        """Read a weights file (default: the one shipped next to this module)."""
        doc = json.loads(Path(path or DEFAULT_WEIGHTS).read_text())
        if doc.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{path or DEFAULT_WEIGHTS}: not a {WEIGHTS_FORMAT} file")
        classes = tuple(doc["classes"])
        featurizer = Featurizer(int(doc["hash_bits"]), int(doc["head_chars"]), int(doc["tail_chars"]))
        table = np.zeros((1 << featurizer.bits, len(classes)), np.float32)
        rows = doc["weights"]
        scale = float(rows.get("scale", 1.0))
        if rows["buckets"]:
            table[np.asarray(rows["buckets"], np.intp)] = np.asarray(rows["values"], np.float32) * scale
        return cls(classes, np.asarray(doc["bias"], np.float64), table, featurizer, floor, doc.get("provenance"))

    def probabilities(self, text: str) -> np.ndarray:
        """Softmax probabilities over `self.classes` for a user turn's text."""
        idx, vals = self.featurizer(text)
        logits = vals @ self._weights.take(idx, axis=0) + self._bias
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def classify_text(self, text: str) -> tuple[str, float]:
        """(task, confidence) for a user turn's text; ("chat", 0.0) for empty text."""
        if not text:
            return "chat", 0.0
        p = self.probabilities(text)
        i = int(p.argmax())
        return self.classes[i], float(p[i])

    def classify(self, messages: list[dict]) -> tuple[str, float]:
        """(task, softmax confidence) from the last user turn of a chat request."""
        return self.classify_text(last_user_text(messages))

    def label(self, messages: list[dict], explicit: str | None, key_default: str | None,
              floor: float | None = None) -> TaskLabel:
        """The request's task: explicit `routing.task` > the key's default > the classifier.

        The classifier is consulted only when there is neither; below `floor` its guess falls
        back to the key's default, which at that point is absent, so to "chat" (still source
        "classifier"): an unsure guess must not buy an expensive reasoning plan. `floor`
        defaults to the one given at load.
        """
        if explicit:
            return TaskLabel(explicit, None, "explicit")
        if key_default:
            return TaskLabel(key_default, None, "key")
        task, confidence = self.classify(messages)
        if confidence < (self.floor if floor is None else floor):
            return TaskLabel("chat", None, "classifier")
        return TaskLabel(task, None, "classifier")
