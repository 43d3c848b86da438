"""Synthetic credit-card transactions for the fraud-scoring example.

THE DATA IS SYNTHETIC. It copies the *schema* and the class balance of the well-known credit-card
fraud data set published by the Machine Learning Group of ULB (284,807 card transactions over two
days, 492 of them fraudulent; columns ``Time``, ``V1``..``V28``, ``Amount``, ``Class``), which is
not available offline. No row here comes from, or is fitted to, real transactions.

How rows are made (all from one seeded NumPy generator, so a seed always gives the same rows):

* ``Class`` is 1 with probability ``FRAUD_RATE`` (0.17 %, as in the original).
* ``V1``..``V28`` stand in for the anonymised principal components of the original: independent
  normals with zero mean and a spread that falls with the column index. For fraud rows a few
  columns (``FRAUD_SHIFTS``) have their mean shifted by a few standard deviations and their spread
  widened; a fifth of the frauds are only faintly shifted, so some of them look legitimate.
* ``Amount`` is log-normal for legitimate rows; fraud amounts mix many tiny "card testing"
  amounts with some large ones.
* ``Time`` is seconds since the first transaction, spread over two days; legitimate traffic
  follows a day/night cycle, fraud does not.
* ``id`` numbers rows in time order.

Values are rounded (``V*`` to 6 decimals, ``Amount`` to cents, ``Time`` to whole seconds) so that
a row survives a round trip through JSON exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

V_COLUMNS: tuple[str, ...] = tuple(f"V{i}" for i in range(1, 29))
#: The model's input columns, in the order of the ``features`` tensor.
FEATURES: tuple[str, ...] = ("Time", *V_COLUMNS, "Amount")
#: The share of fraud in the original data: 492 of 284,807.
FRAUD_RATE = 492 / 284_807
#: Rows in the original data; the training script generates as many.
ORIGINAL_ROWS = 284_807
#: Two days, the span of the original data.
TIME_SPAN_SECONDS = 172_800.0

# Spread of V1..V28 for legitimate rows, falling like the variances of principal components.
V_STD = np.linspace(1.95, 0.33, 28)
# Fraud rows: mean shift of these columns, in units of that column's legitimate spread.
FRAUD_SHIFTS = {"V3": -1.6, "V4": 1.8, "V10": -2.0, "V12": -2.2, "V14": -2.6, "V17": -1.8}
# Fraud rows: how much wider the shifted columns are.
FRAUD_SPREAD = 1.8
# Share of fraud rows whose shift is only faint.
CAMOUFLAGED_SHARE = 0.2


@dataclass(frozen=True)
class Table:
    """Generated rows as arrays, in ``id`` order."""

    ids: np.ndarray  # int64 [n]
    features: np.ndarray  # float64 [n, 30], columns as in FEATURES
    labels: np.ndarray  # int64 [n], 1 = fraud

    def __len__(self) -> int:
        return len(self.ids)


def generate(seed: int, count: int, *, first_id: int = 1) -> Table:
    """Generates ``count`` rows from ``seed``; the same arguments always give the same rows."""
    if count < 0:
        raise ValueError("count must not be negative")
    rng = np.random.default_rng(seed)
    labels = (rng.random(count) < FRAUD_RATE).astype(np.int64)
    fraud = labels == 1
    n_fraud = int(fraud.sum())

    v = rng.standard_normal((count, 28)) * V_STD
    strength = np.where(rng.random(n_fraud) < CAMOUFLAGED_SHARE, 0.25, 1.0)
    strength *= rng.uniform(0.6, 1.4, n_fraud)
    for name, shift in FRAUD_SHIFTS.items():
        col = V_COLUMNS.index(name)
        v[fraud, col] = v[fraud, col] * FRAUD_SPREAD + shift * V_STD[col] * strength

    amount = rng.lognormal(mean=np.log(22.0), sigma=1.3, size=count)
    kind = rng.random(n_fraud)
    fraud_amount = np.where(
        kind < 0.45,
        rng.uniform(0.0, 2.0, n_fraud),  # card testing
        np.where(
            kind < 0.85,
            rng.lognormal(np.log(60.0), 1.2, n_fraud),
            rng.lognormal(np.log(400.0), 0.6, n_fraud),
        ),
    )
    amount[fraud] = fraud_amount

    time = _arrival_times(rng, fraud)
    order = np.argsort(time, kind="stable")

    features = np.column_stack([time, v, amount])[order]
    features[:, 0] = np.round(features[:, 0])
    features[:, 1:29] = np.round(features[:, 1:29], 6)
    features[:, 29] = np.round(np.minimum(features[:, 29], 25_000.0), 2)
    ids = np.arange(first_id, first_id + count, dtype=np.int64)
    return Table(ids=ids, features=features, labels=labels[order])


def _arrival_times(rng: np.random.Generator, fraud: np.ndarray) -> np.ndarray:
    """Seconds in [0, two days): legitimate rows follow a day/night cycle, fraud is uniform."""
    count = len(fraud)
    # Rejection sampling against a density that is low around 4 a.m. and high in the afternoon.
    candidates = rng.uniform(0.0, TIME_SPAN_SECONDS, 3 * count + 16)
    hour = (candidates / 3600.0) % 24.0
    density = 0.55 + 0.45 * np.sin((hour - 10.0) / 24.0 * 2.0 * np.pi)
    accepted = candidates[rng.random(len(candidates)) < density]
    while len(accepted) < count:  # practically never: 3x oversampling is plenty
        accepted = np.concatenate([accepted, rng.uniform(0.0, TIME_SPAN_SECONDS, count)])
    time = accepted[:count].copy()
    time[fraud] = rng.uniform(0.0, TIME_SPAN_SECONDS, int(fraud.sum()))
    return time


def row_to_transaction(row_id: int, features: np.ndarray) -> dict:
    """One row as a JSON-ready dict: ``id``, ``Time``, ``V1``..``V28``, ``Amount``."""
    record: dict = {"id": int(row_id)}
    record.update((name, float(value)) for name, value in zip(FEATURES, features))
    return record


def transactions(seed: int, count: int, *, first_id: int = 1) -> Iterator[dict]:
    """Yields ``count`` transactions as JSON-ready dicts (without the label)."""
    for tx, _ in labelled_transactions(seed, count, first_id=first_id):
        yield tx


def labelled_transactions(seed: int, count: int, *, first_id: int = 1) -> Iterator[tuple[dict, int]]:
    """Yields ``(transaction, Class)`` pairs; ``Class`` is 1 for fraud."""
    table = generate(seed, count, first_id=first_id)
    for row_id, features, label in zip(table.ids, table.features, table.labels):
        yield row_to_transaction(row_id, features), int(label)


def features_of(transaction: dict) -> list[float]:
    """The model input for one transaction dict, in ``FEATURES`` order."""
    return [float(transaction[name]) for name in FEATURES]


if __name__ == "__main__":
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for tx, label in labelled_transactions(seed=0, count=n):
        print(json.dumps(tx), "Class", label)
