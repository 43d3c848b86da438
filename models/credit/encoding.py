"""The credit model's feature encoding and reason codes, read from features.json.

features.json is the single source of truth for how an application becomes the model's
``features`` vector; the plugin (plugins/credit-scoring) embeds the same file. It lists the
attributes in vector order. A numerical attribute takes one column, ``(x - mean) / std``; a
categorical one takes a column per category, 1 for the applicant's category and 0 for the others.
train.py adds the model's own weights (``weight`` or ``weights`` per attribute, and ``bias``), so
the model's logit is ``bias + sum(w_i * x_i)`` and each attribute's share of it, summed over its
columns, is exact: those shares are the reason codes.

This module is the Python twin of the plugin's encoding, for training and for the end-to-end
tests' independent checks: the same arithmetic (float64, then float32 for the vector).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FEATURES_FILE = Path(__file__).resolve().parent / "features.json"


class Encoding:
    """An encoding spec (the parsed features.json, with or without weights)."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.attributes: list[dict] = spec["attributes"]
        self.width = sum(len(a["categories"]) if a["kind"] == "categorical" else 1 for a in self.attributes)

    @classmethod
    def load(cls, path: Path = FEATURES_FILE) -> "Encoding":
        return cls(json.loads(Path(path).read_text()))

    def columns(self) -> list[str]:
        """Column names in vector order: ``name`` or ``name=category``."""
        out: list[str] = []
        for a in self.attributes:
            if a["kind"] == "categorical":
                out += [f"{a['name']}={c}" for c in a["categories"]]
            else:
                out.append(a["name"])
        return out

    def encode(self, record: dict) -> np.ndarray:
        """The float32 ``features`` vector of one application; ValueError when it does not fit."""
        out: list[float] = []
        for a in self.attributes:
            value = record[a["name"]]
            if a["kind"] == "categorical":
                if value not in a["categories"]:
                    raise ValueError(f"{a['name']}: unknown category {value!r}")
                out += [1.0 if value == c else 0.0 for c in a["categories"]]
            else:
                out.append((float(value) - a["mean"]) / a["std"])
        return np.array(out, dtype=np.float64).astype(np.float32)

    def matrix(self, records: list[dict]) -> np.ndarray:
        """float32 [len(records), width]."""
        return np.stack([self.encode(r) for r in records]) if records else np.zeros((0, self.width), np.float32)

    def weights(self) -> np.ndarray:
        """The model's weights in vector order, float32 [width]."""
        out: list[float] = []
        for a in self.attributes:
            out += a["weights"] if a["kind"] == "categorical" else [a["weight"]]
        return np.array(out, dtype=np.float32)

    def bias(self) -> np.float32:
        return np.float32(self.spec["bias"])

    def contributions(self, record: dict) -> dict[str, float]:
        """Per attribute, its share of the logit: the sum of w_i * x_i over its columns, in
        float64 from the float32 weights and vector."""
        products = self.weights().astype(np.float64) * self.encode(record).astype(np.float64)
        shares: dict[str, float] = {}
        column = 0
        for a in self.attributes:
            n = len(a["categories"]) if a["kind"] == "categorical" else 1
            shares[a["name"]] = float(products[column : column + n].sum())
            column += n
        return shares

    def reasons(self, record: dict, count: int) -> list[tuple[str, float]]:
        """The ``count`` attributes pushing hardest towards "bad" (positive shares only), largest
        first; ties keep attribute order."""
        positive = [(name, c) for name, c in self.contributions(record).items() if c > 0.0]
        return sorted(positive, key=lambda item: -item[1])[:count]
