"""CPU per record: user+sys time of each process around a variant, over its steady window.

A ``Track`` follows one process: every ``EVERY`` seconds a ``Sampler`` thread reads its
``utime + stime`` from ``/proc/PID/stat`` (with ``cutime + cstime``, the children it has
waited for), adds the live members of its process group (a process the harness started leads a
group of its own; re-scanned every ``RESCAN`` seconds, as /proc has no cheap list of
children), and keeps the pair (wall-clock ms, CPU seconds). The steady window is the one the
rate is measured over: from the first output record's timestamp to the last one's, which
leaves out start-up (plugin compilation, model load, group join) and shutdown. The CPU at each
end is interpolated between the samples around it; divided by the records in the window
(outputs minus one, as for the rate) it is CPU-µs per record.

The process under test is tracked, and beside it the broker, the load generator where there is
one (B6: the harness offers records itself) and the model server (B4).
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from .result import Result

TICKS = os.sysconf("SC_CLK_TCK")
EVERY = 0.1
RESCAN = 2.0


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces), so that
    index 0 is field 3 (state); None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()


def own_ticks(fields: list[str]) -> int:
    """utime + stime (fields 14 and 15)."""
    return int(fields[11]) + int(fields[12])


def reaped_ticks(fields: list[str]) -> int:
    """cutime + cstime (fields 16 and 17): children waited for."""
    return int(fields[13]) + int(fields[14])


def group_members(leader: int) -> list[int]:
    """Live processes in ``leader``'s process group other than the leader."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != leader:
            fields = stat_fields(int(entry))
            if fields is not None and int(fields[2]) == leader:
                out.append(int(entry))
    return out


@dataclass
class Track:
    """One process's CPU seconds over wall-clock time. ``group``: count its process group's
    other live members too (only for a process that leads its own group)."""

    role: str
    pid: int
    group: bool = True
    samples: list[tuple[float, float]] = field(default_factory=list)  # (wall ms, CPU seconds)
    _members: list[int] = field(default_factory=list)
    _scanned: float = float("-inf")

    def sample(self) -> None:
        now_ms = time.time() * 1000.0
        fields = stat_fields(self.pid)
        if fields is None:
            return
        ticks = own_ticks(fields) + reaped_ticks(fields)
        if self.group:
            if time.monotonic() - self._scanned >= RESCAN:
                self._members = group_members(self.pid)
                self._scanned = time.monotonic()
            for member in self._members:
                member_fields = stat_fields(member)
                if member_fields is not None:
                    ticks += own_ticks(member_fields)
        self.samples.append((now_ms, ticks / TICKS))

    def at(self, when_ms: float) -> float | None:
        """CPU seconds used by ``when_ms``, interpolated; None outside the samples."""
        times = [t for t, _ in self.samples]
        if not times or when_ms < times[0] or when_ms > times[-1]:
            return None
        i = bisect.bisect_left(times, when_ms)
        if times[i] == when_ms or i == 0:
            return self.samples[i][1]
        (t0, c0), (t1, c1) = self.samples[i - 1], self.samples[i]
        return c0 + (c1 - c0) * (when_ms - t0) / (t1 - t0)

    def between(self, start_ms: float, end_ms: float) -> float | None:
        a, b = self.at(start_ms), self.at(end_ms)
        return None if a is None or b is None else b - a


class Sampler:
    """Samples ``tracks`` (and calls ``also``, e.g. a memory reading) every ``EVERY`` seconds
    on a thread of its own, so the figures do not depend on what the harness is busy with."""

    def __init__(self, tracks: list[Track], also: Callable[[], None] | None = None) -> None:
        self.tracks = tracks
        self._also = also
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for track in self.tracks:
                track.sample()
            if self._also is not None:
                self._also()
            if self._stop.wait(EVERY):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def tracks_for(pid: int, others: Mapping[str, int]) -> list[Track]:
    """The process under test, then the others (role -> pid). The harness's own process (the
    load generator in B6) does not lead a group: only it is counted."""
    out = [Track("process", pid)]
    out += [Track(role, other, group=other != os.getpid()) for role, other in others.items()]
    return out


def fill(result: Result, tracks: list[Track], first_ms: float | None, last_ms: float | None, records: int) -> None:
    """Writes CPU-µs per record for each track over [first_ms, last_ms] into ``result``:
    ``cpu_us_per_record`` (the process under test), ``cpu_us_per_record.ROLE`` (the others),
    the window's length and the cores the process under test kept busy in it."""
    if first_ms is None or last_ms is None or last_ms <= first_ms or records < 1:
        result.notes.append("no steady window (too few outputs): no CPU figure")
        return
    window = (last_ms - first_ms) / 1000.0
    result.figures["cpu_window_seconds"] = window
    missing = []
    for track in tracks:
        used = track.between(first_ms, last_ms)
        if used is None:
            missing.append(track.role)
            continue
        name = "cpu_us_per_record" if track.role == "process" else f"cpu_us_per_record.{track.role}"
        result.figures[name] = used * 1e6 / records
        if track.role == "process":
            result.figures["cpu_cores_busy"] = used / window
    if missing:
        result.notes.append(f"no CPU samples around the window for: {', '.join(missing)}")
    if window < 1.0:
        result.notes.append(f"CPU window {window * 1000:.0f} ms: {1000 // TICKS} ms ticks make it coarse")
