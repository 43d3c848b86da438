"""Trains the example fraud model on synthetic data and exports it as a TensorFlow SavedModel.

    .venv/bin/python models/fraud/train.py            # writes models/fraud/saved_model/1/

The model is a small multi-layer perceptron (30 -> 16 -> 1) with its input preparation baked in
(log1p of Amount, then standardisation with the training set's mean and spread), so a client
sends the raw columns. The export has one signature, ``serving_default``:

    input  ``features``           float32 [None, 30]  columns Time, V1..V28, Amount
    output ``fraud_probability``  float32 [None, 1]

Runs are reproducible: the data comes from a fixed seed, TensorFlow's seeds are fixed and its
ops run deterministically. The held-out metrics are printed and written into README.md beside
this file. The data is synthetic (see data.py).
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
sys.path.insert(0, str(HERE.parent.parent))  # the repository root, for `models.fraud.data`

from models.fraud import data  # noqa: E402

DATA_SEED = 20240601
TF_SEED = 1234
HELD_OUT_SHARE = 0.3
HIDDEN_UNITS = 16
EPOCHS = 8
BATCH_SIZE = 512
LEARNING_RATE = 2e-3
# Weight of a fraud row in the loss: frauds are rare, but a large weight makes the model flag
# many legitimate rows at the 0.5 threshold.
FRAUD_WEIGHT = 3.0
THRESHOLD = 0.5
AMOUNT_COLUMN = data.FEATURES.index("Amount")


class FraudModel(tf.Module):
    """Raw transaction columns in, probability of fraud out."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__(name="fraud_model")
        n = len(data.FEATURES)
        init = tf.keras.initializers.GlorotUniform(seed=TF_SEED)
        self.mean = tf.Variable(mean.astype(np.float32), trainable=False, name="mean")
        self.std = tf.Variable(std.astype(np.float32), trainable=False, name="std")
        self.w1 = tf.Variable(init((n, HIDDEN_UNITS)), name="w1")
        self.b1 = tf.Variable(tf.zeros([HIDDEN_UNITS]), name="b1")
        self.w2 = tf.Variable(init((HIDDEN_UNITS, 1)), name="w2")
        self.b2 = tf.Variable(tf.constant([-4.0]), name="b2")  # start near the base rate

    def logits(self, features: tf.Tensor) -> tf.Tensor:
        x = prepare(features)
        x = (x - self.mean) / self.std
        hidden = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
        return tf.matmul(hidden, self.w2) + self.b2

    @tf.function(input_signature=[tf.TensorSpec([None, len(data.FEATURES)], tf.float32, name="features")])
    def serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"fraud_probability": tf.sigmoid(self.logits(features))}


def prepare(features):
    """log1p on Amount (heavy-tailed); other columns pass through. Works on NumPy and tensors."""
    if isinstance(features, np.ndarray):
        out = features.copy()
        out[:, AMOUNT_COLUMN] = np.log1p(np.maximum(out[:, AMOUNT_COLUMN], 0.0))
        return out
    amount = tf.math.log1p(tf.maximum(features[:, AMOUNT_COLUMN : AMOUNT_COLUMN + 1], 0.0))
    return tf.concat([features[:, :AMOUNT_COLUMN], amount, features[:, AMOUNT_COLUMN + 1 :]], axis=1)


def train(model: FraudModel, x: np.ndarray, y: np.ndarray) -> None:
    optimizer = tf.keras.optimizers.Adam(learning_rate=LEARNING_RATE)
    weights = [model.w1, model.b1, model.w2, model.b2]

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model.logits(xb)
            per_row = tf.nn.sigmoid_cross_entropy_with_logits(labels=yb, logits=logits)
            loss = tf.reduce_mean(per_row * (1.0 + (FRAUD_WEIGHT - 1.0) * yb))
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    rng = np.random.default_rng(TF_SEED)
    x32 = x.astype(np.float32)
    y32 = y.astype(np.float32).reshape(-1, 1)
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x32))
        losses = [
            float(step(x32[order[i : i + BATCH_SIZE]], y32[order[i : i + BATCH_SIZE]]))
            for i in range(0, len(order), BATCH_SIZE)
        ]
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {np.mean(losses):.5f}")


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # Average ranks over runs of equal scores.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    order = np.argsort(-score, kind="stable")
    hits = y[order] == 1
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.mean())


