"""Train the task classifier and write proxy/routing/classifier_weights.json.

    .venv/bin/pip install scikit-learn        # training-time only; the proxy never imports it
    .venv/bin/python scripts/train_classifier.py [--seed 0] [--out PATH]

Why it is built this way:
- Features come from `proxy.routing.classifier.Featurizer`, the very code that serves, so
  training and serving cannot disagree.
- The examples are the project's own (`proxy.routing.classifier_data`). The held-out split uses
  templates and phrasings that training never sees; the regularization strength is chosen by
  cross-validation grouped by template *inside* the training split, so the held-out numbers
  are not tuned on.
- The reported held-out accuracy is measured with the runtime classifier loaded from the JSON
  just written (rounded weights included): the numbers describe what ships.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from proxy.config import TASKS
from proxy.routing.classifier import (
    DEFAULT_FLOOR,
    DEFAULT_WEIGHTS,
    WEIGHTS_FORMAT,
    Featurizer,
    TaskClassifier,
)
from proxy.routing.classifier_data import Example, examples

#: clipping of long turns (characters, then tokens): bounds the per-request cost
HEAD_CHARS, TAIL_CHARS, HEAD_TOKENS, TAIL_TOKENS = 512, 256, 128, 64
C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)


def matrix(featurizer: Featurizer, texts: list[str]) -> sp.csr_matrix:
    """The sparse design matrix, built with the serving featurizer (duplicates are summed)."""
    indptr, indices, data = [0], [], []
    for text in texts:
        keys, value = featurizer(text)
        indices.append(keys)
        data.append(np.full(len(keys), value))
        indptr.append(indptr[-1] + len(keys))
    x = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.array(indptr)),
                      shape=(len(texts), 1 << featurizer.bits), dtype=np.float64)
    x.sum_duplicates()
    return x


def choose_c(x: sp.csr_matrix, y: np.ndarray, groups: list[str], folds: int) -> tuple[float, dict[float, float]]:
    """Regularization by cross-validation over *templates* of the training split."""
    scores: dict[float, float] = {}
    for c in C_GRID:
        accs = []
        for tr, va in GroupKFold(n_splits=folds).split(x, y, groups):
            model = LogisticRegression(C=c, max_iter=3000).fit(x[tr], y[tr])
            accs.append(float((model.predict(x[va]) == y[va]).mean()))
        scores[c] = float(np.mean(accs))
        print(f"  C={c:<5} grouped-CV accuracy {scores[c]:.4f}")
    return max(scores, key=lambda c: scores[c]), scores


def export(model: LogisticRegression, featurizer: Featurizer, classes: list[str], prune: float) -> dict:
    """The compact JSON document: non-zero rows of the weight table as int16 with one scale."""
    coef = model.coef_.T.astype(np.float64)  # (buckets, classes)
    keep = np.flatnonzero(np.abs(coef).max(axis=1) >= prune)
    scale = float(np.abs(coef[keep]).max() / 32767) if len(keep) else 1.0
    q = np.round(coef[keep] / scale).astype(np.int64)
    return {
        "format": WEIGHTS_FORMAT, "classes": classes, "hash_bits": featurizer.bits,
        "head_chars": featurizer.head_chars, "tail_chars": featurizer.tail_chars,
        "head_tokens": featurizer.head_tokens, "tail_tokens": featurizer.tail_tokens,
        "bias": [round(float(b), 6) for b in model.intercept_],
        "weights": {"scale": scale, "buckets": keep.tolist(), "values": q.tolist()},
    }


def evaluate(clf: TaskClassifier, rows: list[Example], floor: float) -> dict:
    """Per-task accuracy, the confusion matrix and how the confidence floor behaves."""
    labels = [clf.classify_text(e.text) for e in rows]
    classes = list(clf.classes)
    conf = np.zeros((len(classes), len(classes)), int)
    for e, (pred, _) in zip(rows, labels):
        conf[classes.index(e.task), classes.index(pred)] += 1
    per_task = {t: round(float(conf[i, i] / conf[i].sum()), 4) for i, t in enumerate(classes) if conf[i].sum()}
    confident = [(e.task == p) for e, (p, c) in zip(rows, labels) if c >= floor]
    return {
        "n": len(rows), "overall": round(float(np.trace(conf) / conf.sum()), 4), "per_task": per_task,
        "confusion": conf.tolist(), "below_floor_fraction": round(1 - len(confident) / len(rows), 4),
        "accuracy_above_floor": round(float(np.mean(confident)), 4) if confident else None,
    }


def print_report(name: str, result: dict, classes: list[str]) -> None:
    print(f"\n{name}: {result['n']} examples, accuracy {result['overall']:.4f}; "
          f"{result['below_floor_fraction']:.1%} below the floor, accuracy above it {result['accuracy_above_floor']}")
    for task, acc in result["per_task"].items():
        print(f"  {task:<9} {acc:.4f}")
    print("  confusion (rows: truth, columns: predicted)")
    print("  " + " " * 9 + "".join(f"{c[:6]:>7}" for c in classes))
    for c, row in zip(classes, result["confusion"]):
        if sum(row):
            print(f"  {c:<9}" + "".join(f"{v:>7}" for v in row))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-per-task", type=int, default=3000)
    ap.add_argument("--heldout-per-task", type=int, default=1000)
    ap.add_argument("--sim-per-kind", type=int, default=400)
    ap.add_argument("--bits", type=int, default=18)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--C", type=float, default=None, help="skip the grouped cross-validation")
    ap.add_argument("--prune", type=float, default=1e-3, help="drop weight rows whose largest |w| is below this")
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = ap.parse_args(argv)

    classes = list(TASKS)
    featurizer = Featurizer(args.bits, HEAD_CHARS, TAIL_CHARS, HEAD_TOKENS, TAIL_TOKENS)
    train = examples("train", args.train_per_task, args.seed, args.sim_per_kind)
    heldout = examples("heldout", args.heldout_per_task, args.seed + 1, args.sim_per_kind)
    print(f"train: {len(train)} examples from {len({e.template for e in train})} templates; "
          f"held-out: {len(heldout)} from {len({e.template for e in heldout})} templates")
    x = matrix(featurizer, [e.text for e in train])
    y = np.array([classes.index(e.task) for e in train])
    if args.C is None:
        print("choosing C by cross-validation grouped by template:")
        c, cv = choose_c(x, y, [e.template for e in train], args.folds)
    else:
        c, cv = args.C, {}
    model = LogisticRegression(C=c, max_iter=5000).fit(x, y)
    print(f"fitted C={c}: {int((np.abs(model.coef_) > 0).any(axis=0).sum())} non-zero buckets of {1 << args.bits}")

    doc = export(model, featurizer, classes, args.prune)
    args.out.write_text(json.dumps(doc, separators=(",", ":")))
    clf = TaskClassifier.load(args.out)
    generated = [e for e in heldout if not e.template.startswith("sim/")]
    sim = [e for e in heldout if e.template.startswith("sim/")]
    result, sim_result = evaluate(clf, generated, DEFAULT_FLOOR), evaluate(clf, sim, DEFAULT_FLOOR)
    train_acc = evaluate(clf, train, DEFAULT_FLOOR)["overall"]
    sk_agree = float((model.predict(matrix(featurizer, [e.text for e in generated]))
                      == np.array([classes.index(clf.classify_text(e.text)[0]) for e in generated])).mean())
    print_report("held-out (templates unseen in training)", result, classes)
    print_report("simulator prompts (unseen seeds)", sim_result, classes)
    print(f"\ntraining accuracy {train_acc:.4f}; runtime agrees with scikit-learn on {sk_agree:.2%} of held-out")

    doc["provenance"] = {
        "trained_on": dt.date.today().isoformat(), "sklearn": sklearn.__version__, "numpy": np.__version__,
        "script": "scripts/train_classifier.py", "generator": "proxy.routing.classifier_data", "seed": args.seed,
        "model": f"LogisticRegression(C={c}) multinomial on hashed word unigrams+bigrams and meta features",
        "cv_accuracy_by_C": {str(k): round(v, 4) for k, v in cv.items()},
        "split": "held-out templates, phrasings and 30% of slot values never seen in training",
        "train_examples": len(train), "train_per_task": args.train_per_task, "train_accuracy": train_acc,
        "heldout_seed": args.seed + 1, "heldout_per_task": args.heldout_per_task, "sim_per_kind": args.sim_per_kind,
        "heldout_examples": len(generated), "heldout_accuracy": {**result["per_task"], "overall": result["overall"]},
        "heldout_confusion": result["confusion"], "floor": DEFAULT_FLOOR,
        "heldout_below_floor_fraction": result["below_floor_fraction"],
        "heldout_accuracy_above_floor": result["accuracy_above_floor"],
        "simulator_examples": len(sim), "simulator_accuracy": sim_result["overall"],
        "class_counts_train": dict(Counter(e.task for e in train)),
    }
    args.out.write_text(json.dumps(doc, separators=(",", ":")))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
