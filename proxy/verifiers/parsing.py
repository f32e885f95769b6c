"""Finding the final answer in a free-text reply, for checkers of structured answers.

Models end with the answer in many shapes. The region a checker parses is, in order: the last
``\\boxed{...}``; else the last line that names the answer (``Assignment:``, ``Tour:``, ...);
else the last non-empty line. Reasoning before it is ignored, so numbers in the working never
pass for the answer.
"""

from __future__ import annotations

import re

from proxy.strategies.answers import last_boxed

__all__ = ["final_region", "last_boxed"]


def final_region(text: str, keywords: tuple[str, ...]) -> str | None:
    """The part of `text` that states the final answer (see the module docstring)."""
    text = text or ""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    if keywords:
        pattern = re.compile(r"(?:%s)\s*[:=]?\s*(.*)" % "|".join(re.escape(k) for k in keywords), re.I)
        for line in reversed(text.splitlines()):
            m = pattern.search(line)
            if m and m.group(1).strip():
                return m.group(1)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None
