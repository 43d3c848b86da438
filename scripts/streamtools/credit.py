"""Records for the credit example, and the model's scores and reason codes computed offline.

Input records: key = str(application_id), value = the application as compact JSON (the UCI
German credit data, see models/credit/data.py). Two kinds of bad record: poison (a value that is
not JSON, not even UTF-8) and an application with a category the model does not know; the plugin
must reject both and the runtime must dead-letter them with their bytes intact.

The offline side is independent of the plugin: the encoding is the Python twin in
models/credit/encoding.py (read from the same features.json), the score is the SavedModel run
with TensorFlow, and the reason codes are recomputed from the weights in features.json after
checking that those are the SavedModel's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import paths  # noqa: F401  (puts the repository root on sys.path)
from .fraud import latest_version
from models.credit import data  # noqa: E402
from models.credit.encoding import Encoding  # noqa: E402

#: The plugin's defaults, as config/credit.toml sets them.
CUTOFF = 0.5
REASONS = 3
#: The category the unknown-category records carry.
UNKNOWN_PURPOSE = "yacht"


@dataclass(frozen=True)
class InputRecord:
    key: bytes
    value: bytes
    application: dict | None  # None for a poison record
    label: int | None  # 1 = bad risk; None for a bad record
    bad_record: str | None = None  # "poison" or "unknown-category"

    @property
    def scored(self) -> bool:
        """Whether the plugin should score this record (rather than reject it)."""
        return self.bad_record is None


def poison_value(n: int) -> bytes:
    return b"\x00poison record %d: this is not JSON \xff\xfe{\"application_id\":" % n


def input_records(poison: int = 0, unknown_category: int = 0) -> list[InputRecord]:
    """All 1,000 applications in file order, with ``poison`` poison records and
    ``unknown_category`` applications whose ``purpose`` is unknown spread evenly among them."""
    records = [
        InputRecord(str(app[data.ID_FIELD]).encode(), encode(app), app, label)
        for app, label in data.labelled_applications()
    ]
    bad: list[InputRecord] = []
    for n in range(poison):
        bad.append(InputRecord(f"poison-{n}".encode(), poison_value(n), None, None, "poison"))
    for n in range(unknown_category):
        app = {**records[n].application, data.ID_FIELD: data.ROWS + n + 1, "purpose": UNKNOWN_PURPOSE}
        bad.append(InputRecord(f"unknown-category-{n}".encode(), encode(app), app, None, "unknown-category"))
    count = len(records)
    positions = [(i + 1) * count // (len(bad) + 1) for i in range(len(bad))]
    # Insert from the back so earlier positions stay valid.
    for position, record in reversed(list(zip(positions, bad))):
        records.insert(position, record)
    return records


def encode(application: dict) -> bytes:
    return json.dumps(application, separators=(",", ":")).encode()


def encoding() -> Encoding:
    """The encoding and weights of models/credit/features.json, the file the plugin embeds."""
    return Encoding.load()


def offline_scores(applications: Sequence[dict], model_dir: Path | None = None):
    """bad_probability per application, from the SavedModel run directly with TensorFlow on the
    features that models/credit/encoding.py computes. Returns a float32 array in the same order.

    Raises AssertionError when the weights in features.json (those the reason codes use) are not
    exactly the SavedModel's.
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    model_dir = model_dir or latest_version(paths.CREDIT_MODEL_BASE)
    loaded = tf.saved_model.load(str(model_dir))
    spec = encoding()
    assert np.array_equal(loaded.w.numpy()[:, 0], spec.weights()), "features.json weights differ from the SavedModel's"
    assert loaded.b.numpy()[0] == spec.bias(), "features.json bias differs from the SavedModel's"
    rows = spec.matrix(list(applications))
    serve = loaded.signatures["serving_default"]
    return serve(features=tf.constant(rows))["bad_probability"].numpy()[:, 0]
