"""The task classifier: which task of the vocabulary a chat request asks for.

Why it looks like this:

- **What it reads.** DESIGN.md's Trust section: the task is what the *person* asked, so only
  the last user turn with text counts. System prompts, assistant and tool messages are never
  read; content parts other than text (images, ``tool_result`` parts) are skipped; a user turn
  made only of tool results is not the person's ask, so the search goes on to the previous
  user turn; well-known injected wrappers (``<system-reminder>``, ``<environment_details>``,
  ...) are cut out of the text.
- **How fast.** It runs on every routed request, on a 2-core box, so the budget is p99 <=
  100 us (bench/classifier_latency.py measures it). Everything costly is done once at load (a
  dense weight table indexed by hashed feature); per request it is a few C-level passes over at
  most ``head_chars + tail_chars`` bytes (byte-table translation, ``replace``, ``split``), one
  ``zlib.crc32`` per token for at most ``head_tokens + tail_tokens`` tokens (at ~0.1 us per
  token that is the main cost, hence the caps), seven numpy calls (bigram hashing, one
  gather, one matrix-vector product) and a softmax over eight floats in plain Python. Regular
  expressions were measured too slow for tokenizing here and are not used for it.
- **Stable hashing.** Python's ``hash`` is salted per process, so tokens are hashed with
  ``crc32`` (bigrams mix two crcs multiplicatively; a bucket is a key's low bits); training
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
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from proxy.config import TASKS
from proxy.routing.router import TaskLabel  # one label type for the classifier and the router

__all__ = ["DEFAULT_FLOOR", "DEFAULT_WEIGHTS", "Featurizer", "TaskClassifier", "TaskLabel", "last_user_text"]

#: the weights shipped with the package, written by scripts/train_classifier.py
DEFAULT_WEIGHTS = Path(__file__).with_name("classifier_weights.json")
#: below this softmax probability the classifier's answer is not trusted (see `label`)
DEFAULT_FLOOR = 0.5
WEIGHTS_FORMAT = "pareto-task-classifier/1"

# -- text of the last user turn -------------------------------------------------------------

#: wrappers that agents and IDE plugins inject into user turns; they are not the person's words
_INJECTED = re.compile(
    r"<(system-reminder|environment_details|tool_result|tool_output|function_results|function_calls)\b[^>]*>"
    r".*?</\1>",
    re.DOTALL,
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
    if "<" in text and "</" in text:  # a one-character test is memchr-fast; "</" is not
        text = _INJECTED.sub(" ", text)
    return "" if not text or text.isspace() else text


def last_user_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The text of the last user turn that has any; "" when there is none."""
    # (plain list/dict checks first: ABC isinstance checks cost ~0.3 us each on the hot path)
    ordered = messages if isinstance(messages, (list, tuple)) or isinstance(messages, Sequence) else list(messages)
    for message in reversed(ordered):
        if (type(message) is dict or isinstance(message, Mapping)) and message.get("role") == "user":
            text = _content_text(message.get("content"))
            if text:
                return text
    return ""


# -- features ------------------------------------------------------------------------------

#: punctuation that carries the signal of code, formulas, grids and clause lists: kept as tokens
_KEEP = b"(){}[]=+-*/^|#:;?<>$\\&~!%"
#: byte -> (the byte, the byte with spaces around it), for the kept punctuation
_SPACED = MappingProxyType({c: (bytes([c]), b" " + bytes([c]) + b" ") for c in _KEEP})
#: every byte but the kept punctuation: `data.translate(None, _NOT_KEPT)` leaves only those
_NOT_KEPT = bytes(c for c in range(256) if c not in _KEEP)


def _translation() -> bytes:
    """Byte table: ASCII upper -> lower, digit -> '0' (numbers keep their length, not their value),
    other ASCII punctuation -> space. Bytes >= 0x80 (UTF-8 letters, logic symbols) pass through."""
    table = bytearray(range(256))
    for c in range(ord("A"), ord("Z") + 1):
        table[c] = c + 32
    for c in b"123456789":
        table[c] = ord("0")
    for c in string.punctuation.encode():
        if c not in _KEEP and c != ord("_"):
            table[c] = ord(" ")
    return bytes(table)


