"""What one row of the benchmark table holds.

A result is checked or it is not a result: ``status`` says whether the variant's checks passed
(``ok``), failed (``failed``, with the reasons in ``problems``), or the variant did not run
(``not-run``, with the reason in ``notes``). ``optional`` results (Quix Streams) never fail the
whole run, but their failures are shown like any other.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator


class VariantFailure(Exception):
    """A variant could not finish or did not pass its checks; the message says why."""


@dataclass
class Result:
    key: str  # table row id, e.g. "B4-batched"
    title: str  # what runs, in a few words
    records: int | None = None
    rate: float | None = None  # records (or rows) per second
    status: str = "not-run"  # ok | failed | not-run
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)  # extra numbers (latency, RSS, ...)
    ratio: str = ""  # filled in by the report, e.g. "0.64 (B2/B1)"
    optional: bool = False
    unit: str = "records/s"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def fail(self, problem: str) -> "Result":
        self.status = "failed"
        self.problems.append(problem)
        return self

    def fail_by(self, error: BaseException) -> "Result":
        """Failed by ``error``: a VariantFailure says what went wrong; any other error (the
        harness's or a client's) is named with its type."""
        return self.fail(str(error) if isinstance(error, VariantFailure) else f"{type(error).__name__}: {error}")

    @contextmanager
    def reporting(self) -> Iterator["Result"]:
        """Whatever fails inside the block fails this variant (see :meth:`fail_by`), not the run."""
        try:
            yield self
        except Exception as error:
            self.fail_by(error)

    def conclude(self, problems: list[str]) -> "Result":
        """Ok when the checks found no problem; failed with each of them otherwise."""
        for problem in problems:
            self.fail(problem)
        if not problems:
            self.status = "ok"
        return self

    def check_text(self) -> str:
        if self.status == "ok":
            return "ok"
        if self.status == "failed":
            text = "FAILED: " + "; ".join(self.problems)
            return text + (" (optional variant: does not fail the run)" if self.optional else "")
        return "not run"
