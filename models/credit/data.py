"""The Statlog (German Credit Data) set: 1,000 credit applications, each judged a good or a bad risk.

Source: Hofmann, H. (1994). Statlog (German Credit Data). UCI Machine Learning Repository,
https://doi.org/10.24432/C5NC77, licensed CC BY 4.0. ``german.data`` beside this file is UCI's
original file, unchanged (its SHA-256 is checked on every load): one application per line, 20
attributes separated by spaces, categorical values as codes (``A11``, ``A34``, ...), then the
class (1 = good, 2 = bad).

This module reads it into JSON-ready records with snake_case field names and readable category
values (the codes mapped as UCI's attribute documentation describes them), numbered in file order
by an added ``application_id`` (the data has no identifier). The encoding into model features is
not here but in features.json (see train.py), which the plugin embeds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_FILE = HERE / "german.data"
DATA_SHA256 = "b21f3d81db8071257d5ff1deaeba1fd4303b62712e6fcc9715c7a86202cb5871"
ROWS = 1000


@dataclass(frozen=True)
class Attribute:
    """One input field: numerical (``codes`` is None) or categorical (code -> readable value)."""

    name: str
    codes: dict[str, str] | None = None

    @property
    def categorical(self) -> bool:
        return self.codes is not None


#: The 20 attributes, in the order of the file's columns.
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("checking_account_status", {
        "A11": "below_0_dm", "A12": "0_to_200_dm", "A13": "200_dm_or_more", "A14": "no_account",
    }),
    Attribute("duration_months"),
    Attribute("credit_history", {
        "A30": "no_credits_or_all_paid", "A31": "all_paid_at_this_bank", "A32": "existing_paid_duly",
        "A33": "delays_in_past", "A34": "critical_or_credits_elsewhere",
    }),
    Attribute("purpose", {
        "A40": "car_new", "A41": "car_used", "A42": "furniture_equipment", "A43": "radio_television",
        "A44": "domestic_appliances", "A45": "repairs", "A46": "education", "A47": "vacation",
        "A48": "retraining", "A49": "business", "A410": "other",
    }),
    Attribute("credit_amount"),
    Attribute("savings", {
        "A61": "below_100_dm", "A62": "100_to_500_dm", "A63": "500_to_1000_dm", "A64": "1000_dm_or_more",
        "A65": "unknown_or_none",
    }),
    Attribute("employment_since", {
        "A71": "unemployed", "A72": "below_1_year", "A73": "1_to_4_years", "A74": "4_to_7_years",
        "A75": "7_years_or_more",
    }),
    Attribute("installment_rate"),
    Attribute("personal_status_sex", {
        "A91": "male_divorced_separated", "A92": "female_divorced_separated_married", "A93": "male_single",
        "A94": "male_married_widowed", "A95": "female_single",
    }),
    Attribute("other_debtors", {"A101": "none", "A102": "co_applicant", "A103": "guarantor"}),
    Attribute("residence_since"),
    Attribute("property", {
        "A121": "real_estate", "A122": "savings_agreement_or_life_insurance", "A123": "car_or_other",
        "A124": "unknown_or_none",
    }),
    Attribute("age"),
    Attribute("other_installment_plans", {"A141": "bank", "A142": "stores", "A143": "none"}),
    Attribute("housing", {"A151": "rent", "A152": "own", "A153": "for_free"}),
    Attribute("existing_credits"),
    Attribute("job", {
        "A171": "unskilled_non_resident", "A172": "unskilled_resident", "A173": "skilled",
        "A174": "management_or_highly_qualified",
    }),
    Attribute("people_liable"),
    Attribute("telephone", {"A191": "none", "A192": "yes"}),
    Attribute("foreign_worker", {"A201": "yes", "A202": "no"}),
)
NAMES: tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)
ID_FIELD = "application_id"


def labelled_applications(path: Path = DATA_FILE) -> list[tuple[dict, int]]:
    """Every application as ``(record, bad)``, in file order; ``bad`` is 1 for a bad risk.

    A record maps ``application_id`` (1, 2, ...) and the attribute names to values: ints for
    numerical attributes, readable strings for categorical ones.
    """
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if path == DATA_FILE and digest != DATA_SHA256:
        raise ValueError(f"{path}: SHA-256 {digest}, expected UCI's file ({DATA_SHA256})")
    rows = []
    for number, line in enumerate(raw.decode("ascii").splitlines(), start=1):
        fields = line.split()
        if len(fields) != len(ATTRIBUTES) + 1:
            raise ValueError(f"{path}:{number}: {len(fields)} fields, expected {len(ATTRIBUTES) + 1}")
        record: dict = {ID_FIELD: number}
        for attribute, value in zip(ATTRIBUTES, fields):
            record[attribute.name] = attribute.codes[value] if attribute.codes else int(value)
        rows.append((record, {"1": 0, "2": 1}[fields[-1]]))
    return rows


def applications(path: Path = DATA_FILE) -> list[dict]:
    """Every application record (without its label), in file order."""
    return [record for record, _ in labelled_applications(path)]


def observed_categories(records: list[dict]) -> dict[str, list[str]]:
    """Per categorical attribute, the values that occur in ``records``, in documented order.

    Two documented values never occur in the data (``purpose`` ``vacation``, ``personal_status_sex``
    ``female_single``); a model cannot learn anything about them, so they are left out.
    """
    return {
        a.name: [v for v in a.codes.values() if any(r[a.name] == v for r in records)]
        for a in ATTRIBUTES
        if a.categorical
    }


if __name__ == "__main__":
    import json

    for record, bad in labelled_applications()[:3]:
        print(json.dumps(record), "bad" if bad else "good")