_TABLE = _translation()
_DIGITS = b"0123456789"
#: odd 64-bit multiplier (2^64 / golden ratio) as a signed int64: numpy integer arrays wrap on
#: overflow, so the bigram mix needs no unsigned arithmetic (and the keys can index directly)
_M1 = np.int64(0x9E3779B97F4A7C15 - (1 << 64))
#: meta features: character-class facts the bag of words cannot see, as (name, bin edges): the
#: length in characters, the number of newlines and the share of digits. Code fences, indentation
#: and option-letter lines were tried too and dropped: grouped cross-validation showed no gain
#: (their tokens already carry them) for ~1 us per KB of text each.
_BINNED = (("len", (60, 200, 600, 2000)), ("lines", (1, 4, 16)), ("digits", (1e-9, 0.02, 0.08, 0.2)))
META_FEATURES = tuple(f"{name}{i}" for name, edges in _BINNED for i in range(len(edges) + 1))


class Featurizer:
    """Text -> the hashed bag of its word unigrams and bigrams plus a few meta features.
    Duplicate buckets add up (counts); see `__call__` for the hashing and the values."""

    def __init__(self, bits: int, head_chars: int, tail_chars: int, head_tokens: int, tail_tokens: int) -> None:
        if not 8 <= bits <= 24:
            raise ValueError(f"hash bits must be in [8, 24], got {bits}")
        if min(head_chars, tail_chars, head_tokens, tail_tokens) < 1:
            raise ValueError("clip sizes must be positive")
        self.bits = bits
        self.head_chars, self.tail_chars = head_chars, tail_chars
        self.head_tokens, self.tail_tokens = head_tokens, tail_tokens
        self._mask = np.int64((1 << bits) - 1)
        # the hot path carries each meta feature's crc key and hashes it with the tokens' keys
        b = {n: zlib.crc32(b"\x00meta:" + n.encode()) for n in META_FEATURES}
        self._len_b, self._lines_b, self._digits_b = (
            tuple(b[f"{name}{i}"] for i in range(len(edges) + 1)) for name, edges in _BINNED)

    def _clip(self, text: str) -> str:
        """Very long turns: the head (where the question usually is) and the tail (the instruction)."""
        if len(text) > self.head_chars + self.tail_chars:
            return text[: self.head_chars] + "\n" + text[-self.tail_chars:]
        return text

    def _tokens(self, raw: bytes) -> list[bytes]:
        """Lower-cased words, '0'-shaped numbers and kept punctuation; at most head + tail tokens
        (hashing costs ~0.1 us per token here, so punctuation-dense turns are capped too)."""
        data = raw.translate(_TABLE)
        kept = data.translate(None, _NOT_KEPT)  # the kept punctuation that occurs, in order
        # a set of a few bytes is cheap; for punctuation-dense text (mazes, clause lists) testing
        # each kept byte is cheaper than building a set of hundreds
        for c in set(kept) if len(kept) <= 32 else [c for c in _KEEP if c in kept]:
            char, spaced = _SPACED[c]
            data = data.replace(char, spaced)
        # split only what is kept: the first head_tokens, then the last tail_tokens of the rest
        toks = data.split(None, self.head_tokens)
        if len(toks) <= self.head_tokens:
            return toks
        tail = toks.pop().rsplit(None, self.tail_tokens)
        return toks + (tail[1:] if len(tail) > self.tail_tokens else tail)

    def tokens(self, text: str) -> list[bytes]:
        """The normalized tokens of `text` (clipped to its head and tail)."""
        return self._tokens(self._clip(text).encode("utf-8", "replace"))

    def _meta(self, raw: bytes, n_chars: int) -> list[int]:
        """The crc keys of the meta features present."""
        size = len(raw) or 1
        return [
            self._len_b[bisect_right(_BINNED[0][1], n_chars)],
            self._lines_b[bisect_right(_BINNED[1][1], raw.count(b"\n"))],
            self._digits_b[bisect_right(_BINNED[2][1], (size - len(raw.translate(None, _DIGITS))) / size)],
        ]

    def meta(self, text: str) -> list[str]:
        """The names of the meta features present in `text` (for tests and debugging)."""
        names = {zlib.crc32(b"\x00meta:" + n.encode()): n for n in META_FEATURES}
        return [names[c] for c in self._meta(self._clip(text).encode("utf-8", "replace"), len(text))]

    def __call__(self, text: str) -> tuple[np.ndarray, float]:
        """(bucket of every feature occurrence, the value each occurrence has).

        Keys: crc(token) for a unigram, crc(a) * M1 ^ crc(b) for a bigram, crc(name) for a meta
        feature; a key's bucket is its low `bits` bits (crc32's low bits are well mixed). numpy
        calls cost about a microsecond each here, so there are only five. Every occurrence has
        the value 1/sqrt(number of occurrences), so long and short turns score on one scale.
        """
        raw = self._clip(text).encode("utf-8", "replace")
        toks = self._tokens(raw)
        meta = self._meta(raw, len(text))
        n = len(toks)
        keys = np.fromiter(chain(map(zlib.crc32, toks), meta), np.int64, n + len(meta))
        if n > 1:
            bigrams = keys[: n - 1] * _M1
            bigrams ^= keys[1:n]
            keys = np.concatenate((keys, bigrams))
        keys &= self._mask
        return keys, 1.0 / math.sqrt(len(keys))


