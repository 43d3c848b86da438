"""Records for the fraud example, and the model's scores computed offline.

Input records: key = str(id), value = the transaction as compact JSON (see models/fraud/data.py;
the data is synthetic). Poison records have a value that is not JSON (and not even UTF-8), so the
plugin must reject them and the runtime must dead-letter them with their bytes intact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import paths  # noqa: F401  (puts the repository root on sys.path)
from models.fraud import data  # noqa: E402

THRESHOLD = 0.5


@dataclass(frozen=True)
class InputRecord:
    key: bytes
    value: bytes
    transaction: dict | None  # None for a poison record
    label: int | None  # Class: 1 = fraud; None for a poison record

    @property
    def poison(self) -> bool:
        return self.transaction is None


def poison_value(n: int) -> bytes:
    return b"\x00poison record %d: this is not JSON \xff\xfe{\"id\":" % n


def input_records(seed: int, count: int, poison: int = 0, first_id: int = 1) -> list[InputRecord]:
    """``count`` transactions from ``seed`` plus ``poison`` poison records spread evenly among
    them (one poison record goes in the middle)."""
    records = [
        InputRecord(str(tx["id"]).encode(), encode(tx), tx, label)
        for tx, label in data.labelled_transactions(seed, count, first_id=first_id)
    ]
    # Insert from the back so earlier positions stay valid.
    positions = [(i + 1) * count // (poison + 1) for i in range(poison)]
    for n, position in reversed(list(enumerate(positions))):
        records.insert(position, InputRecord(f"poison-{n}".encode(), poison_value(n), None, None))
    return records


def encode(transaction: dict) -> bytes:
    return json.dumps(transaction, separators=(",", ":")).encode()


def feature_rows(transactions: Sequence[dict]):
    """The ``features`` tensor for transactions, built as a client would from the JSON values."""
    import numpy as np

    return np.array([data.features_of(tx) for tx in transactions], dtype=np.float64).astype(np.float32)


def offline_scores(transactions: Sequence[dict], model_dir: Path | None = None, batch: int = 4096):
    """fraud_probability per transaction, from the SavedModel run directly with TensorFlow.

    The transactions are decoded from the JSON that was produced, so the inputs are exactly
    those the runtime saw. Returns a float32 array in the same order.
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    model_dir = model_dir or latest_version(paths.FRAUD_MODEL_BASE)
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    rows = feature_rows(transactions)
    parts = [
        serve(features=tf.constant(rows[i : i + batch]))["fraud_probability"].numpy()[:, 0]
        for i in range(0, len(rows), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def latest_version(base: Path) -> Path:
    versions = [p for p in Path(base).iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(f"no model versions under {base}")
    return max(versions, key=lambda p: int(p.name))
