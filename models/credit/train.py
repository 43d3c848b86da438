"""Trains the credit-scoring model on the UCI German credit data and exports it.

    .venv/bin/python models/credit/train.py    # writes saved_model/1/ and features.json

The model is a logistic regression on an encoded application: one-hot columns for the
categorical attributes, standardised numerical ones (the plugin encodes, so the model takes the
dense vector). It writes:

* ``features.json``: the encoding (category lists; means and spreads of the training split) and
  the trained weights and bias, read back from the exported SavedModel. The plugin embeds it, for
  the encoding and for exact reason codes.
* ``saved_model/1/``: signature ``serving_default``, input ``features`` float32 [None, D], output
  ``bad_probability`` float32 [None, 1].

Training: a seeded stratified split holds out 30 % of the applications. The L2 strength is
chosen by 5-fold stratified cross-validation on the training split alone; the fit itself is
Newton's method in float64 (the loss is convex, so it converges to the one optimum: no learning
rate, no epochs), then the weights are stored as float32. Two runs give identical files. The
held-out metrics are printed and written into README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repository root, for `models.credit`

from models.credit import data  # noqa: E402
from models.credit.encoding import FEATURES_FILE, Encoding  # noqa: E402

SPLIT_SEED = 19940101
HELD_OUT_SHARE = 0.3
FOLDS = 5
L2_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
NEWTON_STEPS = 100
# Cut-offs reported: 0.5, and 1/6, which minimises the expected cost under UCI's cost matrix
# (approving a bad risk costs 5, declining a good one costs 1) for a calibrated probability.
CUTOFFS = (0.5, 1 / 6)
INPUT, OUTPUT = "features", "bad_probability"


class CreditModel(tf.Module):
    """The encoded application in, the probability of a bad risk out."""

    def __init__(self, w: np.ndarray, b: float) -> None:
        super().__init__(name="credit_model")
        self.w = tf.Variable(w.astype(np.float32).reshape(-1, 1), trainable=False, name="w")
        self.b = tf.Variable(np.array([b], np.float32), trainable=False, name="b")
        # The width is known only now, so the signature is made here rather than by a decorator.
        spec = tf.TensorSpec([None, len(w)], tf.float32, name=INPUT)
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT: tf.sigmoid(tf.matmul(features, self.w) + self.b)}


def stratified_split(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A boolean mask of the held-out rows: ``share`` of each class, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(labels), bool)
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(labels == label))
        held_out[rows[: round(share * len(rows))]] = True
    return held_out


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per row, each class spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), int)
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(labels == label))
        fold[rows] = np.arange(len(rows)) % folds
    return fold


def fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Minimises mean log loss + l2/2 * |w|^2 (bias not penalised) with Newton's method."""
    n, d = x.shape
    xb = tf.constant(np.hstack([x, np.ones((n, 1))]), tf.float64)
    yt = tf.constant(y.reshape(-1, 1), tf.float64)
    penalty = tf.linalg.diag(tf.constant([l2] * d + [0.0], tf.float64))
    beta = tf.zeros((d + 1, 1), tf.float64)
    for _ in range(NEWTON_STEPS):
        p = tf.sigmoid(xb @ beta)
        gradient = tf.transpose(xb) @ (p - yt) / n + penalty @ beta
        hessian = tf.transpose(xb) @ (xb * (p * (1.0 - p))) / n + penalty
        step = tf.linalg.solve(hessian, gradient)
        beta -= step
        if float(tf.reduce_max(tf.abs(step))) < 1e-12:
            break
    else:
        raise RuntimeError(f"Newton's method did not converge in {NEWTON_STEPS} steps (l2={l2})")
    beta = beta.numpy()[:, 0]
    return beta[:d], float(beta[d])


def predict(x: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x @ w + b)))


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    order = np.argsort(score, kind="stable")
    _, first, counts = np.unique(score[order], return_index=True, return_counts=True)
    ranks = np.empty(len(score))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def choose_l2(x: np.ndarray, y: np.ndarray) -> tuple[float, dict[float, float]]:
    """The L2 strength with the best mean cross-validated ROC AUC on (x, y)."""
    fold = stratified_folds(y, FOLDS, SPLIT_SEED + 1)
    scores = {}
    for l2 in L2_GRID:
        aucs = []
        for k in range(FOLDS):
            w, b = fit(x[fold != k], y[fold != k], l2)
            aucs.append(roc_auc(y[fold == k], predict(x[fold == k], w, b)))
        scores[l2] = round(float(np.mean(aucs)), 4)
        print(f"l2 {l2:<6} cross-validated ROC AUC {scores[l2]:.4f}")
    return max(L2_GRID, key=lambda l2: (scores[l2], -l2)), scores


def metrics(y: np.ndarray, p: np.ndarray) -> dict:
    eps = 1e-12
    result = {
        "rows": int(len(y)),
        "bad": int(y.sum()),
        "roc_auc": round(roc_auc(y, p), 4),
        "log_loss": round(float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))), 4),
        "cutoffs": [],
    }
    for cutoff in CUTOFFS:
        declined = p >= np.float32(cutoff)
        bad_declined = int((declined & (y == 1)).sum())
        good_declined = int((declined & (y == 0)).sum())
        bad_approved = int((~declined & (y == 1)).sum())
        result["cutoffs"].append({
            "cutoff": round(cutoff, 4),
            "declined": int(declined.sum()),
            "bad_declined": bad_declined,
            "good_declined": good_declined,
            "cost_per_application": round((5 * bad_approved + good_declined) / len(y), 4),
        })
    return result


