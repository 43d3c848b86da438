#!/usr/bin/env python3
"""What an offset commit costs the broker, against what the commit interval costs a crash.

In at-least-once mode the runtime commits the offsets of finished records every
`kafka.commit-interval`; a crash reads again what finished since the last commit (at most one
interval of throughput) plus what was in flight (`pipeline.max-pending`). A shorter interval
means fewer duplicates per crash and more commit requests. This harness measures the broker's
side on tansu: a client commits moved offsets of `--partitions` partitions for its group
synchronously every interval for `--seconds` (it fetches nothing, so the commits are all the
broker does for it), and the broker's user+sys CPU (/proc) over that window, less its idle CPU
over as long a window before, is divided by the commits made. It
prints, per interval, commits per second, broker CPU per commit, the broker's share of a core
that one member's commits take, and the records a crash re-reads at two rates.

    .venv/bin/python bench/commit_interval.py [--intervals 50,100,200,500,1000,5000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from streamtools import kafka, services  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
RATES = (10_000, 60_000)


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def commits_for(brokers: str, topic: str, partitions: int, interval: float, seconds: float, pid: int):
    """Commits moved offsets every ``interval`` s for ``seconds``; returns (commits, broker CPU s)."""
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"cadence-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
    })
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, 1) for p in range(partitions)], asynchronous=False)
        commits, offset = 0, 1
        started_cpu, started = cpu_seconds(pid), time.monotonic()
        next_at = started
        while time.monotonic() - started < seconds:
            offset += 1
            consumer.commit(offsets=[TopicPartition(topic, p, offset) for p in range(partitions)], asynchronous=False)
            commits += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        elapsed = time.monotonic() - started
        return commits, cpu_seconds(pid) - started_cpu, elapsed
    finally:
        consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", default="50,100,200,500,1000,5000", help="milliseconds, comma-separated")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    intervals = [int(i) / 1000 for i in args.intervals.split(",")]
    with tempfile.TemporaryDirectory(prefix="commit-interval-") as logs:
        broker = services.start_broker(Path(logs))
        try:
            topic = f"cadence-{uuid.uuid4().hex[:8]}"
            kafka.create_topics(broker.bootstrap, {topic: args.partitions})
            kafka.produce(broker.bootstrap, topic, [(str(i).encode(), b"x") for i in range(100 * args.partitions)])
            time.sleep(2.0)
            idle_from = cpu_seconds(broker.pid)
            time.sleep(args.seconds)
            idle_per_s = (cpu_seconds(broker.pid) - idle_from) / args.seconds
            print(f"tansu idle: {idle_per_s * 1000:.1f} CPU-ms/s; {args.partitions} partitions per commit")
            head = ["interval", "commits/s", "broker CPU-ms/commit", "broker core share"]
            head += [f"re-read per crash at {r:,}/s" for r in RATES]
            print(" | ".join(head))
            for interval in intervals:
                commits, cpu, elapsed = commits_for(
                    broker.bootstrap, topic, args.partitions, interval, args.seconds, broker.pid)
                busy = max(0.0, cpu - idle_per_s * elapsed)
                per_commit = busy / commits
                row = [f"{interval * 1000:.0f} ms", f"{commits / elapsed:.1f}", f"{per_commit * 1000:.2f}",
                       f"{busy / elapsed * 100:.2f}%"]
                row += [f"{int(r * interval):,} + max-pending" for r in RATES]
                print(" | ".join(row))
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
