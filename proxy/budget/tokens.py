"""Counting tokens we received when the upstream did not report usage (a cut stream, a crash).

tiktoken downloads its encodings on first use, which fails on machines without internet;
litellm bundles cl100k_base and o200k_base, so TIKTOKEN_CACHE_DIR points there before the first
load. Where even that fails, a conservative 4-characters-per-token estimate bills something
rather than nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=1)
def _encoding() -> Any:
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.origin is not None and "TIKTOKEN_CACHE_DIR" not in os.environ:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(Path(spec.origin).parent / "litellm_core_utils" / "tokenizers")
    try:
        import tiktoken

        return tiktoken.get_encoding("o200k_base")
    except Exception:
        return None


def count_tokens(text: str) -> int:
    if not text:
        return 0
    enc = _encoding()
    if enc is None:
        return max(1, len(text) // 4)
    return len(enc.encode(text, disallowed_special=()))


async def warm() -> None:
    """Load the encoding off the event loop, once. It costs about a second and 70 MB, so it is
    paid only by a process that counts tokens itself (live cutoffs on a real upstream), when it
    first needs to, and never blocks the loop while streams are being read."""
    if _encoding.cache_info().currsize == 0:
        await asyncio.to_thread(_encoding)