def write_metrics_into_readme(readme: Path, result: dict, l2: float, cv: dict[float, float]) -> None:
    """Replaces the block between the metrics markers in the README."""
    start, end = "<!-- metrics:start -->", "<!-- metrics:end -->"
    lines = [
        start,
        f"Held-out set: {result['rows']} applications, {result['bad']} of them bad risks (stratified, "
        f"{int(HELD_OUT_SHARE * 100)} %, split seed {SPLIT_SEED}).",
        f"L2 strength {l2}, chosen by {FOLDS}-fold cross-validation on the training split (mean ROC AUC",
        "there: " + ", ".join(f"{k} → {v:.4f}" for k, v in cv.items()) + ").",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| ROC AUC | {result['roc_auc']:.4f} |",
        f"| log loss | {result['log_loss']:.4f} |",
    ]
    for c in result["cutoffs"]:
        lines.append(
            f"| cut-off {c['cutoff']:.4g}: declined | {c['declined']} ({c['bad_declined']} of {result['bad']} bad risks, "
            f"{c['good_declined']} of {result['rows'] - result['bad']} good ones) |"
        )
        lines.append(f"| cut-off {c['cutoff']:.4g}: UCI cost per application | {c['cost_per_application']:.4f} |")
    lines.append(end)
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {start} ... {end} block")
    readme.write_text(pattern.sub(lambda _: "\n".join(lines), text))


def encoding_spec(train: list[dict], everything: list[dict]) -> dict:
    """Category lists (values seen in the data, documented order) and the training split's
    mean and spread of each numerical attribute, rounded so that JSON carries them exactly."""
    categories = data.observed_categories(everything)
    attributes = []
    for attribute in data.ATTRIBUTES:
        if attribute.categorical:
            attributes.append({"name": attribute.name, "kind": "categorical", "categories": categories[attribute.name]})
        else:
            values = np.array([r[attribute.name] for r in train], np.float64)
            attributes.append({
                "name": attribute.name,
                "kind": "numerical",
                "mean": round(float(values.mean()), 6),
                "std": round(float(values.std()), 6),
            })
    return {"attributes": attributes}


def with_weights(spec: dict, w: np.ndarray, b: np.ndarray) -> dict:
    """The spec plus the model's float32 weights (written as the exact values)."""
    out = {"attributes": [], "bias": float(b[0])}
    column = 0
    for attribute in spec["attributes"]:
        attribute = dict(attribute)
        if attribute["kind"] == "categorical":
            n = len(attribute["categories"])
            attribute["weights"] = [float(v) for v in w[column : column + n]]
        else:
            n = 1
            attribute["weight"] = float(w[column])
        column += n
        out["attributes"].append(attribute)
    return out


def write_features(path: Path, spec: dict) -> None:
    """features.json: one attribute per line block, stable formatting."""
    path.write_text(json.dumps(spec, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export-dir", type=Path, default=HERE / "saved_model" / "1")
    parser.add_argument("--features", type=Path, default=FEATURES_FILE)
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--no-readme", action="store_true", help="do not update the README")
    args = parser.parse_args()

    tf.config.experimental.enable_op_determinism()

    rows = data.labelled_applications()
    records = [r for r, _ in rows]
    labels = np.array([bad for _, bad in rows], np.int64)
    held_out = stratified_split(labels, HELD_OUT_SHARE, SPLIT_SEED)
    train = [r for r, h in zip(records, held_out) if not h]
    test = [r for r, h in zip(records, held_out) if h]
    y_train, y_test = labels[~held_out], labels[held_out]
    print(f"training {len(train)} ({y_train.sum()} bad), held out {len(test)} ({y_test.sum()} bad)")

    spec = encoding_spec(train, records)
    encoding = Encoding(spec)
    x_train = encoding.matrix(train).astype(np.float64)
    x_test = encoding.matrix(test)
    print(f"{encoding.width} features")

    l2, cv = choose_l2(x_train, y_train)
    w, b = fit(x_train, y_train, l2)
    model = CreditModel(w, b)

    p_test = model.serve(tf.constant(x_test))[OUTPUT].numpy()[:, 0]
    result = metrics(y_test, p_test)
    print(f"l2 {l2}; held-out metrics:", json.dumps(result))

    if args.export_dir.exists():
        shutil.rmtree(args.export_dir)
    args.export_dir.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(model, str(args.export_dir), signatures={"serving_default": model.serve})

    # Check the export and take the weights for features.json from it, so they are the model's.
    loaded = tf.saved_model.load(str(args.export_dir))
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == [INPUT], serve.structured_input_signature
    assert list(serve.structured_outputs) == [OUTPUT], serve.structured_outputs
    p_loaded = serve(features=tf.constant(x_test))[OUTPUT].numpy()[:, 0]
    assert np.array_equal(p_loaded, p_test), "the exported model scores differently"
    write_features(args.features, with_weights(spec, loaded.w.numpy()[:, 0], loaded.b.numpy()))
    reread = Encoding.load(args.features)
    assert np.array_equal(reread.weights(), loaded.w.numpy()[:, 0]) and reread.bias() == loaded.b.numpy()[0]
    size = sum(f.stat().st_size for f in args.export_dir.rglob("*") if f.is_file())
    print(f"exported {args.export_dir} ({size:,} bytes) and {args.features}")

    if not args.no_readme:
        write_metrics_into_readme(args.readme, result, l2, cv)
        print(f"metrics written into {args.readme}")


if __name__ == "__main__":
    main()