# -- labels --------------------------------------------------------------------------------


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
        self.provenance: Mapping[str, Any] = MappingProxyType(dict(provenance or {}))
        self._bias_list: tuple[float, ...] = tuple(float(x) for x in bias)
        self._weights = np.ascontiguousarray(weights, np.float32)
        self._weights.flags.writeable = False
        #: enough ones for the most features a clipped turn can have (2 per token + meta)
        self._ones = np.ones(2 * (featurizer.head_tokens + featurizer.tail_tokens) + 64, np.float32)
        self._ones.flags.writeable = False

    @classmethod
    def load(cls, path: str | Path | None = None, floor: float = DEFAULT_FLOOR) -> TaskClassifier:
        """Read a weights file (default: the one shipped next to this module)."""
        doc = json.loads(Path(path or DEFAULT_WEIGHTS).read_text())
        if doc.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{path or DEFAULT_WEIGHTS}: not a {WEIGHTS_FORMAT} file")
        classes = tuple(doc["classes"])
        featurizer = Featurizer(int(doc["hash_bits"]), int(doc["head_chars"]), int(doc["tail_chars"]),
                                int(doc["head_tokens"]), int(doc["tail_tokens"]))
        table = np.zeros((1 << featurizer.bits, len(classes)), np.float32)
        rows = doc["weights"]
        scale = float(rows.get("scale", 1.0))
        if rows["buckets"]:
            table[np.asarray(rows["buckets"], np.intp)] = np.asarray(rows["values"], np.float32) * scale
        return cls(classes, np.asarray(doc["bias"], np.float64), table, featurizer, floor, doc.get("provenance"))

    def logits(self, text: str) -> list[float]:
        """Raw scores per class (a list: 8 floats are cheaper in Python than in numpy)."""
        keys, value = self.featurizer(text)
        counts = self._ones[: len(keys)]  # a view: summing rows as a matrix product is the fast way
        sums = (counts @ self._weights.take(keys, axis=0)).tolist()
        return [x * value + b for x, b in zip(sums, self._bias_list)]

    def probabilities(self, text: str) -> list[float]:
        """Softmax probabilities over `self.classes` for a user turn's text."""
        logits = self.logits(text)
        top = max(logits)
        e = [math.exp(v - top) for v in logits]
        total = sum(e)
        return [v / total for v in e]

    def classify_text(self, text: str) -> tuple[str, float]:
        """(task, confidence) for a user turn's text; ("chat", 0.0) for empty text."""
        if not text:
            return "chat", 0.0
        logits = self.logits(text)
        top = max(logits)
        return self.classes[logits.index(top)], 1.0 / sum([math.exp(v - top) for v in logits])

    def classify(self, messages: list[dict]) -> tuple[str, float]:
        """(task, softmax confidence) from the last user turn of a chat request."""
        return self.classify_text(last_user_text(messages))

    def label(self, messages: list[dict], explicit: str | None, key_default: str | None,
              floor: float | None = None) -> TaskLabel:
        """The request's task: explicit `routing.task` > the key's default > the classifier.

        Below `floor` (default: the one given at load) the classifier's guess is not used: the
        fallback is the key's default task, and since a key with a default never reaches the
        classifier, that leaves "chat" with source "classifier": an unsure guess must not buy an
        expensive reasoning plan. Difficulty is left unknown (None) here.
        """
        if explicit:
            return TaskLabel(explicit, None, "explicit")
        if key_default:
            return TaskLabel(key_default, None, "key")
        task, confidence = self.classify(messages)
        if confidence < (self.floor if floor is None else floor):
            return TaskLabel("chat", None, "classifier")
        return TaskLabel(task, None, "classifier")