def metrics(y: np.ndarray, p: np.ndarray) -> dict:
    flagged = p >= THRESHOLD
    tp = int((flagged & (y == 1)).sum())
    fp = int((flagged & (y == 0)).sum())
    fn = int((~flagged & (y == 1)).sum())
    return {
        "rows": int(len(y)),
        "frauds": int((y == 1).sum()),
        "roc_auc": round(roc_auc(y, p), 4),
        "average_precision": round(average_precision(y, p), 4),
        "threshold": THRESHOLD,
        "flagged": int(flagged.sum()),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
    }


def write_metrics_into_readme(readme: Path, result: dict) -> None:
    """Replaces the block between the metrics markers in the README."""
    start, end = "<!-- metrics:start -->", "<!-- metrics:end -->"
    block = "\n".join(
        [
            start,
            f"Held-out set: {result['rows']:,} synthetic rows, {result['frauds']} of them fraud "
            f"(data seed {DATA_SEED}, {int(HELD_OUT_SHARE * 100)} % held out).",
            "",
            "| metric | value |",
            "| --- | --- |",
            f"| ROC AUC | {result['roc_auc']:.4f} |",
            f"| average precision (area under precision-recall) | {result['average_precision']:.4f} |",
            f"| precision at p >= {THRESHOLD} | {result['precision']:.4f} "
            f"({result['true_positives']} of {result['flagged']} flagged) |",
            f"| recall at p >= {THRESHOLD} | {result['recall']:.4f} "
            f"({result['true_positives']} of {result['frauds']} frauds) |",
            end,
        ]
    )
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {start} ... {end} block")
    readme.write_text(pattern.sub(lambda _: block, text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export-dir", type=Path, default=HERE / "saved_model" / "1")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--no-readme", action="store_true", help="do not update the README")
    args = parser.parse_args()

    tf.keras.utils.set_random_seed(TF_SEED)
    tf.config.experimental.enable_op_determinism()

    table = data.generate(DATA_SEED, data.ORIGINAL_ROWS)
    split = np.random.default_rng(DATA_SEED).random(len(table)) < HELD_OUT_SHARE
    x_train, y_train = table.features[~split], table.labels[~split]
    x_test, y_test = table.features[split], table.labels[split]
    print(f"training rows {len(x_train):,} ({y_train.sum()} fraud), held out {len(x_test):,} ({y_test.sum()} fraud)")

    prepared = prepare(x_train)
    model = FraudModel(prepared.mean(axis=0), prepared.std(axis=0) + 1e-6)
    train(model, x_train, y_train)

    p_test = model.serve(tf.constant(x_test, tf.float32))["fraud_probability"].numpy()[:, 0]
    result = metrics(y_test, p_test)
    print("held-out metrics:", json.dumps(result))

    if args.export_dir.exists():
        shutil.rmtree(args.export_dir)
    args.export_dir.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(model, str(args.export_dir), signatures={"serving_default": model.serve})

    # Check the export: names, shapes, and that it scores like the model in memory.
    loaded = tf.saved_model.load(str(args.export_dir)).signatures["serving_default"]
    inputs = loaded.structured_input_signature[1]
    assert list(inputs) == ["features"], inputs
    assert list(loaded.structured_outputs) == ["fraud_probability"], loaded.structured_outputs
    p_loaded = loaded(features=tf.constant(x_test, tf.float32))["fraud_probability"].numpy()[:, 0]
    drift = float(np.max(np.abs(p_loaded - p_test)))
    assert drift <= 1e-6, f"exported model scores differ by {drift}"
    size = sum(f.stat().st_size for f in args.export_dir.rglob("*") if f.is_file())
    print(f"exported {args.export_dir} ({size:,} bytes)")

    if not args.no_readme:
        write_metrics_into_readme(args.readme, result)
        print(f"metrics written into {args.readme}")


if __name__ == "__main__":
    main()
