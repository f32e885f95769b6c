"""The task classifier: shipped accuracy on held-out templates, what it reads, how it falls back.

Accuracy floors (the shipped weights clear them with margin; see the provenance in
proxy/routing/classifier_weights.json for the measured numbers): on the project's held-out
examples, whose templates and phrasings training never saw, overall >= 0.90 and every task
>= 0.80; the simulator's own prompts >= 0.99. No test here measures wall-clock time:
bench/classifier_latency.py reports latency.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from proxy.config import TASKS
from proxy.routing.classifier import (
    DEFAULT_WEIGHTS,
    TaskClassifier,
    TaskLabel,
    last_user_text,
)
from proxy.routing.classifier_data import (
    FRAMES,
    TEMPLATES,
    examples,
    pool,
    simulator_examples,
)

OVERALL_FLOOR = 0.90
PER_TASK_FLOOR = 0.80
SIM_FLOOR = 0.99
CODE_TURN = "Write a Python function that merges two sorted lists.\n```python\ndef merge(a, b):\n    pass\n```"
MATH_TURN = "Find the remainder when 7^{2024} is divided by 1000. Put your final answer in \\boxed{}."


@pytest.fixture(scope="module")
def clf() -> TaskClassifier:
    return TaskClassifier.load()


@pytest.fixture(scope="module")
def heldout(clf: TaskClassifier) -> list:
    """Exactly the held-out examples the training script evaluated (seed and size from provenance)."""
    p = clf.provenance
    return examples("heldout", p["heldout_per_task"], p["heldout_seed"], p["sim_per_kind"])


def user(content: object) -> dict:
    return {"role": "user", "content": content}


# -- accuracy ------------------------------------------------------------------------------


def test_heldout_accuracy_clears_the_floors(clf: TaskClassifier, heldout: list) -> None:
    generated = [e for e in heldout if not e.template.startswith("sim/")]
    right, total = Counter(), Counter()
    for e in generated:
        total[e.task] += 1
        right[e.task] += clf.classify([user(e.text)])[0] == e.task
    assert set(total) == set(TASKS), "every task of the vocabulary is evaluated"
    per_task = {t: right[t] / total[t] for t in total}
    overall = sum(right.values()) / len(generated)
    assert overall >= OVERALL_FLOOR, per_task
    assert min(per_task.values()) >= PER_TASK_FLOOR, per_task
    # the runtime reproduces what the training script recorded: same features, same weights
    recorded = clf.provenance["heldout_accuracy"]
    assert overall == pytest.approx(recorded["overall"], abs=1e-4)
    for task, acc in per_task.items():
        assert acc == pytest.approx(recorded[task], abs=1e-4)


def test_simulator_prompts_are_labelled_by_their_kind(clf: TaskClassifier) -> None:
    sim = simulator_examples("heldout", 100, seed=3)
    assert {e.task for e in sim} == {"math", "science"}
    acc = sum(clf.classify([user(e.text)])[0] == e.task for e in sim) / len(sim)
    assert acc >= SIM_FLOOR


def test_weights_file_carries_its_provenance() -> None:
    doc = json.loads(DEFAULT_WEIGHTS.read_text())
    p = doc["provenance"]
    for field in ("trained_on", "sklearn", "train_examples", "heldout_examples", "heldout_accuracy", "split"):
        assert p[field], field
    assert set(doc["classes"]) == set(TASKS)
    assert set(p["heldout_accuracy"]) == {*TASKS, "overall"}


def test_heldout_templates_and_frames_are_not_used_in_training() -> None:
    for task, by_split in TEMPLATES.items():
        shared = (set(by_split["train"]) & set(by_split["heldout"])) - {f"«frame:{task}»"}
        assert not shared, (task, shared)
    seen = set(pool(FRAMES, "train"))
    assert seen and seen < set(FRAMES)
    train_texts = {e.text for e in examples("train", 200, 0)}
    assert not any(e.text in train_texts for e in examples("heldout", 200, 1) if len(e.text) > 40)


def test_examples_are_deterministic_from_the_seed() -> None:
    a, b, c = examples("train", 20, 5, 3), examples("train", 20, 5, 3), examples("train", 20, 6, 3)
    assert a == b and a != c
    assert Counter(e.task for e in a) == {**{t: 20 for t in TASKS}, "math": 23, "science": 23}


# -- what is read --------------------------------------------------------------------------


def test_only_the_last_user_turn_counts(clf: TaskClassifier) -> None:
    messages = [
        {"role": "system", "content": "You are a senior Python engineer. Always answer with code."},
        user(CODE_TURN),
        {"role": "assistant", "content": "```python\ndef merge(a, b):\n    return sorted(a + b)\n```"},
        user("what's the capital of France?"),
    ]
    assert clf.classify(messages)[0] == "chat"
    assert clf.classify(messages[:2])[0] == "code"


def test_tool_output_and_system_prompts_do_not_make_it_code(clf: TaskClassifier) -> None:
    code_dump = "import os\nfor root, dirs, files in os.walk('.'):\n    print(root, len(files))\n" * 40
    messages = [
        {"role": "system", "content": code_dump},
        user("Can you suggest a gift for my sister who loves hiking?"),
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "run", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": code_dump},
    ]
    assert last_user_text(messages) == "Can you suggest a gift for my sister who loves hiking?"
    assert clf.classify(messages)[0] == "chat"


def test_content_parts_are_read_and_non_text_parts_skipped(clf: TaskClassifier) -> None:
    parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
             {"type": "text", "text": MATH_TURN}]
    assert last_user_text([user(parts)]) == MATH_TURN
    assert clf.classify([user(parts)]) == clf.classify([user(MATH_TURN)])
    assert clf.classify([user(parts)])[0] == "math"


def test_tool_results_and_injected_wrappers_are_not_the_persons_words(clf: TaskClassifier) -> None:
    tool_only = user([{"type": "tool_result", "tool_use_id": "x", "content": CODE_TURN}])
    assert last_user_text([user("What's the capital of Peru?"), tool_only]) == "What's the capital of Peru?"
    wrapped = f"<system-reminder>{CODE_TURN}</system-reminder>\nWhat's the capital of Peru?"
    assert last_user_text([user(wrapped)]).strip() == "What's the capital of Peru?"
    assert clf.classify([user(wrapped)])[0] == "chat"
    assert last_user_text([user("<system-reminder>only boilerplate</system-reminder>")]) == ""


def test_no_user_turn_is_chat_with_no_confidence(clf: TaskClassifier) -> None:
    assert clf.classify([]) == ("chat", 0.0)
    assert clf.classify([{"role": "system", "content": MATH_TURN}, user("   ")]) == ("chat", 0.0)


def test_long_turns_are_clipped_to_head_and_tail(clf: TaskClassifier) -> None:
    f = clf.featurizer
    source = "def load(path):\n    with open(path) as fh:\n        return [line.split(',') for line in fh]\n" * 400
    text = "Why does this code raise IndexError?\n```python\n" + source + "```"
    assert len(f.tokens(text)) <= f.head_tokens + f.tail_tokens
    assert clf.classify([user(text)])[0] == "code"
    keys, value = f(text)
    assert len(keys) <= 2 * (f.head_tokens + f.tail_tokens) + len(f.meta(text)) and value > 0


def test_runtime_does_not_import_scikit_learn() -> None:
    code = ("import sys; from proxy.routing.classifier import TaskClassifier; "
            "TaskClassifier.load().classify([{'role': 'user', 'content': 'hi'}]); "
            "assert 'sklearn' not in sys.modules and 'scipy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "w.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a"):
        TaskClassifier.load(bad)


# -- label(): who decides ------------------------------------------------------------------


def test_explicit_task_wins_over_everything(clf: TaskClassifier) -> None:
    assert clf.label([user(CODE_TURN)], "sat", "math", 0.5) == TaskLabel("sat", None, "explicit")


def test_key_default_wins_over_the_classifier(clf: TaskClassifier) -> None:
    assert clf.label([user(CODE_TURN)], None, "math", 0.5) == TaskLabel("math", None, "key")


def test_key_default_below_the_floor(clf: TaskClassifier) -> None:
    # an unsure classifier never overrides the key's default
    assert clf.label([user("hmm")], None, "planning", 0.99) == TaskLabel("planning", None, "key")


def test_classifier_above_the_floor_labels(clf: TaskClassifier) -> None:
    task, confidence = clf.classify([user(MATH_TURN)])
    assert task == "math" and confidence > 0.5
    assert clf.label([user(MATH_TURN)], None, None, 0.5) == TaskLabel("math", None, "classifier")
    assert clf.label([user(MATH_TURN)], None, None, 0.0).task == "math"


def test_below_the_floor_without_default_is_chat(clf: TaskClassifier) -> None:
    _, confidence = clf.classify([user(MATH_TURN)])
    label = clf.label([user(MATH_TURN)], None, None, min(confidence + 1e-6, 1.0 + 1e-6))
    assert label == TaskLabel("chat", None, "classifier")
    assert clf.label([], None, None) == TaskLabel("chat", None, "classifier")


def test_default_floor_comes_from_load(clf: TaskClassifier) -> None:
    strict = TaskClassifier.load(floor=1.01)
    assert strict.label([user(MATH_TURN)], None, None) == TaskLabel("chat", None, "classifier")
    assert clf.label([user(MATH_TURN)], None, None) == TaskLabel("math", None, "classifier")


def test_label_is_frozen() -> None:
    label = TaskLabel("math", None, "classifier")
    with pytest.raises(AttributeError):
        label.task = "chat"  # type: ignore[misc]
