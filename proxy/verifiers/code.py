"""`python_tests`: the candidate's code, run against the client's tests in the sandbox.

The code is the last fenced code block of the reply (```python ... ``` or a bare fence); the
tests are Python source with top-level asserts or `test_*` functions, run in the candidate's
namespace (which is also importable as `solution`). Every test is reported in the feedback,
so a sequential round can fix exactly what failed::

    v = registry.build({"name": "python_tests", "tests": "assert add(2, 3) == 5", "timeout_s": 5})
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from proxy.verifiers.base import Verdict, Verifier
from proxy.verifiers.basic import _Args
from proxy.verifiers.sandbox import Sandbox, SandboxResult

__all__ = ["PythonTestsArgs", "PythonTestsVerifier", "last_code_block"]

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.S)
_MAX_SOURCE = 200_000
_MAX_FEEDBACK_TESTS = 20


class PythonTestsArgs(_Args):
    tests: str = Field(min_length=1, max_length=_MAX_SOURCE)
    timeout_s: float = Field(default=10.0, gt=0, le=120)


def last_code_block(text: str) -> str | None:
    """The last fenced block, preferring Python-tagged (or untagged) ones over other languages."""
    blocks = _FENCE.findall(text or "")
    if not blocks:
        return None
    python = [body for lang, body in blocks if lang.lower() in ("", "python", "py", "python3")]
    return (python or [blocks[-1][1]])[-1]


def feedback(result: SandboxResult) -> str:
    """Per-test lines a model can act on; the run-level reason first when it did not finish."""
    lines = [] if result.status == "ok" else [f"The run failed: {result.reason}."]
    for t in result.tests[:_MAX_FEEDBACK_TESTS]:
        if t.passed:
            lines.append(f"- {t.name}: passed")
        else:
            where = f" (line {t.line})" if t.line else ""
            lines.append(f"- {t.name}: FAILED{where}: {t.error}")
    if len(result.tests) > _MAX_FEEDBACK_TESTS:
        lines.append(f"- ... and {len(result.tests) - _MAX_FEEDBACK_TESTS} more")
    if not result.passed and result.output.strip():
        lines.append("Program output (last lines):\n" + "\n".join(result.output.strip().splitlines()[-10:]))
    return "\n".join(lines)


class PythonTestsVerifier(Verifier):
    """Passes when every test passes; the score is the share of tests passed (0 when the run
    did not finish: a timeout or crash says nothing about the tests that did not run)."""

    name = "python_tests"

    def __init__(self, args: PythonTestsArgs, sandbox: Sandbox) -> None:
        self.tests, self.timeout_s, self.sandbox = args.tests, args.timeout_s, sandbox

    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        code = last_code_block(candidate)
        if code is None or not code.strip():
            return Verdict(False, 0.0, "No code was found. Put the complete solution in one ```python code block.")
        result = await self.sandbox.run(code, self.tests, timeout_s=self.timeout_s)
        if result.status == "error":
            raise RuntimeError(f"the sandbox failed to start: {result.stderr[-500:]}")
        if result.passed:
            return Verdict(True, 1.0, feedback(result))
        score = 0.0
        if result.status == "ok" and result.tests:
            score = sum(t.passed for t in result.tests) / len(result.tests)
        return Verdict(False, score, feedback(result))
