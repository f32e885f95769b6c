"""Finding the final answer in a free-text reply, for checkers of structured answers.

Models end with the answer in many shapes. The region a checker parses is, in order: the last
``\\boxed{...}``; else the last line that names the answer (``Assignment:``, ``Tour:``, ...);
else the last non-empty line. Reasoning before it is ignored, so numbers in the working never
pass for the answer.
"""

from __future__ import annotations

import re

__all__ = ["final_region", "last_boxed"]


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def final_region(text: str, keywords: tuple[str, ...]) -> str | None:
    """The part of `text` that states the final answer (see the module docstring)."""
    text = text or ""
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed
    if keywords:
        pattern = re.compile(r"(?:%s)\s*[:=]?\s*(.*)" % "|".join(re.escape(k) for k in keywords), re.I)
        for line in reversed(text.splitlines()):
            m = pattern.search(line)
            if m and m.group(1).strip():
                return m.group(1)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None
